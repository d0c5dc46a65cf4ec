"""Other servers' request fields on ``/v1/completions`` and ``/v1/chat/completions`` (issue 21, item 1).

What SillyTavern, KoboldCpp, TabbyAPI, llama.cpp and vLLM clients send: ``seed: -1``,
ban fields (``banned_strings`` as one string, ``banned_tokens``, ``custom_token_bans``),
aliases (``stopping_strings``, ``stop_sequence``, ``max_new_tokens``, ``max_length``,
``n_predict``, ``sampler_seed``, ``ban_eos_token``), ``ignore_eos``, ``min_tokens``,
llama.cpp's ``logit_bias`` forms and the ``dry_*`` fields. Exact tests on the scripted
model (``server_support``), a few on the embedded one with bans chosen from a control run.
"""

from __future__ import annotations

import pytest

from server_support import (
    MODEL,
    SCRIPTED_ANSWER,
    SCRIPTED_VOCAB,
    in_process_client,
    make_app,
    scripted_client,
    scripted_logits,
    scripted_provider,
    sse_events,
)

pytest.importorskip("fastapi", reason="FastAPI is not installed (extra: server)")

COMPLETIONS = "/v1/completions"
CHAT = "/v1/chat/completions"
VAST = SCRIPTED_VOCAB.index(" vast")  # after " a" the scripted model prefers " vast" (5), " deep" (4), " blue" (3)
DEEP = SCRIPTED_VOCAB.index(" deep")
FIRST_SENTENCE = "The ocean is a vast and mysterious sea."
assert FIRST_SENTENCE == SCRIPTED_ANSWER


@pytest.fixture(scope="module")
def http():
    return scripted_client(max_tokens_limit=40, max_bans=4)


def complete(http, **fields) -> dict:
    body = {"model": MODEL, "prompt": "Hi", "max_tokens": 12, "temperature": 0, **fields}
    response = http.post(COMPLETIONS, json=body)
    assert response.status_code == 200, response.text
    return response.json()


def text_of(http, **fields) -> str:
    return complete(http, **fields)["choices"][0]["text"]


