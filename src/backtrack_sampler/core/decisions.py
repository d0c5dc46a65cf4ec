"""What a strategy answers after each sampled token.

A strategy never truncates anything itself: it returns one of these frozen
dataclasses and the engine carries it out.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Continue:
    """Keep the token just sampled."""


@dataclass(frozen=True)
class Rewind:
    """Keep only the first ``position`` generated tokens and sample again there.

    Args:
        position: index into the generated tokens (0 = right after the prompt).
            The token just sampled sits at ``len(ctx.tokens) - 1``; rewinding to
            that index rejects it.
        ban: token ids to forbid at ``position``, for as long as the tokens
            before ``position`` stay unchanged.
        insert: token ids to force at ``position`` (and after) instead of
            sampling; used to replace text.
        reason: a short human-readable reason, shown in events.
        strategy: the name of the strategy that asked; filled in by the engine
            (or by ``ChainStrategy``) when left empty.
    """

    position: int
    ban: tuple[int, ...] = ()
    insert: tuple[int, ...] = ()
    reason: str = ""
    strategy: str = ""


@dataclass(frozen=True)
class Stop:
    """End the generation after the token just sampled (``keep_token=True``) or before it."""

    reason: str = "stop"
    keep_token: bool = True
    strategy: str = ""


Decision = Continue | Rewind | Stop
CONTINUE = Continue()
