"""Word-level diversity and loop measures of one text.

The definitions follow the public slop-score leaderboard where it gives one:
words are runs of letters, digits and inner apostrophes, lower-cased (in scripts
written without spaces between words, Han, Kana, Thai and the others of
``strategy.word_scripts``, each character is a word, as LoopGuard counts them); MATTR is
the mean type/token ratio over every window of 500 words (the plain type/token
ratio when the text is shorter). A text *loops* when some run of 4 words occurs
3 times or more in it.

Example:
    >>> distinct_n(words("the cat saw the cat"), 2)
    0.75
    >>> loops("a b c d a b c d a b c d")
    True
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence

from backtrack_sampler.strategy.word_scripts import SPACED_WORD_CHAR, UNSPACED_CHAR

WORD = re.compile(rf"{UNSPACED_CHAR}|{SPACED_WORD_CHAR}+(?:['’]{SPACED_WORD_CHAR}+)*")
LOOP_N = 4  # a loop: a run of LOOP_N words ...
LOOP_REPEATS = 3  # ... that occurs LOOP_REPEATS times or more
MATTR_WINDOW = 500


def words(text: str) -> list[str]:
    """The lower-cased words of ``text`` (letters, digits, inner apostrophes; one per Han or Kana character).

    Example:
        >>> words("我的iPhone, don't")
        ['我', '的', 'iphone', "don't"]
    """
    return [w.lower() for w in WORD.findall(text)]


def ngrams(items: Sequence[str], n: int) -> list[tuple[str, ...]]:
    """Every run of ``n`` consecutive items, in order."""
    return [tuple(items[i : i + n]) for i in range(len(items) - n + 1)]


def distinct_n(items: Sequence[str], n: int) -> float:
    """Distinct n-grams over all n-grams (1.0 when there are none)."""
    grams = ngrams(items, n)
    return len(set(grams)) / len(grams) if grams else 1.0


def most_repeated(items: Sequence[str], n: int = LOOP_N) -> tuple[tuple[str, ...], int]:
    """The n-gram that occurs most often, and how often (``((), 0)`` when there is none)."""
    counts = Counter(ngrams(items, n))
    if not counts:
        return (), 0
    gram, count = counts.most_common(1)[0]
    return gram, count


def loops(text: str, n: int = LOOP_N, repeats: int = LOOP_REPEATS) -> bool:
    """Whether some run of ``n`` words occurs ``repeats`` times or more in ``text``."""
    return most_repeated(words(text), n)[1] >= repeats


def mattr(items: Sequence[str], window: int = MATTR_WINDOW) -> float:
    """Moving-average type/token ratio over windows of ``window`` items (plain TTR when shorter)."""
    if not items:
        return 1.0
    if len(items) <= window:
        return len(set(items)) / len(items)
    counts = Counter(items[:window])
    total = len(counts)
    for i in range(window, len(items)):
        counts[items[i]] += 1
        old = items[i - window]
        counts[old] -= 1
        if counts[old] == 0:
            del counts[old]
        total += len(counts)
    return total / (len(items) - window + 1) / window