def error_of(http, path: str = COMPLETIONS, **fields) -> dict:
    body = {"model": MODEL, "max_tokens": 12, "temperature": 0, **fields}
    body.setdefault("prompt" if path == COMPLETIONS else "messages", "Hi" if path == COMPLETIONS else CHAT_HI)
    response = http.post(path, json=body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["type"] == "invalid_request_error"
    assert error["message"].startswith(error["param"] + ":") or error["message"].startswith(error["param"] + " ")
    return error


CHAT_HI = [{"role": "user", "content": "Hi"}]


# -- seed -------------------------------------------------------------------------------------------
def plan_of(provider, **fields):
    """The ``GenerationPlan`` of a completions request (what the worker would run)."""
    from backtrack_sampler.server.prepare import completion_plan
    from backtrack_sampler.server.schemas import CompletionRequest
    from backtrack_sampler.server.settings import ServerSettings

    request = CompletionRequest.model_validate({"prompt": "Hi", "max_tokens": 8, **fields})
    return completion_plan(request, provider, ServerSettings(model_name=MODEL))[0]


@pytest.mark.parametrize("seed", [-1, -2, -(2**63), -1.0])
def test_a_negative_seed_means_random(http, seed):
    plan = plan_of(scripted_provider(), seed=seed, n=3)
    assert [c.params.seed for c in plan.choices] == [None, None, None]  # a fresh seed for each choice
    assert complete(http, seed=seed, temperature=1.0, n=2)["choices"][1]["text"]


def test_seed_and_sampler_seed(http):
    assert [c.params.seed for c in plan_of(scripted_provider(), seed=7, n=2).choices] == [7, 8]
    assert [c.params.seed for c in plan_of(scripted_provider(), sampler_seed=7, n=2).choices] == [7, 8]
    assert [c.params.seed for c in plan_of(scripted_provider(), sampler_seed=-1).choices] == [None]
    assert [c.params.seed for c in plan_of(scripted_provider(), seed=3, sampler_seed=7).choices] == [3]
    sampled = dict(temperature=2.0, max_tokens=16)
    assert text_of(http, seed=11, **sampled) == text_of(http, sampler_seed=11, **sampled)
    assert error_of(http, seed="-1")["param"] == "seed"
    assert error_of(http, sampler_seed=True)["param"] == "sampler_seed"


def test_an_empty_model_name_means_the_served_model(http):
    # SillyTavern's vLLM mode sends "model": "" when its status call found no model.
    assert text_of(http, model="") == text_of(http)
    response = http.post(COMPLETIONS, json={"model": "other", "prompt": "Hi", "max_tokens": 2})
    assert response.status_code == 404 and response.json()["error"]["param"] == "model"


def test_top_p_zero_keeps_the_most_likely_token_alone(http):
    # llama.cpp's and KoboldCpp's nucleus keeps at least one token: top_p 0 is greedy, at any temperature.
    hot = dict(temperature=3.0, max_tokens=16)
    assert {text_of(http, top_p=0, seed=s, **hot) for s in range(6)} == {text_of(http, max_tokens=16)}
    assert len({text_of(http, top_p=1, seed=s, **hot) for s in range(6)}) > 1  # the control: it does vary
    assert [c.params.top_k for c in plan_of(scripted_provider(), top_p=0).choices] == [1]
    assert error_of(http, top_p=-0.5)["param"] == "top_p"


# -- aliases ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("alias", ["stopping_strings", "stop_sequence"])
def test_stop_aliases(http, alias):
    assert text_of(http, **{alias: ["sea"]}) == "The ocean is a vast and mysterious "
    assert text_of(http, **{alias: "sea"}) == "The ocean is a vast and mysterious "
    assert text_of(http, stop=[], **{alias: [" is"]}) == "The ocean"  # an empty stop is absent
    assert text_of(http, stop=" and", **{alias: [" is"]}) == "The ocean is a vast"  # stop wins
    assert error_of(http, **{alias: [""]})["param"] == f"{alias}.0"
    too_many = error_of(http, **{alias: [str(i) for i in range(17)]})
    assert too_many["param"] == alias and too_many["code"] == "limit"


def test_stopping_strings_come_before_stop_sequence(http):
    assert text_of(http, stopping_strings=" is", stop_sequence=" and") == "The ocean"


@pytest.mark.parametrize("alias", ["max_new_tokens", "max_length", "n_predict"])
def test_max_tokens_aliases(http, alias):
    body = {"max_tokens": None, alias: 5}
    assert complete(http, **body)["usage"]["completion_tokens"] == 5
    assert complete(http, max_tokens=3, **{alias: 5})["usage"]["completion_tokens"] == 3  # max_tokens wins
    chat = http.post(CHAT, json={"messages": CHAT_HI, "temperature": 0, alias: 4}).json()
    assert chat["usage"]["completion_tokens"] == 4
    over = error_of(http, **{"max_tokens": None, alias: 41})
    assert over["param"] == alias and over["code"] == "limit" and "41" in over["message"]
    assert error_of(http, **{"max_tokens": None, alias: "5"})["param"] == alias


def test_n_predict_minus_one_is_the_server_limit(http):
    reply = complete(http, max_tokens=None, n_predict=-1)
    assert reply["usage"]["completion_tokens"] == 40 and reply["choices"][0]["finish_reason"] == "length"
    assert error_of(http, max_tokens=None, n_predict=0)["param"] == "n_predict"
    assert error_of(http, max_tokens=None, n_predict=-2)["param"] == "n_predict"


def test_max_new_tokens_comes_before_max_length_and_n_predict(http):
    reply = complete(http, max_tokens=None, max_new_tokens=2, max_length=3, n_predict=4)
    assert reply["usage"]["completion_tokens"] == 2
    assert complete(http, max_tokens=None, max_length=3, n_predict=4)["usage"]["completion_tokens"] == 3


# -- bans ---------------------------------------------------------------------------------------------
PHRASE_BANS = [
    {"banned_strings": "vast"},
    {"banned_strings": ["vast"]},
    {"banned_tokens": ["vast"]},
    {"banned_tokens": "vast"},
    {"banned_tokens": ["vast", 0]},  # a phrase and an id (0: the scripted EOS)
]
ID_BANS = [
    {"banned_tokens": [VAST]},
    {"banned_tokens": [str(VAST)]},
    {"banned_tokens": str(VAST)},
    {"banned_tokens": f"0, {VAST}"},
    {"custom_token_bans": str(VAST)},
    {"custom_token_bans": f" 0 ,{VAST} "},
    {"custom_token_bans": [VAST]},
    {"logit_bias": {str(VAST): False}},
    {"logit_bias": [[VAST, False]]},
]


@pytest.mark.parametrize("fields", PHRASE_BANS + ID_BANS, ids=repr)
def test_every_ban_form_bans(http, fields):
    text = text_of(http, **fields)
    assert text.startswith("The ocean is a deep and mysterious sea.") and "vast" not in text


def test_phrases_are_rewound_and_ids_never_sampled(http):
    """A phrase is banned by backtracking (a rewind is reported); a token id by its logit, with no rewind."""
    events = {"backtrack_events": True, "stream": True}
    phrase = sse_events(
        http.post(COMPLETIONS, json={"prompt": "Hi", "temperature": 0, "banned_tokens": ["vast"], **events}).text
    )
    token = sse_events(
        http.post(COMPLETIONS, json={"prompt": "Hi", "temperature": 0, "banned_tokens": [VAST], **events}).text
    )
    assert phrase[-1] == token[-1] == "[DONE]"
    rewinds = [c["backtrack_event"] for e in phrase[:-1] for c in e["choices"] if "backtrack_event" in c]
    assert rewinds and "vast" in rewinds[0]["suppressed_text"]
    assert not [c for e in token[:-1] for c in e["choices"] if "backtrack_event" in c]


def test_phrases_of_every_field_go_into_one_ban_list(http):
    text = text_of(http, banned_strings="vast", banned_tokens=["deep", 0])
    assert text.startswith("The ocean is a blue and mysterious sea.")
    assert text_of(http, banned_strings=["vast"], custom_token_bans=str(DEEP)).startswith("The ocean is a blue and")
    limited = error_of(http, banned_strings=["a", "b", "c"], banned_tokens=["d", "e"])
    assert limited["param"] == "banned_strings" and limited["code"] == "limit"
    limited = error_of(http, banned_tokens=["a", "b", "c", "d", "e"])
    assert limited["param"] == "banned_tokens" and limited["code"] == "limit"
    assert text_of(http, banned_tokens=["vast"] * 5).startswith("The ocean is a deep")  # counted once each


def test_ban_options_take_the_phrases_of_banned_tokens(http):
    assert "vast" not in text_of(http, banned_tokens=["vast"], ban_scope="answer", exempt_prompt_terms=True)
    assert "vast" not in text_of(http, banned_strings="vast", ban_scope="answer")
    assert error_of(http, banned_tokens=[VAST], ban_scope="answer")["param"] == "ban_scope"
    assert error_of(http, banned_tokens="1,2", exempt_prompt_terms=True)["param"] == "exempt_prompt_terms"


def test_token_bans_hold_in_chat_too(http):
    body = {"messages": CHAT_HI, "max_tokens": 8, "temperature": 0, "custom_token_bans": f"{VAST}"}
    content = http.post(CHAT, json=body).json()["choices"][0]["message"]["content"]
    assert content.startswith("The ocean is a deep")


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"custom_token_bans": "1,x"}, "custom_token_bans"),
        ({"custom_token_bans": "1,,2"}, "custom_token_bans"),
        ({"custom_token_bans": "-1"}, "custom_token_bans"),
        ({"custom_token_bans": [-1]}, "custom_token_bans.0"),
        ({"custom_token_bans": 5}, "custom_token_bans"),
        ({"custom_token_bans": [f"{VAST}"]}, "custom_token_bans.0"),
        ({"banned_tokens": [True]}, "banned_tokens.0"),
        ({"banned_tokens": [""]}, "banned_tokens.0"),
        ({"banned_tokens": [-3]}, "banned_tokens.0"),
        ({"banned_tokens": ""}, "banned_tokens"),
        ({"banned_tokens": {"a": 1}}, "banned_tokens"),
        ({"banned_strings": ["ok", ""]}, "banned_strings.1"),
        ({"banned_strings": ""}, "banned_strings"),
    ],
    ids=repr,
)
def test_bad_ban_fields_name_the_field(http, fields, param):
    assert error_of(http, **fields)["param"] == param


