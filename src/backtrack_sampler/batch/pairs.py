"""Preference pairs from ban rewinds: what a rewind erased (rejected) against what the final text has there (chosen)."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

from backtrack_sampler.core.events import FinishEvent, RewindEvent
from backtrack_sampler.core.token_text import TokenText

_SENTENCE_END = re.compile(r"[.!?…](?=\s|$)|\n")
_SPACE = re.compile(r"\s")


def comparable_continuation(text: str, length: int) -> str:
    """The start of ``text``: up to the end of its first sentence, or the first word end after ``length`` chars."""
    body = len(text) - len(text.lstrip())
    sentence = _SENTENCE_END.search(text, body)
    cut = sentence.end() if sentence else len(text)
    space = _SPACE.search(text, max(length, body + 1))
    if space is not None:
        cut = min(cut, space.start())
    return text[:cut]


def preference_pairs(
    prompt: str, finish: FinishEvent, rewinds: Sequence[RewindEvent], token_bytes: Callable[[int], bytes]
) -> list[dict[str, Any]]:
    """DPO-style ``{prompt, chosen, rejected, metadata}`` records, one per rewind that banned text.

    ``rejected`` is the text the rewind erased (it holds the banned phrase);
    ``chosen`` is what the final text has at the same place, cut to a
    comparable length (``comparable_continuation``); ``prompt`` is the prompt
    and the generated text before that place. A rewind whose context was
    itself erased later (a deeper rewind came after it) has no final
    continuation and gives no pair, nor does one whose continuation is empty
    or still holds the phrase.
    """
    text = TokenText(token_bytes)
    for token in finish.tokens:
        text.append(token)
    final = finish.text
    pairs = []
    for index, event in enumerate(rewinds):
        if not event.banned or event.position > len(finish.tokens):
            continue
        if any(later.position < event.position for later in rewinds[index + 1 :]):
            continue  # its context did not survive
        start = text.char_start(event.position) if event.position < len(finish.tokens) else len(final)
        chosen = comparable_continuation(final[start:], len(event.suppressed_text))
        if not chosen.strip() or chosen == event.suppressed_text:
            continue
        if event.ban_phrase and event.ban_phrase.lower() in chosen.lower():
            continue  # the phrase was let through in the end (the retry ladder gave up): no preference
        pairs.append(
            {
                "prompt": prompt + final[:start],
                "chosen": chosen,
                "rejected": event.suppressed_text,
                "metadata": {
                    "position": event.position,
                    "char_offset": start,
                    "ban_phrase": event.ban_phrase,
                    "reason": event.reason,
                    "strategy": event.strategy,
                    "escalation": event.escalation,
                    "banned_token_ids": list(event.banned),
                    "rewind_index": index,
                },
            }
        )
    return pairs
