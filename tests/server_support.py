"""Helpers of the server tests: the app on a scripted model or the embedded one, in-process clients, uvicorn.

``scripted_provider()`` is a ScriptedProvider that writes one sentence over and
over (``SCRIPTED_ANSWER``), with known alternatives at a few words, so the
server's checks, formats, stop strings and strategies are tested exactly and
in a second. The embedded model (the ``server_provider`` fixture) is kept for
a few end-to-end tests.
"""

from __future__ import annotations

import string
import threading
import time
from typing import Any

MODEL = "smollm2-test"
OCEAN = [{"role": "user", "content": "Tell me about the ocean."}]
"""Greedy SmolLM2 answers 'The ocean is a vast and mysterious realm ...' to this."""

SCRIPTED_EOS = "<eos>"
SCRIPTED_ANSWER = "The ocean is a vast and mysterious sea."
"""What the scripted model writes greedily after any prompt, then "\n\n" and the same again."""
# The scripted model's next-token logits, by the text of the last token (any other last token: START).
# The best word makes SCRIPTED_ANSWER; the others are what a ban, a bias or a strategy leads to.
START = {"The": 5.0, "A": 3.0, "{": 1.0}
NEXT_WORDS = {
    "The": {" ocean": 5.0, " sea": 3.0},
    "A": {" sea": 5.0, " ocean": 3.0},
    " ocean": {" is": 5.0, " and": 3.0},
    " is": {" a": 5.0, " and": 3.0},
    " a": {" vast": 5.0, " deep": 4.0, " blue": 3.0},
    " vast": {" and": 5.0, " sea": 3.0},
    " deep": {" and": 5.0, " sea": 3.0},
    " blue": {" and": 5.0, " sea": 3.0},
    " and": {" mysterious": 5.0, " calm": 4.0},
    " mysterious": {" sea": 5.0, " ocean": 3.0},
    " calm": {" sea": 5.0, " ocean": 3.0},
    " sea": {".": 5.0, " is": 3.0},
    ".": {"\n\n": 5.0, SCRIPTED_EOS: 3.0},
    "{": {"}": 5.0},
}
WORDS = sorted({w for table in [START, *NEXT_WORDS.values()] for w in table} - {SCRIPTED_EOS} | set(NEXT_WORDS))
SCRIPTED_VOCAB = [
    SCRIPTED_EOS,
    "<|im_start|>",
    "<|im_end|>",
    *WORDS,
    *(c for c in string.printable if c not in WORDS and c not in "\x0b\x0c"),
]
"""Every printable ASCII character is a token too, so any ASCII text can be encoded."""


def scripted_logits(tokens: list[int]) -> list[float]:
    """The scripted model: ``NEXT_WORDS`` after a known word, else ``START``; the rest far below, no two equal."""
    last = SCRIPTED_VOCAB[tokens[-1]] if tokens else ""
    prefs = NEXT_WORDS.get(last, START)
    return [prefs.get(text, -30.0 - 0.01 * i) for i, text in enumerate(SCRIPTED_VOCAB)]


def scripted_provider(context_length: int | None = 4096):
    """A fresh ScriptedProvider over ``SCRIPTED_VOCAB`` (each provider has its own server worker)."""
    from backtrack_sampler.provider.scripted_provider import ScriptedProvider

    return ScriptedProvider(SCRIPTED_VOCAB, scripted_logits, 0, context_length)


def scripted_client(context_length: int | None = 4096, **limits: Any):
    """An in-process client of the app on a fresh ``scripted_provider``; ``limits`` go to ``create_app``."""
    return in_process_client(make_app(scripted_provider(context_length), **limits))


TEST_HOSTS = ("testserver", "127.0.0.1", "localhost")
"""The hosts the tests' apps answer to: FastAPI's TestClient sends ``Host: testserver``; uvicorn runs on 127.0.0.1."""


def make_app(provider, **kwargs: Any):
    from backtrack_sampler.server import create_app

    kwargs.setdefault("allowed_hosts", TEST_HOSTS)
    return create_app(provider, MODEL, **kwargs)


def in_process_client(app):
    from fastapi.testclient import TestClient

    return TestClient(app)


def openai_client(http_client, base_url: str = "http://testserver/v1", api_key: str = "unused"):
    """The official client, sending through ``http_client`` (a TestClient, or an httpx.Client)."""
    from openai import OpenAI

    return OpenAI(base_url=base_url, api_key=api_key, http_client=http_client, max_retries=0)


def greedy_text(provider, prompt, max_new_tokens: int, **kwargs: Any) -> str:
    """What the library itself generates greedily (the reference the server must match)."""
    from backtrack_sampler import BacktrackSampler

    sampler = BacktrackSampler(provider, kwargs.pop("strategy", None))
    return sampler.generate_text(prompt, max_new_tokens=max_new_tokens, temperature=0, top_k=0, **kwargs).text


class LiveServer:
    """Run an app with uvicorn on 127.0.0.1 (a free port) in a background thread."""

    def __init__(self, app) -> None:
        import uvicorn

        self.app = app
        config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="uvicorn-test", daemon=True)
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def worker(self):
        return self.app.state.worker

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        self.port = self.server.servers[0].sockets[0].getsockname()[1]
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


def reference_provider(provider):
    """``provider``, once the server's worker has finished with it (tests then use it directly)."""
    from backtrack_sampler.server.worker import ModelWorker

    assert ModelWorker.for_provider(provider).wait_idle(timeout=120)
    return provider


def sse_events(text: str) -> list:
    """The ``data:`` payloads of an SSE body, parsed (``"[DONE]"`` kept as a string)."""
    import json

    events = []
    for block in text.split("\n\n"):
        if not block.strip():
            continue
        assert block.startswith("data: "), block
        payload = block[len("data: ") :]
        events.append(payload if payload == "[DONE]" else json.loads(payload))
    return events


class ScriptedPool:
    """A ``SequencePool`` of scripted providers: the server runs up to ``n_slots`` choices at once on it.

    ``next_logits`` is shared by every provider (it may block, to hold a slot
    busy); a provider is made per worker thread, and one more plans requests.
    """

    def __init__(self, n_slots: int, next_logits=scripted_logits, context_length: int | None = 4096) -> None:
        self.n_slots = n_slots
        self.next_logits = next_logits
        self.context_length = context_length

    def provider(self):
        from backtrack_sampler.provider.scripted_provider import ScriptedProvider

        return ScriptedProvider(SCRIPTED_VOCAB, self.next_logits, 0, self.context_length)
