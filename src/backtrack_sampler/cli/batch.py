"""``backtrack-sampler batch``: the command's arguments and its handler (the work is in ``backtrack_sampler.batch``).

Where the sequences run (``_open_providers``): ``--concurrency N`` (default 8)
sequences at once, each with a provider of its own. On llama.cpp they are the
N slots of one ``BatchedLlamacpp`` (one ``llama_decode`` per step for all of
them); against a remote engine, N ``OpenAICompatibleProvider.spawn``-ed
providers. The transformers backend runs one sequence at a time, loaded as
``generate`` loads it (``options.load_provider``), as is llama.cpp with
``--concurrency 1``.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from backtrack_sampler.batch.ftpo import DEFAULT_MAX_CHOSEN, DEFAULT_MIN_P, FtpoSettings
from backtrack_sampler.cli.generate import describe_strategies, strategy_choices, strategy_name
from backtrack_sampler.cli.options import (
    API_KEY_ENV,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    CliError,
    add_api_key_option,
    add_ban_options,
    add_budget_options,
    add_model_options,
    add_sampling_options,
    budget,
    check_input_file,
    check_output_file,
    dest,
    float_in,
    int_at_least,
    load_batched,
    load_provider,
    merged_bans,
    one_line,
    sampling_settings,
)
from backtrack_sampler.cli.remote_options import add_remote_options, check_remote_flags, open_remote
from backtrack_sampler.model_sampling import recommended_sampling
from backtrack_sampler.models import ONE_AT_A_TIME

DEFAULT_CONCURRENCY = 8
MAX_LOCAL_CONCURRENCY = 256  # BatchedLlamacpp's limit on sequence slots

BATCH_EXAMPLES = f"""\
examples:
  backtrack-sampler batch prompts.jsonl -o results.jsonl --max-tokens 200
  backtrack-sampler batch prompts.jsonl -o results.jsonl --concurrency 16 --n-ctx 1024
  backtrack-sampler batch openings.jsonl -o continued.jsonl --raw   # each "prompt" is text to continue
  backtrack-sampler batch prompts.jsonl -o results.jsonl --slop --ban tapestry --ban-file bans.txt \\
      --events-out pairs.jsonl
  backtrack-sampler batch prompts.jsonl -o results.jsonl --slop --events-out ftpo.jsonl --events-format ftpo
  backtrack-sampler batch prompts.jsonl -o results.jsonl --concurrency 16 \\
      --remote-url http://127.0.0.1:8000/v1 --remote-model smollm2 --tokenizer ./SmolLM2.gguf

