"""The abstract base class of strategies.

A strategy has four optional hooks, all called by the engine:

- ``adjust_logits(ctx, logits)`` before each sampled position: return the
  logits to sample from (shape (vocab,); the array is the engine's own copy,
  so changing it in place is allowed).
- ``on_token(ctx, token)`` after each token is sampled (it is already
  ``ctx.tokens[-1]``): return ``Continue()``, ``Rewind(...)`` or ``Stop(...)``.
- ``holdback(ctx)``: how many trailing generated tokens this strategy may still
  rewind; the engine holds back only those and emits the rest. (Strategies
  whose safe emit points are specific positions override
  ``commit_boundary(ctx, upto)`` instead.)
- ``on_rewind(ctx, position)`` after the engine rewound to ``position``
  (for strategies that keep incremental state), and ``reset()`` before each
  generation.
"""

from __future__ import annotations

from abc import ABC
from typing import TYPE_CHECKING

import numpy as np

from backtrack_sampler.core.decisions import CONTINUE, Decision

if TYPE_CHECKING:
    from backtrack_sampler.core.context import GenerationContext


class BaseStrategy(ABC):  # noqa: B024 - every hook is optional
    """Base class of every strategy; subclass it and override the hooks you need.

    ``needs_full_logits`` tells whether ``adjust_logits`` reads or reshapes the
    whole distribution (so the provider must give full logits).
    """

    needs_full_logits: bool = False

    @property
    def name(self) -> str:
        return type(self).__name__

    @property
    def adjusts_logits(self) -> bool:
        """Whether ``adjust_logits`` may change the distribution (``False`` when it is not overridden).

        When ``False``, a provider that samples by itself (a remote engine) may
        pick the tokens: the engine takes them instead of sampling locally.
        """
        return type(self).adjust_logits is not BaseStrategy.adjust_logits

    def reset(self) -> None:  # noqa: B027 - optional hook
        """Forget everything about the previous generation."""

    def adjust_logits(self, ctx: GenerationContext, logits: np.ndarray) -> np.ndarray:
        """Return the logits (shape (vocab,)) to sample the next token from."""
        return logits

    def on_token(self, ctx: GenerationContext, token: int) -> Decision:
        """Inspect the token just sampled (``ctx.tokens[-1]``) and decide."""
        return CONTINUE

    def on_rewind(self, ctx: GenerationContext, position: int) -> None:  # noqa: B027 - optional hook
        """The engine kept only the first ``position`` generated tokens."""

    def holdback(self, ctx: GenerationContext) -> int:
        """How many trailing generated tokens this strategy may still rewind (0: none)."""
        return 0

    def commit_boundary(self, ctx: GenerationContext, upto: int) -> int:
        """The largest position <= ``upto`` before which the engine may emit every token.

        The default follows ``holdback``. A strategy may return a smaller
        position, never a larger one than ``upto``.
        """
        return min(upto, len(ctx.tokens) - max(0, self.holdback(ctx)))
