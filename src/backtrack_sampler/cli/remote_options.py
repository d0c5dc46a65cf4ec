"""The remote-engine flags that ``batch`` and ``serve`` share, their checks, and opening the engine.

``--remote-url`` (checked as an http(s) URL when parsed), ``--remote-model``,
``--tokenizer``, ``--remote-mode`` and ``--chunk-size`` are written once
(``add_remote_options``); ``check_remote_flags`` refuses a remote run that
lacks ``--remote-model`` or ``--tokenizer``, a local-model flag given with
``--remote-url``, and a remote flag given without it; ``open_remote``
connects, asking the engine for its context length at once, so an engine out
of reach or a model it does not serve is one error line before anything runs.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from backtrack_sampler.cli.options import CliError, dest, int_at_least, model_file, non_empty, one_line

if TYPE_CHECKING:
    from backtrack_sampler.provider.remote import OpenAICompatibleProvider

DEFAULT_REMOTE_MODE = "auto"
DEFAULT_CHUNK_SIZE = 64
REMOTE_FLAGS = ("--remote-model", "--tokenizer", "--remote-mode", "--chunk-size")
"""The flags that only apply with ``--remote-url`` (their default is ``None``, so a given one is seen)."""


def remote_url(text: str) -> str:
    """``--remote-url``: an ``http://`` or ``https://`` URL with a host (``/v1`` optional)."""
    text = non_empty(text)
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - raises ValueError on a port that is not a number in [0, 65535]
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise argparse.ArgumentTypeError(f"must be an http:// or https:// URL with a host, got {text!r}")
    return text


def add_remote_options(g: argparse._ArgumentGroup) -> None:
    """``--remote-url``, ``--remote-model``, ``--tokenizer``, ``--remote-mode`` and ``--chunk-size``."""
    g.add_argument(
        "--remote-url",
        type=remote_url,
        metavar="URL",
        help="an OpenAI-compatible engine (vLLM, SGLang, backtrack-sampler serve), e.g. http://127.0.0.1:8000/v1",
    )
    g.add_argument("--remote-model", type=non_empty, metavar="NAME", help="the engine's served model name")
    g.add_argument(
        "--tokenizer",
        type=model_file,
        metavar="PATH",
        help="the served model's .gguf or HF directory (token ids are sent, never text)",
    )
    g.add_argument(
        "--remote-mode",
        choices=("auto", "chunk", "step"),
        metavar="{auto,chunk,step}",
        help=(
            "chunk: the engine samples chunks the strategy checks; step: one token per request "
            f"(default: {DEFAULT_REMOTE_MODE})"
        ),
    )
    g.add_argument(
        "--chunk-size",
        type=int_at_least(1),
        metavar="N",
        help=f"the most tokens per chunk request (default: {DEFAULT_CHUNK_SIZE})",
    )


def check_remote_flags(args: argparse.Namespace, local_flags: dict[str, bool]) -> None:
    """With ``--remote-url``: ``--remote-model``, ``--tokenizer``, none of ``local_flags``; without: no remote flag.

    Args:
        args: the parsed arguments.
        local_flags: ``{flag: whether the user gave it}`` for the command's flags
            that only apply to a local model.

    Raises:
        CliError: one line naming the flag (and its value where it has one).
    """
    if args.remote_url is None:
        for flag in REMOTE_FLAGS:
            if getattr(args, dest(flag)) is not None:
                raise CliError(f"argument {flag}: only applies with --remote-url")
        return
    for flag in ("--remote-model", "--tokenizer"):
        if getattr(args, dest(flag)) is None:
            raise CliError(f"argument {flag}: --remote-url needs {flag} (the engine's model; token ids are sent)")
    for flag, given in local_flags.items():
        if given:
            raise CliError(f"argument {flag}: applies to a local model, not with --remote-url {args.remote_url}")


def open_remote(args: argparse.Namespace, api_key: str | None, key_flag: str) -> OpenAICompatibleProvider:
    """The provider on ``--remote-url``, its context length asked of the engine now.

    Args:
        args: the parsed arguments.
        api_key: the engine's bearer token, if any.
        key_flag: the flag that gives it (``batch --api-key``, ``serve --remote-api-key``), for the errors.

    Raises:
        CliError: httpx is missing; the tokenizer cannot be loaded (naming
            ``--tokenizer``); the engine cannot be reached (naming
            ``--remote-url``), refuses the key (naming ``key_flag``) or does
            not serve ``--remote-model``.
    """
    try:
        from backtrack_sampler.provider.remote import OpenAICompatibleProvider, RemoteError
        from backtrack_sampler.provider.remote.tokenizer import load_tokenizer
    except ImportError as exc:
        raise CliError(
            f"--remote-url needs httpx ({exc}); install it with: pip install 'backtrack_sampler[remote]'"
        ) from None
    try:
        tokenizer = load_tokenizer(args.tokenizer)
    except ImportError as exc:
        raise CliError(f"argument --tokenizer: cannot load {str(args.tokenizer)!r}: {exc}") from None
    except (OSError, ValueError, TypeError) as exc:
        raise CliError(f"argument --tokenizer: cannot load {str(args.tokenizer)!r}: {one_line(exc)}") from None
    try:
        provider = OpenAICompatibleProvider(
            args.remote_url,
            args.remote_model,
            api_key=api_key,
            tokenizer=tokenizer,
            mode=args.remote_mode or DEFAULT_REMOTE_MODE,
            chunk_size=args.chunk_size or DEFAULT_CHUNK_SIZE,
        )
    except RemoteError as exc:
        raise CliError(f"argument --remote-url: {one_line(exc)}") from None
    except ValueError as exc:  # the engine lists its models and --remote-model is not among them
        raise CliError(f"argument --remote-model: {one_line(exc)}") from None
    _check_key(provider, key_flag)
    return provider


def _check_key(provider: OpenAICompatibleProvider, key_flag: str) -> None:
    """An engine that refuses our key (401, 403) on ``/models`` is an error now, not at the first request."""
    import httpx

    url = provider.base_url + "/models"
    try:
        status = provider.client.get(url).status_code
    except httpx.TransportError as exc:
        provider.close()
        raise CliError(f"argument --remote-url: cannot reach {url}: {one_line(exc)}") from None
    if status in (401, 403):
        provider.close()
        raise CliError(f"argument {key_flag}: {url} answered {status}: the engine refuses this key (or needs one)")