@pytest.mark.parametrize("field", ["custom_token_bans", "banned_tokens"])
def test_a_token_id_outside_the_vocabulary_is_refused(http, field):
    size = len(SCRIPTED_VOCAB)
    for value in (f"1,{size}", [1, size]):
        error = error_of(http, **{field: value})
        assert error["param"] == field and error["code"] == "invalid_value"
        assert f"got {size}" in error["message"] and f"[0, {size})" in error["message"]


# -- ignore_eos and min_tokens -------------------------------------------------------------------------
def eos_after_full_stop(tokens: list[int]) -> list[float]:
    """The scripted model, but after "." it ends (EOS 6 over "\\n\\n" 5)."""
    logits = scripted_logits(tokens)
    if tokens and SCRIPTED_VOCAB[tokens[-1]] == ".":
        logits[0] = 6.0
    return logits


@pytest.fixture(scope="module")
def ending():
    from backtrack_sampler.provider.scripted_provider import ScriptedProvider

    return in_process_client(make_app(ScriptedProvider(SCRIPTED_VOCAB, eos_after_full_stop, 0), max_tokens_limit=40))


def test_the_ending_model_ends_after_one_sentence(ending):
    reply = complete(ending, max_tokens=30)
    assert reply["choices"][0]["text"] == FIRST_SENTENCE and reply["choices"][0]["finish_reason"] == "stop"
    assert reply["usage"]["completion_tokens"] == 9


