"""Replace: when a text appears, rewind it and force another text in its place."""

from __future__ import annotations

import math
from collections.abc import Sequence

from backtrack_sampler.core.base_strategy import BaseStrategy
from backtrack_sampler.core.checks import check_int, check_number, check_optional_int
from backtrack_sampler.core.context import GenerationContext
from backtrack_sampler.core.decisions import CONTINUE, Decision, Rewind
from backtrack_sampler.core.vocabulary import Vocabulary
from backtrack_sampler.strategy.ban_rules import BanPhrase
from backtrack_sampler.strategy.phrase_tracker import PhraseTracker


class ReplaceStrategy(BaseStrategy):
    r"""Replace each occurrence of a ``find`` text with ``replace`` (e.g. "</think>" -> "\\nWait, but").

    A replacement happens only when every gate passes: fewer than
    ``max_replacements`` so far; the found text begins within the first
    ``max_new_tokens_for_replace`` generated tokens and not before token
    ``skip_tokens``; its first token had probability at most ``max_prob``.
    Text inside an inserted replacement is never matched again, so a
    replacement that contains the find text cannot loop.
    """

    def __init__(
        self,
        provider: Vocabulary,
        find: Sequence[str],
        replace: str,
        max_replacements: int = 1,
        max_new_tokens_for_replace: int | None = None,
        skip_tokens: int = 0,
        max_prob: float = 1.0,
    ) -> None:
        if isinstance(find, str):
            find = [find]
        if not find or not all(isinstance(f, str) and f for f in find):
            raise ValueError(f"find must be a list of non-empty strings, got {find!r}")
        if not isinstance(replace, str):
            raise TypeError(f"replace must be a string, got {type(replace).__name__}")
        check_int("max_replacements", max_replacements)
        check_int("skip_tokens", skip_tokens)
        check_optional_int("max_new_tokens_for_replace", max_new_tokens_for_replace)
        check_number("max_prob", max_prob, 0, 1, low_open=True)
        self.provider = provider
        self.find = list(find)
        self.replace = replace
        self.max_replacements = max_replacements
        self.max_new_tokens_for_replace = max_new_tokens_for_replace
        self.skip_tokens = skip_tokens
        self.max_prob = max_prob
        phrases = [BanPhrase(f, ignore_case=False, whole_word=False) for f in self.find]
        self.tracker = PhraseTracker(phrases)
        self.reset()

    def reset(self) -> None:
        self.replacements = 0
        self._protected_until = 0  # chars before this offset were inserted by us (or precede them)
        self._asked: tuple[int, int] | None = None  # (position, protected_until) of our last Rewind
        self.tracker.reset()

    def _gates_pass(self, ctx: GenerationContext, position: int) -> bool:
        if self.replacements >= self.max_replacements or position < self.skip_tokens:
            return False
        limit = self.max_new_tokens_for_replace
        if limit is not None and position >= limit:
            return False
        if self.max_prob < 1:
            logprob = ctx.logprob(position)
            if logprob is None or logprob > math.log(self.max_prob):
                return False
        return True

    def on_token(self, ctx: GenerationContext, token: int) -> Decision:
        self._asked = None  # a Rewind we asked for and that was not carried out
        matches = self.tracker.feed(ctx)
        if self.replacements >= self.max_replacements:
            return CONTINUE
        for start, _, index in sorted(matches):
            found = self.find[index]
            if start < self._protected_until:
                continue
            position = ctx.token_at_char(start)
            if not self._gates_pass(ctx, position):
                continue
            kept = ctx.text_from(position)[: start - ctx.char_start(position)]
            self._asked = (position, start + len(self.replace))
            insert = tuple(self.provider.encode(kept + self.replace, add_bos=False))
            return Rewind(position, insert=insert, reason=f"replaced {found!r}")
        return CONTINUE

    def on_rewind(self, ctx: GenerationContext, position: int) -> None:
        # Count a replacement only once the engine carried it out (a chain may prefer a deeper rewind).
        if self._asked is not None and self._asked[0] == position:
            self.replacements += 1
            self._protected_until = self._asked[1]
        self._asked = None
        self.tracker.truncate(position)

    def holdback(self, ctx: GenerationContext) -> int:
        return len(ctx.tokens) - self.commit_boundary(ctx, len(ctx.tokens))

    def commit_boundary(self, ctx: GenerationContext, upto: int) -> int:
        if self.replacements >= self.max_replacements:
            return upto
        return self.tracker.commit_boundary(upto)
