"""Typed events of a generation: the CLI, the server and the web page only render these."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

FinishReason = Literal["eos", "length", "stop", "budget"]
RefusalCause = Literal["position_budget", "generation_budget", "already_emitted", "all_banned"]


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
    """Generated tokens from ``position`` on were erased (they were never emitted)."""

    position: int
    suppressed_text: str
    suppressed_tokens: tuple[int, ...]
    banned: tuple[int, ...]
    inserted: tuple[int, ...]
    reason: str
    strategy: str


@dataclass(frozen=True)
class RewindRefusedEvent:
    """A rewind was not carried out (budget spent, text already emitted, or nothing left to sample).

    The generation goes on without that rewind.
    """

    position: int
    cause: RefusalCause
    reason: str
    strategy: str
    message: str


@dataclass(frozen=True)
class FinishEvent:
    """The generation ended; ``text`` is the whole generated text."""

    reason: FinishReason
    text: str
    tokens: tuple[int, ...]
    stats: GenerationStats
    detail: str = ""


Event = TextEvent | RewindEvent | RewindRefusedEvent | FinishEvent
