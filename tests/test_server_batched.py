"""The server on the batched llama.cpp backend (``serve --parallel N``), on uvicorn at 127.0.0.1.

One ``BatchedLlamacpp`` of 4 slots, 512 positions each, for the module.
Every concurrent answer is compared with the answer the same request gets
alone; parallelism is shown by the scheduler's counters, never by timing.
"""

from __future__ import annotations

import json
import threading
import time

import pytest

from near_tie import Tracer, assert_same_or_near_tie
from server_support import MODEL, LiveServer, make_app

httpx = pytest.importorskip("httpx", reason="httpx is not installed (extra: dev)")
pytest.importorskip("fastapi", reason="FastAPI is not installed (extra: server)")
pytestmark = pytest.mark.llamacpp

SLOTS = 4
CONTEXT = 512
QUESTIONS = [
    "Tell me about the ocean.",
    "What is the capital of France?",
    "Write a haiku about the sea",
    "Why is the sky blue?",
    "Name three fruits.",
    "How do birds fly?",
]


@pytest.fixture(scope="module")
def batched(smollm_path):
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (extra: llamacpp)")
    from backtrack_sampler.models import load_batched

    with load_batched(smollm_path, n_ctx=CONTEXT, n_slots=SLOTS) as model:
        yield model


@pytest.fixture(scope="module")
def server(batched):
    with LiveServer(make_app(batched)) as live:
        yield live


def chat(question: str, **fields) -> dict:
    return {"model": MODEL, "messages": [{"role": "user", "content": question}], "max_tokens": 16, **fields}


def greedy(question: str, **fields) -> dict:
    return chat(question, temperature=0, **fields)


def post(server, body: dict, path: str = "/v1/chat/completions") -> dict:
    response = httpx.post(f"{server.url}{path}", json=body, timeout=300)
    assert response.status_code == 200, response.text
    return response.json()


def stream_events(http, body: dict):
    """The parsed ``data:`` payloads of a streamed chat request, as they arrive."""
    with http.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("data: "):
                payload = line[len("data: ") :]
                yield payload if payload == "[DONE]" else json.loads(payload)


def streamed_text(server, body: dict) -> str:
    with httpx.Client(base_url=server.url, timeout=300) as http:
        events = list(stream_events(http, body))
    assert events[-1] == "[DONE]"
    return "".join(e["choices"][0]["delta"].get("content") or "" for e in events[:-1] if e["choices"])


def no_eos(batched) -> dict[str, float]:
    return {str(t): -100 for t in batched.vocab.eos_token_ids}


def wait_until(condition, timeout=120.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def run_together(function, items) -> list:
    """``function(item)`` for every item, each in a thread of its own, all at once; the results in order."""
    results: list = [None] * len(items)
    errors: list = []

    def one(i: int) -> None:
        try:
            results[i] = function(items[i])
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(items))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=600)
    if errors:
        raise errors[0]
    return results


def test_concurrent_streams_get_what_each_request_gets_alone(server, monkeypatch):
    """7 streams on 4 slots (3 queue): greedy ones, a seeded sampled one, stop strings and logprobs.

    Each stream is what its request gets alone, or parts from it where rounding decides between two
    nearly tied tokens (which sequences share a decode changes llama.cpp's rounding; near_tie.py).
    """
    tracer = Tracer().install(monkeypatch)  # the server's engine runs in this process
    bodies = [greedy(q) for q in QUESTIONS]
    bodies.append(chat(QUESTIONS[0], temperature=0.9, seed=11))
    tracer.phase = "alone"
    alone = [post(server, body)["choices"][0]["message"]["content"] for body in bodies]
    worker = server.worker
    assert worker.wait_idle(timeout=120)  # the last answer may reach the client before its job is counted
    before = dict(worker.counts)
    tracer.phase = "together"
    together = run_together(lambda body: streamed_text(server, body), bodies)
    assert sum(key[0] == "alone" for key in tracer.traces) == len(bodies)
    # Greedy requests have no seed; each parting is asserted a near-tie of the logits both runs saw.
    partings = tracer.compare("alone", "together", greedy_of=lambda key: key[1] is None)
    differing = [i for i, (a, b) in enumerate(zip(alone, together, strict=True)) if a != b]
    assert len(differing) <= len(partings), (differing, partings)
    assert worker.wait_idle(timeout=120)
    assert worker.counts["completed"] - before["completed"] == len(bodies)
    assert server.worker.batch_stats()["max_sequences"] >= 2  # they shared decodes
    # A stop string and logprobs (non-streamed), alone and among others: the same answer.
    special = greedy(QUESTIONS[0], max_tokens=30, stop=["realm"], logprobs=True, top_logprobs=2)
    reference = post(server, special)["choices"][0]
    others = [greedy(q) for q in QUESTIONS[1:4]]
    replies = run_together(lambda body: post(server, body)["choices"][0], [special, *others])
    assert replies[0]["message"] == reference["message"] and replies[0]["finish_reason"] == "stop"
    assert "realm" not in reference["message"]["content"]
    got, want = replies[0]["logprobs"]["content"], reference["logprobs"]["content"]
    assert [t["token"] for t in got] == [t["token"] for t in want] and len(got[0]["top_logprobs"]) == 2
    assert [t["logprob"] for t in got] == pytest.approx([t["logprob"] for t in want], abs=1e-3)


