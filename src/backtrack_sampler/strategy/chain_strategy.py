"""Chain: apply several strategies in order."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from backtrack_sampler.core.base_strategy import BaseStrategy
from backtrack_sampler.core.context import GenerationContext
from backtrack_sampler.core.decisions import CONTINUE, Decision, Rewind, Stop


class ChainStrategy(BaseStrategy):
    """Run ``strategies`` in order: each adjusts the logits the previous one returned.

    When several ask to rewind after the same token, the deepest rewind wins
    (bans of equally deep rewinds are merged); a stop counts only when nobody
    rewinds. Every strategy is told about the rewind, so all see the state
    after it. The chain emits only up to a boundary that every member accepts.
    """

    def __init__(self, strategies: Sequence[BaseStrategy]) -> None:
        strategies = list(strategies)
        if not strategies or not all(isinstance(s, BaseStrategy) for s in strategies):
            raise ValueError(f"strategies must be a non-empty list of strategies, got {strategies!r}")
        self.strategies = strategies
        self.needs_full_logits = any(s.needs_full_logits for s in strategies)

    @property
    def name(self) -> str:
        return "Chain(" + ", ".join(s.name for s in self.strategies) + ")"

    @property
    def adjusts_logits(self) -> bool:
        return any(s.adjusts_logits for s in self.strategies)

    def reset(self) -> None:
        for strategy in self.strategies:
            strategy.reset()

    def adjust_logits(self, ctx: GenerationContext, logits: np.ndarray) -> np.ndarray:
        for strategy in self.strategies:
            logits = strategy.adjust_logits(ctx, logits)
        return logits

    def on_token(self, ctx: GenerationContext, token: int) -> Decision:
        rewinds: list[Rewind] = []
        stop: Stop | None = None
        for strategy in self.strategies:
            decision = strategy.on_token(ctx, token)
            if isinstance(decision, Rewind):
                rewinds.append(dataclasses.replace(decision, strategy=decision.strategy or strategy.name))
            elif isinstance(decision, Stop) and stop is None:
                stop = dataclasses.replace(decision, strategy=decision.strategy or strategy.name)
        if rewinds:
            deepest = min(r.position for r in rewinds)
            winners = [r for r in rewinds if r.position == deepest]
            if len(winners) == 1:
                return winners[0]
            bans = tuple(dict.fromkeys(t for r in winners for t in r.ban))
            insert = next((r.insert for r in winners if r.insert), ())
            ends = [r.match_end for r in winners if r.match_end is not None]
            return Rewind(
                deepest,
                ban=bans,
                insert=insert,
                reason="; ".join(r.reason for r in winners if r.reason),
                strategy="+".join(r.strategy for r in winners),
                penalize=tuple(p for r in winners for p in r.penalize),
                match_end=max(ends) if ends else None,
                ban_phrase="; ".join(r.ban_phrase for r in winners if r.ban_phrase),
            )
        return stop or CONTINUE

    def on_rewind(self, ctx: GenerationContext, position: int) -> None:
        for strategy in self.strategies:
            strategy.on_rewind(ctx, position)

    def holdback(self, ctx: GenerationContext) -> int:
        return len(ctx.tokens) - self.commit_boundary(ctx, len(ctx.tokens))

    def commit_boundary(self, ctx: GenerationContext, upto: int) -> int:
        # A boundary one member accepts may not suit another (a phrase prefix
        # may be open there): lower it until every member accepts it.
        while True:
            lowest = min(s.commit_boundary(ctx, upto) for s in self.strategies)
            if lowest == upto:
                return upto
            upto = lowest
