"""``PositionBans``: a vLLM logits processor that bans or penalizes tokens at single positions of a request.

vLLM's ``logit_bias`` weighs on every position of a request, so a remote
backtracking sampler that rewinds to a position and bans a token there had to
spend a one-token request on it. With this processor loaded, a request says
"at its generated position P, forbid tokens T" (or multiply their
probabilities by a factor) in its ``vllm_xargs``, and the sampler sends the
bans of a rewound position inside the next chunk request. The wire format is
described in ``backtrack_sampler.provider.remote.position_rules``.

Start vLLM with it (the package installed in vLLM's environment)::

    pip install backtrack_sampler
    vllm serve MODEL --logits-processors backtrack_sampler.vllm_plugin:PositionBans

(vLLM refuses custom logits processors with speculative decoding and on TPU.)
Positions are counted as vLLM's own ``min_tokens`` counts them: the number of
tokens the request has generated when its next one is sampled.

Only vLLM imports this module (it needs ``vllm`` and ``torch``). A request
without the keys costs nothing: the processor keeps only the rows that carry
rules, and forgets each once it has gone past its last rule. A bad value is
refused when vLLM admits the request (``validate_params``: a 400 naming the
key); nothing in ``apply`` raises, since an exception there would stop the
whole engine.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from vllm import SamplingParams
from vllm.v1.sample.logits_processor import BatchUpdate, LogitsProcessor
from vllm.v1.sample.logits_processor.builtin import process_dict_updates

from backtrack_sampler.provider.remote.position_rules import PositionRules, logit_edits

if TYPE_CHECKING:
    from vllm.config import VllmConfig

logger = logging.getLogger(__name__)


class PositionBans(LogitsProcessor):
    """Apply each request's position-scoped bans and penalties (``vllm_xargs``) to its logits.

    Args:
        vllm_config: the engine's configuration (the vocabulary size is read from it).
        device: where the logits live.
        is_pin_memory: unused; part of vLLM's interface.
    """

    def __init__(self, vllm_config: VllmConfig, device: torch.device, is_pin_memory: bool) -> None:
        self.device = device
        self.vocab_size = vllm_config.model_config.get_vocab_size()
        # batch row -> (its rules, the live list of the tokens it has generated)
        self.rows: dict[int, tuple[PositionRules, Sequence[int]]] = {}
        self._edits: tuple[list[int], list[int], list[int], list[int], list[float]] = ([], [], [], [], [])
        self._failed = False

    @classmethod
    def validate_params(cls, sampling_params: SamplingParams) -> None:
        """Refuse a request whose rules are malformed (vLLM answers 400 with the message)."""
        PositionRules.from_xargs(sampling_params.extra_args)

    def is_argmax_invariant(self) -> bool:
        """A ban changes the argmax: greedy requests need this processor too."""
        return False

    def update_state(self, batch_update: BatchUpdate | None) -> None:
        process_dict_updates(self.rows, batch_update, _new_row)
        # A row past its last rule has nothing left to do.
        for row in [r for r, (rules, generated) in self.rows.items() if len(generated) > rules.last_position]:
            del self.rows[row]
        self._edits = logit_edits(self.rows, self.vocab_size) if self.rows else ([], [], [], [], [])

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        ban_rows, ban_tokens, penalty_rows, penalty_tokens, penalty_logs = self._edits
        if not ban_rows and not penalty_rows:
            return logits
        try:
            if penalty_rows:
                index = (self._tensor(penalty_rows), self._tensor(penalty_tokens))
                values = torch.tensor(penalty_logs, dtype=logits.dtype, device=logits.device)
                logits.index_put_(index, values, accumulate=True)
            if ban_rows:
                index = (self._tensor(ban_rows), self._tensor(ban_tokens))
                logits.index_put_(index, torch.tensor(float("-inf"), dtype=logits.dtype, device=logits.device))
        except Exception:  # never stop the engine: the request goes on without its rules
            if not self._failed:
                self._failed = True
                logger.exception("PositionBans could not apply its rules; they are skipped")
        return logits

    def _tensor(self, values: list[int]) -> torch.Tensor:
        return torch.tensor(values, dtype=torch.long, device=self.device)


def _new_row(
    params: SamplingParams, prompt_ids: list[int] | None, output_ids: list[int]
) -> tuple[PositionRules, Sequence[int]] | None:
    """A new row's state: its rules and its live output list, or ``None`` when it carries no rule."""
    try:
        rules = PositionRules.from_xargs(params.extra_args)
    except ValueError:  # validate_params refused it already; never raise inside the engine
        return None
    return (rules, output_ids) if rules else None
