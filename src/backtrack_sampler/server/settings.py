"""The limits a server enforces on every request, fixed when the app is created."""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass, field

from backtrack_sampler.core.checks import check_int, check_number, check_optional_int

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]")
"""The names of this machine a local client sends in ``Host``; the default of ``allowed_hosts``."""

# The bounds of the HTTP layer under the app (``http11``; ``serve`` flags); the app's own are ``ServerSettings``.
DEFAULT_HEADER_TIMEOUT = 10.0
"""Seconds a client has to send a request's head (request line and headers): ``serve --header-timeout``."""
DEFAULT_MAX_HEADER_BYTES = 16 * 1024
"""The largest head (request line and headers together), in bytes (h11's default): ``serve --max-header-bytes``."""
MIN_HEADER_BYTES = 1024


@dataclass(frozen=True)
class ServerSettings:
    """Settings of one server; every limit answers 400 when a request exceeds it (413 for the body size).

    Args:
        model_name: the id the server lists in ``/v1/models`` and puts in every response.
        api_key: when set, every ``/v1/...`` request needs ``Authorization: Bearer <api_key>``.
        allowed_hosts: the host names (or IP addresses, IPv6 in brackets) a request's ``Host``
            header may name, without the port; ``"*"`` allows any. Others are answered 403:
            this stops a web page from driving a local server through a DNS name rebound to it.
        max_prompt_tokens: the most tokens a prompt may hold (``None``: the model's context minus one).
        max_tokens_limit: the largest ``max_tokens`` a request may ask for; also the default for
            chat requests that give none (generation still stops at the model's context).
        max_bans: the most entries in ``banned_strings`` and ``banned_regex`` together.
        max_logprobs: the largest ``logprobs`` (completions) or ``top_logprobs`` (chat).
        max_n: the largest ``n`` (the choices of a request run side by side on a batched model, else in turn).
        max_choices: the most choices in one request: prompts times ``n``.
        max_stop: the most stop strings.
        max_regex_length: the longest pattern accepted in ``banned_regex``.
        max_rewinds_limit: the largest ``max_rewinds`` (rewinds in one generation) a request may ask
            for; it also caps the engine's default (twice ``max_tokens``, at least 64) for one that gives none.
        rewinds_per_position_limit: the largest ``rewinds_per_position`` a request may ask for
            (a request that gives none gets 16, or this limit when lower).
        max_body_bytes: the largest request body, in bytes; a larger one is answered 413 before it is
            parsed.
        body_timeout: the most seconds a client may take to send a request's body, counted from the
            end of its headers; a slower one is answered 408 and the connection closed.
    """

    model_name: str
    api_key: str | None = None
    allowed_hosts: tuple[str, ...] = LOOPBACK_HOSTS
    # ``minimum`` marks a limit: ``serve`` offers it as ``--max-...`` (help from the Args above).
    max_prompt_tokens: int | None = field(default=None, metadata={"minimum": 1})
    max_tokens_limit: int = field(default=4096, metadata={"minimum": 1})
    max_bans: int = field(default=1000, metadata={"minimum": 0})
    max_logprobs: int = field(default=20, metadata={"minimum": 0})
    max_n: int = field(default=8, metadata={"minimum": 1})
    max_choices: int = field(default=64, metadata={"minimum": 1})
    max_stop: int = field(default=16, metadata={"minimum": 0})
    max_regex_length: int = field(default=500, metadata={"minimum": 1})
    max_rewinds_limit: int = field(default=1024, metadata={"minimum": 0})
    rewinds_per_position_limit: int = field(default=64, metadata={"minimum": 0})
    max_body_bytes: int = field(default=4 * 1024 * 1024, metadata={"minimum": 1024})
    body_timeout: float = 60.0

    def __post_init__(self) -> None:
        if not isinstance(self.model_name, str) or not self.model_name:
            raise ValueError(f"model_name must be a non-empty string, got {self.model_name!r}")
        if self.api_key is not None and (not isinstance(self.api_key, str) or not self.api_key):
            raise ValueError("api_key must be a non-empty string or None, got an empty value")
        hosts = self.allowed_hosts
        if isinstance(hosts, str) or not all(isinstance(h, str) and h.strip() for h in hosts):
            raise ValueError(f"allowed_hosts must be a list of host names, got {hosts!r}")
        object.__setattr__(self, "allowed_hosts", tuple(normalize_host(h) for h in hosts))
        check_optional_int("max_prompt_tokens", self.max_prompt_tokens, low=1)
        for name in ("max_tokens_limit", "max_n", "max_choices", "max_regex_length"):
            check_int(name, getattr(self, name), low=1)
        for name in ("max_bans", "max_logprobs", "max_stop", "max_rewinds_limit", "rewinds_per_position_limit"):
            check_int(name, getattr(self, name))
        check_int("max_body_bytes", self.max_body_bytes, low=1024)
        check_number("body_timeout", self.body_timeout, low=0, low_open=True)

    def host_allowed(self, host: str) -> bool:
        """Whether a request whose ``Host`` header is ``host`` (port included or not) may be served."""
        return "*" in self.allowed_hosts or normalize_host(host) in self.allowed_hosts


def normalize_host(host: str) -> str:
    """``host`` without its port or a trailing dot, in lower case: ``"LocalHost.:8000"`` -> ``"localhost"``.

    IPv6 addresses keep their brackets (``"[::1]:8000"`` -> ``"[::1]"``); a bare IPv6 address gains them.
    """
    host = host.strip().lower()
    if host.startswith("["):
        return host[: host.index("]") + 1] if "]" in host else host
    if host.count(":") > 1:  # a bare IPv6 address (as --host takes it)
        return f"[{host}]"
    return host.partition(":")[0].rstrip(".")


def hosts_for_bind(bind: str) -> tuple[str, ...]:
    """The ``allowed_hosts`` of a server bound to ``bind``: the names a client may reach it by.

    Bound to a loopback address: ``LOOPBACK_HOSTS``. Bound to every address
    (``0.0.0.0``, ``::``): those and this machine's host name (clients that use
    another name or an address add it). Bound to one address or name: that one.

    Example:
        >>> hosts_for_bind("127.0.0.1")
        ('127.0.0.1', 'localhost', '[::1]')
        >>> hosts_for_bind("192.168.1.5")
        ('192.168.1.5',)
    """
    host = bind.strip().strip("[]").lower()
    if host in ("", "0.0.0.0", "::"):
        return (*LOOPBACK_HOSTS, normalize_host(socket.gethostname()))
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:  # a name
        loopback = host == "localhost"
    return LOOPBACK_HOSTS if loopback else (normalize_host(host),)
