"""A request's strategy, built from JSON (``strategy``, ``banned_strings``, ``banned_regex``, ``response_format``),
through the API on the scripted model (no weights): what each one writes, and the 400s naming the parameter.

Greedily the scripted model writes "The ocean is a vast and mysterious sea."; after " a" it would
otherwise write " deep" (then " blue"), after " and" " calm" (see server_support.py).
"""

from __future__ import annotations

import json

import pytest

from server_support import MODEL, scripted_client

pytest.importorskip("fastapi", reason="FastAPI is not installed (extra: server)")

COMPLETIONS = "/v1/completions"


@pytest.fixture(scope="module")
def http():
    return scripted_client()


def complete(http, **fields):
    body = {"model": MODEL, "prompt": "Hi", "max_tokens": 8, "temperature": 0, **fields}
    response = http.post(COMPLETIONS, json=body)
    assert response.status_code == 200, response.text
    return response.json()["choices"][0]


def text(http, **fields) -> str:
    return complete(http, **fields)["text"]


def error(http, **fields) -> dict:
    body = {"model": MODEL, "prompt": "Hi", "max_tokens": 8, **fields}
    response = http.post(COMPLETIONS, json=body)
    assert response.status_code == 400, response.text
    return response.json()["error"]


# -- what the strategies write ------------------------------------------------------------------
def test_banned_strings_are_rewritten(http):
    assert text(http) == "The ocean is a vast and mysterious sea"
    assert text(http, banned_strings=["vast"]) == "The ocean is a deep and mysterious sea"
    assert text(http, banned_strings=["VAST", "mysterious"]) == "The ocean is a deep and calm sea"  # case ignored


def test_banned_regex(http):
    assert text(http, banned_regex=[r"\b(vast|deep)\b"]) == "The ocean is a blue and mysterious sea"
    both = text(http, banned_regex=[r"\bv\w+"], banned_strings=["mysterious"])
    assert both == "The ocean is a deep and calm sea"


def test_an_antislop_spec_bans_as_banned_strings_do(http):
    spec = {"name": "antislop", "params": {"slops": ["vast"]}}
    assert text(http, strategy=spec) == text(http, banned_strings=["vast"])
    soft = {"name": "antislop", "params": {"slops": [["vast", 0.1]], "whole_words": False}}  # a soft ban: lowered
    assert text(http, strategy=soft) == "The ocean is a deep and mysterious sea"


CREATIVE = "A ocean and calm ocean and calm ocean"  # the best word banned at each position


@pytest.mark.parametrize(
    ("strategy", "expected"),
    [
        ("creative_writing", CREATIVE),
        ("creative", CREATIVE),
        ("Creative-Writing", CREATIVE),
        ({"name": "creative_writing", "params": {"top_p_flat": 0.5, "eos_penalty": 1.0}}, CREATIVE),
        (
            {"name": "adaptive_temperature", "params": {"poly_coeffs": [1.0, 1.0]}},
            "The ocean is a vast and mysterious sea",
        ),
        ({"name": "adaptive"}, "The ocean is a vast and mysterious sea"),
    ],
)
def test_named_strategies_and_their_spellings(http, strategy, expected):
    assert text(http, strategy=strategy) == expected


def test_replace_writes_the_replacement_instead(http):
    replaced = text(http, strategy={"name": "replace", "params": {"find": [" vast"], "replace": " huge"}}, max_tokens=9)
    assert replaced.startswith("The ocean is a huge") and "vast" not in replaced


def test_chains_as_a_spec_or_a_list(http):
    antislop = {"name": "antislop", "params": {"slops": ["vast"]}}
    chained = {"name": "chain", "params": {"strategies": ["adaptive", antislop]}}
    assert text(http, strategy=chained) == "The ocean is a deep and mysterious sea"
    assert text(http, strategy=["adaptive", antislop]) == "The ocean is a deep and mysterious sea"
    assert text(http, strategy=["creative", antislop]) == CREATIVE
    # Every form the registry takes: lists of specs, of names and specs, of lists (chains in a chain).
    assert text(http, strategy=[{"name": "adaptive"}, antislop]) == "The ocean is a deep and mysterious sea"
    assert text(http, strategy=[["adaptive"], [antislop]]) == "The ocean is a deep and mysterious sea"
    assert text(http, strategy=[{"name": "creative_writing"}]) == text(http, strategy="creative_writing")
    # A spec and banned_strings together: both apply.
    assert text(http, strategy=[antislop], banned_strings=["mysterious"]) == "The ocean is a deep and calm sea"


