"""``backtrack-sampler batch``: the command's arguments and its handler (the work is in ``batch``).

``add_batch_command`` registers the command on the CLI's subparsers; the local
model is loaded the way ``generate`` loads it (``cli.load_provider``), a remote
one through ``OpenAICompatibleProvider``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from backtrack_sampler import cli

API_KEY_ENV = "BACKTRACK_SAMPLER_API_KEY"
EXIT_FAILED = 1

BATCH_EXAMPLES = f"""\
examples:
  backtrack-sampler batch prompts.jsonl -o results.jsonl --max-tokens 200
  backtrack-sampler batch prompts.jsonl -o results.jsonl --slop --ban tapestry --ban-file bans.txt \\
      --events-out pairs.jsonl
  backtrack-sampler batch prompts.jsonl -o results.jsonl --concurrency 16 \\
      --remote-url http://127.0.0.1:8000/v1 --remote-model smollm2 --tokenizer ./SmolLM2.gguf

Each input line is a JSON object: "id" and "prompt" (raw text) or "messages" (chat), and
optionally max_tokens, temperature, seed, top_p, top_k, min_p, banned_strings and
strategy ("antislop", "replace", "json", ... or {{"name": ..., "params": {{...}}}}).
Each output line holds the id, the text, the finish reason and the stats, or an error.
Killed at any moment and started again with the same command, it finishes the rest:
no line lost, none twice. The API key comes from --api-key or ${API_KEY_ENV}.
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
        "--concurrency",
        type=cli._int_at_least(1),
        metavar="N",
        help="sequences in flight (default: 8 with --remote-url; a local model runs 1)",
    )
    batch.add_argument("--no-progress", action="store_true", help="no progress line on stderr")

    g = batch.add_argument_group("local model (default: the embedded SmolLM2 through llama.cpp)")
    cli.add_model_arguments(g)
    g.add_argument("--n-ctx", type=cli._int_at_least(0), default=2048, metavar="N", help="context (default: 2048)")
    g.add_argument("--threads", type=cli._int_at_least(1), metavar="N", help="CPU threads for llama.cpp")

    g = batch.add_argument_group("remote engine (vLLM, SGLang, backtrack-sampler serve)")
    g.add_argument("--remote-url", type=cli._non_empty, metavar="URL", help="e.g. http://127.0.0.1:8000/v1")
    g.add_argument("--remote-model", type=cli._non_empty, metavar="NAME", help="the served model's name")
    g.add_argument(
        "--tokenizer",
        type=cli._model_file,
        metavar="PATH",
        help="the served model's .gguf or HF directory (token ids are sent, never text)",
    )
    g.add_argument(
        "--api-key",
        type=cli._non_empty,
        default=os.environ.get(API_KEY_ENV) or None,
        metavar="KEY",
        help=f"bearer token for the server (default: ${API_KEY_ENV})",
    )
    g.add_argument(
        "--remote-mode",
        choices=("auto", "chunk", "step"),
        default="auto",
        help="chunk: the engine samples chunks the strategy checks; step: one token per request (default: auto)",
    )
    g.add_argument("--chunk-size", type=cli._int_at_least(1), default=64, metavar="N", help="tokens per chunk")

    g = batch.add_argument_group("defaults for lines that do not set them")
    g.add_argument("--max-tokens", type=cli._int_at_least(1), default=256, metavar="N", help="(default: 256)")
    g.add_argument("--temperature", type=cli._float_in(0, None), default=1.0, metavar="T", help="(default: 1.0)")
    g.add_argument("--top-k", type=cli._int_at_least(0), default=50, metavar="K", help="0 disables (default: 50)")
    g.add_argument("--top-p", type=cli._float_in(0, 1, low_open=True), metavar="P", help="in (0, 1]")
    g.add_argument("--min-p", type=cli._float_in(0, 1, high_open=True), metavar="P", help="in [0, 1)")
    g.add_argument("--seed", type=cli._int_at_least(0), metavar="N", help="seed of every line without one")
    g.add_argument("--strategy", choices=("none", "antislop", "replace", "creative", "adaptive", "json"))

    g = batch.add_argument_group("bans for every line (added to each line's banned_strings)")
    g.add_argument("--ban", action="append", default=[], type=cli._non_empty, metavar="PHRASE", help="repeatable")
    g.add_argument("--ban-file", action="append", default=[], type=cli._ban_file, metavar="PATH", help="repeatable")
    g.add_argument("--slop", action="store_true", help="the project's default English slop list (as generate --slop)")
    g.add_argument("--max-rewinds", type=cli._int_at_least(0), metavar="N", help="rewinds per generation")
    g.add_argument("--rewinds-per-position", type=cli._int_at_least(0), metavar="N", help="(default: 16)")
    batch.set_defaults(handler=run_batch_command)


