"""Which banned phrases a prompt uses, so that bans spare the words the user wrote (``exempt_prompt_terms``).

A user who asks about tapestries gets the word "tapestry". Words are
compared after a light normalisation, ``word_stem``: Unicode case folding,
then a few English suffix rules, so regular inflections meet ("tapestries"
and "tapestry", "delving" and "delve", "boxes" and "box"). It is
deliberately small: irregular forms ("woven", "weave") do not meet, and a
few unrelated words may ("tapes" and "tap"), which only spares a ban.

A phrase is used by the prompt when its words, normalised, occur one after
the other among the prompt's words (punctuation and spacing between words
are ignored: the prompt's "a testament, to" uses "a testament to"). A phrase
without any word character ("—") is used when the prompt holds it (case
folded). The words are runs of word characters, and each character of a
script written without spaces (``strategy.word_scripts``), so "村里" is used
by "村里住着"; all is compared in NFC form.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence

from backtrack_sampler.strategy.word_scripts import canonical, word_spans

_VOWELS = frozenset("aeiouy")
_PLURALS = ("sses", "shes", "ches", "xes", "zes")


@functools.lru_cache(maxsize=65536)
def word_stem(word: str) -> str:
    """The form ``word`` is compared in: case folded, one plural and one verb ending removed, a final "e" dropped.

    Example:
        >>> [word_stem(w) for w in ("Tapestries", "tapestry", "delving", "delve", "delved", "boxes", "running")]
        ['tapestry', 'tapestry', 'delv', 'delv', 'delv', 'box', 'run']
    """
    w = canonical(word.casefold())
    # plurals (and third persons): -ies -> -y, -(s|sh|ch|x|z)es -> -, -s -> - (not -ss, -us, -is)
    if len(w) > 4 and w.endswith("ies"):
        w = w[:-3] + "y"
    elif len(w) > 4 and w.endswith(_PLURALS):
        w = w[:-2]
    elif len(w) > 3 and w.endswith("s") and not w.endswith(("ss", "us", "is")):
        w = w[:-1]
    # verb endings: -ied -> -y, -ing and -ed when a vowel stays ("string" and "speed" keep theirs)
    if len(w) > 4 and w.endswith("ied"):
        w = w[:-3] + "y"
    elif len(w) > 5 and w.endswith("ing") and _VOWELS.intersection(w[:-3]):
        w = _undouble(w[:-3])
    elif len(w) > 4 and w.endswith("ed") and not w.endswith("eed") and _VOWELS.intersection(w[:-2]):
        w = _undouble(w[:-2])
    if len(w) > 3 and w.endswith("e") and not w.endswith("ee"):
        w = w[:-1]
    return w


def _undouble(stem: str) -> str:
    """Drop a doubled final consonant ("runn" -> "run"), except l, s and z ("fall" stays)."""
    if len(stem) > 2 and stem[-1] == stem[-2] and stem[-1] not in _VOWELS and stem[-1] not in "lsz":
        return stem[:-1]
    return stem


def words(text: str) -> Iterator[str]:
    """The words of ``text``, in order (``word_scripts.word_spans``: a character of Han, Thai, ... is one)."""
    for start, end in word_spans(text):
        yield text[start:end]


class PromptTerms:
    """Finds the phrases of a ban list that a prompt uses (see the module docstring).

    Args:
        phrases: the banned phrases' texts; ``used_in`` answers indices into it.

    Built once per list (the phrases' words are normalised here); each
    ``used_in`` reads the prompt once and looks up its word sequences of
    each length a phrase has.

    Example:
        >>> terms = PromptTerms(["tapestry", "delve", "a testament to", "—"])
        >>> sorted(terms.used_in("Describe the Tapestries; don't delve."))
        [0, 1]
    """

    def __init__(self, phrases: Sequence[str]) -> None:
        self._by_words: dict[tuple[str, ...], list[int]] = {}
        self._wordless: list[tuple[int, str]] = []  # phrases without words: (index, case-folded text)
        for i, text in enumerate(phrases):
            key = tuple(word_stem(w) for w in words(text))
            if key:
                self._by_words.setdefault(key, []).append(i)
            else:
                self._wordless.append((i, canonical(text.casefold())))
        self._lengths = sorted({len(key) for key in self._by_words})

    def used_in(self, prompt: str) -> set[int]:
        """The indices of the phrases ``prompt`` uses."""
        stems = [word_stem(w) for w in words(prompt)]
        used: set[int] = set()
        for n in self._lengths:
            for i in range(len(stems) - n + 1):
                found = self._by_words.get(tuple(stems[i : i + n]))
                if found:
                    used.update(found)
        if self._wordless:
            folded = canonical(prompt.casefold())
            used.update(i for i, text in self._wordless if text in folded)
        return used


@functools.lru_cache(maxsize=8)
def prompt_terms(phrases: tuple[str, ...]) -> PromptTerms:
    """The ``PromptTerms`` of a ban list; cached (it is read-only), so the same list is normalised once."""
    return PromptTerms(phrases)