def test_json_response_format_keeps_the_output_json(http):
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "A cat as JSON."}],
        "max_tokens": 40,
        "temperature": 0,
        "response_format": {"type": "json_object"},
    }
    choice = http.post("/v1/chat/completions", json=body).json()["choices"][0]
    content = choice["message"]["content"]
    assert content.lstrip().startswith("{")
    if choice["finish_reason"] == "stop":
        assert isinstance(json.loads(content), dict)


def test_rewind_budgets(http):
    assert text(http, banned_strings=["vast"], max_rewinds=0) == "The ocean is a vast and mysterious sea"
    assert text(http, banned_strings=["vast"], rewinds_per_position=0) == "The ocean is a vast and mysterious sea"
    assert text(http, banned_strings=["vast", "deep"], max_rewinds=1) == "The ocean is a deep and mysterious sea"


# -- bad specs: 400 naming the parameter ----------------------------------------------------------
@pytest.mark.parametrize(
    ("strategy", "param"),
    [
        ("nope", "strategy.name"),
        ({"name": "creative_writing", "params": {"x": 1}}, "strategy.params.x"),
        ({"name": "creative", "params": {"top_p_flat": 5}}, "strategy.params.top_p_flat"),
        ({"name": "antislop", "params": {"slops": ["x"], "regex_timeout": 60}}, "strategy.params.regex_timeout"),
        ({"name": "antislop", "params": {"max_pattern_length": 9}}, "strategy.params.max_pattern_length"),
        ({"name": "chain", "params": {"strategies": []}}, "strategy.params.strategies"),
        ({"name": "chain", "params": {"strategies": ["creative"], "x": 1}}, "strategy.params.x"),
        ({"name": "chain", "params": {"strategies": ["creative", 5]}}, "strategy.params.strategies.1"),
        ({"name": "chain", "params": {"strategies": [{"name": "nope"}]}}, "strategy.params.strategies.0.name"),
        (["creative", {"name": "creative", "params": 5}], "strategy.1.params"),
        (["creative", "nope"], "strategy.1.name"),
        ([["creative", 5]], "strategy.0.1"),
        (5, "strategy"),
    ],
)
def test_a_bad_strategy_names_its_parameter(http, strategy, param):
    found = error(http, strategy=strategy)
    assert found["param"] == param, found
    assert found["message"].startswith(param.rsplit(".", 1)[0]), found


def test_the_error_says_what_is_accepted(http):
    unknown = error(http, strategy="nope")
    assert unknown["code"] == "unknown_strategy" and "creative_writing" in unknown["message"]
    assert "'nope'" in unknown["message"]
    extra = error(http, strategy={"name": "creative", "params": {"x": 1}})
    assert "top_p_flat" in extra["message"]  # the parameters it does take
    server_set = error(http, strategy={"name": "antislop", "params": {"slops": ["x"], "regex_timeout": 60}})
    assert "set by the server" in server_set["message"]
    out_of_range = error(http, strategy={"name": "creative", "params": {"top_p_flat": 5}})
    assert "5" in out_of_range["message"] and "CreativeWritingStrategy" in out_of_range["message"]


def test_limits_on_what_a_request_may_build(http):
    many = error(http, strategy=["creative"] * 17)
    assert many["code"] == "limit" and many["param"].startswith("strategy")
    deep = error(http, strategy={"name": "chain", "params": {"strategies": [[[[["creative"]]]]]}})
    assert deep["code"] == "limit" and "4 deep" in deep["message"]
    limited = scripted_client(max_bans=2)
    antislop = {"name": "antislop", "params": {"slops": ["a", "b", "c"]}}
    over = limited.post(COMPLETIONS, json={"prompt": "Hi", "strategy": antislop}).json()["error"]
    assert over["code"] == "limit" and over["param"] == "strategy.params"
    long_regex = limited.post(COMPLETIONS, json={"prompt": "Hi", "banned_regex": ["a" * 501]}).json()["error"]
    assert long_regex["param"] == "banned_regex.0"
