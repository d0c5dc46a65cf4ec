"""Bad requests: each answered 400 (or 401/404) with the OpenAI error body naming the parameter; never a 500.

They run on the scripted model (``server_support.scripted_provider``): no weights, about a second.
"""

from __future__ import annotations

import json

import pytest

from server_support import MODEL, scripted_client, sse_events

pytest.importorskip("fastapi", reason="FastAPI is not installed (extra: server)")

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
USER = [{"role": "user", "content": "Hi"}]
REPLACE_3 = {"find": 3, "replace": "x"}
SLOW_REGEX = {"slops": ["x"], "regex": ["(a|aa)+b"], "regex_timeout": 60}
DEEP_CHAIN = {"name": "chain", "params": {"strategies": [[[[["creative"]]]]]}}
IMAGE = {"type": "image_url", "image_url": {"url": "http://example.invalid/cat.png"}}


def completion(**fields):
    return (COMPLETIONS, {"model": MODEL, "prompt": "Hello", "max_tokens": 4, **fields})


def chat(**fields):
    return (CHAT, {"model": MODEL, "messages": USER, "max_tokens": 4, **fields})


# (id, (path, body), the parameter the error must name)
BAD_REQUESTS = [
    ("missing prompt", (COMPLETIONS, {"model": MODEL}), "prompt"),
    ("prompt of the wrong type", completion(prompt=5), "prompt"),
    ("empty prompt list", completion(prompt=[]), "prompt"),
    ("empty prompt text", completion(prompt=""), "prompt"),
    ("negative token id", completion(prompt=[1, -1]), "prompt.1"),
    ("token id past the vocabulary", completion(prompt=[1, 10**9]), "prompt"),
    ("max_tokens as a string", completion(max_tokens="5"), "max_tokens"),
    ("max_tokens zero", completion(max_tokens=0), "max_tokens"),
    ("max_tokens over the limit", completion(max_tokens=10**6), "max_tokens"),
    ("negative temperature", completion(temperature=-1), "temperature"),
    ("temperature as text", completion(temperature="hot"), "temperature"),
    ("top_p negative", completion(top_p=-0.1), "top_p"),
    ("top_p above one", completion(top_p=1.5), "top_p"),
    ("top_k below -1", completion(top_k=-2), "top_k"),
    ("min_p of one", completion(min_p=1), "min_p"),
    ("n zero", completion(n=0), "n"),
    ("n over the limit", completion(n=100), "n"),
    ("stream as text", completion(stream="yes"), "stream"),
    ("stream_options without stream", completion(stream_options={"include_usage": True}), "stream_options"),
    ("empty stop string", completion(stop=[""]), "stop.0"),
    ("stop as a number", completion(stop=5), "stop"),
    ("too many stop strings", completion(stop=[str(i) for i in range(17)]), "stop"),
    ("seed as text", completion(seed="-1"), "seed"),
    ("logprobs over the limit", completion(logprobs=21), "logprobs"),
    ("logprobs as a boolean", completion(logprobs=True), "logprobs"),
    ("logit_bias key not a token id", completion(logit_bias={"01": 1}), "logit_bias"),
    ("logit_bias token past the vocabulary", completion(logit_bias={"999999999": 1}), "logit_bias"),
    ("logit_bias value as text", completion(logit_bias={"5": "x"}), "logit_bias.5"),
    ("presence_penalty out of range", completion(presence_penalty=3), "presence_penalty"),
    ("banned_strings as a number", completion(banned_strings=5), "banned_strings"),
    ("empty banned string", completion(banned_strings=[""]), "banned_strings.0"),
    ("too many bans", completion(banned_strings=[f"phrase {i}" for i in range(1001)]), "banned_strings"),
    ("invalid regex", completion(banned_regex=["(unclosed"]), "banned_regex.0"),
    ("regex matching the empty string", completion(banned_regex=["ok", "a*"]), "banned_regex.1"),
    ("regex too long", completion(banned_regex=["a" * 501]), "banned_regex.0"),
    ("unknown strategy", completion(strategy="nope"), "strategy.name"),
    ("unknown strategy parameter", completion(strategy={"name": "creative_writing", "params": {"x": 1}}), None),
    ("strategy parameter out of range", completion(strategy={"name": "creative", "params": {"top_p_flat": 5}}), None),
    ("strategy parameter of the wrong type", completion(strategy={"name": "replace", "params": REPLACE_3}), None),
    ("empty chain", completion(strategy={"name": "chain", "params": {"strategies": []}}), None),
    ("strategy as a number", completion(strategy=5), "strategy"),
    ("ban_scope unknown", completion(banned_strings=["x"], ban_scope="middle"), "ban_scope"),
    ("ban_scope of the wrong type", completion(banned_strings=["x"], ban_scope=[1]), "ban_scope"),
    ("ban_scope without bans", completion(ban_scope="think"), "ban_scope"),
    ("exempt_prompt_terms as text", completion(banned_strings=["x"], exempt_prompt_terms="yes"), "exempt_prompt_terms"),
    ("regex timeout set by a client", completion(strategy={"name": "antislop", "params": SLOW_REGEX}), None),
    ("chains nested too deep", completion(strategy=DEEP_CHAIN), None),
    ("echo", completion(echo=True), "echo"),
    ("suffix", completion(suffix="x"), "suffix"),
    ("best_of other than n", completion(best_of=3), "best_of"),
    ("missing messages", (CHAT, {"model": MODEL}), "messages"),
    ("no messages", chat(messages=[]), "messages"),
    ("unknown role", chat(messages=[{"role": "robot", "content": "x"}]), "messages.0.role"),
    ("content of the wrong type", chat(messages=[{"role": "user", "content": 5}]), "messages.0.content"),
    ("image content", chat(messages=[{"role": "user", "content": [IMAGE]}]), "messages.0.content.0.type"),
    ("top_logprobs without logprobs", chat(top_logprobs=2), "top_logprobs"),
    ("top_logprobs over the limit", chat(logprobs=True, top_logprobs=50), "top_logprobs"),
    ("json_schema", chat(response_format={"type": "json_schema"}), "response_format.type"),
    ("tools", chat(tools=[{"type": "function", "function": {"name": "f"}}]), "tools"),
    ("two different max tokens", chat(max_tokens=4, max_completion_tokens=5), "max_completion_tokens"),
    # issue 19: what the document refuses, the server refuses too
    ("empty token list in a list", completion(prompt=[[1], []]), "prompt.1"),
    ("empty text in a list", completion(prompt=["Hi", ""]), "prompt.1"),
    (
        "tool message without tool_call_id",
        chat(messages=[{"role": "tool", "content": "42"}]),
        "messages.0.tool_call_id",
    ),
    ("tool message without content", chat(messages=[{"role": "tool", "tool_call_id": "c1"}]), "messages.0.content"),
    (
        "tool message, null tool_call_id",
        chat(messages=[{"role": "tool", "content": "4", "tool_call_id": None}]),
        "messages.0.tool_call_id",
    ),
    ("ban_scope without bans in chat", chat(messages=[{"role": "tool"}], ban_scope="answer"), "ban_scope"),
    ("exempt_prompt_terms without bans", completion(exempt_prompt_terms=True), "exempt_prompt_terms"),
    ("ban_scope with an empty marker", completion(banned_strings=["x"], ban_scope="outside:,x"), "ban_scope"),
]
# issue 19: a logit_bias key is a token id in canonical decimal, nothing int() would also read.
NOT_TOKEN_IDS = [" 1", "1 ", "+1", "-1", "01", "1.0", "1e3", "1_0", "\u0661", "", "0x1", "1\n"]


