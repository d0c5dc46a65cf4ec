"""HumanGuidance: a person picks the next token from the top choices, or goes back one token."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TextIO

import numpy as np

from backtrack_sampler.core.base_strategy import BaseStrategy
from backtrack_sampler.core.checks import check_int, check_number
from backtrack_sampler.core.context import GenerationContext
from backtrack_sampler.core.decisions import CONTINUE, Decision, Rewind
from backtrack_sampler.core.sampling import softmax
from backtrack_sampler.core.vocabulary import Vocabulary


class HumanGuidanceStrategy(BaseStrategy):
    """Show the ``top_k`` choices at each position and enforce the one the user picks.

    A position whose best token has probability >= ``min_autopass`` passes
    without asking. Answering ``b`` goes back one token; the strategy holds
    back ``max_back`` tokens, so going back never retracts text the caller
    already received.

    Args:
        provider: the provider the sampler uses (to decode tokens).
        top_k: how many choices the menu offers.
        min_autopass: probability at which the best token is taken unasked.
        max_back: how many tokens the user may go back.
        ask: reads one answer, given the prompt line (default ``input``).
        out: where the menu is written (default ``sys.stdout``).
    """

    needs_full_logits = True

    def __init__(
        self,
        provider: Vocabulary,
        top_k: int = 3,
        min_autopass: float = 1.0,
        max_back: int = 8,
        ask: Callable[[str], str] = input,
        out: TextIO | None = None,
    ) -> None:
        check_int("top_k", top_k, low=1)
        check_number("min_autopass", min_autopass, 0, 1, low_open=True)
        check_int("max_back", max_back)
        self.provider = provider
        self.top_k = top_k
        self.min_autopass = min_autopass
        self.max_back = max_back
        self.ask = ask
        self.out = out
        self.reset()

    def reset(self) -> None:
        self._go_back = False

    def adjust_logits(self, ctx: GenerationContext, logits: np.ndarray) -> np.ndarray:
        probs = softmax(logits)
        top = [int(t) for t in np.argsort(-probs)[: self.top_k] if probs[t] > 0]
        if probs[top[0]] >= self.min_autopass:
            return logits
        out = self.out or sys.stdout
        print(f"\n--- {ctx.text_from(max(0, len(ctx.tokens) - 40))!r}", file=out)
        for i, token in enumerate(top, 1):
            print(f"  {i}) {self.provider.decode([token])!r}  {probs[token]:.3f}", file=out)
        can_go_back = len(ctx.tokens) > ctx.committed
        if can_go_back:
            print("  b) go back one token", file=out)
        while True:
            answer = self.ask(f"choose 1-{len(top)}{' or b' if can_go_back else ''}: ").strip().lower()
            if answer == "b" and can_go_back:
                self._go_back = True
                return logits
            if answer.isdigit() and 1 <= int(answer) <= len(top):
                chosen = top[int(answer) - 1]
                forced = np.full_like(logits, -np.inf)
                forced[chosen] = 0.0
                return forced
            print(f"  not a choice: {answer!r}", file=out)

    def on_token(self, ctx: GenerationContext, token: int) -> Decision:
        if self._go_back:
            self._go_back = False
            return Rewind(len(ctx.tokens) - 2, reason="the user went back one token")
        return CONTINUE

    def holdback(self, ctx: GenerationContext) -> int:
        return self.max_back
