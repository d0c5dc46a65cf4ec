"""Checks shared by the tests of the remote provider against real servers (vLLM, our own)."""

from __future__ import annotations

import re

from backtrack_sampler import AntiSlopStrategy, BacktrackSampler, CreativeWritingStrategy
from scripted import check_stream

STORY = [{"role": "user", "content": "Write a short story about a dragon who lives in a library."}]


def chat_prompt(provider) -> str:
    return provider.apply_chat_template(STORY)


def generate(provider, strategy=None, **kwargs):
    """One generation through the stream, after checking that the stream adds up to the final result."""
    kwargs.setdefault("max_new_tokens", 48)
    kwargs.setdefault("temperature", 0)
    return check_stream(list(BacktrackSampler(provider, strategy).stream(chat_prompt(provider), **kwargs)))


def banned_phrase_pattern(phrases):
    """How AntiSlop matches: whole words, ignoring case."""
    return re.compile("|".join(rf"(?<!\w){re.escape(p)}(?!\w)" for p in phrases), re.IGNORECASE)


def words_of(text: str, n: int) -> list[str]:
    """``n`` distinct words (4 letters or more) of ``text``, in order: bans that greedy decoding meets."""
    seen: list[str] = []
    for word in re.findall(r"[A-Za-z]{4,}", text):
        if word.lower() not in (w.lower() for w in seen):
            seen.append(word)
    return seen[:n]


def check_antislop_leaves_no_banned_phrase(provider, phrases, expect_rewinds=True, **kwargs):
    finish = generate(provider, AntiSlopStrategy(provider, phrases), **kwargs)
    if expect_rewinds:
        assert finish.stats.rewinds > 0, "the bans were chosen from the greedy text: a rewind must happen"
    assert not banned_phrase_pattern(phrases).search(finish.text), finish.text
    assert finish.tokens, finish
    return finish


def check_full_logits_strategy_is_refused(provider):
    import pytest

    with pytest.raises(ValueError, match="only top-k logprobs"):
        BacktrackSampler(provider, CreativeWritingStrategy(provider))
