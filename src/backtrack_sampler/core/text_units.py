"""Words and sentences in generated text: what whole-word bans and the engine's retry ladder look for."""

from __future__ import annotations

import unicodedata

SENTENCE_ENDS = frozenset(".!?…\n")

_word_chars: dict[str, bool] = {}


def is_word_char(char: str) -> bool:
    """Letters, digits, combining marks and ``_`` make words (``str.isalnum``, so any script)."""
    known = _word_chars.get(char)
    if known is None:
        known = char.isalnum() or char == "_" or unicodedata.category(char).startswith("M")
        _word_chars[char] = known
    return known


def previous_word_start(text: str) -> int:
    """Where the last word of ``text`` starts, skipping what follows it (0 when ``text`` has no word).

    Example:
        >>> previous_word_start("I think that ")
        8
    """
    i = len(text)
    while i > 0 and not is_word_char(text[i - 1]):
        i -= 1
    while i > 0 and is_word_char(text[i - 1]):
        i -= 1
    return i


def sentence_start(text: str) -> int:
    """Where the last sentence of ``text`` starts: after the sentence end before it, and its spaces.

    Example:
        >>> sentence_start("It rained. Then the sun came")
        11
    """
    i = len(text)
    while i > 0 and (text[i - 1] in SENTENCE_ENDS or text[i - 1].isspace()):
        i -= 1  # the end of the last sentence itself
    while i > 0 and text[i - 1] not in SENTENCE_ENDS:
        i -= 1
    while i < len(text) and text[i].isspace():
        i += 1
    return min(i, len(text))