@pytest.fixture(scope="module")
def http():
    return scripted_client()


def post(http, request_):
    path, body = request_
    return http.post(path, json=body)


def assert_error(response, status, param, code=None):
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert isinstance(error["message"], str) and error["message"]
    assert error["type"] == ("invalid_request_error" if status < 500 else "server_error")
    if param is not None:
        assert error["param"] == param, error
        assert error["message"].startswith(param.split(".")[0]) or param in error["message"], error
    if code is not None:
        assert error["code"] == code
    return error


@pytest.mark.parametrize(("request_", "param"), [r[1:] for r in BAD_REQUESTS], ids=[r[0] for r in BAD_REQUESTS])
def test_bad_request_is_a_400_naming_the_parameter(http, request_, param):
    path, body = request_
    error = assert_error(http.post(path, json=body), 400, param)
    if param is None:  # strategy parameters: named with their path
        assert error["param"].startswith("strategy"), error


@pytest.mark.parametrize(
    ("content", "code"),
    [(b"{not json", "json_invalid"), (b"[1, 2]", "invalid_body"), (b"", None), (b'"text"', "invalid_body")],
)
def test_a_body_that_is_not_a_json_object_is_a_400(http, content, code):
    response = http.post(COMPLETIONS, content=content, headers={"content-type": "application/json"})
    assert_error(response, 400, None, code)


