"""FTPO records from ban rewinds: at the position a ban rewound, the rejected token against the likely alternatives.

Final Token Preference Optimization (the Antislop paper, arXiv 2510.15061)
trains one position at a time: the context up to where a banned phrase
began, the token that began it (rejected), and the alternatives the model
found likely there that do not begin a banned phrase (chosen). A record::

    {"id": "story-1", "line": 1,
     "prompt": "Once upon a time",                  # as the line gave it: text, or its messages
     "context_with_chat_template": "Once upon a time, in a",   # the model's prompt text + generation_raw
     "generation_raw": ", in a",                    # the generated text before the position
     "prompt_token_ids": [...], "generation_token_ids": [...],  # exactly what the model read
     "rejected": {"id": 1234, "text": " tapestry", "prob": 0.41},
     "chosen": [{"id": 987, "text": " village", "prob": 0.22}, ...],  # most likely first
     "rejected_decoded": " tapestry", "multi_chosen_decoded": [" village", ...],
     "metadata": {"position": 5, "ban_phrase": "tapestry", "escalation": "", ...}}

``context_with_chat_template``, ``generation_raw``, ``rejected_decoded`` and
``multi_chosen_decoded`` are the names the Antislop tools give these fields
(sam-paech/antislop-vllm ``core/sampler.py``, where FTPO samples are
captured; sam-paech/auto-antislop ``utils/dataset_helpers.py``, whose FTPO
loader reads ``context_with_chat_template``, ``rejected_decoded`` and
``multi_chosen_decoded``), so this file feeds that trainer as it is. Their
single-token ``chosen_decoded``/``*_raw`` keys (vLLM token strings) are not
written; token ids and probabilities are in ``rejected`` and ``chosen``.

The distribution is the model's own at that position (the softmax of the
raw logits at temperature 1, ``backtrack_sampler.core.candidates``), cut at
``min_p`` times its most likely token: auto-antislop's default is min-p 0.01
at temperature 1, and it keeps at most 20 chosen tokens (``max_chosen``).

Which rewinds give a record:

1. a hard ban of matched text: the token the rewind took back at its
   position is among the tokens it banned there, and the rewind is the
   strategy's own (escalation ``""``: the rejected token begins the phrase)
   or the retry ladder's ``"more_of_match"`` (the rejected token goes on
   with the phrase whose first tokens the context ends with); the ladder's
   ``"previous_word"`` and ``"previous_sentence"`` rewinds reject a token
   before the phrase only because nothing after it was acceptable: no record;
2. its context survived: no later rewind went back before its position (as
   for DPO pairs), so the context is the start of the final text;
3. the candidates were computed there (``candidates_min_p``; not a position
   whose token was inserted), and at least one is chosen.

A candidate is chosen unless it is the end of text or has no text, or it
was banned at that position in that context (by this rewind or another one
to the same position), or, placed at that position after the context, the
job's ban strategies (the ``AntiSlopStrategy`` of the bans, with their
matching rules: case-insensitive whole words by default, regex patterns
too) would rewind at it (it completes a banned phrase) or hold it back (a
banned phrase it begins or goes on with could still be completed): exactly
the tokens that would start the rewind over again (a case-sensitive phrase
is held back case-folded, so its other-case starts are dropped too). Chosen
tokens are the most likely first, at most ``max_chosen``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from backtrack_sampler.core.base_provider import BaseProvider
from backtrack_sampler.core.base_strategy import BaseStrategy
from backtrack_sampler.core.checks import check_int, check_number
from backtrack_sampler.core.context import GenerationContext
from backtrack_sampler.core.decisions import Rewind
from backtrack_sampler.core.events import FinishEvent, RewindEvent
from backtrack_sampler.core.token_text import TokenText

DEFAULT_MIN_P = 0.01
"""auto-antislop's ``generation_param_min_p`` (at its temperature 1), the cutoff of its FTPO candidates."""
DEFAULT_MAX_CHOSEN = 20
"""antislop-vllm's ``max_chosen_tokens``."""

FTPO_ESCALATIONS = ("", "more_of_match")


@dataclass(frozen=True)
class FtpoSettings:
    """How FTPO records are made: the min-p cutoff of the candidates and the most chosen tokens kept.

    Args:
        min_p: keep the tokens whose probability is at least this times the best's, in (0, 1].
        max_chosen: the most chosen tokens per record (the most likely first), >= 1.
    """

    min_p: float = DEFAULT_MIN_P
    max_chosen: int = DEFAULT_MAX_CHOSEN

    def __post_init__(self) -> None:
        check_number("ftpo min_p", self.min_p, 0, 1, low_open=True)
        check_int("ftpo max_chosen", self.max_chosen, low=1)