def _check(args: argparse.Namespace) -> None:
    remote = args.remote_url is not None
    if not args.input.is_file():
        raise cli.CliError(f"argument INPUT: file not found: {str(args.input)!r}")
    paths = [args.input.resolve(), args.output.resolve()]
    if args.events_out is not None:
        paths.append(args.events_out.resolve())
    if len(set(paths)) < len(paths):
        raise cli.CliError("argument --output: INPUT, OUTPUT and --events-out must be three different files")
    if remote:
        for flag, value in (("--remote-model", args.remote_model), ("--tokenizer", args.tokenizer)):
            if value is None:
                raise cli.CliError(f"argument {flag}: --remote-url needs {flag}")
        if args.model is not None:
            raise cli.CliError("argument --model: give either --model (local) or --remote-url, not both")
    else:
        for flag in ("--remote-model", "--tokenizer"):
            if getattr(args, cli._dest(flag)) is not None:
                raise cli.CliError(f"argument {flag}: only applies with --remote-url")
        if args.concurrency not in (None, 1):
            raise cli.CliError(
                f"argument --concurrency: a local model runs one sequence at a time, got {args.concurrency}; "
                "use --remote-url for concurrency"
            )


def _providers(args: argparse.Namespace) -> list:
    if args.remote_url is None:
        return [cli.load_provider(args)]
    try:
        from backtrack_sampler.provider.openai_compatible_provider import OpenAICompatibleProvider, RemoteError
    except ImportError as exc:
        raise cli.CliError(
            f"--remote-url needs httpx ({exc}); install it with: pip install 'backtrack_sampler[remote]'"
        ) from None
    try:
        base = OpenAICompatibleProvider(
            args.remote_url,
            args.remote_model,
            api_key=args.api_key,
            tokenizer=args.tokenizer,
            mode=args.remote_mode,
            chunk_size=args.chunk_size,
        )
    except RemoteError as exc:
        raise cli.CliError(f"argument --remote-url: {exc}") from None
    return [base] + [base.spawn() for _ in range((args.concurrency or 8) - 1)]


def run_batch_command(args: argparse.Namespace) -> int:
    """The ``batch`` command: check the arguments, load the model(s), run what is left."""
    from backtrack_sampler.batch import BatchDefaults, BatchError, run_batch
    from backtrack_sampler.core.budget import RewindBudget

    _check(args)
    bans = cli.merged_bans(args)
    defaults = BatchDefaults(
        max_tokens=args.max_tokens,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        min_p=args.min_p,
        seed=args.seed,
        bans=tuple(bans),
        strategy=args.strategy,
    )
    budget = RewindBudget(**cli._given(args, per_position="rewinds_per_position", per_generation="max_rewinds"))
    providers = _providers(args)
    try:
        summary = run_batch(
            args.input,
            args.output,
            providers,
            defaults,
            events_path=args.events_out,
            budget=budget,
            progress=None if args.no_progress else sys.stderr,
        )
    except BatchError as exc:
        print(f"error: {cli._one_line(exc)}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("\ninterrupted: run the same command again to finish the rest", file=sys.stderr)
        return cli.EXIT_INTERRUPTED
    finally:
        for provider in providers:
            close = getattr(provider, "close", None)
            if close is not None:
                close()
    if not args.no_progress:
        print(
            f"{summary.ran} lines answered now, {summary.done_before} before; {summary.errors} errors; "
            f"{summary.pairs} preference pairs",
            file=sys.stderr,
        )
    return 0
