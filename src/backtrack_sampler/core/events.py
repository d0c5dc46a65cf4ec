"""Typed events of a generation: the CLI, the server and the web page only render these."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

FinishReason = Literal["eos", "length", "stop", "budget"]
RefusalCause = Literal["position_budget", "generation_budget", "already_emitted", "all_banned"]
Escalation = Literal["", "more_of_match", "previous_word", "previous_sentence"]


@dataclass(frozen=True)
class GenerationStats:
    """Counters of one generation.

    ``positions_evaluated`` counts generated positions fed to the model (the
    prompt is counted apart in ``prompt_tokens``). With no rewinds it equals
    ``tokens_emitted`` when the generation ends on EOS, else
    ``tokens_emitted - 1``: the last token is never fed.
    """

    prompt_tokens: int
    tokens_emitted: int
    positions_evaluated: int
    rewinds: int
    tokens_rewound: int
    rewinds_refused: int
    elapsed_s: float

    @property
    def tokens_per_second(self) -> float:
        return self.tokens_emitted / self.elapsed_s if self.elapsed_s > 0 else 0.0


@dataclass(frozen=True)
class TextEvent:
    """Final text: ``tokens`` will never be rewound. ``text`` never splits a character."""

    text: str
    tokens: tuple[int, ...]


@dataclass(frozen=True)
class RewindEvent:
    """Generated tokens from ``position`` on were erased (they were never emitted).

    ``banned`` tokens are banned and ``penalized`` ``(token, factor)`` pairs
    made less likely at ``position``. ``ban_phrase`` names the phrase or
    pattern that caught ``suppressed_text`` (empty when the strategy named
    none). ``escalation`` is empty for the rewind the strategy asked for, or
    names the rung of the engine's retry ladder taken instead, when the
    position asked for had no acceptable token left: ``"more_of_match"``
    (a later token of the match is banned), ``"previous_word"`` or
    ``"previous_sentence"`` (the rewind goes back there and bans the token
    found there).

    ``candidates`` and ``suppressed_probability`` are filled only when the
    caller asked (``BacktrackSampler.stream(..., candidates_min_p=p)``) and
    the position's logits are known (not when its token was inserted):
    ``(token, probability)`` for every token whose probability at
    ``position`` is at least ``p`` times the best's, most likely first, and
    the probability of ``suppressed_tokens[0]`` there (which may lie below
    the cutoff). The probabilities are the model's own (the softmax of the
    raw logits at temperature 1: see ``backtrack_sampler.core.candidates``);
    the candidates include the suppressed and banned tokens.
    """

    position: int
    suppressed_text: str
    suppressed_tokens: tuple[int, ...]
    banned: tuple[int, ...]
    inserted: tuple[int, ...]
    reason: str
    strategy: str
    penalized: tuple[tuple[int, float], ...] = ()
    ban_phrase: str = ""
    escalation: Escalation = ""
    candidates: tuple[tuple[int, float], ...] = ()
    suppressed_probability: float | None = None


@dataclass(frozen=True)
class RewindRefusedEvent:
    """A rewind was not carried out (budget spent, text already emitted, or nothing left to sample).

    The generation goes on without that rewind: the text it would have
    erased stays (``message`` says so), or, with cause ``"all_banned"``, the
    position is sampled without its bans.
    """

    position: int
    cause: RefusalCause
    reason: str
    strategy: str
    message: str


@dataclass(frozen=True)
class FinishEvent:
    """The generation ended; ``text`` is the whole generated text.

    ``tokens`` decode to ``text``, less the bytes of a character the last token left
    unfinished, which are dropped (with the tokens that carried only them; ``detail``
    then says so). ``detail`` says why a strategy stopped or what the limit did.
    """

    reason: FinishReason
    text: str
    tokens: tuple[int, ...]
    stats: GenerationStats
    detail: str = ""


Event = TextEvent | RewindEvent | RewindRefusedEvent | FinishEvent
