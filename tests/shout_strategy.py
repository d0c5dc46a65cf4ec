"""A strategy from outside the package, for the registry's tests: registered by name, never installed."""

from __future__ import annotations

import numpy as np

from backtrack_sampler import BaseStrategy


class ShoutStrategy(BaseStrategy):
    """Write in capitals: every token holding a lowercase letter (other than those in ``keep``) is masked out.

    Args:
        provider: the vocabulary (to read each token's text).
        keep: lowercase letters still allowed.
    """

    needs_full_logits = True
    aliases = ("loud",)  # read when the class is found through an entry point

    def __init__(self, provider, keep: str = "") -> None:
        if not isinstance(keep, str):
            raise TypeError(f"keep must be a string, got {keep!r}")
        self.provider = provider
        self.keep = keep
        self._masked: np.ndarray | None = None

    def adjust_logits(self, ctx, logits: np.ndarray) -> np.ndarray:  # (vocab,)
        if self._masked is None:
            texts = (self.provider.token_bytes(t).decode("utf-8", "replace") for t in range(len(logits)))
            self._masked = np.array([any(c.islower() and c not in self.keep for c in text) for text in texts])
        logits[self._masked] = -np.inf
        return logits
