"""Stop strings: the scanner on its own, then through both endpoints on the scripted model (no weights)."""

from __future__ import annotations

import pytest

from backtrack_sampler.server.stop_strings import Piece, StopScanner
from server_support import MODEL, SCRIPTED_ANSWER, scripted_client, sse_events

COMPLETIONS = "/v1/completions"


def texts(records) -> list[str]:
    return [r.text for r in records]


# -- the scanner -------------------------------------------------------------------------------
def test_without_stop_strings_every_token_passes_at_once():
    scanner = StopScanner([])
    assert texts(scanner.feed([Piece("a"), Piece("b")])) == ["a", "b"]
    assert scanner.flush() == [] and not scanner.stopped


def test_a_token_that_may_begin_a_stop_string_is_held_until_it_cannot():
    scanner = StopScanner(["\n\n"])
    assert texts(scanner.feed([Piece("Hi"), Piece("\n")])) == ["Hi"]
    assert texts(scanner.feed([Piece("there")])) == ["\n", "there"]
    assert not scanner.stopped


def test_a_stop_string_across_tokens_cuts_the_text_where_it_begins():
    scanner = StopScanner(["\n\n"])
    assert texts(scanner.feed([Piece("Hi"), Piece("\n")])) == ["Hi"]
    assert texts(scanner.feed([Piece("\nBye")])) == []
    assert scanner.stopped
    assert scanner.feed([Piece("more")]) == [] and scanner.flush() == []  # nothing after a stop


def test_a_stop_string_inside_a_token_keeps_the_text_before_it():
    scanner = StopScanner(["rious"])
    assert texts(scanner.feed([Piece(" a"), Piece(" myste"), Piece("rious sea")])) == [" a", " myste"]
    scanner = StopScanner(["ste"])
    assert texts(scanner.feed([Piece(" a"), Piece(" mysterious")])) == [" a", " my"]
    assert scanner.stopped


def test_the_earliest_stop_string_wins():
    scanner = StopScanner(["sea", "is"])
    assert texts(scanner.feed([Piece("The ocean is a vast sea")])) == ["The ocean "]


def test_held_tokens_are_released_by_flush():
    scanner = StopScanner(["END"])
    assert texts(scanner.feed([Piece("the E"), Piece("N")])) == []
    assert texts(scanner.flush()) == ["the E", "N"] and not scanner.stopped


def test_the_scanner_keeps_the_records_it_is_given():
    from backtrack_sampler.server.request_strategy import TokenRecord

    records = [TokenRecord(3, "ab", 0, -0.5, ()), TokenRecord(4, "cd", 2, -0.25, ())]
    released = StopScanner(["c"]).feed(records)
    assert released == [records[0]]  # the token before the stop, as it was
    released = StopScanner(["d"]).feed(records)
    assert released[1] == TokenRecord(4, "c", 2, -0.25, ())  # cut: same token, offset and logprob


# -- through the API ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def http():
    pytest.importorskip("fastapi", reason="FastAPI is not installed (extra: server)")
    return scripted_client()


def complete(http, **fields):
    body = {"model": MODEL, "prompt": "Hi", "max_tokens": 20, "temperature": 0, **fields}
    response = http.post(COMPLETIONS, json=body)
    assert response.status_code == 200, response.text
    return response.json() if not fields.get("stream") else sse_events(response.text)


def test_a_stop_string_ends_the_text_before_it(http):
    choice = complete(http, stop=".")["choices"][0]
    assert choice["text"] == SCRIPTED_ANSWER.removesuffix(".") and choice["finish_reason"] == "stop"


def test_a_stop_string_spread_over_tokens_streamed_sends_nothing_past_it(http):
    events = complete(http, stop=["\n\nThe"], stream=True)
    chunks = [c["choices"][0] for c in events[:-1]]
    assert "".join(c["text"] for c in chunks) == SCRIPTED_ANSWER
    assert chunks[-1]["finish_reason"] == "stop"


def test_a_stop_string_inside_a_token_cuts_that_token(http):
    reply = complete(http, stop=["rious"], logprobs=0)
    choice = reply["choices"][0]
    assert choice["text"] == "The ocean is a vast and myste" and choice["finish_reason"] == "stop"
    assert "".join(choice["logprobs"]["tokens"]) == choice["text"]  # the cut token keeps its shortened text
    assert reply["usage"]["completion_tokens"] == 7  # the model wrote " mysterious" whole


def test_a_stop_string_that_never_comes_holds_nothing_back_at_the_end(http):
    choice = complete(http, stop=[".\n\nX", "zzz"], max_tokens=9)["choices"][0]  # "." is held, then flushed
    assert choice["text"] == SCRIPTED_ANSWER and choice["finish_reason"] == "length"


def test_the_earliest_of_several_stop_strings_ends_the_text(http):
    assert complete(http, stop=["sea", "is"])["choices"][0]["text"] == "The ocean "


def test_stop_strings_in_chat_and_for_every_choice(http):
    body = {
        "messages": [{"role": "user", "content": "Hi"}],
        "max_tokens": 20,
        "temperature": 0,
        "stop": " and",
        "n": 2,
    }
    reply = http.post("/v1/chat/completions", json=body).json()
    assert [c["message"]["content"] for c in reply["choices"]] == ["The ocean is a vast"] * 2
    assert [c["finish_reason"] for c in reply["choices"]] == ["stop", "stop"]
