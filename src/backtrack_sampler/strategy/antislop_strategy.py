"""AntiSlop: erase a banned phrase as soon as it appears and choose other words."""

from __future__ import annotations

from collections.abc import Iterable

from backtrack_sampler.core.context import GenerationContext
from backtrack_sampler.core.decisions import CONTINUE, Decision, Rewind
from backtrack_sampler.provider.base_provider import BaseProvider
from backtrack_sampler.strategy.base_strategy import BaseStrategy
from backtrack_sampler.strategy.phrase_automaton import PhraseAutomaton
from backtrack_sampler.strategy.phrase_tracker import PhraseTracker


class AntiSlopStrategy(BaseStrategy):
    """Ban phrases: when one appears in the text, rewind to the token where it began and ban it there.

    Matching is on the decoded text, so every tokenization of a phrase is
    caught (" tapestry" and " tap" + "estry" alike). An Aho-Corasick automaton
    advanced by each new character keeps the per-token cost independent of
    the number of phrases and of the text length, and holds back only the
    text that could still grow into a phrase.

    Args:
        provider: the provider the sampler uses.
        slops: the phrases to ban.
        ignore_case: match case-insensitively (Unicode case folding; default).

    Example:
        >>> strategy = AntiSlopStrategy(provider, ["tapestry", "I cannot"])  # doctest: +SKIP
    """

    def __init__(self, provider: BaseProvider, slops: Iterable[str], ignore_case: bool = True) -> None:
        if isinstance(slops, str):
            raise TypeError(f"slops must be a list of phrases, got the string {slops!r}")
        phrases = list(slops)
        for phrase in phrases:
            if not isinstance(phrase, str) or not phrase:
                raise ValueError(f"each slop must be a non-empty string, got {phrase!r}")
        self.provider = provider
        self.slops = phrases
        self.tracker = PhraseTracker(PhraseAutomaton(phrases, ignore_case))

    def reset(self) -> None:
        self.tracker.reset()

    def on_token(self, ctx: GenerationContext, token: int) -> Decision:
        matches = self.tracker.feed(ctx)
        if not matches:
            return CONTINUE
        start, phrase = min(matches)
        position = ctx.token_at_char(start)
        return Rewind(position, ban=(ctx.tokens[position],), reason=f"banned phrase {phrase!r}")

    def on_rewind(self, ctx: GenerationContext, position: int) -> None:
        self.tracker.truncate(position)

    def holdback(self, ctx: GenerationContext) -> int:
        return len(ctx.tokens) - self.commit_boundary(ctx, len(ctx.tokens))

    def commit_boundary(self, ctx: GenerationContext, upto: int) -> int:
        return self.tracker.commit_boundary(upto)
