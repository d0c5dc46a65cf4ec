"""AdaptiveTemperature: sharpen the distribution depending on its entropy."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from backtrack_sampler.core.base_strategy import BaseStrategy
from backtrack_sampler.core.context import GenerationContext
from backtrack_sampler.core.sampling import softmax

DEFAULT_POLY_COEFFS = (-0.037, 0.481, -2.3, 4.917, -1.791)


class AdaptiveTemperatureStrategy(BaseStrategy):
    """Multiply the logits by beta, a polynomial of the distribution's entropy (in nats).

    beta = 1 when the entropy is at most 0.5, else max(polynomial(entropy), 1):
    uncertain positions are sharpened, confident ones left alone.

    Args:
        poly_coeffs: polynomial coefficients, highest power first.
    """

    needs_full_logits = True

    def __init__(self, poly_coeffs: Sequence[float] = DEFAULT_POLY_COEFFS) -> None:
        coeffs = tuple(float(c) for c in poly_coeffs)
        if not coeffs:
            raise ValueError("poly_coeffs must hold at least one coefficient, got an empty sequence")
        self.poly_coeffs = coeffs
        self.last_beta = 1.0

    def beta(self, entropy: float) -> float:
        """The factor applied at a position whose distribution has this entropy."""
        if entropy <= 0.5:
            return 1.0
        return max(float(np.polyval(self.poly_coeffs, entropy)), 1.0)

    def adjust_logits(self, ctx: GenerationContext, logits: np.ndarray) -> np.ndarray:
        probs = softmax(logits)
        nonzero = probs[probs > 0]
        entropy = float(-(nonzero * np.log(nonzero)).sum())
        self.last_beta = self.beta(entropy)
        if self.last_beta != 1.0:
            logits *= self.last_beta
        return logits
