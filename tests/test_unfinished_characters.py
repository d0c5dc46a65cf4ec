"""No broken character reaches the caller: one the last token leaves unfinished is dropped at the finish.

Mid-stream the tokens of a character still being spelled wait until it is
complete; at the finish (a length stop, EOS, a strategy's stop, a budget) its
bytes are dropped, the tokens that carried only them leave the sequence, and
the finish event's detail says how many bytes went. A token that completed
characters and then began the unfinished one stays (it cannot be split).
"""

from __future__ import annotations

import codecs

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backtrack_sampler import BacktrackSampler, BaseStrategy, Continue, RewindBudget, Stop, TextEvent
from scripted import BytesProvider, Scripted, check_stream, of

# Characters spelled in 1 to 4 bytes, and clusters of several: skin tones, ZWJ sequences, flags, combining marks.
GRAPHEMES = ["a", "Z", " ", ".", "é", "e\u0301", "ß", "€", "从", "前", "村", "は", "😀", "👍🏽", "👩‍💻", "👨‍👩‍👧", "🇫🇷"]
SOURCES = st.lists(
    st.one_of(st.sampled_from(GRAPHEMES), st.characters(exclude_categories=("Cs",), exclude_characters="\ufffd")),
    min_size=1,
    max_size=6,
).map("".join)


def complete_characters(raw: bytes) -> tuple[str, int]:
    """The characters ``raw`` completes (invalid bytes as U+FFFD) and how many bytes of an unfinished one end it."""
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    text = decoder.decode(raw)
    return text, len(decoder.getstate()[0])


def dropped_detail(n_bytes: int) -> str:
    return (
        f"dropped {n_bytes} byte{'s' if n_bytes > 1 else ''} of an unfinished character at the end" if n_bytes else ""
    )


def script_provider(script: list[bytes]) -> tuple[BytesProvider, list[int]]:
    """A provider that writes ``script`` piece by piece (greedy), then EOS; and the token ids of the script."""
    vocab = [b"", *sorted(set(script))]
    ids = [vocab.index(piece) for piece in script]

    def next_logits(tokens: list[int]) -> np.ndarray:
        generated = len(tokens) - 1  # after the one-token prompt
        logits = np.zeros(len(vocab))
        logits[ids[generated] if generated < len(ids) else 0] = 10.0
        return logits

    return BytesProvider(vocab, next_logits), ids


def check_cut(provider: BytesProvider, ids: list[int], source: str, limit: int) -> None:
    events = list(BacktrackSampler(provider).stream([1], max_new_tokens=limit, temperature=0))
    finish = check_stream(events)  # the streamed text and tokens add up to the final ones
    written = ids[:limit]
    text, unfinished = complete_characters(b"".join(provider.token_bytes(t) for t in written))
    boundaries = {len(source[:i].encode()) for i in range(len(source) + 1)}
    assert finish.reason == ("length" if limit <= len(ids) else "eos")
    assert finish.text == text and "\ufffd" not in finish.text
    assert source.startswith(finish.text) and len(finish.text.encode()) in boundaries
    assert finish.detail == dropped_detail(unfinished)
    # The tokens that carried only the unfinished bytes are gone; the one that also completed characters stays.
    kept = len(written)
    while kept > 0 and complete_characters(b"".join(provider.token_bytes(t) for t in written[: kept - 1]))[0] == text:
        kept -= 1
    assert finish.tokens == tuple(written[:kept])
    # Mid-stream, every text event but the last ends between characters.
    so_far = b""
    for event in of(events, TextEvent)[:-1]:
        so_far += b"".join(provider.token_bytes(t) for t in event.tokens)
        assert so_far.decode("utf-8") == source[: len(so_far.decode("utf-8"))]