@pytest.mark.parametrize(
    "fields", [{"ignore_eos": True}, {"ban_eos_token": True}, {"ignore_eos": True, "ban_eos_token": False}]
)
def test_ignore_eos_never_samples_eos(ending, fields):
    reply = complete(ending, max_tokens=30, **fields)
    assert reply["choices"][0]["finish_reason"] == "length" and reply["usage"]["completion_tokens"] == 30
    assert reply["choices"][0]["text"].startswith(FIRST_SENTENCE + "\n\n" + FIRST_SENTENCE + "\n\n")


def test_ignore_eos_false_comes_before_ban_eos_token(ending):
    reply = complete(ending, max_tokens=30, ignore_eos=False, ban_eos_token=True)
    assert reply["choices"][0]["text"] == FIRST_SENTENCE


@pytest.mark.parametrize("min_tokens", [10, 12, 19])
def test_min_tokens_holds_eos_back_until_then(ending, min_tokens):
    reply = complete(ending, max_tokens=30, min_tokens=min_tokens)
    assert reply["choices"][0]["text"] == FIRST_SENTENCE + "\n\n" + FIRST_SENTENCE  # the next EOS, after 19 tokens
    assert reply["usage"]["completion_tokens"] == 19 and reply["choices"][0]["finish_reason"] == "stop"
    assert complete(ending, max_tokens=30, min_tokens=9)["choices"][0]["text"] == FIRST_SENTENCE  # EOS is token 10


def test_min_tokens_up_to_max_tokens(ending):
    error = error_of(ending, max_tokens=5, min_tokens=6)
    assert error["param"] == "min_tokens" and "5" in error["message"]
    assert complete(ending, max_tokens=5, min_tokens=5)["usage"]["completion_tokens"] == 5
    assert error_of(ending, min_tokens=-1)["param"] == "min_tokens"


@pytest.mark.parametrize("stream", [False, True])
def test_a_stop_string_counts_only_from_token_min_tokens_on(http, stream):
    """vLLM's rule: " sea" is token 8; with min_tokens 8 it ends the text, with 9 the next one does."""
    second = FIRST_SENTENCE + "\n\nThe ocean is a vast and mysterious "
    for min_tokens, expected in (
        (0, "The ocean is a vast and mysterious "),
        (8, "The ocean is a vast and mysterious "),
        (9, second),
    ):
        body = {"prompt": "Hi", "max_tokens": 30, "temperature": 0, "stop": ["sea"], "min_tokens": min_tokens}
        if stream:
            events = sse_events(http.post(COMPLETIONS, json={**body, "stream": True}).text)
            assert events[-1] == "[DONE]"
            text = "".join(c["text"] for e in events[:-1] for c in e["choices"])
            assert events[-2]["choices"][0]["finish_reason"] == "stop"
        else:
            text = text_of(http, **body)
        assert text == expected, min_tokens


def test_a_stop_string_across_the_min_tokens_boundary_counts(http):
    # " mysterious sea" begins in token 7 and ends in token 8: with min_tokens 8 it counts.
    assert text_of(http, stop=" mysterious sea", min_tokens=8, max_tokens=30) == "The ocean is a vast and"
    assert text_of(http, stop=" mysterious sea", min_tokens=9, max_tokens=30).startswith(FIRST_SENTENCE + "\n\n")


def test_the_stop_scanner_counts_stops_from_token_min_tokens():
    from backtrack_sampler.server.stop_strings import Piece, StopScanner

    def cut(min_tokens: int, pieces: list[str], stops: list[str]) -> str:
        scanner = StopScanner(stops, min_tokens)
        released = [r.text for p in pieces for r in scanner.feed([Piece(p)])]
        return "".join(released + [r.text for r in scanner.flush()])

    pieces = ["ab", "c", "ab", "c", "d"]
    assert cut(0, pieces, ["abc"]) == ""
    assert cut(2, pieces, ["abc"]) == ""  # ends in token 2
    assert cut(3, pieces, ["abc"]) == "abc"  # the first ends in token 2: it stays; the second ends in 4
    assert cut(5, pieces, ["abc"]) == "abcabcd"  # the second ends in token 4 < 5
    assert cut(5, pieces, ["cd"]) == "abcab"  # "cd" begins in token 4 and ends in 5
    assert cut(4, ["abcabcd"], ["abc"]) == "abcabcd"  # one token holding both: token 1 < 4
    # several tokens fed at once, the boundary inside them
    scanner = StopScanner(["x"], 3)
    assert [r.text for r in scanner.feed([Piece("x"), Piece("y"), Piece("x"), Piece("z")])] == ["x", "y"]
    assert scanner.stopped


