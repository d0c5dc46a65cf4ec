"""The HTTP/1.1 layer under the app: uvicorn's h11 protocol, bounded, with every error in the JSON body.

``serve`` runs the app with ``uvicorn_options``, which pick this protocol
(never httptools); it closes what uvicorn's own protocols leave open:

- **Head size.** A request line and headers over ``max_header_bytes`` together
  are answered 431 (h11's own limit applies only to a head still incomplete,
  httptools has none).
- **Head time.** The head must be complete within ``header_timeout`` seconds of
  the connection's opening, or of the end of the previous response on a
  kept-alive connection. A client that sent part of a head by then is answered
  408; a connection that sent nothing is closed silently, as uvicorn closes an
  idle kept-alive one. A connection that dribbles its head a byte at a time is
  held no longer than this.
- **Malformed heads.** What h11 refuses (two different ``Content-Length``,
  ``Transfer-Encoding: identity, chunked``, a broken request line) is answered
  with the JSON error body every other error carries (``errors.error_body``),
  not uvicorn's plain text, with the status h11 suggests: 400, 431 for a head
  too large, 501 for a transfer coding other than ``chunked``. The connection
  is then closed.

The time to send the body is bounded in the app (``guard.RequestGuard``,
``ServerSettings.body_timeout``), where the request is known.

This subclasses uvicorn's ``H11Protocol`` and relies on its internals (``conn``,
``cycle``, ``send_400_response``, ``on_response_complete``);
``tests/test_server_http.py`` exercises each on a real socket, so a uvicorn
that changes them fails there.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import h11
from uvicorn.config import Config
from uvicorn.protocols.http.h11_impl import H11Protocol

from backtrack_sampler.core.checks import check_number
from backtrack_sampler.server.errors import APIError
from backtrack_sampler.server.settings import DEFAULT_HEADER_TIMEOUT, DEFAULT_MAX_HEADER_BYTES, MIN_HEADER_BYTES

logger = logging.getLogger("backtrack_sampler.server")

_CODES = {400: "invalid_http_request", 408: "request_timeout", 431: "header_too_large", 501: "not_implemented"}


class _Connection(h11.Connection):
    """An h11 connection that keeps the protocol error it raised (uvicorn's handler drops it)."""

    last_error: h11.RemoteProtocolError | None = None

    def next_event(self) -> Any:
        try:
            return super().next_event()
        except h11.RemoteProtocolError as exc:
            self.last_error = exc
            raise


class BoundedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline on each request's head and JSON errors (see the module).

    ``protocol_with`` makes a subclass carrying the ``header_timeout`` to use.
    """

    header_timeout: float = DEFAULT_HEADER_TIMEOUT

    def __init__(self, config: Config, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)
        self.max_header_bytes = config.h11_max_incomplete_event_size or DEFAULT_MAX_HEADER_BYTES
        self.conn = _Connection(h11.SERVER, self.max_header_bytes)
        self._head_timer: asyncio.TimerHandle | None = None
        self._cycle_waited_after: object = None  # the cycle answered before the head now awaited

    # -- the deadline on the head --------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._await_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.conn.their_state is h11.IDLE and self._head_size(data) > self.max_header_bytes:
            self._stop_head_timer()
            self._refuse(APIError(self._too_large_message(), status=431, code=_CODES[431]))
            return
        super().data_received(data)
        if self.cycle is not self._cycle_waited_after:  # a new request's head has arrived
            self._stop_head_timer()

    def _head_size(self, data: bytes) -> int:
        """The size of the head being received, as far as it came (h11 bounds only a head still incomplete)."""
        pending = self.conn.trailing_data[0] + data
        end = pending.find(b"\r\n\r\n")
        return len(pending) if end < 0 else end + 4

    def _too_large_message(self) -> str:
        return (
            f"the request's headers are larger than this server accepts ({self.max_header_bytes} bytes "
            "for the request line and headers together; serve --max-header-bytes)"
        )

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # The next head is due within header_timeout; so is the rest of a body the app did not read.
        if not self.transport.is_closing() and self.cycle is not None and self.cycle.response_complete:
            self._await_head()

    def _await_head(self) -> None:
        self._stop_head_timer()
        self._cycle_waited_after = self.cycle
        self._head_timer = self.loop.call_later(self.header_timeout, self._head_timed_out)

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing():
            return
        started = bool(self.conn.trailing_data[0])
        if started and self.conn.their_state is h11.IDLE and self.conn.our_state is h11.IDLE:
            message = f"the request's headers did not arrive within {self.header_timeout:g} s (serve --header-timeout)"
            self._refuse(APIError(message, status=408, code=_CODES[408]))
        else:  # nothing of a request came (an idle connection), or a body the app did not read
            self.transport.close()

    # -- errors of the HTTP layer, in the JSON error body -------------------------------------------
    def send_400_response(self, msg: str) -> None:
        """Answer a request h11 refused (uvicorn's name; the status is h11's hint), then close."""
        error = self.conn.last_error
        status = error.error_status_hint if error is not None else 400
        if status == 431:
            message = self._too_large_message()
        else:
            message = f"invalid HTTP request: {error if error is not None else msg}"
        self._refuse(APIError(message, status=status, code=_CODES.get(status)))

    def _refuse(self, error: APIError) -> None:
        """Answer ``error`` (unless a response is under way) and close; a request being served is cancelled."""
        logger.warning("refused an HTTP request: %s", error.message)
        if self.cycle is not None and not self.cycle.response_complete:  # a body that went bad mid-request
            self.cycle.disconnected = True
            self.cycle.message_event.set()
        self._send_error(error)
        self.transport.close()

    def _send_error(self, error: APIError) -> None:
        """Write ``error`` as a whole response, if no response is under way; the caller closes."""
        if self.conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return
        body = json.dumps(error.body()).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]
        try:
            for event in (h11.Response(status_code=error.status, headers=headers), h11.Data(body), h11.EndOfMessage()):
                self.transport.write(self.conn.send(event))
        except h11.LocalProtocolError:  # pragma: no cover - the states checked above allow a response
            pass


def protocol_with(header_timeout: float) -> type[BoundedH11Protocol]:
    """``BoundedH11Protocol`` with this ``header_timeout`` (uvicorn builds protocols from a class)."""
    check_number("header_timeout", header_timeout, low=0, low_open=True)
    return type("BoundedH11Protocol", (BoundedH11Protocol,), {"header_timeout": float(header_timeout)})


def uvicorn_options(
    header_timeout: float = DEFAULT_HEADER_TIMEOUT, max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES
) -> dict[str, Any]:
    """The options of ``uvicorn.run`` (or ``uvicorn.Config``) that serve the app as the module says.

    h11 with this module's protocol, the head bounded to ``max_header_bytes`` and
    ``header_timeout`` seconds, and no WebSocket (the app has no WebSocket route).

    Example:
        >>> uvicorn.run(app, host="127.0.0.1", port=8000, **uvicorn_options(header_timeout=5))  # doctest: +SKIP
    """
    if isinstance(max_header_bytes, bool) or not isinstance(max_header_bytes, int):
        raise TypeError(f"max_header_bytes must be an integer, got {max_header_bytes!r}")
    if max_header_bytes < MIN_HEADER_BYTES:
        raise ValueError(f"max_header_bytes must be >= {MIN_HEADER_BYTES}, got {max_header_bytes}")
    return {"http": protocol_with(header_timeout), "ws": "none", "h11_max_incomplete_event_size": max_header_bytes}
