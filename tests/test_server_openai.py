"""End to end on the embedded model, in-process: the official ``openai`` client (completions and chat, streamed
and not), and generation at the edge of llama.cpp's context.

The server's checks, formats, stop strings and strategies are tested exactly on the scripted model
(tests/test_server_errors.py, test_server_responses.py, test_server_stop_strings.py, test_server_strategies.py).
"""

from __future__ import annotations

import json

import pytest

from server_support import (
    MODEL,
    OCEAN,
    greedy_text,
    in_process_client,
    make_app,
    openai_client,
    reference_provider,
    sse_events,
)

pytest.importorskip("openai", reason="the openai client is not installed (extra: dev)")
pytestmark = pytest.mark.llamacpp

PROMPT = "The capital of France is"  # greedy: " Paris.\n\nThe United States has ..."


@pytest.fixture(scope="module")
def http(server_provider):
    return in_process_client(make_app(server_provider))


@pytest.fixture(scope="module")
def client(http):
    return openai_client(http)


def test_models_and_health(client, http):
    assert [m.id for m in client.models.list().data] == [MODEL]
    health = http.get("/health").json()
    assert health["status"] == "ok" and health["model"] == MODEL


def test_completion_equals_the_library_greedy_output(client, server_provider):
    completion = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=10, temperature=0)
    provider = reference_provider(server_provider)
    assert completion.object == "text_completion"
    assert completion.choices[0].text == greedy_text(provider, PROMPT, 10)
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage.prompt_tokens == len(provider.encode(PROMPT))
    assert completion.usage.completion_tokens == 10
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + 10