# -- logit_bias ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "bias",
    [
        {str(VAST): -100},
        {" vast": -100},
        {" vast": False},
        {str(VAST): False},
        [[VAST, -100]],
        [[" vast", -100]],
        [[" vast", False]],
        [[VAST, -1e9]],
        [[VAST, -0.6], [" vast", -0.6]],  # a token named twice: the sum (-1.2: 5 - 1.2 < 4)
        {str(VAST): -0.6, " vast": -0.6},
    ],
    ids=repr,
)
def test_logit_bias_forms(http, bias):
    assert text_of(http, logit_bias=bias).startswith("The ocean is a deep and")


def test_logit_bias_text_biases_each_of_its_tokens(http):
    # " vast and" is two tokens, both never sampled: after " deep", " and" is gone too.
    assert text_of(http, logit_bias={" vast and": False}).startswith("The ocean is a deep sea.")
    assert text_of(http, logit_bias=[[" vast and", False]]).startswith("The ocean is a deep sea.")
    assert text_of(http, logit_bias=[[VAST, -0.6]]).startswith("The ocean is a vast")  # one -0.6 is not enough
    assert text_of(http, logit_bias=[[DEEP, 1.5]]).startswith("The ocean is a deep and")
    assert text_of(http, logit_bias={}) == text_of(http, logit_bias=[]) == text_of(http)
    # A digit string in the list form is a text (llama.cpp): "7" is the character 7, not token 7.
    seven = SCRIPTED_VOCAB.index("7")
    assert text_of(http, logit_bias=[["7", 100]], max_tokens=1) == "7" != SCRIPTED_VOCAB[7]
    assert seven != 7


@pytest.mark.parametrize(
    ("bias", "param"),
    [
        ({"01": 1}, "logit_bias"),
        ({" 1": 1}, "logit_bias"),
        ({"": 1}, "logit_bias"),
        ({"5": True}, "logit_bias.5"),
        ({"5": "x"}, "logit_bias.5"),
        ({"5": None}, "logit_bias.5"),
        ([[5, True]], "logit_bias.0.1"),
        ([[5]], "logit_bias.0.1"),
        ([[5, 1, 2]], "logit_bias.0"),
        ([5], "logit_bias.0"),
        ([[-1, 1]], "logit_bias.0.0"),
        ([["", 1]], "logit_bias.0.0"),
        ([[len(SCRIPTED_VOCAB), 1]], "logit_bias"),
        ({"é": 1}, "logit_bias"),  # text the scripted model cannot encode
        ([["é", 1]], "logit_bias"),
        ("x", "logit_bias"),
    ],
    ids=repr,
)
def test_bad_logit_bias_names_the_field(http, bias, param):
    error = error_of(http, logit_bias=bias)
    assert error["param"] == param, error
    if param == "logit_bias" and isinstance(bias, dict) and list(bias)[0] in ("01", " 1", ""):
        assert repr(list(bias)[0]) in error["message"] and "decimal" in error["message"]


# -- DRY -----------------------------------------------------------------------------------------------------
def dry_of(strategy):
    from backtrack_sampler.strategy.chain_strategy import ChainStrategy
    from backtrack_sampler.strategy.dry_strategy import DryStrategy

    members = strategy.strategies if isinstance(strategy, ChainStrategy) else [strategy]
    found = [s for s in members if isinstance(s, DryStrategy)]
    assert len(found) <= 1
    return found[0] if found else None


def test_dry_fields_reach_the_strategy():
    provider = scripted_provider()
    fields = {
        "dry_multiplier": 0.8,
        "dry_base": 2.0,
        "dry_allowed_length": 3,
        "dry_sequence_breakers": '["\\n", ":", "\\"", "*"]',  # SillyTavern sends a JSON string
        "dry_penalty_last_n": 64,
        "n": 2,
    }
    plan = plan_of(provider, **fields)
    dry = [dry_of(c.strategy) for c in plan.choices]
    assert dry[0] is not dry[1]  # one per choice: strategies keep state
    assert (float(dry[0].multiplier), float(dry[0].base), dry[0].allowed_length) == (pytest.approx(0.8), 2.0, 3)
    assert dry[0].sequence_breakers == ("\n", ":", '"', "*") and dry[0].penalty_last_n == 64
    defaults = dry_of(plan_of(provider, dry_multiplier=1.0).choices[0].strategy)
    assert (float(defaults.base), defaults.allowed_length, defaults.penalty_last_n) == (1.75, 2, -1)
    assert defaults.sequence_breakers == ("\n", ":", '"', "*")
    assert dry_of(plan_of(provider, dry_multiplier=1.0, dry_penalty_last_n=0).choices[0].strategy).penalty_last_n == -1
    tabby = plan_of(provider, dry_multiplier=1.0, dry_sequence_breakers='"a", "b"').choices[0].strategy
    assert dry_of(tabby).sequence_breakers == ("a", "b")  # TabbyAPI's form without brackets
    listed = plan_of(provider, dry_multiplier=1.0, dry_sequence_breakers=["x", ""]).choices[0].strategy
    assert dry_of(listed).sequence_breakers == ("x",)
    assert plan_of(provider, dry_multiplier=0, dry_base=3.0).choices[0].strategy is None  # 0: off
    chained = plan_of(provider, dry_multiplier=1.0, banned_strings=["vast"]).choices[0].strategy
    assert [type(s).__name__ for s in chained.strategies] == ["DryStrategy", "AntiSlopStrategy"]


