"""The token-id dialect a remote provider speaks (as with vLLM): token-id prompts, logprobs with token ids,
``return_tokens_as_token_ids``, ``logit_bias``.

On the scripted model (``server_support.scripted_provider``), whose logits are known exactly.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from server_support import MODEL, greedy_text, in_process_client, make_app, reference_provider, scripted_provider

pytest.importorskip("fastapi", reason="FastAPI is not installed (extra: server)")

PROMPT = "The capital of France is"


@pytest.fixture(scope="module")
def scripted():
    return scripted_provider()


@pytest.fixture(scope="module")
def http(scripted):
    return in_process_client(make_app(scripted))


def complete(http, **fields):
    body = {"model": MODEL, "max_tokens": 6, "temperature": 0, **fields}
    response = http.post("/v1/completions", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def ids_of(logprobs) -> list[int]:
    assert all(t.startswith("token_id:") for t in logprobs["tokens"])
    return [int(t.removeprefix("token_id:")) for t in logprobs["tokens"]]


def test_a_token_id_prompt_gives_what_the_text_prompt_gives(http, scripted):
    ids = scripted.encode(PROMPT)
    by_text = complete(http, prompt=PROMPT)["choices"][0]["text"]
    by_ids = complete(http, prompt=ids)
    assert by_ids["choices"][0]["text"] == by_text == greedy_text(reference_provider(scripted), ids, 6)
    assert by_ids["usage"]["prompt_tokens"] == len(ids)
    batch = complete(http, prompt=[ids, scripted.encode("Once upon a time")])  # several prompts
    assert [c["index"] for c in batch["choices"]] == [0, 1]
    assert batch["choices"][0]["text"] == by_text


def test_logprobs_with_token_ids_are_the_raw_model_logprobs(http, scripted):
    ids = scripted.encode(PROMPT)
    reply = complete(http, prompt=ids, logprobs=5, return_tokens_as_token_ids=True)
    logprobs = reply["choices"][0]["logprobs"]
    generated = ids_of(logprobs)
    assert len(generated) == 6 == reply["usage"]["completion_tokens"]
    assert scripted.decode(generated) == reply["choices"][0]["text"]
    # vLLM's shape: the chosen token first, then the top 5 (so 5 or 6 entries), keyed "token_id:<id>".
    rows = zip(logprobs["tokens"], logprobs["token_logprobs"], logprobs["top_logprobs"], strict=True)
    for chosen, value, top in rows:
        assert list(top)[0] == chosen and top[chosen] == value
        assert 5 <= len(top) <= 6 and all(k.startswith("token_id:") for k in top)
        assert value == max(top.values())  # greedy takes the most likely token
    assert logprobs["text_offset"][0] == 0 and logprobs["text_offset"] == sorted(logprobs["text_offset"])
    # The same numbers as the model's own log-softmax at the first position.
    provider = reference_provider(scripted)
    raw = provider.prefill(ids).astype(np.float64)
    expected = raw - raw.max() - math.log(np.exp(raw - raw.max()).sum())
    best = np.argsort(-expected)[:5]
    first = logprobs["top_logprobs"][0]
    assert list(first) == [f"token_id:{t}" for t in best]  # the chosen (greedy: the best) is not repeated
    for token in best:
        assert first[f"token_id:{token}"] == pytest.approx(expected[token], abs=1e-4)


def test_logprobs_zero_gives_the_chosen_token_only(http):
    logprobs = complete(http, prompt=PROMPT, logprobs=0)["choices"][0]["logprobs"]
    assert all(len(top) == 1 for top in logprobs["top_logprobs"])
    assert "".join(logprobs["tokens"]) == complete(http, prompt=PROMPT)["choices"][0]["text"]


def test_logit_bias_minus_100_changes_the_greedy_token(http, scripted):
    ids = scripted.encode(PROMPT)
    first = ids_of(complete(http, prompt=ids, logprobs=0, return_tokens_as_token_ids=True)["choices"][0]["logprobs"])
    banned = complete(http, prompt=ids, logprobs=0, return_tokens_as_token_ids=True, logit_bias={str(first[0]): -100})
    assert ids_of(banned["choices"][0]["logprobs"])[0] != first[0]
    # Out-of-range biases are clamped to [-100, 100], as vLLM does.
    clamped = complete(http, prompt=ids, logprobs=0, return_tokens_as_token_ids=True, logit_bias={str(first[0]): -1e9})
    assert clamped["choices"][0]["text"] == banned["choices"][0]["text"]


def test_logit_bias_plus_100_forces_a_token(http, scripted):
    zebra = scripted.encode(" calm", add_bos=False)[0]
    reply = complete(http, prompt=PROMPT, logprobs=0, return_tokens_as_token_ids=True, logit_bias={str(zebra): 100})
    assert ids_of(reply["choices"][0]["logprobs"]) == [zebra] * 6


def test_chat_logprobs(http, scripted):
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Name a color."}],
        "max_tokens": 5,
        "temperature": 0,
        "logprobs": True,
        "top_logprobs": 3,
    }
    choice = http.post("/v1/chat/completions", json=body).json()["choices"][0]
    content = choice["logprobs"]["content"]
    assert "".join(entry["token"] for entry in content) == choice["message"]["content"]
    for entry in content:
        assert len(entry["top_logprobs"]) == 3 and entry["logprob"] == entry["top_logprobs"][0]["logprob"]
        assert bytes(entry["bytes"]) == scripted.token_bytes(scripted.encode(entry["token"], False)[0])
    with_ids = http.post("/v1/chat/completions", json={**body, "return_tokens_as_token_ids": True}).json()
    tokens = [int(e["token"].removeprefix("token_id:")) for e in with_ids["choices"][0]["logprobs"]["content"]]
    assert scripted.decode(tokens) == choice["message"]["content"]
