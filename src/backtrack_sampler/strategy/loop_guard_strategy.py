"""LoopGuard: when the text starts repeating a span it already wrote, rewind to where the repeat began."""

from __future__ import annotations

from collections.abc import Iterable

from backtrack_sampler.core.base_strategy import BaseStrategy
from backtrack_sampler.core.checks import check_int, check_number
from backtrack_sampler.core.context import GenerationContext
from backtrack_sampler.core.decisions import CONTINUE, Decision, Rewind
from backtrack_sampler.core.vocabulary import Vocabulary
from backtrack_sampler.strategy.repeat_index import RepeatIndex
from backtrack_sampler.strategy.word_scripts import canonical, is_unspaced, word_spans

# Words: runs of letters, digits, marks and inner apostrophes in scripts written with spaces (as
# ``backtrack_sampler.metrics.diversity`` counts them); each character in scripts written without.
APOSTROPHES = "'’"
UNITS = ("words", "tokens")


class LoopGuardStrategy(BaseStrategy):
    r"""Take back a repeat as soon as it is ``min_length`` words (or tokens) long, and write something else.

    A *repeat* is DRY's: a run of at least ``min_length`` units at the end of
    the text that already occurred earlier in it (overlapping occurrences
    count, so ``"a a a"`` repeats ``"a a"``). Where DRY only penalizes the next
    token, LoopGuard rewinds to the token where the repeat began and bans that
    token there, so the path the model took into the loop is taken back. With
    ``factor`` in (0, 1) the ban is soft: that token's probability is
    multiplied by ``factor`` and the position sampled again; if the same token
    comes back, that repeat stays. When the position has no acceptable token
    left, the engine's retry ladder bans a later token of the repeat or
    rewinds further (see ``backtrack_sampler.core.engine``).

    Words (the default unit) are runs of letters, digits and inner
    apostrophes, compared case-folded and in NFC form, with the punctuation
    and spaces between them ignored: ``"I continued, I continued"`` repeats
    ``"i continued"``. In scripts written without spaces between words (Han,
    Hiragana, Katakana, Thai, Lao, Khmer, Myanmar: ``strategy.word_scripts``)
    each character is a word, so a loop in Chinese is a repeat of
    ``min_length`` characters. A word counts once a character that cannot
    extend it follows (or the text ends). Tokens are compared by id.

    Only the tokens of the current repeated suffix (and an unfinished word)
    are held back, since only a repeat that is still growing can reach
    ``min_length``; everything before streams at once. After a rewind to a
    held position (another strategy's, in a chain) a repeat may reach back
    into emitted text: it is then taken back from its first token not yet
    emitted. Each token costs the number of earlier occurrences of its unit
    (``RepeatIndex``), not a rescan.

    Args:
        provider: the provider the sampler uses (its vocabulary decodes the prompt).
        min_length: the shortest repeat taken back, in units (>= 2).
        unit: ``"words"`` or ``"tokens"``.
        include_prompt: whether repeating a span of the prompt counts too (a
            repeat never runs from the prompt into the generated text).
        factor: 0 bans the token that began a repeat; a factor in (0, 1)
            multiplies its probability instead (a soft ban).
        breakers: characters a repeat may not run across (DRY's sequence
            breakers, e.g. ``"\n"`` so that repeated list markers or headings
            on new lines do not count); none by default.

    Example:
        >>> strategy = LoopGuardStrategy(provider, min_length=4, unit="words")  # doctest: +SKIP
        >>> sampler = BacktrackSampler(provider, strategy)  # doctest: +SKIP
        >>> result = sampler.generate_text("Tell me a long story", max_new_tokens=512, seed=1)  # doctest: +SKIP
        >>> result.stats.rewinds, result.text  # the repeats it took back, and a text without them  # doctest: +SKIP
    """

    def __init__(
        self,
        provider: Vocabulary,
        min_length: int = 4,
        unit: str = "words",
        include_prompt: bool = False,
        factor: float = 0.0,
        breakers: Iterable[str] = (),
    ) -> None:
        check_int("min_length", min_length, low=2)
        if unit not in UNITS:
            raise ValueError(f"unit must be one of {', '.join(UNITS)}, got {unit!r}")
        if not isinstance(include_prompt, bool):
            raise TypeError(f"include_prompt must be True or False, got {include_prompt!r}")
        check_number("factor", factor, 0, 1, high_open=True)
        if isinstance(breakers, str) or not all(isinstance(b, str) and len(b) == 1 for b in breakers):
            raise ValueError(f"breakers must be a list of single characters, got {breakers!r}")
        self.provider = provider
        self.min_length = int(min_length)
        self.unit = unit
        self.include_prompt = include_prompt
        self.factor = float(factor)
        self.breakers = frozenset(breakers)
        self.reset()

    def reset(self) -> None:
        self.index = RepeatIndex()
        self._starts: list[int] = []  # per unit: the token where it begins (-1: in the prompt, or a break)
        self._ends: list[int] = []  # per unit: the token where it ends
        self._after: list[tuple[int, int, int]] = []  # per token, once read: (units, _scanned, _unfinished)
        self._scanned = 0  # words: the characters read into complete words (the end of the last one)
        self._unfinished = -1  # words: where a word that may still grow begins (-1: none)
        self._n_prompt_units = 0
        self._primed = False
        self._kept: dict[int, set[int]] = {}  # position -> tokens allowed to begin a repeat there
        self._asked: tuple[int, int, bool] | None = None  # (position, token, soft) of our last Rewind

    # -- reading the text into units --------------------------------------------------------------
    def _prime(self, ctx: GenerationContext) -> None:
        """The prompt's units, then a break (a repeat never runs from the prompt into the output)."""
        self._primed = True
        if self.include_prompt:
            if self.unit == "tokens":
                units = list(ctx.prompt_tokens)
            else:
                prompt = self.provider.decode(list(ctx.prompt_tokens))
                units = [_word_form(prompt[a:b]) for a, b in word_spans(prompt, APOSTROPHES)]
            for unit in units:
                self._add(unit, -1, -1)
            self._add(None, -1, -1)
        self._n_prompt_units = len(self.index)

    def _add(self, unit: object, start: int, end: int) -> None:
        self.index.append(unit)
        self._starts.append(start)
        self._ends.append(end)

    def _read_token(self, ctx: GenerationContext, position: int, token: int) -> None:
        if token in self.provider.eos_token_ids:
            return
        piece = ctx.text_from(position)
        breaks = bool(self.breakers) and any(c in self.breakers for c in piece)
        self._add(None if breaks else token, position, position)

    def _read_words(self, ctx: GenerationContext, final: bool) -> None:
        """Add the words completed since the last call (at the end, the unfinished one too)."""
        self._unfinished = -1
        if self._scanned >= ctx.n_chars:
            return
        first = ctx.token_at_char(self._scanned)
        text = ctx.text_from(first)[self._scanned - ctx.char_start(first) :]
        done = 0
        for begin, end in word_spans(text, APOSTROPHES):
            if not final and not _complete(text, end):
                self._unfinished = self._scanned + begin
                break
            if self.breakers and any(c in self.breakers for c in text[done:begin]):
                self._add(None, -1, -1)
            start = self._scanned + begin
            self._add(_word_form(text[begin:end]), ctx.token_at_char(start), ctx.token_at_char(self._scanned + end - 1))
            done = end
        self._scanned += done

    # -- the hooks --------------------------------------------------------------------------------
    def on_token(self, ctx: GenerationContext, token: int) -> Decision:
        if self._asked is not None:  # our last rewind was refused: that repeat is let through
            self._kept.setdefault(self._asked[0], set()).add(self._asked[1])
            self._asked = None
        if not self._primed:
            self._prime(ctx)
        position = len(ctx.tokens) - 1
        first_new = len(self.index)
        if self.unit == "tokens":
            self._read_token(ctx, position, token)
        else:
            final = token in self.provider.eos_token_ids or 0 < ctx.max_new_tokens <= len(ctx.tokens)
            self._read_words(ctx, final)
        self._after.append((len(self.index), self._scanned, self._unfinished))
        for unit in range(first_new, len(self.index)):
            length = self.index.longest[unit]
            if length < self.min_length:
                continue
            start, end = self._starts[unit - length + 1], self._ends[unit]
            if ctx.tokens[start] in self._kept.get(start, ()):
                continue  # soft-banned here already (or refused), and the same token came back: it stays
            if start < ctx.committed:
                # Only after a rewind to a held position can a repeat reach back into emitted text:
                # take back what is still held of it, as the retry ladder's first rung would.
                if ctx.committed > end:
                    continue
                start = ctx.committed
            return self._rewind(ctx, start, end, length)
        return CONTINUE

    def _rewind(self, ctx: GenerationContext, start: int, end: int, length: int) -> Rewind:
        token = ctx.tokens[start]
        span = ctx.text_from(start)[: ctx.char_start(end + 1) - ctx.char_start(start)].strip()
        what = f"repeat of {length} {self.unit} already written {span[-80:]!r}"
        soft = self.factor > 0
        self._asked = (start, token, soft)
        if not soft:
            return Rewind(start, ban=(token,), reason=what, match_end=end, ban_phrase=span)
        return Rewind(
            start,
            penalize=((token, self.factor),),
            reason=f"{what} (factor {self.factor:g})",
            match_end=end,
            ban_phrase=span,
        )

    def on_rewind(self, ctx: GenerationContext, position: int) -> None:
        before = self._after[position - 1] if position else (self._n_prompt_units, 0, -1)
        units, self._scanned, self._unfinished = before
        del self._after[position:], self._starts[units:], self._ends[units:]
        self.index.truncate(units)
        self._kept = {p: kept for p, kept in self._kept.items() if p <= position}
        if self._asked is not None and self._asked[0] == position and self._asked[2]:
            self._kept.setdefault(position, set()).add(self._asked[1])
        self._asked = None

    def holdback(self, ctx: GenerationContext) -> int:
        """The tokens of the repeat still growing at the end, and of an unfinished word."""
        return len(ctx.tokens) - self._open_from(ctx)

    def _open_from(self, ctx: GenerationContext) -> int:
        """The first token of the repeat still growing at the end, or of an unfinished word (else the end)."""
        first = len(ctx.tokens)
        if self._unfinished >= 0:
            first = ctx.token_at_char(self._unfinished)
        units = len(self.index)
        length = self.index.longest[-1] if units > self._n_prompt_units else 0
        if length:
            begin = units - length
            start = self._starts[begin]
            if ctx.tokens[start] in self._kept.get(start, ()):  # a kept repeat cannot begin there again
                start = self._starts[begin + 1] if length > 1 else first
            first = min(first, start)
        return first


def _word_form(word: str) -> str:
    """The form words are compared in: case-folded, NFC ("Straße" and "STRASSE" are one word)."""
    return canonical(word.casefold())


def _complete(text: str, end: int) -> bool:
    """Whether the word ending at ``end`` is finished: a character follows that cannot extend it."""
    if is_unspaced(text[end - 1]):  # a word of one character
        return True
    if end >= len(text):
        return False
    return text[end] not in APOSTROPHES or end + 1 < len(text)
