"""Turning a logits vector into one token id.

The pipeline, in the order the code runs it:

1. ``temperature == 0``: greedy, the argmax of the (already banned) logits.
2. ``top_k``: keep the k largest logits (0 disables it).
3. Softmax of the kept logits divided by ``temperature``.
4. ``top_p``: keep the smallest set of candidates whose mass reaches top_p.
5. ``min_p``: drop candidates whose probability is below min_p times the best.
6. Draw one candidate with the run's random generator, walking the kept
   candidates in token-id order. The order does not depend on the logits'
   values, so logits that differ by rounding (another CPU's kernels, a
   batched decode) give another token only where the draw falls within that
   rounding of a boundary between two tokens, never because two near-equal
   candidates swapped places.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from backtrack_sampler.core.checks import check_int, check_number, check_optional_int, check_optional_number


@dataclass(frozen=True)
class SamplingParams:
    """How one generation samples and how long it may run, validated once at the door.

    Every front end (the library's ``stream``, the CLI, batch lines, the
    server) builds one of these; nothing downstream checks the values again.

    Args:
        temperature: 0 means greedy.
        top_k: keep the k most likely tokens (0 disables it).
        top_p: nucleus mass in (0, 1] (``None``: off).
        min_p: drop tokens below min_p times the best probability, in [0, 1).
        seed: makes the run reproducible (``None``: a fresh seed).
        max_new_tokens: the most generated tokens.
        max_length: the most tokens, prompt included.
    """

    temperature: float = 1.0
    top_k: int = 50
    top_p: float | None = None
    min_p: float | None = None
    seed: int | None = None
    max_new_tokens: int | None = None
    max_length: int | None = None

    def __post_init__(self) -> None:
        check_number("temperature", self.temperature, low=0)
        check_int("top_k", self.top_k, hint=" (0 disables it)")
        check_optional_number("top_p", self.top_p, 0, 1, low_open=True)
        check_optional_number("min_p", self.min_p, 0, 1, high_open=True)
        check_optional_int("seed", self.seed)
        check_optional_int("max_new_tokens", self.max_new_tokens)
        check_optional_int("max_length", self.max_length)

    @classmethod
    def of(cls, params: SamplingParams | None = None, **overrides: Any) -> SamplingParams:
        """``params`` (default: ``SamplingParams()``) with ``overrides`` applied, checked.

        Raises ``TypeError`` for a keyword that is not a field.
        """
        if params is not None and not isinstance(params, SamplingParams):
            raise TypeError(f"params must be a SamplingParams, got {type(params).__name__}")
        unknown = sorted(set(overrides) - _FIELDS)
        if unknown:
            raise TypeError(f"unexpected keyword argument {unknown[0]!r}; sampling takes {', '.join(sorted(_FIELDS))}")
        if params is None:
            return cls(**overrides)
        return dataclasses.replace(params, **overrides) if overrides else params


_FIELDS = frozenset(f.name for f in dataclasses.fields(SamplingParams))


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
        candidates = np.sort(np.argpartition(logits, -k)[-k:])
    else:
        candidates = np.arange(logits.shape[0])
    scores = logits[candidates].astype(np.float64)
    finite = np.isfinite(scores)
    if not finite.all():
        candidates, scores = candidates[finite], scores[finite]
    nucleus = params.top_p is not None and params.top_p < 1
    if params.min_p and not nucleus:
        # Step 5 first: a probability below min_p x the best is a logit below best + T ln(min_p). Dropping
        # those before the softmax draws the same token (the normalization cancels) and exps only the few kept.
        keep = scores >= np.max(scores) + params.temperature * math.log(params.min_p)
        candidates, scores = candidates[keep], scores[keep]
    # Subtract the best before dividing: a tiny temperature cannot overflow.
    weights = np.exp((scores - np.max(scores)) / params.temperature)
    if nucleus:
        order, probs = _nucleus(scores, weights, params.top_p)
        by_id = np.argsort(candidates[order])  # step 6 walks them in token-id order
        candidates, probs = candidates[order][by_id], probs[by_id]
    else:
        probs = weights / weights.sum()
    if params.min_p:
        kept = probs >= params.min_p * np.max(probs)
        candidates, probs = candidates[kept], probs[kept]
    cumulative = np.cumsum(probs)
    draw = rng.random() * cumulative[-1]
    index = min(int(np.searchsorted(cumulative, draw, side="right")), probs.shape[0] - 1)
    return int(candidates[index])


def _nucleus(scores: np.ndarray, weights: np.ndarray, top_p: float) -> tuple[np.ndarray, np.ndarray]:
    """Step 4: the smallest set of most likely candidates whose mass reaches ``top_p``.

    Returns their indices into ``scores``, most likely first (ties in input
    order), and their probabilities (normalized over all candidates). Only the
    few best are sorted: the k best are taken by partition, k doubling until
    their mass reaches ``top_p``, instead of sorting the whole vocabulary.
    """
    n = weights.shape[0]
    total = weights.sum()
    k = min(n, 64)
    while True:
        if k < n:
            threshold = np.partition(weights, n - k)[n - k]  # the k-th largest weight
            chosen = np.flatnonzero(weights >= threshold)
        else:
            chosen = np.arange(n)
        order = chosen[np.argsort(-scores[chosen], kind="stable")]
        probs = weights[order] / total
        keep = int(np.searchsorted(np.cumsum(probs), top_p)) + 1
        if keep <= order.shape[0] or k >= n:
            keep = min(keep, order.shape[0])
            return order[:keep], probs[:keep]
        k = min(n, 4 * k)
