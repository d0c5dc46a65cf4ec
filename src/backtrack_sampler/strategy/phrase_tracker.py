"""Following banned phrases along the generated text, token by token, through rewinds.

The text is fed to an Aho-Corasick automaton (``PhraseAutomaton``) as a
stream of symbols: each character decomposed and case-folded
(``word_scripts.fold``: "é" and "e" + U+0301 are the same symbols, "ß" is
"ss"), and, for whole-word phrases, two zero-width markers: ``WORD_START``
before a spaced word character (``word_scripts.is_spaced_word_char``) that
follows any other character, ``WORD_END`` before any other character that
follows a spaced word character (and at the end of the text). A whole-word
phrase is stored with the same markers, plus a leading ``WORD_START`` when it
begins with a spaced word character and a trailing ``WORD_END`` when it ends
with one. So "avid" never matches inside "David" (no marker between "D" and
"a"), a match of "avid" at the end of the text waits for the next character
("avidly" has no ``WORD_END`` after "d"), and a phrase edge made of a
character of a script written without spaces (Han, Kana, Thai, ...) needs no
marker: "村里" is found in "小村庄，村里住着", "iPhone用" after "我的" but not
after "my".

Phrases matched anywhere (substring mode) go to a second automaton fed the
same characters without markers. Case-sensitive phrases are matched folded,
then checked against the original text (both in NFC form). A match begins
and ends on whole characters of the text.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import TYPE_CHECKING, NamedTuple

from backtrack_sampler.strategy.ban_rules import BanPhrase
from backtrack_sampler.strategy.phrase_automaton import SHIFT, PhraseAutomaton
from backtrack_sampler.strategy.word_scripts import canonical, is_spaced_word_char
from backtrack_sampler.strategy.word_scripts import fold as fold_char

if TYPE_CHECKING:
    from backtrack_sampler.core.context import GenerationContext

# Unicode noncharacters: never meant to appear in text; a generated one is read as U+FFFD.
WORD_START = "\ufdd0"
WORD_END = "\ufdd1"
_START, _END = ord(WORD_START), ord(WORD_END)
_NONCHARACTERS = range(0xFDD0, 0xFDF0)

_folds: dict[str, tuple[int, ...]] = {}


def fold(char: str) -> tuple[int, ...]:
    """The code points ``char`` is compared as (decomposed, case-folded; noncharacters as U+FFFD)."""
    folded = _folds.get(char)
    if folded is None:
        folded = tuple(0xFFFD if ord(c) in _NONCHARACTERS else ord(c) for c in fold_char(char))
        _folds[char] = folded
    return folded


def phrase_key(text: str, whole_word: bool) -> str:
    """The symbols a phrase is stored as (see the module docstring)."""
    symbols = []
    word = None
    for char in text:
        is_word = is_spaced_word_char(char)
        if whole_word and is_word != word and (word is not None or is_word):
            symbols.append(WORD_START if is_word else WORD_END)
        word = is_word
        symbols.extend(map(chr, fold(char)))
    if whole_word and word:
        symbols.append(WORD_END)
    return "".join(symbols)


@functools.lru_cache(maxsize=8)
def _automata(texts: tuple[str, ...], whole: tuple[bool, ...]) -> list[tuple[PhraseAutomaton, tuple[int, ...], bool]]:
    """``(automaton, phrase index of each key, markers)`` per lane; cached, so the same list builds once."""
    lanes = []
    for markers in (True, False):
        chosen = tuple(i for i, w in enumerate(whole) if w == markers)
        if chosen:
            lanes.append((PhraseAutomaton([phrase_key(texts[i], markers) for i in chosen]), chosen, markers))
    return lanes


class PhraseMatch(NamedTuple):
    """A phrase found in the text: characters ``start`` to ``end`` (exclusive), ``index`` in the list."""

    start: int
    end: int
    index: int


class _Lane:
    """One automaton (shared, read-only) and this tracker's state in it after each token."""

    def __init__(self, automaton: PhraseAutomaton, phrase_of_key: tuple[int, ...], markers: bool) -> None:
        self.automaton = automaton
        self.phrase_of_key = phrase_of_key
        self.markers = markers
        self.reset()

    def reset(self) -> None:
        self.states: list[int] = []
        self.fed: list[int] = []  # symbols fed up to each token
        self.origins: list[int] = []  # per symbol: its character's offset, or ~offset after the first symbol

    def truncate(self, position: int) -> None:
        del self.states[position:], self.fed[position:]
        del self.origins[self.fed[-1] if self.fed else 0 :]