def test_the_choices_of_one_request_run_in_parallel_slots(server, monkeypatch):
    """n 4, sampled: choice j is what the same request with seed + j gets alone, and they ran side by side."""
    tracer = Tracer().install(monkeypatch)  # the server's engine runs in this process
    body = chat(QUESTIONS[2], temperature=0.8, seed=5, n=4)
    tracer.phase = "alone"
    alone = [post(server, {**body, "n": 1, "seed": 5 + j}) for j in range(4)]
    tracer.phase = "together"
    reply = post(server, body)
    assert len(tracer.traces) == 8 and len(reply["choices"]) == 4
    prompt = next(key[1] for key in tracer.traces)
    for j, (choice, single) in enumerate(zip(reply["choices"], alone, strict=True)):
        traces = tracer.trace("alone", prompt, 5 + j), tracer.trace("together", prompt, 5 + j)
        # Equal to the request alone, or parted where rounding decides between two nearly tied tokens.
        if assert_same_or_near_tie(*traces, f"choice {j}", greedy=False) is None:
            assert choice["message"]["content"] == single["choices"][0]["message"]["content"]
    worker = server.worker
    assert worker.wait_idle(timeout=60)
    assert worker.history[-1].most_choices_at_once >= 2
    health = httpx.get(f"{server.url}/health", timeout=10).json()
    assert health["batch"]["slots"] == SLOTS and health["batch"]["max_sequences"] >= 2


def test_a_client_that_disconnects_frees_its_slot_and_leaves_the_others_alone(server, batched):
    worker = server.worker
    assert worker.wait_idle(timeout=120)
    neighbour_body = greedy(QUESTIONS[1], max_tokens=24)
    expected = post(server, neighbour_body)["choices"][0]["message"]["content"]
    long_body = greedy("Write a very long story.", max_tokens=400, logit_bias=no_eos(batched))
    neighbour: dict[str, str] = {}
    with httpx.Client(base_url=server.url, timeout=300) as http:
        received = 0
        for event in stream_events(http, long_body):
            received += bool(event["choices"] and event["choices"][0]["delta"].get("content"))
            if received == 1:  # the long one runs: its neighbour joins the batch
                thread = threading.Thread(target=lambda: neighbour.update(text=streamed_text(server, neighbour_body)))
                thread.start()
                wait_until(lambda: worker.status()["running"] == 2)
            if received == 6:
                break  # leaving the block closes the connection mid-stream
    thread.join(timeout=300)
    assert worker.wait_idle(timeout=120)
    assert neighbour["text"] == expected
    cancelled = [r for r in worker.history if r.status == "cancelled"][-1]
    assert cancelled.tokens_after_cancel is not None and cancelled.tokens_after_cancel <= 1
    assert cancelled.tokens_sampled < 400
    # Every slot is free again: as many requests as slots all complete.
    replies = run_together(lambda q: post(server, greedy(q, max_tokens=4)), QUESTIONS[:SLOTS])
    assert [r["usage"]["completion_tokens"] for r in replies] == [4] * SLOTS


def test_health_answers_while_every_slot_generates(server, batched):
    worker = server.worker
    assert worker.wait_idle(timeout=120)
    release = threading.Event()

    def hold_a_slot(question: str) -> int:
        body = greedy(question, max_tokens=300, logit_bias=no_eos(batched))
        with httpx.Client(base_url=server.url, timeout=300) as http:
            for event in stream_events(http, body):
                if event != "[DONE]" and event["choices"] and event["choices"][0]["delta"].get("content"):
                    release.wait(timeout=120)
                    return 1  # and disconnect
        return 0

    holders = threading.Thread(target=lambda: run_together(hold_a_slot, QUESTIONS[:SLOTS]))
    holders.start()
    try:
        wait_until(lambda: worker.status()["running"] == SLOTS)
        health = httpx.get(f"{server.url}/health", timeout=10)
        assert health.status_code == 200
        generation = health.json()["generation"]
        assert generation["running"] == SLOTS and generation["parallel"] == SLOTS
    finally:
        release.set()
        holders.join(timeout=300)
    assert worker.wait_idle(timeout=120)


@pytest.mark.parametrize(
    ("path", "field", "body"),
    [
        ("/v1/completions", "prompt", {"prompt": [42] * (CONTEXT + 10), "max_tokens": 4}),
        ("/v1/chat/completions", "messages", chat("tell me " * 400)),
    ],
)
def test_a_prompt_longer_than_a_slot_is_a_400_naming_the_field(server, path, field, body):
    response = httpx.post(f"{server.url}{path}", json=body, timeout=60)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == field and error["code"] == "context_length_exceeded"
    assert f"holds {CONTEXT}" in error["message"]
    card = httpx.get(f"{server.url}/v1/models", timeout=10).json()["data"][0]
    assert card["max_model_len"] == CONTEXT  # one sequence's context, not the whole KV cache


def test_a_generation_stops_cleanly_at_the_end_of_its_slot(server, batched):
    """A prompt that leaves 3 positions in its slot: 3 tokens, finish_reason "length", as on one sequence."""
    body = {"prompt": [42] * (CONTEXT - 3), "max_tokens": 20, "temperature": 0, "logit_bias": no_eos(batched)}
    reply = post(server, body, "/v1/completions")
    assert reply["usage"]["completion_tokens"] == 3 and reply["choices"][0]["finish_reason"] == "length"
