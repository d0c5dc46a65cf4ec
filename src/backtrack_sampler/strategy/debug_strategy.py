"""Debug: print the top choices and their probabilities at each step. The skeleton for new strategies."""

from __future__ import annotations

import sys
from typing import TextIO

import numpy as np

from backtrack_sampler.core.base_strategy import BaseStrategy
from backtrack_sampler.core.checks import check_int
from backtrack_sampler.core.context import GenerationContext
from backtrack_sampler.core.decisions import CONTINUE, Decision
from backtrack_sampler.core.sampling import softmax
from backtrack_sampler.core.vocabulary import Vocabulary


class DebugStrategy(BaseStrategy):
    """Print, for each position, the ``top_k`` tokens with their probabilities, then the one sampled.

    Args:
        provider: the provider the sampler uses (to decode tokens).
        top_k: how many choices to print.
        out: where to print (default ``sys.stdout``).
    """

    needs_full_logits = True

    def __init__(self, provider: Vocabulary, top_k: int = 5, out: TextIO | None = None) -> None:
        check_int("top_k", top_k, low=1)
        self.provider = provider
        self.top_k = top_k
        self.out = out

    def adjust_logits(self, ctx: GenerationContext, logits: np.ndarray) -> np.ndarray:
        probs = softmax(logits)
        k = min(self.top_k, probs.shape[0])
        top = np.argsort(-probs)[:k]
        choices = " | ".join(f"{self.provider.decode([int(t)])!r} {probs[t]:.3f}" for t in top)
        print(f"[{ctx.position}] {choices}", file=self.out or sys.stdout)
        return logits

    def on_token(self, ctx: GenerationContext, token: int) -> Decision:
        print(f"[{len(ctx.tokens) - 1}] -> {self.provider.decode([token])!r}", file=self.out or sys.stdout)
        return CONTINUE