def test_streamed_completion_holds_the_same_text(client, http):
    whole = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=10, temperature=0).choices[0].text
    chunks = list(
        client.completions.create(
            model=MODEL,
            prompt=PROMPT,
            max_tokens=10,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert all(c.object == "text_completion" for c in chunks)
    text_chunks = [c for c in chunks if c.choices]
    assert len(text_chunks) > 2  # streamed, not one block
    assert "".join(c.choices[0].text for c in text_chunks) == whole
    assert [c.choices[0].finish_reason for c in text_chunks][-1] == "length"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 10
    # On the wire: `data: {json}` events, the last one `data: [DONE]`, no extension fields by default.
    body = {"model": MODEL, "prompt": PROMPT, "max_tokens": 4, "temperature": 0, "stream": True}
    response = http.post("/v1/completions", json=body)
    assert response.headers["content-type"].startswith("text/event-stream")
    events = sse_events(response.text)
    assert events[-1] == "[DONE]" and "backtrack" not in response.text


def test_chat_completion_streamed_and_not(client, server_provider):
    chat = client.chat.completions.create(model=MODEL, messages=OCEAN, max_tokens=12, temperature=0)
    provider = reference_provider(server_provider)
    expected = greedy_text(provider, provider.apply_chat_template(OCEAN), 12)
    assert chat.object == "chat.completion"
    assert chat.choices[0].message.role == "assistant"
    assert chat.choices[0].message.content == expected
    assert chat.choices[0].finish_reason == "length"
    stream = client.chat.completions.create(
        model=MODEL, messages=OCEAN, max_tokens=12, temperature=0, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert content == expected
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].usage.completion_tokens == 12 and chunks[-1].usage.prompt_tokens == chat.usage.prompt_tokens


def test_banned_strings_are_erased_and_rewritten(client, http):
    plain = client.chat.completions.create(model=MODEL, messages=OCEAN, max_tokens=16, temperature=0)
    assert "vast" in plain.choices[0].message.content  # the model does write it
    banned = client.chat.completions.create(
        model=MODEL, messages=OCEAN, max_tokens=16, temperature=0, extra_body={"banned_strings": ["vast"]}
    )
    text = banned.choices[0].message.content
    assert "vast" not in text.lower() and text.startswith("The ocean is a")
    # Opt-in events: the stream also tells what was erased, where, and why.
    body = {
        "model": MODEL,
        "messages": OCEAN,
        "max_tokens": 16,
        "temperature": 0,
        "stream": True,
        "banned_strings": ["vast"],
        "backtrack_events": True,
    }
    events = sse_events(http.post("/v1/chat/completions", json=body).text)
    choices = [c for e in events[:-1] for c in e["choices"]]
    rewinds = [c["backtrack_event"] for c in choices if "backtrack_event" in c]
    assert rewinds and rewinds[0]["type"] == "rewind"
    assert rewinds[0]["suppressed_text"].lower().lstrip().startswith("vast")
    assert "vast" in rewinds[0]["reason"] and rewinds[0]["char_offset"] == len("The ocean is a")
    assert "".join(c["delta"].get("content") or "" for c in choices) == text
    stats = [c["backtrack_stats"] for c in choices if "backtrack_stats" in c]
    assert stats[-1]["rewinds"] >= 1
    # Not streamed: the events ride in the choice.
    whole = http.post("/v1/chat/completions", json={**body, "stream": False}).json()
    assert whole["choices"][0]["message"]["content"] == text
    assert whole["choices"][0]["backtrack_events"][0]["suppressed_text"] == rewinds[0]["suppressed_text"]


def test_banned_regex(client):
    chat = client.chat.completions.create(
        model=MODEL,
        messages=OCEAN,
        max_tokens=16,
        temperature=0,
        extra_body={"banned_regex": [r"\b(vast|huge|immense)\b"], "banned_strings": ["mysterious"]},
    )
    text = chat.choices[0].message.content.lower()
    assert text.startswith("the ocean is a") and not any(w in text for w in ("vast", "huge", "immense", "mysterious"))


def test_stop_strings_end_the_text_before_them(client):
    one = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=10, temperature=0, stop=".")
    assert one.choices[0].text == " Paris" and one.choices[0].finish_reason == "stop"
    # A stop string spread over several tokens, streamed: nothing past it is ever sent.
    chunks = list(
        client.completions.create(
            model=MODEL, prompt=PROMPT, max_tokens=10, temperature=0, stop=["\n\nThe"], stream=True
        )
    )
    assert "".join(c.choices[0].text for c in chunks) == " Paris."
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_finish_reason_stop_on_eos(client, server_provider):
    eos = server_provider.eos_token_id
    chat = client.chat.completions.create(
        model=MODEL, messages=OCEAN, max_tokens=10, temperature=0, logit_bias={str(eos): 100}
    )
    assert chat.choices[0].finish_reason == "stop" and chat.choices[0].message.content == ""
    assert chat.usage.completion_tokens == 0


def test_n_choices_follow_the_seed(client, server_provider):
    completion = client.completions.create(
        model=MODEL, prompt=PROMPT, max_tokens=6, temperature=1.0, seed=7, n=2, extra_body={"top_k": 0}
    )
    provider = reference_provider(server_provider)
    from backtrack_sampler import BacktrackSampler

    sampler = BacktrackSampler(provider)
    expected = [sampler.generate_text(PROMPT, max_new_tokens=6, temperature=1.0, top_k=0, seed=s).text for s in (7, 8)]
    assert [c.index for c in completion.choices] == [0, 1]
    assert [c.text for c in completion.choices] == expected
    assert completion.usage.completion_tokens == 12


def test_strategy_specs_and_chains(client):
    for strategy in (
        "creative_writing",
        {"name": "adaptive_temperature", "params": {"poly_coeffs": [1.0, 1.0]}},
        {"name": "antislop", "params": {"slops": [["ocean", 0.2]], "whole_words": False}},  # a soft ban
        {"name": "chain", "params": {"strategies": ["creative", {"name": "antislop", "params": {"slops": ["vast"]}}]}},
    ):
        chat = client.chat.completions.create(
            model=MODEL, messages=OCEAN, max_tokens=6, temperature=0, extra_body={"strategy": strategy}
        )
        assert chat.choices[0].message.content and chat.usage.completion_tokens <= 6


def test_json_response_format_keeps_the_output_json(client):
    messages = [{"role": "user", "content": "Describe a cat as a JSON object with a name and an age."}]
    chat = client.chat.completions.create(
        model=MODEL, messages=messages, max_tokens=80, temperature=0, response_format={"type": "json_object"}
    )
    text = chat.choices[0].message.content
    assert text.lstrip().startswith("{")
    if chat.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(text), dict)


def test_generation_stops_cleanly_at_the_context_size(smollm_path):
    """A prompt that leaves 3 positions in llama.cpp's context: 3 tokens, finish_reason "length", max_tokens 20."""
    from backtrack_sampler.models import load_llama
    from backtrack_sampler.provider.llamacpp_provider import LlamacppProvider

    small = LlamacppProvider(load_llama(smollm_path, n_ctx=256))  # llama.cpp's smallest context
    http = in_process_client(make_app(small))
    ids = [1] * (small.context_length - 3)
    eos = {str(t): -100 for t in small.eos_token_ids}
    body = {"prompt": ids, "max_tokens": 20, "temperature": 0, "logit_bias": eos}
    response = http.post("/v1/completions", json=body).json()
    assert response["choices"][0]["finish_reason"] == "length"
    assert response["usage"]["completion_tokens"] == 3
    too_long = http.post("/v1/completions", json={"model": MODEL, "prompt": [1] * 256, "max_tokens": 4})
    error = too_long.json()["error"]
    assert too_long.status_code == 400 and error["param"] == "prompt" and error["code"] == "context_length_exceeded"
    assert "256" in error["message"]