def test_dry_breaks_the_scripted_loop(http):
    """The scripted model writes its sentence over and over; DRY penalizes the repeat's next token."""
    plain = text_of(http, max_tokens=20)
    assert plain.startswith(FIRST_SENTENCE + "\n\n" + "The ocean is a vast")
    dry = text_of(http, max_tokens=20, dry_multiplier=3.0, dry_allowed_length=2)
    assert dry.startswith(FIRST_SENTENCE + "\n\n") and not dry.startswith(FIRST_SENTENCE + "\n\nThe ocean is a vast")


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"dry_multiplier": -0.1}, "dry_multiplier"),
        ({"dry_multiplier": "0.8"}, "dry_multiplier"),
        ({"dry_base": 0.5}, "dry_base"),
        ({"dry_allowed_length": -1}, "dry_allowed_length"),
        ({"dry_allowed_length": 1.5}, "dry_allowed_length"),
        ({"dry_penalty_last_n": -2}, "dry_penalty_last_n"),
        ({"dry_sequence_breakers": 5}, "dry_sequence_breakers"),
        ({"dry_sequence_breakers": [5]}, "dry_sequence_breakers.0"),
        ({"dry_multiplier": 0.8, "dry_sequence_breakers": "[1, 2]"}, "dry_sequence_breakers"),
        ({"dry_multiplier": 0.8, "dry_sequence_breakers": '["\\n"'}, "dry_sequence_breakers"),
    ],
    ids=repr,
)
def test_bad_dry_fields_name_the_field(http, fields, param):
    assert error_of(http, **fields)["param"] == param


def test_dry_sequence_breakers_are_read_only_when_dry_is_on(http):
    assert text_of(http, dry_multiplier=0, dry_sequence_breakers="not json") == text_of(http)


# -- what SillyTavern sends ----------------------------------------------------------------------------------
LLAMACPP_ORDER = ["top_k", "tfs_z", "typical_p", "top_p", "min_p", "temperature"]
OOBA_ORDER = ["temperature", "dynamic_temperature", "quadratic_sampling", "top_k", "top_p", "typical_p"]
OOBA_ORDER += ["epsilon_cutoff", "eta_cutoff", "tfs", "top_a", "min_p", "mirostat"]


