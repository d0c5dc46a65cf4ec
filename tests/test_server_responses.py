"""Response bodies and stream chunks of both endpoints, exactly, on the scripted model (no weights).

The scripted model writes ``SCRIPTED_ANSWER`` greedily after any prompt (see server_support.py), so every
text, token count and finish reason below is known in advance.
"""

from __future__ import annotations

import math

import pytest

from server_support import MODEL, SCRIPTED_ANSWER, scripted_client, sse_events

pytest.importorskip("fastapi", reason="FastAPI is not installed (extra: server)")

COMPLETIONS = "/v1/completions"
CHAT = "/v1/chat/completions"
USER = [{"role": "user", "content": "Tell me about the ocean."}]
STATS_KEYS = {"tokens", "positions_evaluated", "rewinds", "tokens_rewound", "rewinds_refused", "elapsed_s"}


@pytest.fixture(scope="module")
def http():
    return scripted_client()


def post(http, path, **fields):
    body = {"model": MODEL, "temperature": 0, **fields}
    response = http.post(path, json=body)
    assert response.status_code == 200, response.text
    return response.json() if not fields.get("stream") else sse_events(response.text)


def newline_id(http) -> str:
    """The token id of "\\n\\n" (what follows each sentence), as a logit_bias key."""
    reply = post(http, COMPLETIONS, prompt="Hi", max_tokens=10, logprobs=0, return_tokens_as_token_ids=True)
    return reply["choices"][0]["logprobs"]["tokens"][-1].removeprefix("token_id:")