@settings(max_examples=150, deadline=None)
@given(SOURCES, st.data())
def test_a_cut_at_every_byte_drops_the_unfinished_character(source, data):
    raw = source.encode()
    one_byte_tokens = [raw[i : i + 1] for i in range(len(raw))]  # a limit that cuts at every byte
    cuts = sorted(data.draw(st.sets(st.integers(1, len(raw) - 1))) if len(raw) > 1 else [])
    bounds = [0, *cuts, len(raw)]
    random_tokens = [raw[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]  # tokens across characters
    for script in (one_byte_tokens, random_tokens):
        provider, ids = script_provider(script)
        for limit in range(1, len(ids) + 2):
            check_cut(provider, ids, source, limit)


def test_a_token_that_completes_characters_stays_without_its_unfinished_bytes():
    provider, ids = script_provider([b"a\xf0\x9f", b"\x98\x80 \xe2", b"\x82"])  # "a😀 €", cut inside "€"
    result = BacktrackSampler(provider).generate_text([1], max_new_tokens=3, temperature=0)
    assert (result.text, result.tokens) == ("a😀 ", tuple(ids[:2]))
    assert result.finish_detail == "dropped 2 bytes of an unfinished character at the end"


def test_mid_stream_the_tokens_of_a_character_wait_until_it_is_complete():
    provider, ids = script_provider([b"a", b"\xf0", b"\x9f", b"\x98\x80", b"b"])
    events = list(BacktrackSampler(provider).stream([1], max_new_tokens=5, temperature=0))
    assert [(e.text, e.tokens) for e in of(events, TextEvent)] == [
        ("a", (ids[0],)),
        ("😀", tuple(ids[1:4])),
        ("b", (ids[4],)),
    ]
    assert check_stream(events).detail == ""


def test_eos_after_an_unfinished_character_drops_it():
    provider, ids = script_provider([b"ok", b"\xe2\x82"])  # then EOS
    result = BacktrackSampler(provider).generate_text([1], max_new_tokens=10, temperature=0)
    assert (result.finish_reason, result.text, result.tokens) == ("eos", "ok", (ids[0],))
    assert result.finish_detail == dropped_detail(2)


def test_the_detail_of_a_stop_or_a_budget_is_kept():
    provider, ids = script_provider([b"ok", b"\xf0", b"\x9f", b"!"])
    stop_at_3 = Scripted(on_token=lambda ctx, token: Stop("enough") if len(ctx.tokens) == 3 else Continue())
    result = BacktrackSampler(provider, stop_at_3).generate_text([1], max_new_tokens=10, temperature=0)
    assert (result.finish_reason, result.text, result.tokens) == ("stop", "ok", (ids[0],))
    assert result.finish_detail == "enough; dropped 2 bytes of an unfinished character at the end"
    budget = RewindBudget(max_positions_evaluated=1)
    result = BacktrackSampler(provider, budget=budget).generate_text([1], max_new_tokens=10, temperature=0)
    assert (result.finish_reason, result.text) == ("budget", "ok")
    assert result.finish_detail == "evaluated 1 positions; dropped 1 byte of an unfinished character at the end"


def test_invalid_bytes_and_a_written_replacement_character_stay():
    # U+FFFD that the model wrote, and invalid bytes inside the text or at its end, are not an unfinished character.
    provider, _ = script_provider([b"a\xef\xbf\xbd", b"\xe2\x82", b"b", b"\xff"])
    result = BacktrackSampler(provider).generate_text([1], max_new_tokens=4, temperature=0)
    assert (result.text, len(result.tokens), result.finish_detail) == ("a\ufffd\ufffdb\ufffd", 4, "")


# -- the real models ------------------------------------------------------------------------------

# Prompts after which a model spells characters over several tokens (SmolLM2 an emoji, Gemma 3 a hieroglyph
# from byte-fallback tokens); the first whose control run does is used.
PROMPTS = [
    "My favourite emojis are 😀 and",
    "Hieroglyphs: 𓀀 𓀁 𓀂 𓀃 𓀄 𓀅 𓀆",
    "Gothic: 𐌰 𐌱 𐌲 𐌳 𐌴 𐌵 𐌶",
    "从前有一个小村庄，村里住着",
]


class _Recorder(BaseStrategy):
    """Keeps the tokens of the sequence as the last ``on_token`` saw them."""

    def __init__(self) -> None:
        self.tokens: list[int] = []

    def on_token(self, ctx, token):
        self.tokens = list(ctx.tokens)
        return Continue()


def _cuts(provider, tokens) -> list[int]:
    """The limits at which ``tokens`` end inside a character."""
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    cuts = []
    for limit, token in enumerate(tokens, 1):
        decoder.decode(provider.token_bytes(token))
        if decoder.getstate()[0]:
            cuts.append(limit)
    return cuts


@pytest.mark.llamacpp
def test_a_length_stop_inside_a_character_on_the_real_models(any_provider):
    provider = any_provider
    for prompt in PROMPTS:
        control = BacktrackSampler(provider).generate_text(prompt, max_new_tokens=32, temperature=0)
        cuts = _cuts(provider, control.tokens)
        if cuts:
            break
    else:
        pytest.fail(f"no control run spelled a character over several tokens: {PROMPTS}")
    for limit in cuts[:3]:
        recorder = _Recorder()
        events = list(BacktrackSampler(provider, recorder).stream(prompt, max_new_tokens=limit, temperature=0))
        finish = check_stream(events)
        assert recorder.tokens == list(control.tokens[:limit])  # the control's run, cut inside a character
        text, unfinished = complete_characters(b"".join(provider.token_bytes(t) for t in recorder.tokens))
        assert unfinished > 0
        assert finish.reason == "length" and finish.text == text and "\ufffd" not in finish.text
        assert finish.detail == dropped_detail(unfinished)
        assert control.text.startswith(finish.text)
        # the tokens that carried only the unfinished bytes are gone: what is left spells the text
        kept = b"".join(provider.token_bytes(t) for t in finish.tokens)
        assert complete_characters(kept)[0] == text and list(finish.tokens) == recorder.tokens[: len(finish.tokens)]
        assert all(not provider.token_bytes(t).decode("utf-8", "ignore") for t in recorder.tokens[len(finish.tokens) :])