def sillytavern_body(mode: str, prompt: str, max_tokens: int, **settings) -> dict:
    """What SillyTavern 1.12.6 sends in ``mode`` (``createTextGenGenerationData``) with its default settings.

    ``settings`` override SillyTavern's own (``banned_strings``, ``custom_token_bans``, ``temp``, ...).
    """
    s = {"temp": 0.7, "top_p": 0.5, "top_k": 40, "min_p": 0, "rep_pen": 1.2, "seed": -1, "n": 1}
    s |= {"banned_strings": [], "custom_token_bans": "", "stop": [], "ban_eos_token": False, "min_length": 0}
    s |= settings
    tabby, kobold, llamacpp, ooba = (mode == m for m in ("tabby", "koboldcpp", "llamacpp", "ooba"))
    body = {
        "prompt": prompt,
        "model": MODEL if tabby else None,
        "max_new_tokens": max_tokens,
        "max_tokens": max_tokens,
        "temperature": s["temp"],
        "top_p": s["top_p"],
        "typical_p": 1,
        "typical": 1,
        "sampler_seed": s["seed"],
        "min_p": s["min_p"],
        "repetition_penalty": s["rep_pen"],
        "frequency_penalty": 0,
        "presence_penalty": 0,
        "top_k": s["top_k"],
        "skew": 0,
        "min_length": s["min_length"] if ooba else None,
        "min_tokens": s["min_length"],
        "num_beams": 1 if ooba else None,
        "length_penalty": 1 if ooba else None,
        "early_stopping": False if ooba else None,
        "add_bos_token": True,
        "smoothing_factor": 0.0,
        "smoothing_curve": 1.0,
        "dry_allowed_length": 2,
        "dry_multiplier": s.get("dry_multiplier", 0.0),
        "dry_base": 1.75,
        "dry_sequence_breakers": '["\\n",":","\\"","*"]',
        "dry_penalty_last_n": 0,
        "max_tokens_second": 0,
        "sampler_priority": OOBA_ORDER if ooba else None,
        "samplers": LLAMACPP_ORDER if llamacpp else None,
        "stopping_strings": s["stop"],
        "stop": s["stop"],
        "truncation_length": 2048,
        "ban_eos_token": s["ban_eos_token"],
        "skip_special_tokens": True,
        "top_a": 0,
        "tfs": 1,
        "epsilon_cutoff": 0 if ooba else None,
        "eta_cutoff": 0 if ooba else None,
        "mirostat_mode": 0,
        "mirostat_tau": 5,
        "mirostat_eta": 0.1,
        "custom_token_bans": s["custom_token_bans"],
        "banned_strings": s["banned_strings"],
        "api_type": mode,
        "api_server": "http://127.0.0.1:8000",
        "legacy_api": False if ooba else None,
        "sampler_order": [6, 0, 1, 3, 4, 2, 5] if kobold else None,
        "xtc_threshold": 0.1,
        "xtc_probability": 0,
        "stream": s.get("stream", False),
        # nonAphroditeParams
        "rep_pen": s["rep_pen"],
        "rep_pen_range": 0,
        "repetition_decay": 0 if tabby else None,
        "repetition_penalty_range": 0,
        "encoder_repetition_penalty": 1 if ooba else None,
        "no_repeat_ngram_size": 0 if ooba else None,
        "penalty_alpha": 0 if ooba else None,
        "temperature_last": True if ooba or tabby else None,
        "speculative_ngram": False if tabby else None,
        "do_sample": True if ooba else None,
        "seed": s["seed"],
        "guidance_scale": 1,
        "negative_prompt": "",
        "grammar_string": "",
        "json_schema": {} if tabby else None,
        "repeat_penalty": s["rep_pen"],
        "tfs_z": 1,
        "repeat_last_n": 0,
        "n_predict": max_tokens,
        "num_predict": max_tokens,
        "num_ctx": 2048,
        "mirostat": 0,
        "ignore_eos": s["ban_eos_token"],
        "rep_pen_slope": 1,
    }
    if tabby:
        body["n"] = s["n"]
    if kobold:
        body["grammar"] = ""
    if llamacpp:
        ids = [int(t) for t in s["custom_token_bans"].split(",") if t]
        body |= {"logit_bias": [[t, False] for t in ids], "grammar": "", "cache_prompt": True}
        del body["json_schema"]
    return {k: v for k, v in body.items() if v is not None}


@pytest.mark.parametrize("mode", ["tabby", "koboldcpp", "llamacpp", "ooba"])
def test_sillytavern_bodies_with_its_defaults_are_taken(http, mode):
    body = sillytavern_body(mode, "Hi", 12, temp=0, banned_strings=["vast"], custom_token_bans=str(DEEP))
    reply = http.post(COMPLETIONS, json=body)
    assert reply.status_code == 200, reply.text
    text = reply.json()["choices"][0]["text"]
    assert text.startswith("The ocean is a blue and mysterious sea.")
    streamed = sse_events(http.post(COMPLETIONS, json={**body, "stream": True}).text)
    assert streamed[-1] == "[DONE]" and "".join(c["text"] for e in streamed[:-1] for c in e["choices"]) == text


@pytest.mark.parametrize(
    "fields",
    [
        {"top_k": 0},
        {"top_k": -1},
        {"min_p": 0},
        {"top_p": 1},
        {"presence_penalty": 0, "frequency_penalty": 0},
        {"n": 1},
        {"stop": []},
        {"logit_bias": {}},
        {"logit_bias": []},
        {"json_schema": {}},
        {"json_schema": None},
        {"banned_strings": []},
        {"custom_token_bans": ""},
        {"ignore_eos": False, "ban_eos_token": False, "min_tokens": 0},
        {"dry_multiplier": 0, "dry_penalty_last_n": 0, "dry_sequence_breakers": '["\\n", ":", "\\"", "*"]'},
    ],
    ids=repr,
)
def test_sillytavern_values_of_honoured_fields_validate(http, fields):
    assert text_of(http, **fields) == text_of(http)


def test_sillytavern_swipes_with_seed_minus_one(http):
    body = sillytavern_body("tabby", "Hi", 12, n=2, temp=1.0)
    reply = http.post(COMPLETIONS, json=body)
    assert reply.status_code == 200, reply.text
    assert [c["index"] for c in reply.json()["choices"]] == [0, 1]