def test_a_completion(http):
    reply = post(http, COMPLETIONS, prompt="Hello", max_tokens=4)
    assert set(reply) == {"id", "object", "created", "model", "choices", "usage"}
    assert reply["id"].startswith("cmpl-") and reply["object"] == "text_completion" and reply["model"] == MODEL
    assert isinstance(reply["created"], int)
    assert reply["choices"] == [{"index": 0, "text": "The ocean is a", "logprobs": None, "finish_reason": "length"}]
    assert reply["usage"] == {"prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9}


def test_a_streamed_completion(http):
    events = post(http, COMPLETIONS, prompt="Hello", max_tokens=4, stream=True)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert len({c["id"] for c in chunks}) == 1 and all(c["object"] == "text_completion" for c in chunks)
    assert all("usage" not in c for c in chunks)
    assert "".join(c["choices"][0]["text"] for c in chunks) == "The ocean is a"
    assert len(chunks) > 2  # streamed, not one block
    assert [c["choices"][0]["finish_reason"] for c in chunks[:-1]] == [None] * (len(chunks) - 1)
    assert chunks[-1]["choices"] == [{"index": 0, "text": "", "logprobs": None, "finish_reason": "length"}]


def test_include_usage_adds_a_last_chunk_with_the_usage(http):
    events = post(http, COMPLETIONS, prompt="Hello", max_tokens=4, stream=True, stream_options={"include_usage": True})
    *chunks, last, done = events
    assert done == "[DONE]"
    assert all(c["usage"] is None and c["choices"] for c in chunks)
    assert last["choices"] == [] and last["usage"] == {"prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9}


def test_a_chat_completion(http):
    reply = post(http, CHAT, messages=USER, max_tokens=5)
    assert reply["id"].startswith("chatcmpl-") and reply["object"] == "chat.completion"
    assert reply["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "The ocean is a vast"},
            "logprobs": None,
            "finish_reason": "length",
        }
    ]
    assert reply["usage"]["completion_tokens"] == 5


def test_a_streamed_chat_completion(http):
    events = post(http, CHAT, messages=USER, max_tokens=5, stream=True)
    chunks = events[:-1]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    first = chunks[0]["choices"][0]
    assert first == {"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": None}
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == "The ocean is a vast"
    assert chunks[-1]["choices"][0] == {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "length"}


def test_finish_reason_stop_on_eos(http):
    eos_now = post(http, CHAT, messages=USER, max_tokens=10, logit_bias={"0": 100})
    assert eos_now["choices"][0]["finish_reason"] == "stop" and eos_now["choices"][0]["message"]["content"] == ""
    assert eos_now["usage"]["completion_tokens"] == 0
    # Without "\n\n" the model ends after its sentence.
    reply = post(http, COMPLETIONS, prompt="Hi", max_tokens=50, logit_bias={newline_id(http): -100})
    assert reply["choices"][0]["text"] == SCRIPTED_ANSWER and reply["choices"][0]["finish_reason"] == "stop"
    assert reply["usage"]["completion_tokens"] == 9


def test_several_prompts_and_choices(http):
    reply = post(http, COMPLETIONS, prompt=["Hi", "Hello"], max_tokens=2, n=2)
    assert [c["index"] for c in reply["choices"]] == [0, 1, 2, 3]
    assert {c["text"] for c in reply["choices"]} == {"The ocean"}
    assert reply["usage"] == {"prompt_tokens": 2 + 5, "completion_tokens": 8, "total_tokens": 15}  # each prompt once
    events = post(http, COMPLETIONS, prompt=["Hi", "Hello"], max_tokens=2, n=2, stream=True)
    ends = [c["choices"][0]["index"] for c in events[:-1] if c["choices"][0]["finish_reason"]]
    assert ends == [0, 1, 2, 3]  # one choice after another


def test_choices_follow_the_seed(http):
    from backtrack_sampler import BacktrackSampler
    from server_support import scripted_provider

    reply = post(http, COMPLETIONS, prompt="Hi", max_tokens=8, temperature=1.0, seed=7, n=2, top_k=0)
    sampler = BacktrackSampler(scripted_provider())
    expected = [sampler.generate_text("Hi", max_new_tokens=8, temperature=1.0, top_k=0, seed=s).text for s in (7, 8)]
    assert [c["text"] for c in reply["choices"]] == expected


def test_completion_logprobs(http):
    reply = post(http, COMPLETIONS, prompt="Hello", max_tokens=4, logprobs=2)
    logprobs = reply["choices"][0]["logprobs"]
    assert logprobs["tokens"] == ["The", " ocean", " is", " a"]
    assert logprobs["text_offset"] == [0, 3, 9, 12]
    # " ocean" (5) against " sea" (3) and the rest far below.
    second = logprobs["top_logprobs"][1]
    assert list(second) == [" ocean", " sea"]
    assert second[" ocean"] == logprobs["token_logprobs"][1] == pytest.approx(-math.log1p(math.exp(-2)), abs=1e-4)


def test_chat_logprobs_name_bytes_and_alternatives(http):
    reply = post(http, CHAT, messages=USER, max_tokens=4, logprobs=True, top_logprobs=3)
    content = reply["choices"][0]["logprobs"]["content"]
    assert [e["token"] for e in content] == ["The", " ocean", " is", " a"]
    assert content[1]["bytes"] == list(b" ocean")
    assert [t["token"] for t in content[1]["top_logprobs"]][:2] == [" ocean", " sea"]
    without = post(http, CHAT, messages=USER, max_tokens=4, logprobs=True)  # top_logprobs left out: none
    assert all(e["top_logprobs"] == [] for e in without["choices"][0]["logprobs"]["content"])


def test_backtrack_events_are_sent_only_when_asked(http):
    plain = post(http, CHAT, messages=USER, max_tokens=8, banned_strings=["vast"], stream=True)
    assert not any("backtrack_event" in c["choices"][0] or "backtrack_stats" in c["choices"][0] for c in plain[:-1])
    events = post(http, CHAT, messages=USER, max_tokens=8, banned_strings=["vast"], stream=True, backtrack_events=True)
    choices = [c["choices"][0] for c in events[:-1]]
    rewinds = [c["backtrack_event"] for c in choices if "backtrack_event" in c]
    assert len(rewinds) == 1
    rewind = rewinds[0]
    assert rewind["type"] == "rewind" and rewind["char_offset"] == len("The ocean is a") and rewind["position"] == 4
    assert rewind["suppressed_text"].startswith(" vast") and "vast" in rewind["reason"]
    assert set(rewind) == {
        "type",
        "position",
        "char_offset",
        "suppressed_text",
        "suppressed_tokens",
        "banned_tokens",
        "inserted_tokens",
        "reason",
        "strategy",
    }
    text = "".join(c["delta"].get("content") or "" for c in choices)
    assert text == "The ocean is a deep and mysterious sea."[: len(text)] and "vast" not in text
    stats = choices[-1]["backtrack_stats"]
    assert STATS_KEYS <= set(stats) and stats["rewinds"] == 1 and stats["tokens"] == 8
    # Not streamed: the events ride in the choice.
    whole = post(http, CHAT, messages=USER, max_tokens=8, banned_strings=["vast"], backtrack_events=True)
    choice = whole["choices"][0]
    assert choice["message"]["content"] == text
    assert choice["backtrack_events"] == [rewind] and choice["backtrack_stats"]["rewinds"] == 1


def test_a_refused_rewind_is_an_event_too(http):
    reply = post(http, COMPLETIONS, prompt="Hi", max_tokens=6, banned_strings=["vast"], max_rewinds=0)
    choice = reply["choices"][0]
    assert choice["text"] == "The ocean is a vast and" and "backtrack_events" not in choice
    reply = post(
        http, COMPLETIONS, prompt="Hi", max_tokens=6, banned_strings=["vast"], max_rewinds=0, backtrack_events=True
    )
    events = reply["choices"][0]["backtrack_events"]
    assert [e["type"] for e in events] == ["rewind_refused"]
    assert set(events[0]) == {"type", "position", "cause", "reason", "strategy", "message"}
    assert reply["choices"][0]["backtrack_stats"]["rewinds_refused"] == 1


def test_models_and_health(http):
    models = http.get("/v1/models").json()
    assert models["object"] == "list" and [m["id"] for m in models["data"]] == [MODEL]
    card = http.get(f"/v1/models/{MODEL}").json()
    assert card["object"] == "model" and card["max_model_len"] == 4096 and card["owned_by"] == "backtrack_sampler"
    assert http.get("/v1/models/other").status_code == 404
    health = http.get("/health").json()
    assert health["status"] == "ok" and health["model"] == MODEL
    assert set(health["generation"]) == {"queued_or_running", "running", "parallel", "completed", "cancelled", "failed"}
    assert health["generation"]["parallel"] == 1 and "batch" not in health


def test_the_formatters_send_minus_infinity_as_a_floor_and_skip_unfinished_characters():
    from backtrack_sampler.server.generation import TextOut
    from backtrack_sampler.server.request_strategy import TokenRecord
    from backtrack_sampler.server.responses import LOGPROB_FLOOR, ChatFormatter, CompletionFormatter
    from server_support import scripted_provider

    provider = scripted_provider()
    the = provider.encode("The")[0]
    records = (
        TokenRecord(the, "The", 0, -math.inf, ((the, -math.inf),)),
        TokenRecord(-1, "\ufffd", 3, None, ()),  # an unfinished character at the end: text only
    )
    item = TextOut(0, "The\ufffd", records)
    completion = CompletionFormatter(provider, MODEL, 1, False, False, False, [1])
    logprobs = completion.chunks(item)[0]["choices"][0]["logprobs"]
    assert logprobs == {
        "tokens": ["The"],
        "token_logprobs": [LOGPROB_FLOOR],
        "top_logprobs": [{"The": LOGPROB_FLOOR}],
        "text_offset": [0],
    }
    chat = ChatFormatter(provider, MODEL, 1, True, False, False, [1])
    chunks = chat.chunks(item)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    content = chunks[1]["choices"][0]["logprobs"]["content"]
    assert [e["token"] for e in content] == [f"token_id:{the}"] and content[0]["logprob"] == LOGPROB_FLOOR
