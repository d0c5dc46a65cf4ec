"""Below the app: the HTTP layer ``serve`` runs (``server.http11`` and the guard's body deadline), on a socket.

uvicorn on 127.0.0.1 with the scripted model, spoken to in raw bytes: malformed
and ambiguous heads, a head too large, clients too slow to send their head or
their body. Each gets the JSON error body every other error has, and a slow
client is let go after the configured timeout. The timeouts are set to
``TIMEOUT`` (1 s); a test only asserts that the server acted within
``PATIENCE`` (ten times that), never how fast.
"""

from __future__ import annotations

import json
import socket
import threading
import time

import pytest

from server_support import LiveServer, make_app, scripted_provider

pytest.importorskip("fastapi", reason="FastAPI is not installed (extra: server)")
uvicorn = pytest.importorskip("uvicorn", reason="uvicorn is not installed (extra: server)")

TIMEOUT = 1.0  # seconds: the header and body timeouts of the test server
PATIENCE = 10 * TIMEOUT  # how long a test waits for the server to act on them
MAX_HEADER_BYTES = 8192
HEAD = b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
BODY = b'{"prompt": "Hi", "max_tokens": 2}'


class BoundedServer(LiveServer):
    """``LiveServer`` with the uvicorn options ``serve`` uses (``http11.uvicorn_options``)."""

    def __init__(self, app, **http) -> None:
        from backtrack_sampler.server.http11 import uvicorn_options

        super().__init__(app)
        options = uvicorn_options(**http)
        config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="critical", lifespan="off", **options)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="uvicorn-test", daemon=True)


@pytest.fixture(scope="module")
def server():
    app = make_app(scripted_provider(), body_timeout=TIMEOUT)
    with BoundedServer(app, header_timeout=TIMEOUT, max_header_bytes=MAX_HEADER_BYTES) as live:
        yield live


def connect(server) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=PATIENCE)


