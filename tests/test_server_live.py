"""The app on uvicorn at 127.0.0.1: real streaming, client disconnects, and 8 concurrent clients."""

from __future__ import annotations

import json
import threading
import time

import pytest

from server_support import MODEL, greedy_text, reference_provider

httpx = pytest.importorskip("httpx", reason="httpx is not installed (extra: dev)")
pytestmark = pytest.mark.llamacpp

QUESTIONS = [
    "Tell me about the ocean.",
    "What is the capital of France?",
    "Write a haiku about the sea",
    "Why is the sky blue?",
    "Name three fruits.",
    "How do birds fly?",
    "What is a prime number?",
    "Describe a forest in one sentence.",
]


def no_eos(provider) -> dict[str, float]:
    return {str(t): -100 for t in provider.eos_token_ids}


def stream_lines(client, body):
    """Yield the parsed ``data:`` payloads of a streamed chat request as they arrive."""
    with client.stream("POST", "/v1/chat/completions", json=body) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("data: "):
                payload = line[len("data: ") :]
                yield payload if payload == "[DONE]" else json.loads(payload)


def wait_until(condition, timeout=60.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_chunks_arrive_while_the_model_is_still_generating(live_server, server_provider):
    worker = live_server.worker
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": QUESTIONS[0]}],
        "max_tokens": 40,
        "temperature": 0,
        "stream": True,
        "logit_bias": no_eos(server_provider),
    }
    with httpx.Client(base_url=live_server.url, timeout=120) as client:
        events = stream_lines(client, body)
        seen = []
        for event in events:
            seen.append(event)
            if event["choices"] and event["choices"][0]["delta"].get("content"):
                break
        running = worker.running  # the first words are here: the generation is not over
        assert running is not None and running.control.tokens_sampled < 40
        # The event loop is free meanwhile: other requests are answered at once.
        health = httpx.get(f"{live_server.url}/health", timeout=10).json()
        assert health["generation"]["queued_or_running"] >= 1
        seen.extend(events)
    assert seen[-1] == "[DONE]"
    content = "".join(e["choices"][0]["delta"].get("content") or "" for e in seen[:-1] if e["choices"])
    assert len(content) > 40
    assert seen[-2]["choices"][0]["finish_reason"] == "length"


def test_a_client_that_disconnects_cancels_its_generation_within_a_token(live_server, server_provider):
    worker = live_server.worker
    assert worker.wait_idle(timeout=120)
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Write a very long story."}],
        "max_tokens": 2000,
        "temperature": 0,
        "stream": True,
        "logit_bias": no_eos(server_provider),
    }
    with httpx.Client(base_url=live_server.url, timeout=120) as client:
        received = 0
        for event in stream_lines(client, body):
            received += bool(event["choices"] and event["choices"][0]["delta"].get("content"))
            if received == 3:
                break  # leaving the block closes the connection mid-stream
    assert worker.wait_idle(timeout=60)
    record = worker.history[-1]
    assert record.status == "cancelled"
    assert record.tokens_after_cancel is not None and record.tokens_after_cancel <= 1
    assert record.tokens_sampled < 500  # it did not run on to max_tokens
    # The model is free again and answers the next request in full.
    reply = httpx.post(
        f"{live_server.url}/v1/completions",
        json={"prompt": "Hello", "max_tokens": 3, "temperature": 0},
        timeout=60,
    ).json()
    assert reply["usage"]["completion_tokens"] == 3


def test_a_non_streamed_request_whose_client_leaves_is_cancelled(live_server, server_provider):
    worker = live_server.worker
    assert worker.wait_idle(timeout=120)
    done = len(worker.history)
    body = {"prompt": "Once upon a time", "max_tokens": 2000, "temperature": 0, "logit_bias": no_eos(server_provider)}
    wait_for_start = threading.Thread(target=wait_until, args=(lambda: worker.running is not None,))
    wait_for_start.start()
    with pytest.raises(httpx.ReadTimeout):
        # The client gives up after a second; the server must notice and stop.
        httpx.post(f"{live_server.url}/v1/completions", json=body, timeout=httpx.Timeout(60, read=1.0))
    wait_for_start.join()
    assert worker.wait_idle(timeout=60)
    record = worker.history[-1]
    assert len(worker.history) == done + 1
    assert record.status == "cancelled" and record.tokens_sampled < 2000
    assert record.tokens_after_cancel is not None and record.tokens_after_cancel <= 1


def test_eight_concurrent_streaming_clients_each_get_their_own_complete_stream(live_server, server_provider):
    """8 clients at once: every stream complete and equal to the library's greedy output, none dropped."""
    worker = live_server.worker
    assert worker.wait_idle(timeout=120)
    before = dict(worker.counts)
    max_tokens = 24
    results: dict[int, dict] = {}

    def client(i: int) -> None:
        body = {
            "model": MODEL,
            "messages": [{"role": "user", "content": QUESTIONS[i]}],
            "max_tokens": max_tokens,
            "temperature": 0,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        with httpx.Client(base_url=live_server.url, timeout=300) as http:
            events = list(stream_lines(http, body))
        results[i] = {
            "done": events[-1] == "[DONE]",
            "text": "".join(e["choices"][0]["delta"].get("content") or "" for e in events[:-1] if e["choices"]),
            "ids": {e["id"] for e in events[:-1]},
            "usage": events[-2]["usage"],
        }

    started = time.perf_counter()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=600)
    elapsed = time.perf_counter() - started
    provider = reference_provider(server_provider)
    assert sorted(results) == list(range(8))
    for i, result in results.items():
        prompt = provider.apply_chat_template([{"role": "user", "content": QUESTIONS[i]}])
        assert result["done"] and len(result["ids"]) == 1
        assert result["text"] == greedy_text(provider, prompt, max_tokens), QUESTIONS[i]
    assert worker.counts["completed"] - before["completed"] == 8
    tokens = sum(r["usage"]["completion_tokens"] for r in results.values())
    print(f"\n8 concurrent streams: {tokens} tokens in {elapsed:.1f} s ({tokens / elapsed:.1f} tokens/s aggregate)")