Each input line is a JSON object: "id" and "prompt" or "messages" (chat), and optionally
raw (true: send the prompt as is), max_tokens, temperature, seed, top_p, top_k, min_p,
banned_strings, exempt_prompt_terms (true: spare the phrases the prompt uses), ban_scope ("think",
"answer", "START,END" or {{"start", "end", "inside"}}) and strategy ("antislop",
"replace", "json", ... or {{"name": ..., "params": {{...}}}}).
A "prompt" is what generate's PROMPT is: a user message through the model's chat template,
unless the line says "raw": true or the run says --raw (a line's "raw" wins).
Each output line holds the id, the text, the finish reason, the stats and the prompt_mode
("chat" or "raw"), or an error;
with --concurrency above 1 the lines come in the order they finish.
Killed at any moment and started again with the same command, it finishes the rest:
no line lost, none twice. The API key comes from --api-key or ${API_KEY_ENV}.

Exit status: 0 when every line has its record (error records for bad lines included);
1 when a file cannot be read or written during the run, or the remote engine fails
(what was written stays valid: run the same command again to go on); 2 on a bad
argument (a file that is not a regular file, such as a directory or /dev/full, an
OUTPUT that cannot be written, ...) or a missing model or backend, found before
anything is loaded or written, or a command that does not fit OUTPUT or the model (OUTPUT
was begun with --raw and this run has none, or the reverse; prompt lines for a model
without a chat template and no --raw), found before anything is written; 130 when interrupted.
"""


def add_batch_command(commands: argparse._SubParsersAction) -> None:
    """Add ``batch`` to the ``backtrack-sampler`` subcommands."""
    batch = commands.add_parser(
        "batch",
        help="turn a JSONL file of prompts into a JSONL file of results (resumable)",
        description=(
            "Generate for every line of INPUT and append the results to OUTPUT; lines already\n"
            "answered in OUTPUT are skipped, so an interrupted run is finished by running it again."
        ),
        epilog=BATCH_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    batch.add_argument("input", type=Path, metavar="INPUT", help="the prompts, one JSON object per line")
    batch.add_argument("-o", "--output", type=Path, required=True, metavar="OUTPUT", help="the results (JSONL)")
    batch.add_argument(
        "--events-out",
        type=Path,
        metavar="PATH",
        help="write a preference pair (prompt, chosen, rejected) per rewind that banned text",
    )
    batch.add_argument(
        "--events-format",
        choices=("dpo", "ftpo"),
        default="dpo",
        help=(
            "what --events-out holds: dpo, text pairs (default); ftpo, per ban the context, the rejected "
            "token and the likely tokens that begin no banned phrase (Final Token Preference Optimization)"
        ),
    )
    batch.add_argument(
        "--ftpo-min-p",
        type=float_in(0, 1, low_open=True),
        metavar="P",
        help=f"ftpo: keep alternatives of probability >= P x the best's, in (0, 1] (default: {DEFAULT_MIN_P:g})",
    )
    batch.add_argument(
        "--ftpo-max-chosen",
        type=int_at_least(1),
        metavar="N",
        help=f"ftpo: the most chosen tokens per record, most likely first (default: {DEFAULT_MAX_CHOSEN})",
    )
    batch.add_argument(
        "--concurrency",
        type=int_at_least(1),
        metavar="N",
        help=(
            f"sequences in flight (default: {DEFAULT_CONCURRENCY}); llama.cpp decodes them together, "
            "in one context of N x --n-ctx positions; --backend transformers runs 1"
        ),
    )
    batch.add_argument("--no-progress", action="store_true", help="no progress line on stderr")

    add_model_options(batch.add_argument_group("local model (default: the embedded SmolLM2 through llama.cpp)"))

    g = batch.add_argument_group("remote engine (vLLM, SGLang, backtrack-sampler serve)")
    add_remote_options(g)
    add_api_key_option(g, "bearer token for the server")

    g = batch.add_argument_group("defaults for lines that do not set them")
    g.add_argument(
        "--raw",
        action="store_true",
        help='send each line\'s "prompt" as is, without the chat template (as generate --raw); a line\'s "raw" wins',
    )
    g.add_argument("--max-tokens", type=int_at_least(1), default=256, metavar="N", help="(default: 256)")
    add_sampling_options(g)
    g.add_argument(
        "--strategy",
        type=strategy_name,
        choices=strategy_choices(interactive=False),
        metavar="NAME",
        help=f"the strategy of lines without one: {describe_strategies(interactive=False)}",
    )

    g = batch.add_argument_group("bans for every line (added to each line's banned_strings)")
    add_ban_options(g, matching=False)
    add_budget_options(g)
    batch.set_defaults(handler=run_batch_command)


def _check(args: argparse.Namespace) -> None:
    check_input_file("INPUT", args.input)
    paths = [args.input.resolve(), args.output.resolve()]
    if args.events_out is not None:
        paths.append(args.events_out.resolve())
    if len(set(paths)) < len(paths):
        raise CliError("argument --output: INPUT, OUTPUT and --events-out must be three different files")
    check_output_file("--output", args.output)
    if args.events_out is not None:
        check_output_file("--events-out", args.events_out)
    _check_events_format(args)
    _check_backend(args)


def _check_events_format(args: argparse.Namespace) -> None:
    """``--events-format ftpo`` needs ``--events-out``; the ``--ftpo-*`` flags need ``--events-format ftpo``."""
    if args.events_format == "ftpo" and args.events_out is None:
        raise CliError("argument --events-format: ftpo records are written to --events-out PATH; give it")
    for flag in ("--ftpo-min-p", "--ftpo-max-chosen"):
        if getattr(args, dest(flag)) is not None and args.events_format != "ftpo":
            raise CliError(f"argument {flag}: only applies with --events-format ftpo")


def _ftpo_settings(args: argparse.Namespace) -> FtpoSettings | None:
    if args.events_format != "ftpo":
        return None
    min_p = DEFAULT_MIN_P if args.ftpo_min_p is None else args.ftpo_min_p
    max_chosen = DEFAULT_MAX_CHOSEN if args.ftpo_max_chosen is None else args.ftpo_max_chosen
    return FtpoSettings(min_p, max_chosen)


def _check_backend(args: argparse.Namespace) -> None:
    check_remote_flags(args, {"--model": args.model is not None})
    if args.remote_url is not None:
        return
    if args.backend in ONE_AT_A_TIME and args.concurrency not in (None, 1):
        raise CliError(
            f"argument --concurrency: --backend {args.backend} runs one sequence at a time, got {args.concurrency}; "
            "use the llama.cpp backend or --remote-url for concurrency"
        )
    if (args.concurrency or 0) > MAX_LOCAL_CONCURRENCY:
        raise CliError(
            f"argument --concurrency: llama.cpp decodes at most {MAX_LOCAL_CONCURRENCY} sequences together, "
            f"got {args.concurrency}"
        )


def _concurrency(args: argparse.Namespace) -> int:
    """Sequences in flight: ``--concurrency``, else 8 (1 on the transformers backend, which does not batch)."""
    if args.concurrency is not None:
        return args.concurrency
    return 1 if args.remote_url is None and args.backend in ONE_AT_A_TIME else DEFAULT_CONCURRENCY


@contextmanager
def _open_providers(args: argparse.Namespace) -> Iterator[list]:
    """One provider per sequence in flight; closed (the batched context, the HTTP client) on leaving."""
    n = _concurrency(args)
    with ExitStack() as stack:
        if args.remote_url is None and n > 1:
            batched = load_batched(args, n)
            stack.callback(batched.close)
            yield [batched.provider() for _ in range(n)]
            return
        providers = _remote_providers(args, n) if args.remote_url is not None else [load_provider(args)]
        for provider in providers:
            close = getattr(provider, "close", None)
            if close is not None:
                stack.callback(close)
        yield providers


def _remote_providers(args: argparse.Namespace, n: int) -> list:
    base = open_remote(args, args.api_key, "--api-key")
    return [base] + [base.spawn() for _ in range(n - 1)]


def _flag_of(args: argparse.Namespace, path: Path | None) -> str:
    """``"argument --output: "`` when ``path`` is the file one of the arguments named, else ``""``."""
    if path is None:
        return ""
    named = [("INPUT", args.input), ("--output", args.output), ("--events-out", args.events_out)]
    for flag, given_path in named:
        if given_path is not None and given_path.resolve() == path.resolve():
            return f"argument {flag}: "
    return ""


def run_batch_command(args: argparse.Namespace) -> int:
    """The ``batch`` command: check the arguments, load the model(s), run what is left."""
    from backtrack_sampler.batch import BatchDefaults, BatchError, SettingsError, run_batch

    _check(args)
    defaults = BatchDefaults(
        max_tokens=args.max_tokens,
        seed=args.seed,
        bans=tuple(merged_bans(args)),
        strategy=args.strategy,
        exempt_prompt_terms=bool(args.exempt_prompt_terms),
        ban_scope=args.ban_scope,
        raw=args.raw,
    )
    rewinds = budget(args)
    try:
        with _open_providers(args) as providers:
            # Sampling flags left out take the model's recommended values, else llama.cpp's defaults.
            sampling = sampling_settings(args, recommended_sampling(providers[0]))
            defaults = dataclasses.replace(defaults, **sampling)
            summary = run_batch(
                args.input,
                args.output,
                providers,
                defaults,
                events_path=args.events_out,
                budget=rewinds,
                progress=None if args.no_progress else sys.stderr,
                ftpo=_ftpo_settings(args),
            )
    except BatchError as exc:
        print(f"error: {_flag_of(args, exc.path)}{one_line(exc)}", file=sys.stderr)
        return EXIT_USAGE if isinstance(exc, SettingsError) else EXIT_FAILED
    except KeyboardInterrupt:
        print("\ninterrupted: run the same command again to finish the rest", file=sys.stderr)
        return EXIT_INTERRUPTED
    if not args.no_progress:
        print(
            f"{summary.ran} lines answered now, {summary.done_before} before; {summary.errors} errors; "
            f"{summary.pairs} {'FTPO records' if args.events_format == 'ftpo' else 'preference pairs'}",
            file=sys.stderr,
        )
    return 0
