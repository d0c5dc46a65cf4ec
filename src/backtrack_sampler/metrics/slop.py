"""Slop measures: ban-list hits per 1,000 words, "not X, but Y" contrasts per 1,000 characters, repeated trigrams.

The definitions follow the public slop-score leaderboard (github.com/sam-paech/slop-score):

- *Ban-list hits* (``js/metrics.js``, ``computeSlopIndex``): occurrences of
  the list's entries per 1,000 words, single words and multi-word phrases
  reported apart (the leaderboard's word score and trigram score). The
  leaderboard looks words up in its own word and trigram lists; here the list
  is a ban list (the default slop list or any ``--ban-file``), matched as
  AntiSlop matches it: whole words, ignoring case, unless an entry says
  otherwise. Every occurrence of every entry counts, so "a testament to"
  also counts as a hit of "testament" when both are listed.
- *Contrasts* (``js/contrast-detector.js``, ``scoreText``): the text with
  curly quotes and dashes made plain is split into sentences (runs ending in
  ``.``, ``!`` or ``?``); each match of a contrast pattern covers a range of
  sentences; overlapping ranges merge; the hits are the merged ranges, per
  1,000 characters of the text. The patterns are ours, written after the
  leaderboard's surface patterns (``js/regexes-stage1.js``): "not X, but Y",
  "not X - it's Y", "It's not X. It's Y", "not just X. It is Y", "no longer X;
  it is Y", "didn't V. It V-ed". The leaderboard's second stage (patterns over
  part-of-speech tags) needs a tagger and is left out, so these counts are a
  lower bound of its figure.
- *Repeated trigrams* (ours; the leaderboard scores trigrams against its
  list, which ``ban_hits`` covers): occurrences of word trigrams that occur
  ``REPEATED_MIN`` times or more across all the texts, trigrams made only of
  stop-words left out, per 1,000 words. Formulaic openings ("once upon a",
  "in a world") and loops raise it; compare inputs of similar size.

Example:
    >>> counter = PhraseCounter([BanPhrase("tapestry"), BanPhrase("testament to")])
    >>> counter.count("A rich Tapestry, a testament to tapestries.")
    Counter({'tapestry': 1, 'testament to': 1})
    >>> contrast_hits("It is not a bug, but a feature. Fine.")
    1
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence

from backtrack_sampler.metrics.diversity import WORD, ngrams, words
from backtrack_sampler.metrics.stopwords import STOPWORDS
from backtrack_sampler.strategy.ban_rules import BanPhrase
from backtrack_sampler.strategy.word_scripts import UNSPACED_CLASS, is_spaced_word_char

PER = 1000  # rates are per 1,000 words or characters
REPEATED_MIN = 3  # a trigram is "repeated" when it occurs this often or more across the texts


# -- ban-list hits ----------------------------------------------------------------------------------
def _phrase_pattern(phrase: BanPhrase) -> re.Pattern[str]:
    """A regex finding ``phrase`` as AntiSlop matches it (whole words, ignoring case, unless it says otherwise)."""
    body = re.escape(phrase.text)
    if phrase.whole_word is not False:
        # A spaced word character at an edge needs a word boundary; next to an unspaced one (Han, Kana, Thai)
        # there is always one: strategy.word_scripts' rule, as AntiSlop applies it.
        if is_spaced_word_char(phrase.text[0]):
            body = rf"(?:(?<!\w)|(?<={UNSPACED_CLASS}))" + body
        if is_spaced_word_char(phrase.text[-1]):
            body += rf"(?:(?!\w)|(?={UNSPACED_CLASS}))"
    return re.compile(body, 0 if phrase.ignore_case is False else re.IGNORECASE)


def is_single_word(phrase: str) -> bool:
    """Whether ``phrase`` is one word (letters, digits, inner apostrophes), not a phrase of several."""
    return WORD.fullmatch(phrase) is not None


class PhraseCounter:
    """Counts the occurrences of each entry of a ban list in texts.

    Args:
        phrases: the list (``load_ban_list``, ``default_slop_list()``); an
            entry listed twice counts once.
    """

    def __init__(self, phrases: Iterable[BanPhrase]) -> None:
        unique = {phrase.text: phrase for phrase in phrases}
        self.phrases = tuple(unique.values())
        # An ASCII entry matched ignoring case occurs only where its lower-case text does (but for rarities such as
        # the long s, which the regex folds to "s"): a cheap substring test skips most entries of a long list, and
        # an entry's regex is compiled the first time that test passes.
        self._needles = [
            p.text.lower() if p.text.isascii() and p.ignore_case is not False else None for p in self.phrases
        ]
        self._patterns: dict[int, re.Pattern[str]] = {}

    def count(self, text: str) -> Counter[str]:
        """How often each entry occurs in ``text`` (entries that do not occur are left out)."""
        counts: Counter[str] = Counter()
        lower = text.lower()
        for i, needle in enumerate(self._needles):
            if needle is not None and needle not in lower:
                continue
            phrase = self.phrases[i].text
            pattern = self._patterns.get(i)
            if pattern is None:
                pattern = self._patterns[i] = _phrase_pattern(self.phrases[i])
            found = sum(1 for _ in pattern.finditer(text))
            if found:
                counts[phrase] = found
        return counts


def per_1k(count: float, total: float) -> float:
    """``count`` per 1,000 of ``total`` (0.0 when ``total`` is 0)."""
    return count * PER / total if total else 0.0


# -- "not X, but Y" contrasts ---------------------------------------------------------------------
_PLAIN = str.maketrans({"‘": "'", "’": "'", "“": '"', "”": '"', "—": "-", "–": "-"})
_SENTENCE = re.compile(r"[^.!?]*[.!?]")
_PRON = r"(?:it|they|this|that)"
_BE = r"(?:is|are|was|were)"
_PRON_BE = rf"{_PRON}(?:'s|'re|\s+{_BE})"  # it's, they're, this is, that was ...
_PRON_BE_NOT = rf"{_PRON}(?:(?:'s|'re|\s+{_BE})\s+not|\s+{_BE}n't)"  # it's not, they aren't ...
_SENTENCE_START = r"(?:^|(?<=[.?!]\s))\s*[\"']?"
_NOT_AFTER_BUT = (  # "but" that starts a clause of its own, not the Y of a contrast
    r"(?:when|while|which|who|whom|whose|where|if|that|as|because|although|though|until|unless|here|there"
    r"|then|i|we|you|my|it\s+(?:seems|seemed|appears|felt|looks))\b"
)
CONTRAST_PATTERNS: dict[str, re.Pattern[str]] = {
    name: re.compile(pattern, re.IGNORECASE)
    for name, pattern in {
        # "not X, but Y" / "wasn't X; but Y" (not "not that", "not only ... but also")
        "not_but": rf"\b(?:{_BE}\s+not|{_BE}n't|not(?!\s+(?:that|only)\b))\s+[^.?!]{{1,100}}?[,;:]\s*but\s+"
        rf"(?!{_NOT_AFTER_BUT})",
        # "not X - it's Y" / "didn't just X - they Y"
        "not_dash": rf"\b(?:\w+n't|not)\s+(?:(?:just|only|merely)\s+)?[^.?!-]{{1,160}}?\s-\s*{_PRON}\s+\w",
        # "It's not X. It's Y." / "This isn't X; it is Y."
        "it_not_sep_it": rf"{_SENTENCE_START}{_PRON_BE_NOT}\b[^.?!]{{0,160}}[.;:?!]\s*[\"']?{_PRON_BE}\b(?!\s+not\b)",
        # "X is not just Y. It is Z."
        "not_just_sep": rf"\bnot\s+just\b[^.?!]{{0,160}}[.?!]\s*[\"']?{_PRON_BE}\b(?!\s+not\b)",
        # "X was no longer Y; it was Z."
        "no_longer": rf"\bno\s+longer\b[^.;:?!]{{0,160}}[.;:?!]\s*{_PRON}\s+{_BE}\b(?!\s+not\b)",
        # "They didn't walk. They walked away.": the same verb again (a regular one)
        "same_verb": rf"\b(?:do|does|did)n't\s+(?:\w+\s+){{0,2}}?([a-z]{{3,}})\b[^.?!]*[.?!]\s*"
        rf"{_PRON}\s+\1(?:ed|es|s|d)?\b",
    }.items()
}


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """The ``(start, end)`` of each sentence: runs ending in ``.``, ``!`` or ``?``, then the rest."""
    spans = [(m.start(), m.end()) for m in _SENTENCE.finditer(text)]
    last = spans[-1][1] if spans else 0
    if last < len(text):
        spans.append((last, len(text)))
    return spans


def _sentence_range(spans: Sequence[tuple[int, int]], start: int, end: int) -> tuple[int, int] | None:
    """The first and last sentence that the characters ``[start, end)`` touch."""
    touched = [i for i, (s, e) in enumerate(spans) if s < end and e > start]
    return (touched[0], touched[-1]) if touched else None


def contrast_matches(text: str) -> list[tuple[int, int]]:
    """The sentence ranges ``(first, last)`` holding a contrast, overlapping ranges merged, in order."""
    plain = text.translate(_PLAIN)
    spans = sentence_spans(plain)
    ranges = []
    for pattern in CONTRAST_PATTERNS.values():
        for match in pattern.finditer(plain):
            covered = _sentence_range(spans, match.start(), match.end())
            if covered is not None:
                ranges.append(covered)
    merged: list[tuple[int, int]] = []
    for lo, hi in sorted(ranges):
        if merged and lo <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], hi))
        else:
            merged.append((lo, hi))
    return merged


def contrast_hits(text: str) -> int:
    """How many "not X, but Y" contrasts ``text`` holds (sentence ranges, overlaps merged)."""
    return len(contrast_matches(text))


# -- repeated trigrams ------------------------------------------------------------------------------
def trigram_counts(texts: Iterable[str]) -> Counter[tuple[str, ...]]:
    """Word trigrams counted over all ``texts`` (within each text), those made only of stop-words left out."""
    counts: Counter[tuple[str, ...]] = Counter()
    for text in texts:
        counts.update(g for g in ngrams(words(text), 3) if not all(w in STOPWORDS for w in g))
    return counts


def repeated_trigrams(counts: Counter[tuple[str, ...]], minimum: int = REPEATED_MIN) -> int:
    """Occurrences of the trigrams that occur ``minimum`` times or more."""
    return sum(count for count in counts.values() if count >= minimum)
