"""TokenText and the engine's text: multi-byte UTF-8 characters are never split."""

from __future__ import annotations

import codecs

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backtrack_sampler import AntiSlopStrategy, BacktrackSampler, TextEvent
from backtrack_sampler.core.token_text import TokenText
from scripted import BytesProvider, check_stream, of


def token_text(*pieces: bytes) -> TokenText:
    text = TokenText(lambda t: pieces[t])
    for i in range(len(pieces)):
        text.append(i)
    return text


def test_ascii_pieces():
    text = token_text(b"ab", b"", b"c")
    assert text.pieces == ["ab", "", "c"]
    assert (len(text), text.n_chars, text.text_from(0), text.text_from(2)) == (3, 3, "abc", "c")
    assert [text.char_start(i) for i in range(3)] == [0, 2, 2]
    assert [text.token_at_char(c) for c in range(3)] == [0, 0, 2]


def test_a_character_belongs_to_the_token_that_completes_it():
    text = token_text(b"a\xe2", b"\x82", b"\xac!")  # "a€!"
    assert text.pieces == ["a", "", "€!"]
    assert text.n_chars == 3 and text.char_start(2) == 1
    assert [text.token_at_char(c) for c in range(3)] == [0, 0, 2]  # "€" began in token 0


@pytest.mark.parametrize(
    ("pieces", "expected"),
    [
        ((b"\xe2", b"\x82", b"\xac"), [0]),
        ((b"x", b"\xf0", b"\x9f", b"\x98\x80"), [0, 1]),
        ((b"\xe2", b"", b"\x82\xac"), [0]),  # an empty token inside a character
        ((b"\xe2", b"\xe2", b"\x82\xac"), [0, 1]),  # U+FFFD for the lone lead byte, then "€"
        ((b"\xe2", b"a"), [0, 1]),
        ((b"\xc3\xa9\xc3", b"\xa9"), [0, 0]),
    ],
)
def test_token_at_char(pieces, expected):
    text = token_text(*pieces)
    assert text.text_from(0) == b"".join(pieces).decode("utf-8", "replace")
    assert [text.token_at_char(c) for c in range(text.n_chars)] == expected


@pytest.mark.parametrize(
    ("pieces", "expected"),
    [
        ((), (0, 0)),
        ((b"a", b"\xe2\x82"), (1, 2)),  # the last token carries only the unfinished bytes
        ((b"a", b"\xe2", b"", b"\x82"), (1, 2)),  # so do the two before it
        ((b"a\xe2", b"\x82"), (1, 2)),  # "a" cannot be split from the lead byte: its token stays
        ((b"\xe2\x82", b"\xac\xf0\x9f"), (2, 2)),  # the last token completes "€", then begins "😀"
        ((b"\xf0", b"\x9f", b"\x98"), (0, 3)),
        ((b"a", b"\xe2\x82\xac"), (2, 0)),
        ((b"a", b"\xff"), (2, 0)),  # an invalid byte is U+FFFD at once, not an unfinished character
        ((b"a", b"\xe2\x82", b"b"), (3, 0)),  # U+FFFD in the middle: invalid, not unfinished
    ],
)
def test_unfinished_end(pieces, expected):
    text = token_text(*pieces)
    assert text.unfinished_end() == expected
    first, n_bytes = expected
    raw = b"".join(pieces)
    assert text.text_from(0) == raw[: len(raw) - n_bytes].decode("utf-8", "replace")
    assert all(not text.pieces[t] for t in range(first, len(pieces)))


def test_truncate_restores_the_decoder():
    pieces = [b"a", b"\xe2", b"\x82", b"\xac", b"\x82\xac", b"b"]
    text = TokenText(lambda t: pieces[t])
    for t in (0, 1, 2, 3):
        text.append(t)
    assert text.text_from(0) == "a€"
    text.truncate(2)  # "a" + lead byte pending
    assert (text.pieces, text.n_chars) == (["a", ""], 1)
    assert text.append(4) == "€"
    text.truncate(1)
    assert text.append(5) == "b"
    assert text.text_from(0) == "ab" and text.unfinished_end() == (2, 0)
    text.truncate(0)
    assert text.append(1) == "" and text.unfinished_end() == (0, 1)


CHARS = st.sampled_from(["a", " ", "é", "€", "😀", "ß"])