def ftpo_records(
    prompt: str | list[dict[str, str]],
    prompt_text: str,
    finish: FinishEvent,
    rewinds: Sequence[RewindEvent],
    provider: BaseProvider,
    ban_strategies: Sequence[BaseStrategy] = (),
    max_chosen: int = DEFAULT_MAX_CHOSEN,
) -> list[dict[str, Any]]:
    """The FTPO records of one generation (see the module docstring), in the order of their rewinds.

    Args:
        prompt: the prompt as the input gave it (text, or chat messages).
        prompt_text: the text the model was given (after the chat template).
        finish: the generation's ``FinishEvent``.
        rewinds: its ``RewindEvent``s in order, with candidates
            (``stream(..., candidates_min_p=...)``).
        provider: its vocabulary (token texts and the prompt's ids).
        ban_strategies: fresh strategies that say which candidates would
            begin a banned phrase (``on_token``, ``commit_boundary``); none:
            only the bans of the rewinds are excluded.
        max_chosen: the most chosen tokens per record.
    """
    recorded = [(i, e) for i, e in enumerate(rewinds) if _gives_record(i, e, rewinds, len(finish.tokens))]
    if not recorded:
        return []
    prompt_ids = provider.encode(prompt_text)
    replay = _Replay(provider, prompt_ids, ban_strategies)
    text = TokenText(provider.token_bytes)
    for token in finish.tokens:
        text.append(token)
    records = []
    for index, event in recorded:
        position = event.position
        replay.advance(finish.tokens[:position])
        banned = _bans_at(index, rewinds)
        chosen = []
        for token, probability in event.candidates:
            if len(chosen) < max_chosen and token not in banned and not replay.blocks(token):
                chosen.append({"id": token, "text": _text(provider, token), "prob": probability})
        if not chosen:
            continue
        rejected = event.suppressed_tokens[0]
        generated = finish.text[: text.char_start(position)] if position < len(finish.tokens) else finish.text
        records.append(
            {
                "prompt": prompt,
                "context_with_chat_template": prompt_text + generated,
                "generation_raw": generated,
                "prompt_token_ids": list(prompt_ids),
                "generation_token_ids": list(finish.tokens[:position]),
                "rejected": {
                    "id": rejected,
                    "text": _text(provider, rejected),
                    "prob": event.suppressed_probability,
                },
                "chosen": chosen,
                "rejected_decoded": _text(provider, rejected),
                "multi_chosen_decoded": [c["text"] for c in chosen],
                "metadata": {
                    "position": position,
                    "ban_phrase": event.ban_phrase,
                    "escalation": event.escalation,
                    "reason": event.reason,
                    "strategy": event.strategy,
                    "banned_token_ids": sorted(banned),
                    "candidates": len(event.candidates),
                    "rewind_index": index,
                },
            }
        )
    return records


def _gives_record(index: int, event: RewindEvent, rewinds: Sequence[RewindEvent], n_final: int) -> bool:
    """Rules 1-3 of the module docstring, but for "at least one is chosen"."""
    if event.escalation not in FTPO_ESCALATIONS or event.suppressed_probability is None:
        return False
    if not event.suppressed_tokens or event.suppressed_tokens[0] not in event.banned:
        return False
    if event.position > n_final:
        return False
    return not any(later.position < event.position for later in rewinds[index + 1 :])


def _bans_at(index: int, rewinds: Sequence[RewindEvent]) -> set[int]:
    """Every token banned at the position of ``rewinds[index]`` while its context stood.

    The engine keeps a position's bans until a rewind goes back before it; the
    context of a recorded rewind survives to the end, so its bans are those of
    the rewinds to that position since the last rewind that went back further.
    """
    position = rewinds[index].position
    start = 0
    for i in range(index):
        if rewinds[i].position < position:
            start = i + 1
    return {t for event in rewinds[start:] if event.position == position for t in event.banned}


def _text(provider: BaseProvider, token: int) -> str:
    return provider.token_bytes(token).decode("utf-8", errors="replace")


class _Replay:
    """The final tokens fed, in order, to the job's ban strategies, to ask them about a candidate."""

    def __init__(self, provider: BaseProvider, prompt_ids: Sequence[int], strategies: Sequence[BaseStrategy]) -> None:
        self.provider = provider
        self.strategies = list(strategies)
        self.tokens: list[int] = []
        self.text = TokenText(provider.token_bytes)
        self.ctx = GenerationContext(provider, list(prompt_ids), self.tokens, self.text, {})
        for strategy in self.strategies:
            strategy.reset()

    def advance(self, context: Sequence[int]) -> None:
        """Feed the tokens of ``context`` not fed yet (``context`` extends what was fed: records go forward)."""
        for token in context[len(self.tokens) :]:
            self._append(token)

    def _append(self, token: int) -> list[object]:
        self.tokens.append(token)
        self.text.append(token)
        return [strategy.on_token(self.ctx, token) for strategy in self.strategies]

    def blocks(self, token: int) -> bool:
        """Whether ``token`` cannot be chosen after the context: end of text, no text, or a banned phrase there."""
        if token in self.provider.eos_token_ids or not self.provider.token_bytes(token):
            return True
        if not self.strategies:
            return False
        position = len(self.tokens)
        decisions = self._append(token)
        blocked = any(isinstance(d, Rewind) for d in decisions) or any(
            strategy.commit_boundary(self.ctx, position + 1) <= position for strategy in self.strategies
        )
        del self.tokens[position:]
        self.text.truncate(position)
        for strategy in self.strategies:
            strategy.on_rewind(self.ctx, position)
        return blocked
