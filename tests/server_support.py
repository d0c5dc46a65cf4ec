"""Helpers of the server tests: the app on the embedded model, in-process clients, uvicorn on 127.0.0.1."""

from __future__ import annotations

import threading
import time
from typing import Any

MODEL = "smollm2-test"
OCEAN = [{"role": "user", "content": "Tell me about the ocean."}]
"""Greedy SmolLM2 answers 'The ocean is a vast and mysterious realm ...' to this."""


def make_app(provider, **kwargs: Any):
    from backtrack_sampler.server import create_app

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