def test_the_error_names_the_bad_value(http):
    error = post(http, completion(temperature=-1)).json()["error"]
    assert "-1" in error["message"]
    error = post(http, completion(strategy={"name": "creative", "params": {"top_p_flat": 5}})).json()["error"]
    assert error["param"] == "strategy.params.top_p_flat" and "5" in error["message"]


def test_unknown_model_route_and_method(http):
    assert_error(post(http, completion(model="gpt-4")), 404, "model", "model_not_found")
    assert_error(http.get("/v1/nothing"), 404, None)
    assert_error(http.get(COMPLETIONS), 405, None)


def test_limits_of_the_server():
    http = scripted_client(max_prompt_tokens=8, max_tokens_limit=16, max_bans=2)
    assert_error(post(http, completion(prompt="one two three four five six seven eight nine ten")), 400, "prompt")
    assert_error(post(http, completion(max_tokens=17)), 400, "max_tokens", "limit")
    assert_error(post(http, completion(banned_strings=["a", "b"], banned_regex=["c"])), 400, "banned_strings", "limit")
    antislop = {"name": "antislop", "params": {"slops": ["a", "b"]}}  # bans count wherever they are given
    assert_error(post(http, completion(strategy=antislop, banned_strings=["c"])), 400, "banned_strings", "limit")
    long_chat = [{"role": "user", "content": "word " * 50}]
    assert_error(post(http, chat(messages=long_chat)), 400, "messages")


def test_generation_stops_cleanly_at_the_context_size():
    """A prompt that leaves 3 positions: 3 tokens, finish_reason "length", even with max_tokens 20."""
    http = scripted_client(context_length=64)
    ids = [1] * (64 - 3)
    body = {"prompt": ids, "max_tokens": 20, "temperature": 0, "logit_bias": {"0": -100}}
    response = http.post(COMPLETIONS, json=body).json()
    assert response["choices"][0]["finish_reason"] == "length"
    assert response["usage"]["completion_tokens"] == 3
    too_long = assert_error(post(http, completion(prompt=[1] * 256)), 400, "prompt", "context_length_exceeded")
    assert "256" in too_long["message"]


def test_api_key():
    http = scripted_client(api_key="s3cret")
    body = completion(max_tokens=1)[1]
    assert_error(http.post(COMPLETIONS, json=body), 401, None, "invalid_api_key")
    bad = http.post(COMPLETIONS, json=body, headers={"Authorization": "Bearer wrong"})
    assert_error(bad, 401, None, "invalid_api_key")
    assert_error(http.get("/v1/models"), 401, None, "invalid_api_key")
    good = http.post(COMPLETIONS, json=body, headers={"Authorization": "Bearer s3cret"})
    assert good.status_code == 200 and good.json()["usage"]["completion_tokens"] == 1
    assert http.get("/health").status_code == 200  # health and the playground page need no key
    assert http.get("/").status_code == 200