@settings(max_examples=150, deadline=None)
@given(st.lists(CHARS, min_size=1, max_size=12), st.data())
def test_split_utf8_decodes_like_the_whole(chars, data):
    raw = "".join(chars).encode()
    cuts = sorted(data.draw(st.sets(st.integers(1, len(raw) - 1), max_size=len(raw) - 1)) if len(raw) > 1 else [])
    bounds = [0, *cuts, len(raw)]
    pieces = [raw[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]
    text = token_text(*pieces)
    assert text.text_from(0) == "".join(chars)
    # the token of a character: the one holding its first byte; its piece: the one holding its last
    starts = np.cumsum([0] + [len(c.encode()) for c in chars])
    for c in range(len(chars)):
        first = int(np.searchsorted(bounds, starts[c], side="right")) - 1
        last = int(np.searchsorted(bounds, starts[c + 1] - 1, side="right")) - 1
        assert text.token_at_char(c) == first
        assert text.char_start(last) <= c < text.char_start(last) + len(text.pieces[last])
    k = data.draw(st.integers(0, len(pieces)))
    text.truncate(k)
    assert text.text_from(0) == codecs.getincrementaldecoder("utf-8")().decode(b"".join(pieces[:k]))


# -- the engine never emits half a character ------------------------------------------------------

PIECES = [b"", b"a", b" ", b"\xe2", b"\x82", b"\xac", b"\x82\xac", b"\xe2\x82", b"\xc3", b"\xa9", b"\xc3\xa9"]
PIECES += [b"\xf0\x9f", b"\x98\x80", b"\xf0", b"\x9f\x98", b"\x80", "é€".encode()]


def valid_prefix(data: bytes) -> bool:
    try:
        codecs.getincrementaldecoder("utf-8")().decode(data, final=False)
    except UnicodeDecodeError:
        return False
    return True


def utf8_provider(seed: int) -> BytesProvider:
    """Random logits over the tokens that keep the bytes a valid UTF-8 prefix; EOS only between characters."""

    def next_logits(tokens):
        done = b"".join(PIECES[t] for t in tokens)
        rng = np.random.default_rng([seed, *tokens])
        logits = rng.normal(0, 1, len(PIECES))
        for t, piece in enumerate(PIECES):
            if t and not valid_prefix(done + piece):
                logits[t] = -np.inf
        if not valid_prefix(done) or done.decode("utf-8", "ignore").encode() != done:
            logits[0] = -np.inf
        else:
            logits[0] -= 2
        return logits

    return BytesProvider(PIECES, next_logits)


@pytest.mark.parametrize("seed", range(25))
def test_text_events_never_split_a_character(seed):
    provider = utf8_provider(seed)
    strategy = AntiSlopStrategy(provider, ["€é", "a😀"])
    events = list(BacktrackSampler(provider, strategy).stream([1], max_new_tokens=12, seed=seed))
    finish = check_stream(events)
    raw = b"".join(PIECES[t] for t in finish.tokens)
    complete = raw.decode("utf-8", "ignore")  # the bytes decode with no U+FFFD but for an unfinished end
    assert finish.text == complete and "\ufffd" not in finish.text
    unfinished = len(raw) - len(complete.encode())
    if unfinished:  # the last token completed characters, then began the cut one: a token cannot be split
        assert finish.text and unfinished < len(PIECES[finish.tokens[-1]])
    emitted_text, emitted_bytes = "", b""
    for event in of(events, TextEvent):
        emitted_text += event.text
        emitted_bytes += b"".join(PIECES[t] for t in event.tokens)
        assert emitted_text == emitted_bytes.decode("utf-8", "ignore")  # every complete character, no more


def test_a_cut_character_is_dropped_at_the_end():
    order = [1, 3, 4]  # "a", then the first two bytes of "€"
    provider = BytesProvider(PIECES, lambda toks: [9.0 if t == order[len(toks) - 1] else 0.0 for t in range(17)])
    events = list(BacktrackSampler(provider).stream([1], max_new_tokens=3, temperature=0))
    finish = check_stream(events)
    assert (finish.reason, finish.text, finish.tokens) == ("length", "a", (1,))
    assert finish.detail == "dropped 2 bytes of an unfinished character at the end"
