"""The server on a model that decodes several sequences at once (a ``SequencePool``), scripted: no weights.

``ScriptedPool`` gives each worker thread a scripted provider of its own, and
its logits function can wait at a prompt's first position: a barrier proves
that choices run side by side, a gate holds slots busy so that the queue is
seen at work. Nothing here depends on timing; the real batched model is
tested in test_server_batched.py.
"""

from __future__ import annotations

import json
import threading
import time

import pytest

from server_support import MODEL, SCRIPTED_ANSWER, SCRIPTED_VOCAB, ScriptedPool, in_process_client, make_app
from server_support import scripted_logits as plain_logits

pytest.importorskip("fastapi", reason="FastAPI is not installed (extra: server)")

COMPLETIONS = "/v1/completions"
HOLD = SCRIPTED_VOCAB.index("#")  # a prompt holding this token waits for the gate at its first position


def wait_until(condition, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def test_the_choices_of_one_request_run_side_by_side():
    """Each of the 4 choices waits at its prompt until all 4 are there: they can only pass together."""
    barrier = threading.Barrier(4, timeout=20)
    prompt_length = []

    def logits(tokens):
        if len(tokens) == prompt_length[0]:
            barrier.wait()  # a choice run after another would break the barrier (a 500)
        return plain_logits(tokens)

    pool = ScriptedPool(4, logits)
    app = make_app(pool)
    http = in_process_client(app)
    prompt = "Hello"
    prompt_length.append(len(app.state.provider.encode(prompt)))
    body = {"model": MODEL, "prompt": prompt, "max_tokens": 4, "temperature": 0, "n": 4}
    reply = http.post(COMPLETIONS, json=body)
    assert reply.status_code == 200, reply.text
    assert [c["text"] for c in reply.json()["choices"]] == ["The ocean is a"] * 4
    assert [c["index"] for c in reply.json()["choices"]] == [0, 1, 2, 3]
    worker = app.state.worker
    assert worker.wait_idle(timeout=30)
    assert worker.history[-1].most_choices_at_once == 4 and worker.history[-1].status == "completed"
    health = http.get("/health").json()
    assert health["generation"]["parallel"] == 4 and health["generation"]["running"] == 0
    assert "batch" not in health  # a scripted pool keeps no batch counters


def test_requests_beyond_the_slots_wait_in_arrival_order_and_all_complete():
    gate = threading.Event()
    started: list[str] = []  # the prompts, in the order their generation began
    lock = threading.Lock()

    def logits(tokens):
        if tokens and tokens[-1] == SCRIPTED_VOCAB.index(":"):  # a prompt's first position
            with lock:
                started.append("".join(SCRIPTED_VOCAB[t] for t in tokens))
            if HOLD in tokens:
                assert gate.wait(timeout=30)
        return plain_logits(tokens)

    app = make_app(ScriptedPool(2, logits))
    http = in_process_client(app)
    worker = app.state.worker
    replies: dict[str, object] = {}

    def send(prompt: str) -> None:
        body = {"model": MODEL, "prompt": prompt, "max_tokens": 4, "temperature": 0}
        replies[prompt] = http.post(COMPLETIONS, json=body)

    threads = []
    for prompt in ["#1:", "#2:", "a:", "b:", "c:"]:  # two hold both slots, three queue behind them
        thread = threading.Thread(target=send, args=(prompt,))
        thread.start()
        threads.append(thread)
        queued = len(threads)
        wait_until(lambda queued=queued: worker.status()["queued_or_running"] == queued)
    wait_until(lambda: worker.status()["running"] == 2)
    health = http.get("/health").json()["generation"]  # answered while every slot is busy
    assert health["running"] == 2 and health["queued_or_running"] == 5 and health["parallel"] == 2
    gate.set()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(replies) == ["#1:", "#2:", "a:", "b:", "c:"]
    for prompt, reply in replies.items():
        assert reply.status_code == 200, (prompt, reply.text)
        assert reply.json()["choices"][0]["text"] == "The ocean is a"
    assert set(started[:2]) == {"#1:", "#2:"} and set(started[2:4]) == {"a:", "b:"} and started[4] == "c:"
    assert worker.wait_idle(timeout=30) and worker.counts["completed"] == 5


def test_a_failing_choice_fails_its_request_and_stops_its_other_choices():
    def logits(tokens):
        if len(tokens) > 3 and tokens[-1] == SCRIPTED_VOCAB.index(" is"):
            raise RuntimeError("the scripted model broke")
        return plain_logits(tokens)

    app = make_app(ScriptedPool(2, logits))
    http = in_process_client(app)
    body = {"model": MODEL, "prompt": "Hi", "max_tokens": 8, "temperature": 0, "n": 3}
    reply = http.post(COMPLETIONS, json=body)
    assert reply.status_code == 500
    assert "the scripted model broke" in reply.json()["error"]["message"]
    worker = app.state.worker
    assert worker.wait_idle(timeout=30)
    assert worker.counts == {"completed": 0, "cancelled": 0, "failed": 1} and len(worker.history) == 1
    # The slots serve the next request.
    body = {"model": MODEL, "prompt": "Hi", "max_tokens": 2, "temperature": 0, "n": 2}
    assert http.post(COMPLETIONS, json=body).json()["choices"][1]["text"] == "The ocean"


@pytest.mark.parametrize("stream", [False, True])
def test_a_backend_that_fails_while_generating_is_a_502_not_a_500(stream):
    from backtrack_sampler.provider.remote import RemoteError

    def logits(tokens):
        if len(tokens) > 3 and tokens[-1] == SCRIPTED_VOCAB.index(" is"):
            raise RemoteError("the remote engine answered 503: overloaded", status=503)
        return plain_logits(tokens)

    app = make_app(ScriptedPool(2, logits))
    http = in_process_client(app)
    body = {"model": MODEL, "prompt": "Hi", "max_tokens": 8, "temperature": 0, "stream": stream}
    reply = http.post(COMPLETIONS, json=body)
    if stream:  # the stream had begun: its last event before [DONE] is the error
        assert reply.status_code == 200
        events = [line[6:] for line in reply.text.splitlines() if line.startswith("data: ")]
        assert events[-1] == "[DONE]"
        error = json.loads(events[-2])["error"]
    else:
        assert reply.status_code == 502
        error = reply.json()["error"]
    assert error["type"] == "server_error"
    assert error["message"] == "the model backend failed: the remote engine answered 503: overloaded"
    assert app.state.worker.wait_idle(timeout=30)


def test_a_streamed_request_with_several_choices_interleaves_them_by_index():
    app = make_app(ScriptedPool(3))
    http = in_process_client(app)
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 9, "temperature": 0}
    response = http.post("/v1/chat/completions", json={**body, "n": 3, "stream": True})
    assert response.status_code == 200
    texts = {0: "", 1: "", 2: ""}
    for block in response.text.split("\n\n"):
        payload = block.removeprefix("data: ")
        if block and payload != "[DONE]":
            for choice in json.loads(payload)["choices"]:
                texts[choice["index"]] += choice["delta"].get("content") or ""
    assert texts == {i: SCRIPTED_ANSWER for i in range(3)}


def test_create_app_refuses_what_is_neither_a_provider_nor_a_pool():
    from backtrack_sampler.server import create_app

    with pytest.raises(TypeError, match="provider must be a BaseProvider or a SequencePool, got str"):
        create_app("model.gguf", MODEL)