# -- issue #13: what an attacker tried ----------------------------------------------------------
LONE = "a\ud800b"  # a lone surrogate: valid JSON ("a\ud800b"), not valid Unicode text
LONE_PART = [{"type": "text", "text": LONE}]
LONE_SLOPS = {"name": "antislop", "params": {"slops": [LONE]}}
SURROGATES = [
    ("prompt", completion(prompt=LONE), "prompt"),
    ("prompt list", completion(prompt=["ok", LONE]), "prompt.1"),
    ("chat content", chat(messages=[{"role": "user", "content": LONE}]), "messages.0.content"),
    (
        "chat part",
        chat(messages=[{"role": "user", "content": LONE_PART}]),
        "messages.0.content.0.text",
    ),
    ("chat name", chat(messages=[{"role": "user", "content": "Hi", "name": LONE}]), "messages.0.name"),
    ("strategy params key", completion(strategy={"name": "antislop", "params": {LONE: 1}}), "strategy.params"),
    (
        "strategy params value",
        completion(strategy=LONE_SLOPS),
        "strategy.params.slops",
    ),
    ("strategy name", completion(strategy=LONE), "strategy"),
    ("strategy in a chain", completion(strategy=["json", {"name": LONE}]), "strategy.1.name"),
    ("stop", completion(stop=LONE), "stop"),
    ("stop list", completion(stop=["x", LONE]), "stop.1"),
    ("banned_strings", completion(banned_strings=[LONE]), "banned_strings.0"),
    ("banned_regex", completion(banned_regex=[LONE]), "banned_regex.0"),
    ("logit_bias key", completion(logit_bias={LONE: 1}), "logit_bias"),
    ("user", completion(user=LONE), "user"),
    ("model", completion(model=LONE), "model"),
    ("response_format", chat(response_format={"type": LONE}), "response_format.type"),
]


def post_escaped(http, path, body, **kwargs):
    """POST ``body`` as JSON with non-ASCII escaped, so that lone surrogates travel as ``\\ud800``."""
    headers = {"content-type": "application/json", **kwargs.pop("headers", {})}
    return http.post(path, content=json.dumps(body).encode(), headers=headers, **kwargs)


@pytest.mark.parametrize(("request_", "param"), [r[1:] for r in SURROGATES], ids=[r[0] for r in SURROGATES])
def test_a_lone_surrogate_is_a_400_naming_the_field(http, request_, param):
    path, body = request_
    response = post_escaped(http, path, body)
    assert response.headers["content-type"].startswith("application/json")
    error = assert_error(response, 400, param)
    assert "surrogate" in error["message"], error


def test_integral_numbers_are_integers_as_json_schema_counts_them(http):
    response = post(http, completion(n=2.0, max_tokens=3.0, seed=7.0, temperature=0))
    assert response.status_code == 200, response.text
    assert len(response.json()["choices"]) == 2 and response.json()["usage"]["completion_tokens"] == 6
    assert_error(post(http, completion(n=1.5)), 400, "n")
    assert_error(post(http, completion(max_tokens="3")), 400, "max_tokens")
    assert_error(post(http, completion(n=True)), 400, "n")


def test_prompts_times_n_is_bounded_before_tokenizing():
    http = scripted_client(max_choices=4)
    assert_error(post(http, completion(prompt=["Hi"] * 3, n=2)), 400, "prompt", "limit")
    assert_error(post(http, completion(prompt="Hi", n=5)), 400, "n", "limit")  # max_n 8, but 5 > 4 choices
    # Not tokenized: these characters are outside the scripted vocabulary (tokenizing them is a 400 of another kind).
    error = assert_error(post(http, completion(prompt=["é"] * 5)), 400, "prompt", "limit")
    assert "5 x 1 = 5" in error["message"]
    # Greedy, so no choice meets EOS early (sampled, the scripted model ends after "." now and then).
    assert post(http, completion(prompt=["Hi"] * 2, n=2, temperature=0)).json()["usage"]["completion_tokens"] == 16
    # The default bound refuses the reported 1,000 prompts x n 8.
    many = assert_error(post(scripted_client(), completion(prompt=["Hi"] * 1000, n=8)), 400, "prompt", "limit")
    assert "8000" in many["message"]


