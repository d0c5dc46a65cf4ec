"""AntiSlop: erase a banned phrase as soon as it appears and choose other words."""

from __future__ import annotations

import re
from collections.abc import Iterable

from backtrack_sampler.core.context import GenerationContext
from backtrack_sampler.core.decisions import CONTINUE, Decision, Rewind
from backtrack_sampler.provider.base_provider import BaseProvider
from backtrack_sampler.strategy._text_window import holdback_for_chars, recent_window
from backtrack_sampler.strategy.base_strategy import BaseStrategy


class AntiSlopStrategy(BaseStrategy):
    """Ban phrases: when one appears in the text, rewind to the token where it began and ban it there.

    Matching is on text, so every tokenization of a phrase is caught
    (" tapestry" and " tap" + "estry" alike).

    Args:
        provider: the provider the sampler uses.
        slops: the phrases to ban.
        ignore_case: match case-insensitively (default).

    Example:
        >>> strategy = AntiSlopStrategy(provider, ["tapestry", "I cannot"])  # doctest: +SKIP
    """

    def __init__(self, provider: BaseProvider, slops: Iterable[str], ignore_case: bool = True) -> None:
        if isinstance(slops, str):
            raise TypeError(f"slops must be a list of phrases, got the string {slops!r}")
        phrases = [p for p in slops]
        for phrase in phrases:
            if not isinstance(phrase, str) or not phrase:
                raise ValueError(f"each slop must be a non-empty string, got {phrase!r}")
        self.provider = provider
        self.slops = phrases
        self.longest = max((len(p) for p in phrases), default=0)
        alternatives = "|".join(re.escape(p) for p in sorted(set(phrases), key=len, reverse=True))
        self._pattern = re.compile(alternatives, re.IGNORECASE if ignore_case else 0) if phrases else None

    def on_token(self, ctx: GenerationContext, token: int) -> Decision:
        if self._pattern is None:
            return CONTINUE
        text, offset, new_from = recent_window(ctx, self.longest)
        for match in self._pattern.finditer(text):
            if offset + match.end() > new_from:
                position = ctx.token_at_char(offset + match.start())
                reason = f"banned phrase {match.group()!r}"
                return Rewind(position, ban=(ctx.tokens[position],), reason=reason)
        return CONTINUE

    def holdback(self, ctx: GenerationContext) -> int:
        return holdback_for_chars(ctx, self.longest - 1)