class PhraseTracker:
    """Finds banned phrases in the generated text as tokens arrive, and says what to hold back.

    Args:
        phrases: the phrases; their ``None`` options take the defaults below.
        ignore_case: default for ``BanPhrase.ignore_case``.
        whole_words: default for ``BanPhrase.whole_word``.

    ``feed`` advances over the latest token and returns the matches it
    completed; ``truncate`` follows a rewind; ``commit_boundary`` is the last
    token boundary after which no phrase was open, so a rewind to any later
    position cannot complete a phrase that begins in emitted text.
    """

    def __init__(self, phrases: Sequence[BanPhrase], ignore_case: bool = True, whole_words: bool = True) -> None:
        self.phrases = list(phrases)
        self.case_sensitive = [p.ignore_case is False or (p.ignore_case is None and not ignore_case) for p in phrases]
        whole = tuple(p.whole_word if p.whole_word is not None else whole_words for p in phrases)
        texts = tuple(p.text for p in self.phrases)
        self.lanes = [_Lane(*layout) for layout in _automata(texts, whole)]
        self.reset()

    def reset(self) -> None:
        for lane in self.lanes:
            lane.reset()
        self._word_after: list[bool] = []  # whether the text up to each token ends with a word character
        self._closed: list[int] = []  # last boundary c <= i + 1 with no phrase open after token c - 1

    def truncate(self, position: int) -> None:
        """Keep the state of the first ``position`` tokens."""
        for lane in self.lanes:
            lane.truncate(position)
        del self._word_after[position:], self._closed[position:]

    def feed(self, ctx: GenerationContext, final: bool = False) -> list[PhraseMatch]:
        """Advance over the latest token; return the matches completed in it.

        Args:
            ctx: the generation, whose latest token is the one to read.
            final: the text ends after this token (so a phrase ending it is
                whole: feed ``WORD_END``).
        """
        position = len(ctx.tokens) - 1
        self.truncate(position)  # entries past it remain only after a refused rewind
        if self._word_after:
            word_before = self._word_after[-1]
        else:
            word_before = _prompt_ends_in_word(ctx)
        offset = ctx.char_start(position)
        text = ctx.text_from(position)
        matches: list[PhraseMatch] = []
        closed = True
        for lane in self.lanes:
            self._advance(lane, ctx, text, offset, word_before, final, matches)
            closed = closed and lane.states[-1] == 0
        self._word_after.append(is_spaced_word_char(text[-1]) if text else word_before)
        self._closed.append(position + 1 if closed else (self._closed[-1] if self._closed else 0))
        return matches

    def _advance(self, lane, ctx, text, offset, word, final, matches) -> None:
        # The hot loop: one cached transition per symbol (see PhraseAutomaton.moves), the low bit says
        # whether a phrase ends there.
        automaton, origins, markers = lane.automaton, lane.origins, lane.markers
        moves, move = automaton.moves, automaton.move
        state = lane.states[-1] if lane.states else 0
        for i, char in enumerate(text):
            at = offset + i
            if markers:
                is_word = is_spaced_word_char(char)
                if is_word != word:
                    origins.append(at)
                    symbol = _START if is_word else _END
                    packed = moves.get(state << SHIFT | symbol)
                    if packed is None:
                        packed = move(state, symbol)
                    state = packed >> 1
                    if packed & 1:
                        self._report(lane, ctx, state, at, matches)
                    word = is_word
            symbols = fold(char)
            last = len(symbols) - 1
            for j, symbol in enumerate(symbols):
                origins.append(~at if j else at)
                packed = moves.get(state << SHIFT | symbol)
                if packed is None:
                    packed = move(state, symbol)
                state = packed >> 1
                if packed & 1 and j == last:  # a match must end on a whole character
                    self._report(lane, ctx, state, at + 1, matches)
        if final and markers and word:
            origins.append(offset + len(text))
            packed = move(state, _END)
            state = packed >> 1
            if packed & 1:
                self._report(lane, ctx, state, offset + len(text), matches)
        lane.states.append(state)
        lane.fed.append(len(origins))

    def _report(self, lane: _Lane, ctx: GenerationContext, state: int, end: int, matches: list[PhraseMatch]) -> None:
        origins, lengths = lane.origins, lane.automaton.key_length
        for key in lane.automaton.ends(state):
            start = origins[len(origins) - lengths[key]]
            if start < 0:  # begins inside a character's folding ("sa" in "ßa")
                continue
            index = lane.phrase_of_key[key]
            if self.case_sensitive[index] and canonical(_span(ctx, start, end)) != canonical(self.phrases[index].text):
                continue
            matches.append(PhraseMatch(start, end, index))

    def commit_boundary(self, upto: int) -> int:
        """The last boundary <= ``upto`` after which no phrase was open."""
        if not self.lanes or upto <= 0:  # no phrases, or nothing to emit
            return upto
        return self._closed[min(upto, len(self._closed)) - 1] if self._closed else 0


def _span(ctx: GenerationContext, start: int, end: int) -> str:
    token = ctx.token_at_char(start)
    base = ctx.char_start(token)
    return ctx.text_from(token)[start - base : end - base]


def prompt_tail(ctx: GenerationContext, n_tokens: int = 8) -> str:
    """The text of the prompt's last ``n_tokens`` tokens (what the generated text follows)."""
    tail = b"".join(ctx.provider.token_bytes(t) for t in ctx.prompt_tokens[-n_tokens:])
    return tail.decode("utf-8", errors="ignore")


def _prompt_ends_in_word(ctx: GenerationContext) -> bool:
    """Whether the prompt ends with a spaced word character (so the first word generated may continue it)."""
    text = prompt_tail(ctx, 4)
    return bool(text) and is_spaced_word_char(text[-1])
