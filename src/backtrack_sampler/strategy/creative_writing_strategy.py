"""CreativeWriting: ban the most probable token, but roll back when the distribution is too flat."""

from __future__ import annotations

import math

import numpy as np

from backtrack_sampler.core.base_strategy import BaseStrategy
from backtrack_sampler.core.checks import check_int, check_number
from backtrack_sampler.core.context import GenerationContext
from backtrack_sampler.core.decisions import CONTINUE, Decision, Rewind
from backtrack_sampler.core.sampling import softmax
from backtrack_sampler.core.vocabulary import Vocabulary


class CreativeWritingStrategy(BaseStrategy):
    """Favor less common word choices without drifting into gibberish.

    At each position the most probable token is banned (never EOS) and the EOS
    probability is multiplied by ``eos_penalty``. When what remains is flat
    (reaching ``top_p_flat`` of the mass takes at least
    ``top_k_threshold_flat`` tokens) and the sampled token is not the best
    remaining one, the token is rewound and the best remaining one taken.

    Args:
        provider: the provider the sampler uses (for its EOS ids).
        top_p_flat: probability mass used to measure flatness, in (0, 1].
        top_k_threshold_flat: tokens needed to reach that mass for "flat", >= 1.
        eos_penalty: factor on the EOS probability, in [0, 1].
    """

    needs_full_logits = True

    def __init__(
        self,
        provider: Vocabulary,
        top_p_flat: float = 0.65,
        top_k_threshold_flat: int = 9,
        eos_penalty: float = 0.8,
    ) -> None:
        check_number("top_p_flat", top_p_flat, 0, 1, low_open=True)
        check_int("top_k_threshold_flat", top_k_threshold_flat, low=1)
        check_number("eos_penalty", eos_penalty, 0, 1)
        self.provider = provider
        self.top_p_flat = top_p_flat
        self.top_k_threshold_flat = top_k_threshold_flat
        self.eos_penalty = eos_penalty
        self._eos = sorted(provider.eos_token_ids)
        self.reset()

    def reset(self) -> None:
        self._position = -1
        self._flat = False
        self._best = -1

    def adjust_logits(self, ctx: GenerationContext, logits: np.ndarray) -> np.ndarray:
        top = int(np.argmax(logits))
        if top not in self._eos:
            logits[top] = -np.inf
        if self._eos and self.eos_penalty != 1:
            logits[self._eos] += math.log(self.eos_penalty) if self.eos_penalty > 0 else -np.inf
        probs = softmax(logits)
        k = self.top_k_threshold_flat - 1
        top_mass = float(np.partition(probs, -k)[-k:].sum()) if 0 < k < probs.shape[0] else float(k > 0)
        self._flat = top_mass < self.top_p_flat
        self._best = int(np.argmax(logits))
        self._position = ctx.position
        return logits

    def on_token(self, ctx: GenerationContext, token: int) -> Decision:
        position = len(ctx.tokens) - 1
        if ctx.forced or position != self._position or not self._flat or token == self._best:
            return CONTINUE
        reason = "flat distribution: took the best remaining token"
        return Rewind(position, insert=(self._best,), reason=reason)