def test_the_rewind_budget_is_bounded_by_the_server():
    from backtrack_sampler.server.prepare import completion_plan
    from backtrack_sampler.server.schemas import CompletionRequest
    from backtrack_sampler.server.settings import ServerSettings
    from server_support import scripted_provider

    http = scripted_client(max_rewinds_limit=10, rewinds_per_position_limit=3)
    assert_error(post(http, completion(max_rewinds=11)), 400, "max_rewinds", "limit")
    assert_error(post(http, completion(rewinds_per_position=4)), 400, "rewinds_per_position", "limit")
    assert post(http, completion(max_rewinds=10, rewinds_per_position=3)).status_code == 200
    settings = ServerSettings(MODEL, max_rewinds_limit=10, rewinds_per_position_limit=3)
    plan, _ = completion_plan(CompletionRequest(prompt="Hi", max_tokens=40), scripted_provider(), settings)
    assert (plan.budget.per_generation, plan.budget.per_position) == (10, 3)  # none given: the engine's, capped
    plan, _ = completion_plan(CompletionRequest(prompt="Hi", max_tokens=40), scripted_provider(), ServerSettings(MODEL))
    assert (plan.budget.per_generation, plan.budget.per_position) == (80, 16)  # the engine's defaults


def test_a_prompt_far_longer_than_the_context_is_refused_before_tokenizing():
    http = scripted_client(context_length=64)
    # "é" is not in the scripted vocabulary: tokenizing it would fail with another message.
    error = assert_error(post(http, completion(prompt="é" * (32 * 64 + 1))), 400, "prompt", "context_length_exceeded")
    assert "characters" in error["message"]
    long_chat = [{"role": "user", "content": "é" * (32 * 64)}]
    assert_error(post(http, chat(messages=long_chat)), 400, "messages", "context_length_exceeded")
    # A text the model cannot encode is a 400 too, never a 500.
    assert_error(post(http, completion(prompt="é")), 400, "prompt", "invalid_value")


def test_a_regex_that_searches_too_long_names_banned_regex(monkeypatch):
    from backtrack_sampler.strategy.regex_tracker import RegexTracker

    def too_long(self, index, text, pos, partial):
        raise ValueError(f"regex {self.patterns[index].pattern!r} took longer than 0.05 s (simulated)")

    monkeypatch.setattr(RegexTracker, "_find", too_long)
    http = scripted_client()
    error = assert_error(post(http, completion(banned_regex=["o+cean"])), 400, "banned_regex")
    assert "took longer" in error["message"]
    stream = http.post(COMPLETIONS, json=completion(banned_regex=["o+cean"], stream=True)[1])
    failed = [e for e in sse_events(stream.text) if isinstance(e, dict) and "error" in e]
    assert failed and failed[0]["error"]["param"] == "banned_regex"
    antislop = {"name": "antislop", "params": {"slops": ["x"], "regex": ["o+cean"]}}
    assert_error(post(http, completion(strategy=antislop)), 400, "strategy")


# -- issue 19: the document and the server agree; codes are consistent ---------------------------------
@pytest.mark.parametrize("key", NOT_TOKEN_IDS, ids=repr)
def test_a_logit_bias_key_must_be_a_token_id_in_decimal(http, key):
    error = assert_error(post(http, completion(logit_bias={key: 1})), 400, "logit_bias", "invalid_value")
    assert repr(key) in error["message"] and "decimal" in error["message"]


def test_logit_bias_takes_canonical_token_ids(http):
    from server_support import SCRIPTED_VOCAB

    the = str(SCRIPTED_VOCAB.index("The"))  # the scripted model's first word, banned: it starts with "A"
    body = completion(logit_bias={the: -100, "0": -100}, temperature=0, max_tokens=1)[1]
    assert http.post(COMPLETIONS, json=body).json()["choices"][0]["text"] == "A"


def test_logprobs_over_the_limit_are_a_limit_in_both_endpoints(http):
    assert_error(post(http, completion(logprobs=21)), 400, "logprobs", "limit")
    assert_error(post(http, chat(logprobs=True, top_logprobs=21)), 400, "top_logprobs", "limit")


def test_what_the_document_allows_the_server_takes(http):
    assert post(http, completion(ban_scope=None)).status_code == 200  # null: the default, everywhere
    assert post(http, completion(ban_scope=None, banned_strings=["vast"])).status_code == 200
    assert post(http, completion(exempt_prompt_terms=False)).status_code == 200
    tool = {"role": "tool", "content": "42", "tool_call_id": "call_1"}
    messages = [{"role": "user", "content": "What is 6 x 7?"}, {"role": "assistant", "content": None}, tool]
    assert post(http, chat(messages=messages)).status_code == 200
