"""Property tests for bans: random vocabularies, logits, phrase lists (whole-word, case, soft) and regexes."""

from __future__ import annotations

import regex
from hypothesis import given, settings
from hypothesis import strategies as st

from backtrack_sampler import (
    AntiSlopStrategy,
    BacktrackSampler,
    BanPhrase,
    BanRegex,
    ChainStrategy,
    RewindEvent,
    RewindRefusedEvent,
)
from hypothesis_strategies import ban_phrases, budgets, sampling, vocabs
from scripted import Scripted, check_stream, of, random_provider

ALPHABET = "abAé ."
SETTINGS = settings(max_examples=200, deadline=None)

VOCABS = vocabs(ALPHABET, max_extra=8)
PHRASES = ban_phrases(ALPHABET)
CONSUMING = ["a", "b", "é", " ", "A", "[ab]", "a+", "(?:ab|ba)", "[^a ]", r"\w"]
patterns = st.lists(
    st.builds(
        lambda flag, start, atoms, end, factor: BanRegex(flag + start + "".join(atoms) + end, factor),
        st.sampled_from(["", "(?i)"]),
        st.sampled_from(["", r"\b", r"\B"]),
        st.lists(st.sampled_from(CONSUMING), min_size=1, max_size=3),
        st.sampled_from(["", r"\b", r"\B", "(?!a)", "(?=[ .])"]),
        st.sampled_from([0.0, 0.0, 0.5]),
    ),
    max_size=3,
)
SAMPLING = sampling(temperatures=[0, 0.5, 1.0, 2.5])


def phrase_pattern(phrase: BanPhrase, ignore_case: bool, whole_words: bool) -> str:
    """Reference: the regex that finds ``phrase`` with its options."""
    whole = whole_words if phrase.whole_word is None else phrase.whole_word
    fold = ignore_case if phrase.ignore_case is None else phrase.ignore_case
    before = r"(?<!\w)" if whole and regex.match(r"\w", phrase.text[0]) else ""
    after = r"(?!\w)" if whole and regex.match(r"\w", phrase.text[-1]) else ""
    return ("(?fi)" if fold else "") + before + regex.escape(phrase.text) + after


def found(pattern: str, prompt: str, text: str) -> bool:
    """Whether ``pattern`` matches in ``text`` (at a start inside it; the prompt is only looked at)."""
    return regex.search(pattern, prompt + text, pos=len(prompt)) is not None


@SETTINGS
@given(
    VOCABS,
    PHRASES,
    patterns,
    st.booleans(),
    st.booleans(),
    budgets,
    SAMPLING,
    st.integers(0, 2**16),
    st.sampled_from(ALPHABET),
)
def test_bans_hold_unless_an_event_says_otherwise(
    vocab, slops, bans, ignore_case, whole_words, budget, kwargs, table, prompt
):
    provider = random_provider(vocab, seed=table, scale=2.5, eos_bias=-3)
    antislop = AntiSlopStrategy(provider, slops, ignore_case=ignore_case, whole_words=whole_words, regex=bans)
    counter = Scripted()
    sampler = BacktrackSampler(provider, ChainStrategy([antislop, counter]), budget)
    events = list(sampler.stream([vocab.index(prompt)], **kwargs))

    finish = check_stream(events)  # the stream is the final sequence
    n = kwargs["max_new_tokens"]
    assert len(finish.tokens) <= n and finish.reason in ("eos", "length")
    assert finish.stats.rewinds <= budget.per_generation
    assert counter.calls <= (n + 1) * (finish.stats.rewinds + 1)  # every run ends within the budget

    names = {p.text for p in slops} | {b.pattern for b in bans}
    for rewind in of(events, RewindEvent):
        assert rewind.ban_phrase in names
        assert rewind.escalation or rewind.position <= len(finish.tokens) + finish.stats.tokens_rewound
    refusals = of(events, RewindRefusedEvent)
    assert "already_emitted" not in {r.cause for r in refusals}  # holdback covers every possible match
    for refusal in refusals:
        assert "let through" in refusal.message or "sampling without the bans" in refusal.message
    if not refusals:
        for phrase in slops:
            if phrase.factor == 0:
                assert not found(phrase_pattern(phrase, ignore_case, whole_words), prompt, finish.text), phrase
        for ban in bans:
            if ban.factor == 0:
                assert not found(ban.pattern, prompt, finish.text), ban

    again = sampler.generate_text([vocab.index(prompt)], **kwargs)  # same seed: same generation
    assert again.tokens == finish.tokens and again.rewinds == tuple(of(events, RewindEvent))


@SETTINGS
@given(VOCABS, PHRASES, budgets, SAMPLING, st.integers(0, 2**16))
def test_generate_yields_the_final_tokens(vocab, slops, budget, kwargs, table):
    provider = random_provider(vocab, seed=table, eos_bias=-3)
    sampler = BacktrackSampler(provider, AntiSlopStrategy(provider, slops), budget)
    result = sampler.generate_text([1], **kwargs)
    assert tuple(sampler.generate([1], **kwargs)) == result.tokens
    assert result.text == provider.decode(result.tokens)