def read_all(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (a timeout fails the test)."""
    chunks = []
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:  # closed with our unread bytes in its buffer: what came is all there is
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def exchange(server, data: bytes) -> bytes:
    with connect(server) as sock:
        sock.sendall(data)
        return read_all(sock)


def parse(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    """The status, headers (lower-case names) and body of the one response in ``raw``."""
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), {k.lower(): v for k, v in headers.items()}, body


def assert_json_error(raw: bytes, status: int, code: str) -> dict:
    got, headers, body = parse(raw)
    assert got == status, raw
    assert headers["content-type"] == "application/json" and headers["connection"] == "close", headers
    assert int(headers["content-length"]) == len(body)
    error = json.loads(body)["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["code"] == code, error
    assert error["type"] == "invalid_request_error" and error["message"], error
    return error


def request(*headers: bytes, body: bytes = BODY) -> bytes:
    return HEAD + b"".join(h + b"\r\n" for h in headers) + b"\r\n" + body


MALFORMED = [
    ("two different Content-Length", request(b"Content-Length: 33", b"Content-Length: 34"), 400, "Content-Length"),
    ("Transfer-Encoding: identity, chunked", request(b"Transfer-Encoding: identity, chunked"), 501, "chunked"),
    ("Transfer-Encoding: gzip", request(b"Transfer-Encoding: gzip"), 501, "chunked"),
    ("two Transfer-Encoding", request(b"Transfer-Encoding: chunked", b"Transfer-Encoding: chunked"), 501, "multiple"),
    ("a request line that is not HTTP", b"GARBAGE\r\n\r\n", 400, ""),
    ("a header without a colon", request(b"Content-Length: 33", b"no colon here"), 400, ""),
    ("a negative Content-Length", request(b"Content-Length: -1"), 400, "Content-Length"),
    ("a broken chunk size", request(b"Transfer-Encoding: chunked", body=b"zz\r\n{}\r\n0\r\n\r\n"), 400, ""),
]


@pytest.mark.parametrize(("raw", "status", "words"), [m[1:] for m in MALFORMED], ids=[m[0] for m in MALFORMED])
def test_a_malformed_request_gets_the_json_error_body(server, raw, status, words):
    code = "not_implemented" if status == 501 else "invalid_http_request"
    error = assert_json_error(exchange(server, raw), status, code)
    assert error["message"].startswith("invalid HTTP request: ") and words in error["message"], error


def test_a_head_over_the_limit_is_431(server):
    raw = exchange(server, request(b"X-Padding: " + b"a" * 100_000, b"Content-Length: 33"))
    error = assert_json_error(raw, 431, "header_too_large")
    assert str(MAX_HEADER_BYTES) in error["message"] and "--max-header-bytes" in error["message"]


def test_a_head_within_the_limit_is_served(server):
    padding = b"X-Padding: " + b"a" * (MAX_HEADER_BYTES - 1024)
    status, _, body = parse(exchange(server, request(padding, b"Content-Length: 33", b"Connection: close")))
    assert status == 200 and json.loads(body)["usage"]["completion_tokens"] == 2


def dribble(sock: socket.socket, data: bytes, stop: threading.Event) -> None:
    """Send ``data`` a byte every tenth of a second, until it is all sent, ``stop`` is set or the server closes."""
    for i in range(len(data)):
        if stop.wait(0.1):
            return
        try:
            sock.sendall(data[i : i + 1])
        except OSError:
            return


def test_a_head_sent_too_slowly_is_answered_408_and_closed(server):
    slow_head = request(b"Content-Length: 33") * 10  # a head that would take 20 s at this pace
    stop = threading.Event()
    with connect(server) as sock:
        sender = threading.Thread(target=dribble, args=(sock, slow_head, stop), daemon=True)
        started = time.monotonic()
        sender.start()
        raw = read_all(sock)
        waited = time.monotonic() - started
        stop.set()
    error = assert_json_error(raw, 408, "request_timeout")
    assert "headers" in error["message"] and "--header-timeout" in error["message"]
    assert waited < PATIENCE


def test_a_connection_that_sends_nothing_is_closed(server):
    started = time.monotonic()
    with connect(server) as sock:
        assert read_all(sock) == b""
    assert time.monotonic() - started < PATIENCE


def test_a_body_sent_too_slowly_is_answered_408_and_closed(server):
    started = time.monotonic()
    with connect(server) as sock:
        sock.sendall(request(b"Content-Length: 33", body=BODY[:10]))  # 23 bytes never come
        raw = read_all(sock)
    error = assert_json_error(raw, 408, "request_timeout")
    assert "body" in error["message"] and "10 bytes came" in error["message"] and "--body-timeout" in error["message"]
    assert time.monotonic() - started < PATIENCE


def test_a_chunked_body_that_stops_is_answered_408(server):
    with connect(server) as sock:
        sock.sendall(request(b"Transfer-Encoding: chunked", body=b'5\r\n{"pro\r\n'))
        assert_json_error(read_all(sock), 408, "request_timeout")


def test_a_kept_alive_connection_serves_requests_one_after_another(server):
    with connect(server) as sock:
        for _ in range(3):
            sock.sendall(request(b"Content-Length: 33"))
            status, headers, body = read_response(sock)
            assert status == 200 and json.loads(body)["usage"]["completion_tokens"] == 2
        # Idle after its last response: let go within the header timeout, silently.
        started = time.monotonic()
        assert read_all(sock) == b""
        assert time.monotonic() - started < PATIENCE


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One response with a Content-Length, read from a connection that stays open."""
    raw = b""
    while b"\r\n\r\n" not in raw:
        raw += sock.recv(65536)
    status, headers, body = parse(raw)
    while len(body) < int(headers["content-length"]):
        body += sock.recv(65536)
    return status, headers, body


def test_the_guard_refuses_and_closes_before_reading_a_large_body(server):
    with connect(server) as sock:
        sock.sendall(request(b"Content-Length: 999999999", body=b"{"))
        status, headers, body = parse(read_all(sock))
    assert status == 413 and headers["connection"] == "close" and json.loads(body)["error"]["code"]


def test_serve_passes_its_http_bounds_to_uvicorn(monkeypatch, capsys):
    """``serve --header-timeout --body-timeout --max-header-bytes`` reach uvicorn and the app (no model loaded)."""
    from backtrack_sampler import cli
    from backtrack_sampler.cli import serve

    served = {}
    monkeypatch.setattr(serve, "load_provider", lambda args: scripted_provider())
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: served.update(app=app, **options))
    flags = ["--header-timeout", "2.5", "--body-timeout", "7", "--max-header-bytes", "4096"]
    assert cli.main(["serve", "--parallel", "1", "--saved-prefixes", "0", *flags]) == 0
    assert served["http"].header_timeout == 2.5 and served["h11_max_incomplete_event_size"] == 4096
    assert served["app"].state.settings.body_timeout == 7
    assert served["ws"] == "none"


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--header-timeout", "0", "must be a number of seconds > 0"),
        ("--body-timeout", "-1", "must be a number of seconds > 0"),
        ("--body-timeout", "inf", "must be a finite number"),
        ("--max-header-bytes", "100", "must be an integer >= 1024"),
    ],
)
def test_bad_http_bounds_are_one_line_errors(capsys, flag, value, message):
    from backtrack_sampler import cli

    assert cli.main(["serve", flag, value]) == 2
    assert f"argument {flag}: {message}" in capsys.readouterr().err


def test_the_defaults_are_the_documented_ones():
    from backtrack_sampler.server.http11 import BoundedH11Protocol, uvicorn_options
    from backtrack_sampler.server.settings import ServerSettings

    options = uvicorn_options()
    assert BoundedH11Protocol.header_timeout == options["http"].header_timeout == 10.0
    assert options["h11_max_incomplete_event_size"] == 16 * 1024
    assert ServerSettings("m").body_timeout == 60.0
    with pytest.raises(ValueError, match="body_timeout"):
        ServerSettings("m", body_timeout=0)
