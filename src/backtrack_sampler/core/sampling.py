"""Turning a logits vector into one token id.

The pipeline, in the order the code runs it:

1. ``temperature == 0``: greedy, the argmax of the (already banned) logits.
2. ``top_k``: keep the k largest logits (0 disables it).
3. Softmax of the kept logits divided by ``temperature``.
4. ``top_p``: keep the smallest set of candidates whose mass reaches top_p.
5. ``min_p``: drop candidates whose probability is below min_p times the best.
6. Draw one candidate with the run's random generator.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SamplingParams:
    """Sampling settings, validated once at the door."""

    temperature: float = 1.0
    top_k: int = 50
    top_p: float | None = None
    min_p: float | None = None

    def __post_init__(self) -> None:
        t = self.temperature
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t) or t < 0:
            raise ValueError(f"temperature must be a finite number >= 0, got {t!r}")
        k = self.top_k
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0:
            raise ValueError(f"top_k must be an integer >= 0 (0 disables it), got {k!r}")
        p = self.top_p
        if p is not None and (isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 < p <= 1):
            raise ValueError(f"top_p must be in (0, 1], got {p!r}")
        m = self.min_p
        if m is not None and (isinstance(m, bool) or not isinstance(m, (int, float)) or not 0 <= m < 1):
            raise ValueError(f"min_p must be in [0, 1), got {m!r}")


def softmax(logits: np.ndarray) -> np.ndarray:
    """Probabilities of a logits vector of shape (vocab,); -inf entries get 0."""
    shifted = np.exp(logits - np.max(logits))
    return shifted / shifted.sum()


def sample_token(logits: np.ndarray, params: SamplingParams, rng: np.random.Generator) -> int:
    """Sample one token id from ``logits`` (shape (vocab,), float; not modified).

    At least one entry must be finite.
    """
    if params.temperature == 0:
        return int(np.argmax(logits))
    k = params.top_k
    if 0 < k < logits.shape[0]:
        candidates = np.argpartition(logits, -k)[-k:]
    else:
        candidates = np.arange(logits.shape[0])
    scores = logits[candidates].astype(np.float64)
    finite = np.isfinite(scores)
    if not finite.all():
        candidates, scores = candidates[finite], scores[finite]
    nucleus = params.top_p is not None and params.top_p < 1
    if nucleus:  # only top_p needs the candidates in order: no 49k-entry sort otherwise
        order = np.argsort(-scores, kind="stable")
        candidates, scores = candidates[order], scores[order]
    # Subtract the best before dividing: a tiny temperature cannot overflow.
    probs = np.exp((scores - np.max(scores)) / params.temperature)
    probs /= probs.sum()
    if nucleus:
        keep = min(probs.shape[0], int(np.searchsorted(np.cumsum(probs), params.top_p)) + 1)
        candidates, probs = candidates[:keep], probs[:keep]
    if params.min_p:
        kept = probs >= params.min_p * np.max(probs)
        candidates, probs = candidates[kept], probs[kept]
    cumulative = np.cumsum(probs)
    draw = rng.random() * cumulative[-1]
    index = min(int(np.searchsorted(cumulative, draw, side="right")), probs.shape[0] - 1)
    return int(candidates[index])
