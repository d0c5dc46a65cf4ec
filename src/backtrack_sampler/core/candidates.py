"""The likely tokens at one position: what a rewind records when the caller asks (``candidates_min_p``).

The distribution is the model's own: the softmax of the raw logits at
temperature 1, before the strategy's ``adjust_logits``, the position's bans
and penalties and the sampling settings. That is the distribution Final
Token Preference Optimization trains, and it does not depend on how the run
sampled, so records of runs at different temperatures compare. A provider
that gives only top-k logprobs has ``-inf`` elsewhere: the probabilities are
then those of its top k, renormalized.
"""

from __future__ import annotations

import math

import numpy as np

Candidates = tuple[tuple[int, float], ...]
"""``(token id, probability)`` pairs, most likely first (ties: lower id first)."""


def min_p_candidates(logits: np.ndarray, min_p: float, token: int) -> tuple[Candidates, float]:
    """The tokens whose probability is at least ``min_p`` times the best's, and the probability of ``token``.

    Args:
        logits: raw logits of one position, shape (vocab,); not modified.
        min_p: the cutoff relative to the most likely token, in (0, 1].
        token: a token whose probability is wanted too (it may lie below the cutoff).

    Returns:
        The survivors with their probabilities (most likely first), and the
        probability of ``token`` (0.0 when its logit is ``-inf``).

    Example:
        >>> import numpy as np
        >>> min_p_candidates(np.log(np.array([0.5, 0.3, 0.15, 0.05])), 0.5, 3)
        (((0, 0.5), (1, 0.3)), 0.05)
    """
    scores = np.asarray(logits, dtype=np.float64)
    top = float(np.max(scores))
    log_total = top + math.log(float(np.exp(scores - top).sum()))
    kept = np.flatnonzero(scores >= top + math.log(min_p))
    order = kept[np.lexsort((kept, -scores[kept]))]
    survivors = tuple((int(t), _probability(scores[t], log_total)) for t in order)
    return survivors, _probability(scores[token], log_total)


def _probability(logit: float, log_total: float) -> float:
    """``exp(logit - log_total)`` to 12 significant digits (0.0 for ``-inf``)."""
    return float(f"{math.exp(float(logit) - log_total):.12g}") if logit > -math.inf else 0.0