def test_ignored_fields_are_ignored_whatever_their_type(http):
    from backtrack_sampler.server.ignored_fields import HONOURED, IGNORED
    from backtrack_sampler.server.schemas import ChatCompletionRequest, CompletionRequest

    assert not set(IGNORED) & set(HONOURED)
    assert not set(IGNORED) & (set(CompletionRequest.model_fields) | set(ChatCompletionRequest.model_fields))
    assert set(HONOURED) <= set(CompletionRequest.model_fields)
    # Every field of SillyTavern's bodies is listed as one or the other.
    sent = set().union(*(sillytavern_body(m, "Hi", 4) for m in ("tabby", "koboldcpp", "llamacpp", "ooba")))
    assert sent - {"stream"} <= set(HONOURED) | set(IGNORED), sent - set(HONOURED) - set(IGNORED)
    expected = text_of(http)
    for odd in ({"x": [1]}, "text", -1, None, [None], 1.5, True):
        assert text_of(http, **dict.fromkeys(IGNORED, odd)) == expected


# -- the embedded model ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def real(server_provider):
    return in_process_client(make_app(server_provider))


STORY = "Once upon a time, in a small village by the sea,"


def test_sillytavern_koboldcpp_body_on_the_real_model(real, server_provider):
    """Bans chosen from a control run: a word it wrote (by banned_strings) and its first token (by id)."""
    control = real.post(COMPLETIONS, json=sillytavern_body("koboldcpp", STORY, 24, temp=0)).json()
    words = [w.strip(".,;:!?\"'") for w in control["choices"][0]["text"].split()]
    word = next(w for w in words[2:] if len(w) > 3)
    first = server_provider.encode(control["choices"][0]["text"], add_bos=False)[0]
    body = sillytavern_body("koboldcpp", STORY, 24, temp=0, banned_strings=[word], custom_token_bans=str(first))
    body |= {"logprobs": 0, "return_tokens_as_token_ids": True}
    reply = real.post(COMPLETIONS, json=body).json()["choices"][0]
    assert word.lower() not in reply["text"].lower() and reply["text"]
    assert f"token_id:{first}" not in reply["logprobs"]["tokens"]
    streamed = sse_events(real.post(COMPLETIONS, json={**body, "stream": True}).text)
    assert streamed[-1] == "[DONE]"
    assert "".join(c["text"] for e in streamed[:-1] for c in e["choices"]) == reply["text"]


def test_llamacpp_logit_bias_by_text_on_the_real_model(real, server_provider):
    body = {"prompt": STORY, "max_tokens": 8, "temperature": 0, "logprobs": 0, "return_tokens_as_token_ids": True}
    control = real.post(COMPLETIONS, json=body).json()["choices"][0]
    first = int(control["logprobs"]["tokens"][0].removeprefix("token_id:"))
    text = server_provider.decode([first])
    banned = set(server_provider.encode(text, add_bos=False))
    assert first in banned
    for bias in ([[text, False]], {text: False}):
        reply = real.post(COMPLETIONS, json={**body, "logit_bias": bias}).json()["choices"][0]
        ids = [int(t.removeprefix("token_id:")) for t in reply["logprobs"]["tokens"]]
        assert ids and not banned & set(ids)


def test_ignore_eos_and_min_tokens_on_the_real_model(real, server_provider):
    """With EOS forced (+100), it ends at once; ignore_eos never ends; min_tokens ends right after."""
    eos = {str(t): 100 for t in server_provider.eos_token_ids}
    body = {"prompt": STORY, "max_tokens": 6, "temperature": 0, "logit_bias": eos}
    assert real.post(COMPLETIONS, json=body).json()["usage"]["completion_tokens"] == 0
    ignored = real.post(COMPLETIONS, json={**body, "ignore_eos": True}).json()
    assert ignored["usage"]["completion_tokens"] == 6 and ignored["choices"][0]["finish_reason"] == "length"
    held = real.post(COMPLETIONS, json={**body, "min_tokens": 4}).json()
    assert held["usage"]["completion_tokens"] == 4 and held["choices"][0]["finish_reason"] == "stop"


@pytest.mark.parametrize(
    "field",
    ["logit_bias", "banned_strings", "banned_tokens", "custom_token_bans", "stopping_strings", "stop_sequence"]
    + ["dry_sequence_breakers"],
)
def test_a_value_of_no_accepted_shape_is_told_the_shapes(http, field):
    error = error_of(http, **{field: 5})
    assert error["param"] == field and error["code"] == "invalid_type"
    assert "must be" in error["message"] and "function" not in error["message"] and "[" not in error["message"][:40]
