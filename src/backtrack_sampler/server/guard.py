"""The checks made on every request before it is routed, in the order they run.

1. **Host.** The ``Host`` header must name one of ``ServerSettings.allowed_hosts``
   (``"*"``: any); otherwise 403 ``host_not_allowed``. A web page cannot then
   drive a server on this machine through a DNS name it rebinds to 127.0.0.1
   (the browser would send that name). A request without ``Host`` (HTTP/1.0)
   cannot come from such a page and is let through.
2. **API key.** With an API key set, every path but ``/health``, ``/`` and
   ``/static/...`` needs it, as ``Authorization: Bearer <key>`` (OpenAI's
   clients, KoboldCpp's) or ``x-api-key: <key>`` (TabbyAPI's, text-generation-webui's;
   either one may be right): 401 otherwise, before the body is read, so a keyless
   client learns nothing from how its body is parsed.
3. **Body size.** A ``Content-Length`` over ``max_body_bytes`` is answered 413
   at once; a body sent without one (chunked) is counted as it arrives and
   answered 413 when it passes the limit. The body is read here, then handed
   to the app, which would read it whole anyway before parsing it as JSON.
4. **Body time.** The whole body must arrive within ``body_timeout`` seconds
   of the end of the headers; a client that sends it slower (or stops) is
   answered 408.

It is a plain ASGI middleware: its errors are sent from here (the app's
exception handlers run after it), with the same OpenAI error body. Each of
them closes the connection (``Connection: close``): the rest of a body it
did not read is not worth waiting for. (The time to send the headers is
bounded below the app, in ``http11``.)
"""

from __future__ import annotations

import asyncio
import hmac

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from backtrack_sampler.server.errors import APIError, error_response, short_repr
from backtrack_sampler.server.settings import ServerSettings

PUBLIC_PATHS = frozenset({"/", "/health"})
"""The paths answered without the API key (with ``/static/...``: the playground's files)."""


class RequestGuard:
    """Check ``Host``, the API key and the body size of every HTTP request to ``app`` (see the module)."""

    def __init__(self, app: ASGIApp, settings: ServerSettings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        try:
            self.check_host(headers)
            self.check_api_key(scope["path"], headers)
            body = await self.read_body(headers, receive)
        except APIError as error:
            await error_response(error, {"Connection": "close"})(scope, receive, send)
            return
        if body is not None:  # None: the client went away while sending it
            await self.app(scope, _replay(body, receive), send)

    def check_host(self, headers: Headers) -> None:
        host = headers.get("host")
        if host is None or self.settings.host_allowed(host):
            return
        allowed = ", ".join(self.settings.allowed_hosts)
        raise APIError(
            f"host {short_repr(host)} is not allowed; this server answers to {allowed} "
            "(serve --allowed-host NAME adds a name)",
            status=403,
            code="host_not_allowed",
        )

    def check_api_key(self, path: str, headers: Headers) -> None:
        key = self.settings.api_key
        if key is None or path in PUBLIC_PATHS or path.startswith("/static/"):
            return
        authorization = headers.get("authorization")
        api_key = headers.get("x-api-key")
        if authorization is None and api_key is None:
            raise APIError(
                "missing API key: send 'Authorization: Bearer <key>' or 'x-api-key: <key>'",
                status=401,
                code="invalid_api_key",
            )
        scheme, _, token = (authorization or "").partition(" ")
        bearer = scheme.lower() == "bearer" and _same(token.strip(), key)
        if not (bearer or (api_key is not None and _same(api_key.strip(), key))):
            raise APIError("invalid API key", status=401, code="invalid_api_key")

    async def read_body(self, headers: Headers, receive: Receive) -> bytes | None:
        """The whole body, at most ``max_body_bytes`` of it (413 beyond), within ``body_timeout`` (408 beyond).

        ``None`` if the client went away.
        """
        limit = self.settings.max_body_bytes
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > limit:
            raise _too_large(limit, f"Content-Length is {length}")
        timeout = self.settings.body_timeout
        deadline = asyncio.get_running_loop().time() + timeout
        chunks, size = [], 0
        while True:
            try:
                message = await asyncio.wait_for(receive(), deadline - asyncio.get_running_loop().time())
            except asyncio.TimeoutError:
                raise APIError(
                    f"the request body did not arrive within {timeout:g} s of the headers "
                    f"({size} bytes came; serve --body-timeout)",
                    status=408,
                    code="request_timeout",
                ) from None
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise _too_large(limit, f"more than {limit} bytes were sent")
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


def _same(given: str, key: str) -> bool:
    """``given`` (a header's value, which Starlette decodes as Latin-1) is the key, in constant time."""
    return hmac.compare_digest(given.encode("latin-1"), key.encode())


def _too_large(limit: int, detail: str) -> APIError:
    return APIError(
        f"the request body is too large: this server accepts at most {limit} bytes ({detail})",
        status=413,
        code="request_too_large",
    )


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that gives ``body`` as one message, then waits as ``receive`` does (for the disconnect)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay
