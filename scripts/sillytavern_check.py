"""A real SillyTavern in front of ``backtrack-sampler serve``, driven through its own HTTP routes (not part of CI).

SillyTavern's page builds its requests in the browser; this script computes the
same bodies with SillyTavern's own functions under node
(scripts/sillytavern/client_requests.mjs), posts them to SillyTavern's server
routes (``/api/backends/text-completions/status|generate``,
``/api/backends/kobold/status|generate``, ``/api/tokenizers/remote/...``) with
its CSRF token, as the page does, and looks at what comes back.

Two commands:

``live``: start SillyTavern and ``serve`` (the embedded model) on 127.0.0.1 and
run every Text Completion mode (tabby, koboldcpp, llamacpp, ooba, vllm, generic,
and the KoboldAI API mode) with a ban list, its default seed -1: status,
tokenize, generate (streamed and not), swipes, abort. Prints one row per mode.

``capture``: start SillyTavern against a recording backend instead, and write
what SillyTavern sends to the backend, request by request, as the fixtures of
tests/test_sillytavern_requests.py (tests/fixtures/sillytavern/*.json).

Needs a SillyTavern checkout with its packages installed (``npm install
--omit=dev``) and node. Example::

    python scripts/sillytavern_check.py live --st-dir /tmp/st
    python scripts/sillytavern_check.py capture --st-dir /tmp/st --out tests/fixtures/sillytavern
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
CLIENT_REQUESTS = HERE / "sillytavern" / "client_requests.mjs"

TEXTGEN_MODES = ["tabby", "koboldcpp", "llamacpp", "ooba", "vllm", "generic"]
"""SillyTavern's Text Completion API types; 1.12.6 has no "generic" (an unknown type: its URL stays bare)."""
SWIPE_MODES = {"tabby", "vllm"}
"""The modes whose generate body carries ``n`` (createTextGenGenerationData: TABBY, and vllmParams)."""
API_CURRENT = 6
"""power_user.tokenizer "API (WebUI / koboldcpp)": unquoted ban lines are tokenized by the backend."""

PROMPT = "{{PROMPT}}"
BANNED_STRING = "{{BANNED_STRING}}"
BANNED_WORD = "{{BANNED_WORD}}"
SENTINEL_ID = 990001
"""The id the recording backend gives for BANNED_WORD; the tests put the real ids in its place."""
ABORT_PROMPT = "{{ABORT_PROMPT}}"
BACKEND = "{{BACKEND}}"
"""The backend's address (scheme, host and port) in the fixtures."""
MODEL = "{{MODEL}}"
"""The model id the backend's status calls list (SillyTavern's vLLM mode sends it back)."""
AMOUNT_GEN = 48
"""The "Response (tokens)" slider, set lower than its default (350) for a CPU."""


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float) -> None:
    """Wait until ``url`` answers at all (any status)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=2)
            return
        except httpx.HTTPError:
            time.sleep(0.3)
    raise RuntimeError(f"{url} did not answer within {timeout:.0f} s")


def st_version(st_dir: Path) -> str:
    """SillyTavern's version, from its package.json."""
    return json.loads((st_dir / "package.json").read_text())["version"]


def client_requests(st_dir: Path, scenario: dict[str, Any]) -> dict[str, Any]:
    """The page's request bodies for ``scenario``, from SillyTavern's own functions (see client_requests.mjs)."""
    done = subprocess.run(
        ["node", str(CLIENT_REQUESTS), str(st_dir)],
        input=json.dumps(scenario),
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout)


class SillyTavern:
    """SillyTavern's server on 127.0.0.1 (no browser launched, whitelist off), and a session of its page."""

    def __init__(self, st_dir: Path, port: int | None = None) -> None:
        self.st_dir = st_dir
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None
        self.log = open(Path(os.environ.get("TMPDIR", "/tmp")) / f"sillytavern-{self.port}.log", "w")  # noqa: SIM115
        self.client: httpx.Client | None = None

    def __enter__(self) -> SillyTavern:
        command = ["node", "server.js", "--port", str(self.port), "--listen", "false"]
        command += ["--autorun", "false", "--whitelist", "false"]
        self.process = subprocess.Popen(command, cwd=self.st_dir, stdout=self.log, stderr=subprocess.STDOUT)
        wait_http(f"{self.url}/csrf-token", 120)
        self.client = httpx.Client(base_url=self.url, timeout=httpx.Timeout(300, connect=10))
        # The page's first call: a CSRF token (and its cookie), sent back as X-CSRF-Token.
        token = self.client.get("/csrf-token").json()["token"]
        self.client.headers["X-CSRF-Token"] = token
        return self

    def __exit__(self, *exc: object) -> None:
        if self.client:
            self.client.close()
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.log.close()

    def post(self, path: str, body: dict, timeout: float = 300) -> httpx.Response:
        return self.client.post(path, json=body, timeout=timeout)


# --- the recording backend (capture) -------------------------------------------------


@dataclass
class Recorded:
    """One request SillyTavern sent the backend: the headers that matter, the JSON body (None: none)."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class Recorder:
    """A backend that answers every endpoint SillyTavern calls with a minimal valid reply, and records the requests."""

    requests: list[Recorded] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    abort: threading.Event = field(default_factory=threading.Event)

    def take(self) -> list[Recorded]:
        with self.lock:
            taken, self.requests = self.requests, []
        return taken

    def serve(self) -> tuple[ThreadingHTTPServer, str]:
        """Start answering on a free port of 127.0.0.1; returns the server and its base URL."""
        handler = type("Handler", (RecordingHandler,), {"recorder": self})
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server, f"http://127.0.0.1:{server.server_address[1]}"


class RecordingHandler(BaseHTTPRequestHandler):
    """The recording backend's requests: recorded, then answered by ``canned_reply``."""

    recorder: Recorder
    protocol_version = "HTTP/1.0"  # one request per connection: node-fetch hung up on reused ones

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self.handle_any(None)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", "replace")
        self.handle_any(body)

    def handle_any(self, body: Any) -> None:
        keep = ("content-type", "authorization", "x-api-key")
        headers = {k.lower(): v for k, v in self.headers.items() if k.lower() in keep}
        with self.recorder.lock:
            self.recorder.requests.append(Recorded(self.command, self.path, headers, body))
        if self.path == "/api/extra/abort":
            self.recorder.abort.set()
        reply = canned_reply(self.command, self.path, body)
        if reply is None:
            self.send(404, {"detail": "Not Found"})
        elif isinstance(reply, list):
            self.stream(reply, hold=isinstance(body, dict) and body.get("prompt") == ABORT_PROMPT)
        else:
            self.send(200, reply)

    def send(self, status: int, payload: Any) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def stream(self, events: list[str], hold: bool) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Connection", "close")
        self.end_headers()
        try:
            self.wfile.write(events[0].encode())
            self.wfile.flush()
            if hold:  # the abort scenario: hold the stream open until the client goes
                self.recorder.abort.wait(20)
                time.sleep(0.5)
            for event in events[1:]:
                self.wfile.write(event.encode())
            self.wfile.flush()
        except OSError:
            pass
        self.close_connection = True


def canned_reply(method: str, path: str, body: Any) -> Any:
    """What a real backend of each kind answers, reduced to what SillyTavern reads; a list: SSE events."""
    text = body.get("text", body.get("content", body.get("prompt"))) if isinstance(body, dict) else None
    ids = [SENTINEL_ID] if text == BANNED_WORD else [1, 2, 3]
    models = {"object": "list", "data": [{"id": MODEL, "object": "model"}]}
    if method == "GET":
        return {
            "/v1/models": models,
            "/v1/model/list": models,
            "/v1/model": {"id": MODEL, "object": "model"},
            "/v1/internal/model/info": {"model_name": MODEL, "lora_names": []},
            "/props": {"default_generation_settings": {"n_ctx": 2048}, "chat_template": ""},
            "/api/v1/info/version": {"result": "1.2.5"},
            "/api/extra/version": {"result": "KoboldCpp", "version": "1.75"},
            "/api/v1/model": {"result": "koboldcpp/" + MODEL},
            "/": models,
        }.get(path)
    tokenizers = {
        "/v1/token/encode": {"tokens": ids, "length": len(ids)},
        "/v1/internal/encode": {"tokens": ids, "length": len(ids)},
        "/tokenize": {"tokens": ids},
        "/api/extra/tokencount": {"value": len(ids), "ids": ids},
    }
    if path in tokenizers:
        return tokenizers[path]
    if path == "/api/extra/abort":
        return {"success": "true"}
    stream = isinstance(body, dict) and bool(body.get("stream"))
    if path in ("/v1/completions", "/"):
        if stream:
            return [f"data: {json.dumps({'choices': [{'text': 'ok', 'index': 0}]})}\n\n", "data: [DONE]\n\n"]
        return {"choices": [{"text": "ok", "index": 0, "finish_reason": "length"}]}
    if path == "/completion":
        if stream:
            return [
                f"data: {json.dumps({'content': 'ok', 'stop': False})}\n\n",
                f"data: {json.dumps({'content': '', 'stop': True})}\n\n",
            ]
        return {"content": "ok", "stop": True}
    if path == "/api/v1/generate":
        return {"results": [{"text": "ok"}]}
    if path == "/api/extra/generate/stream":
        return [f"event: message\ndata: {json.dumps({'token': 'ok'})}\n\n"]
    return None


# --- the scenarios -------------------------------------------------------------------


def textgen_scenario(mode: str, server_url: str, **kwargs: Any) -> dict[str, Any]:
    """A Text Completion scenario for client_requests.mjs: SillyTavern's defaults, Tokenizer "API", and ``kwargs``."""
    scenario = {
        "main_api": "textgenerationwebui",
        "type": mode,
        "server_url": server_url,
        "amount_gen": AMOUNT_GEN,
        "prompt": PROMPT,
        "tokenizer": API_CURRENT,
        "online_status": "connected",
        "models": [MODEL],
    }
    scenario.update(kwargs)
    return scenario


def ban_box(quoted: str, unquoted: str) -> str:
    """SillyTavern's "Banned tokens/strings" box: a quoted line is a string ban, an unquoted one is tokenized."""
    return f'"{quoted}"\n{unquoted}'


def read_sse(response: httpx.Response) -> list[str]:
    """The ``data`` of each event, as SillyTavern's getEventSourceStream splits them."""
    datas, data = [], []
    for line in response.iter_lines():
        if line == "":
            if data:
                datas.append("\n".join(data))
                data = []
        elif line.startswith("data:"):
            data.append(line[6:] if line[5:6] == " " else line[5:])
    if data:
        datas.append("\n".join(data))
    return datas


def st_stream_text(mode: str, datas: list[str]) -> tuple[str, list[str], bool]:
    """Text, swipes and whether the stream ended its way, as SillyTavern's stream parsers read it.

    textgen-settings.js ``generateTextGenWithStreaming``: ``choices[0].text ||
    content``, index > 0 a swipe, ``[DONE]`` the end (llama.cpp: ``stop: true``);
    kai-settings.js ``generateKoboldWithStreaming``: ``token``.
    """
    text, swipes, ended = "", [], False
    for data in datas:
        if data == "[DONE]":
            ended = True
            break
        parsed = json.loads(data)
        if mode == "kobold":
            text += parsed.get("token") or ""
            ended = parsed.get("finish_reason") in ("stop", "length")
            continue
        choice = (parsed.get("choices") or [{}])[0]
        if choice.get("index", 0) > 0:
            index = choice["index"] - 1
            swipes += [""] * (index + 1 - len(swipes))
            swipes[index] += choice.get("text") or ""
        else:
            text += choice.get("text") or parsed.get("content") or ""
        if parsed.get("stop") is True:
            ended = True
    return text, swipes, ended


@dataclass
class Capture:
    """One mode's fixture being written: each step's page request and what SillyTavern sent the backend for it."""

    st: SillyTavern
    st_dir: Path
    recorder: Recorder
    steps: list[dict[str, Any]] = field(default_factory=list)

    def record(self, name: str, route: str, page_body: dict, note: str = "", call=None) -> Any:
        """Post ``page_body`` to SillyTavern's ``route`` (or run ``call``) and keep the backend's requests."""
        self.recorder.take()
        reply = call() if call else self.st.post(route, page_body, timeout=20)
        time.sleep(0.3)  # SillyTavern's last call (an abort) may trail its answer
        sent = [r.__dict__ for r in self.recorder.take()]
        self.steps.append(
            {"step": name, "page_route": route, "page_body": page_body, "backend_requests": sent, "note": note}
        )
        return reply


def capture_textgen(cap: Capture, mode: str, url: str) -> dict[str, Any]:
    """The status, tokenize, generate (streamed, swiped) and abort steps of a Text Completion mode."""
    extra: dict[str, Any] = {}
    status = client_requests(cap.st_dir, textgen_scenario(mode, url))["status"]
    cap.record("status", "/api/backends/text-completions/status", status)
    box = ban_box(BANNED_STRING, BANNED_WORD)
    variants = [("generate", False, 1), ("generate_stream", True, 1)]
    if mode in SWIPE_MODES:
        variants += [("generate_swipes", False, 2), ("generate_swipes_stream", True, 2)]
    route = "/api/backends/text-completions/generate"
    for name, streaming, n in variants:
        scenario = textgen_scenario(
            mode, url, banned_tokens=box, streaming=streaming, n=n, token_ids={BANNED_WORD: [SENTINEL_ID]}
        )
        req = client_requests(cap.st_dir, scenario)
        if name == "generate":
            note = "an unquoted line of the ban box, tokenized by the backend (Tokenizer: API)"
            for call in req["ajax"]:
                cap.record("tokenize", call["url"], call["data"], note)
            default = client_requests(cap.st_dir, textgen_scenario(mode, url, banned_tokens=box, tokenizer=99))
            extra["default_tokenizer_calls"] = default["ajax"]
        cap.record(name, route, req["generate"], call=lambda b=req["generate"]: cap.st.post(route, b).text)
    req = client_requests(cap.st_dir, textgen_scenario(mode, url, prompt=ABORT_PROMPT, streaming=True))
    note = "the page stops a streamed generation (its Stop button): SillyTavern drops the backend stream"
    if mode == "koboldcpp":
        note += ", after posting /api/extra/abort"
    body = req["generate"]
    cap.record("abort", route, body, note, call=lambda: abort_midway(cap.st, route, body, cap.recorder))
    return extra


def capture_kobold(cap: Capture, url: str) -> dict[str, Any]:
    """The status, tokenize, generate (streamed) and abort steps of the KoboldAI API mode (no ban list there)."""
    base = {"main_api": "kobold", "server_url": url, "prompt": PROMPT, "amount_gen": AMOUNT_GEN}
    status = client_requests(cap.st_dir, base)["status"]
    reply = cap.record("status", "/api/backends/kobold/status", status).json()
    base["kobold_versions"] = [reply.get("koboldUnitedVersion"), reply.get("koboldCppVersion")]
    cap.record("tokenize", "/api/tokenizers/remote/kobold/count", {"text": BANNED_WORD, "url": status["api_server"]})
    route = "/api/backends/kobold/generate"
    for name, streaming in (("generate", False), ("generate_stream", True)):
        body = client_requests(cap.st_dir, {**base, "streaming": streaming})["generate"]
        cap.record(name, route, body, call=lambda b=body: cap.st.post(route, b).text)
    body = client_requests(cap.st_dir, {**base, "prompt": ABORT_PROMPT, "streaming": True})["generate"]
    note = "the page stops a streamed generation: SillyTavern posts /api/extra/abort and drops the stream"
    cap.record("abort", route, body, note, call=lambda: abort_midway(cap.st, route, body, cap.recorder))
    return {}


def capture(args: argparse.Namespace) -> None:
    """Write one fixture per mode from what SillyTavern sends a recording backend."""
    st_dir = Path(args.st_dir)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    recorder = Recorder()
    server, backend = recorder.serve()
    git = ["git", "-C", args.mirror, "rev-parse", "HEAD"]
    commit = subprocess.run(git, capture_output=True, text=True).stdout.strip() if args.mirror else ""
    with SillyTavern(st_dir) as st:
        for mode in [*TEXTGEN_MODES, "kobold"]:
            cap = Capture(st, st_dir, recorder)
            url = backend + "/"
            extra = capture_kobold(cap, url) if mode == "kobold" else capture_textgen(cap, mode, url)
            fixture = {"sillytavern": st_version(st_dir), "sillytavern_commit": commit, "mode": mode}
            fixture.update(extra)
            fixture["steps"] = cap.steps
            # The recorder's address changes from run to run: the fixtures name it BACKEND.
            text = json.dumps(fixture, indent=2, ensure_ascii=False).replace(backend, BACKEND)
            path = out / f"{mode}.json"
            path.write_text(text + "\n")
            print(f"wrote {path}: {sum(len(s['backend_requests']) for s in cap.steps)} backend requests")
    server.shutdown()


def abort_midway(st: SillyTavern, route: str, body: dict, recorder: Recorder | None = None) -> str:
    """Stream a generation through SillyTavern and drop the connection after its first event (the Stop button)."""
    first = ""
    with httpx.Client(
        base_url=st.url, headers=dict(st.client.headers), cookies=st.client.cookies, timeout=60
    ) as client:
        with client.stream("POST", route, json=body) as response:
            for line in response.iter_lines():
                if line.startswith("data:"):
                    first = line
                    break
    if recorder is not None:
        recorder.abort.wait(10)
        recorder.abort.clear()
    time.sleep(0.5)
    return first


# --- live: SillyTavern against serve --------------------------------------------------

WORD = re.compile(r"[A-Za-z]{4,}")
STORY = "User: Tell me a short story about a girl and her dog.\nSeraphina:"
GREEDY = {"temp": 0}
"""The user's temperature slider at 0: greedy, so a control run shows what the bans changed."""


@dataclass
class Row:
    """What one mode did, for the table."""

    mode: str
    status: str = ""
    tokenize: str = ""
    generate: str = ""
    stream: str = ""
    swipes: str = ""
    bans: str = ""
    abort: str = ""
    odd: list[str] = field(default_factory=list)


def short(response: httpx.Response | str) -> str:
    """A response (or text) in a table cell."""
    if isinstance(response, str):
        return response[:160]
    return f"{response.status_code} {response.text[:160]!r}"


def live(args: argparse.Namespace) -> None:
    """SillyTavern against ``serve`` in every mode; one JSON line per mode, then a Markdown table."""
    st_dir = Path(args.st_dir)
    port = args.serve_port or free_port()
    serve_log = open(Path(os.environ.get("TMPDIR", "/tmp")) / f"serve-{port}.log", "w")  # noqa: SIM115
    env = dict(os.environ)
    if args.src:  # another checkout's sources (e.g. an older commit), on this venv
        env["PYTHONPATH"] = str(Path(args.src).resolve())
    command = [sys.executable, "-m", "backtrack_sampler", "serve", "--host", "127.0.0.1", "--port", str(port)]
    serve = subprocess.Popen([*command, "--model-name", "smollm2"], stdout=serve_log, stderr=subprocess.STDOUT, env=env)
    rows: list[Row] = []
    try:
        wait_http(f"http://127.0.0.1:{port}/health", 180)
        backend = f"http://127.0.0.1:{port}/"
        with SillyTavern(st_dir) as st:
            for mode in args.modes or [*TEXTGEN_MODES, "kobold"]:
                row = Row(mode)
                rows.append(row)
                try:
                    if mode == "kobold":
                        live_kobold(st, st_dir, backend, row)
                    else:
                        LiveTextgen(st, st_dir, mode, backend, row).run()
                except Exception as error:  # noqa: BLE001 (a report: one mode's failure must not hide the others)
                    row.odd.append(f"{type(error).__name__}: {error}"[:200])
                print(json.dumps(row.__dict__, ensure_ascii=False), flush=True)
    finally:
        serve.send_signal(signal.SIGINT)
        try:
            serve.wait(timeout=20)
        except subprocess.TimeoutExpired:
            serve.kill()
        serve_log.close()
    print()
    print("| mode | status | tokenize | generate | stream | swipes | bans | abort | odd |")
    print("|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        cells = [row.mode, row.status, row.tokenize, row.generate, row.stream, row.swipes, row.bans, row.abort]
        cells.append("; ".join(row.odd))
        print("| " + " | ".join(c.replace("|", "/").replace("\n", " ") for c in cells) + " |")


def pick_bans(text: str) -> tuple[str, str] | None:
    """Two words of the control's text to ban (one quoted line, one unquoted)."""
    words = list(dict.fromkeys(WORD.findall(text)))
    return (words[0], words[1]) if len(words) >= 2 else None


def banned_in(text: str, bans: tuple[str, ...]) -> list[str]:
    """The words of ``bans`` that ``text`` holds as words."""
    return [b for b in bans if re.search(rf"\b{re.escape(b)}\b", text)]


def reply_text(reply: httpx.Response) -> str | None:
    """The text SillyTavern's page takes from a generate reply (script.js extractMessageFromData); None: an error."""
    try:
        data = reply.json()
    except ValueError:
        return None
    if not isinstance(data, dict) or data.get("error"):
        return None
    if "results" in data:
        return data["results"][0].get("text")
    choices = data.get("choices")
    return choices[0].get("text") if choices else data.get("content", data.get("response"))


def stream_through(st: SillyTavern, route: str, body: dict, mode: str) -> tuple[str, str]:
    """Stream a generation through SillyTavern; its text as the page reads it, and a summary."""
    with st.client.stream("POST", route, json=body) as response:
        datas = read_sse(response) if response.status_code == 200 else []
        code = response.status_code
        if code != 200:
            return "", f"{code} {response.read()[:160]!r}"
    try:
        text, swipes, ended = st_stream_text(mode, datas)
    except ValueError as error:
        return "", f"{code}, unparsable: {error}; {datas[:2]}"
    last = datas[-1][:60] if datas else "-"
    summary = (
        f"{code}, {len(datas)} events, {len(text)} chars, ended its way: {'yes' if ended else 'no'} (last: {last})"
    )
    return text, summary


@dataclass
class LiveTextgen:
    """One Text Completion mode through SillyTavern: status, tokenize, control, bans, stream, swipes, abort."""

    st: SillyTavern
    st_dir: Path
    mode: str
    backend: str
    row: Row
    models: list[str] = field(default_factory=list)
    route: str = "/api/backends/text-completions/generate"

    def scenario(self, **kwargs: Any) -> dict[str, Any]:
        online = "connected" if self.models else "no_connection"
        return textgen_scenario(
            self.mode, self.backend, prompt=STORY, models=self.models, online_status=online, **kwargs
        )

    def body(self, **kwargs: Any) -> dict[str, Any]:
        return client_requests(self.st_dir, self.scenario(**kwargs))["generate"]

    def token_ids(self, text: str) -> list[int] | None:
        """The backend's ids for ``text`` as SillyTavern asks (Tokenizer: API); None when it failed."""
        vllm_model = self.models[0] if self.models and self.mode == "vllm" else ""
        tok = {"text": text, "api_type": self.mode, "url": self.backend, "legacy_api": False}
        tok.update({"vllm_model": vllm_model, "aphrodite_model": ""})
        reply = self.st.post("/api/tokenizers/remote/textgenerationwebui/encode", tok).json()
        return reply.get("ids") if not reply.get("error") and reply.get("ids") else None

    def run(self) -> None:
        row = self.row
        status = client_requests(self.st_dir, self.scenario())["status"]
        try:
            reply = self.st.post("/api/backends/text-completions/status", status, timeout=20)
            row.status = short(reply)
            if reply.status_code == 200 and "result" in reply.text:
                self.models = [m.get("id") for m in reply.json().get("data") or []]
        except httpx.TimeoutException:
            row.status = "no answer in 20 s"
        row.tokenize = f"ids of ' dog': {self.token_ids(' dog')}"
        # A greedy control run (the user's temperature at 0) with an empty ban box picks the words to ban.
        reply = self.st.post(self.route, self.body(settings=GREEDY))
        row.generate = short(reply)
        control = reply_text(reply)
        words = [w for w in dict.fromkeys(WORD.findall(control or "")) if w != "Seraphina"]
        # The unquoted line: a word the model writes as one token, with its leading space.
        if len(words) < 2:
            row.odd.append(f"control run wrote too little to ban: {control!r}")
            return
        unquoted = next((w for w in words[1:] if len(self.token_ids(" " + w) or []) == 1), None)
        if unquoted is None:
            row.odd.append("no word of the control tokenized as one token: the unquoted line bans what SillyTavern got")
            unquoted = words[1]
        quoted = next(w for w in words if w != unquoted)
        self.bans(control, quoted, unquoted)
        self.abort()

    def bans(self, control: str, quoted: str, word: str) -> None:
        """The ban box with ``quoted`` as a string and `` word`` unquoted (the token the model writes)."""
        line = " " + word
        ids = self.token_ids(line)
        box = ban_box(quoted, line)
        token_ids = {line: ids or []}
        bans = (quoted, word)
        body = self.body(banned_tokens=box, token_ids=token_ids, settings=GREEDY)
        reply = self.st.post(self.route, body)
        text = reply_text(reply)
        if text is None:
            self.row.generate += f"; with bans: {short(reply)}"
        streamed, self.row.stream = stream_through(
            self.st,
            self.route,
            self.body(banned_tokens=box, streaming=True, token_ids=token_ids, settings=GREEDY),
            self.mode,
        )
        self.row.stream += f"; == non-streamed: {'yes' if streamed == text else 'NO'}"
        sampled = reply_text(self.st.post(self.route, self.body(banned_tokens=box, token_ids=token_ids)))
        found = {
            "control": banned_in(control, bans),
            "greedy": banned_in(text or "", bans),
            "greedy streamed": banned_in(streamed, bans),
            "seed -1": banned_in(sampled or "", bans),
        }
        sent = {k: body[k] for k in ("banned_strings", "custom_token_bans") if k in body}
        self.row.bans = f"{quoted!r} quoted, {line!r} unquoted (ids {ids}); page sent {sent}; words found: {found}"
        if self.mode in SWIPE_MODES:
            reply = self.st.post(self.route, self.body(banned_tokens=box, n=2, token_ids=token_ids))
            choices = reply.json().get("choices") if reply.status_code == 200 else None
            found_each = [banned_in(c.get("text") or "", bans) for c in choices or []]
            self.row.swipes = f"{len(choices or [])} choices, banned words found in each: {found_each}"

    def abort(self) -> None:
        """The page's Stop button mid-stream, then the next generation."""
        first = abort_midway(self.st, self.route, self.body(streaming=True))
        again = reply_text(self.st.post(self.route, self.body(), timeout=120))
        self.row.abort = f"first event {'seen' if first else 'none'}; next generation {'ok' if again else 'failed'}"


def live_kobold(st: SillyTavern, st_dir: Path, backend: str, row: Row) -> None:
    """The KoboldAI API mode through SillyTavern: status, token count, generate (streamed), abort; it has no bans."""
    base = {"main_api": "kobold", "server_url": backend, "prompt": STORY, "amount_gen": AMOUNT_GEN}
    status = client_requests(st_dir, base)["status"]
    reply = st.post("/api/backends/kobold/status", status, timeout=20)
    row.status = short(reply)
    base["kobold_versions"] = [reply.json().get("koboldUnitedVersion"), reply.json().get("koboldCppVersion")]
    reply = st.post("/api/tokenizers/remote/kobold/count", {"text": " dog", "url": status["api_server"]})
    row.tokenize = short(reply)
    route = "/api/backends/kobold/generate"
    row.generate = short(st.post(route, client_requests(st_dir, base)["generate"]))
    req = client_requests(st_dir, {**base, "streaming": True})
    if not req["kai_flags"]["can_use_streaming"]:
        row.stream = "the page does not stream (its version check)"
        return
    _, row.stream = stream_through(st, route, req["generate"], "kobold")
    first = abort_midway(st, route, req["generate"])
    again = reply_text(st.post(route, client_requests(st_dir, base)["generate"], timeout=120))
    row.abort = f"first event {'seen' if first else 'none'}; next generation {'ok' if again else 'failed'}"
    row.bans = "no ban box in SillyTavern's KoboldAI mode"


def main() -> None:
    """The command line: ``live`` or ``capture``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_live = sub.add_parser("live", help="SillyTavern against serve, every mode")
    p_live.add_argument("--st-dir", required=True)
    p_live.add_argument("--serve-port", type=int)
    p_live.add_argument("--modes", nargs="*")
    p_live.add_argument("--src", help="run serve from this src/ folder (PYTHONPATH) instead of the installed package")
    p_cap = sub.add_parser("capture", help="write the fixtures from a recording backend")
    p_cap.add_argument("--st-dir", required=True)
    p_cap.add_argument("--out", default=str(REPO / "tests" / "fixtures" / "sillytavern"))
    p_cap.add_argument(
        "--mirror", default="/work/.mirror/SillyTavern+SillyTavern/repo", help="SillyTavern's git dir, for the commit"
    )
    args = parser.parse_args()
    {"live": live, "capture": capture}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
