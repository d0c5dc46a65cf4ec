"""What a strategy answers after each sampled token.

A strategy never truncates anything itself: it returns one of these frozen
dataclasses and the engine carries it out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


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
        penalize: ``(token, factor)`` pairs: multiply the probability of
            ``token`` at ``position`` by ``factor`` (in (0, 1]), for as long as
            the tokens before ``position`` stay unchanged (a soft ban).
        match_end: for a ban of matched text, the position of the match's last
            token (>= ``position``). Setting it lets the engine's retry ladder
            act when ``position`` has no acceptable token left: ban a later
            token of the match, or rewind further back.
        ban_phrase: the phrase or pattern that caught the text, for events.
    """

    position: int
    ban: tuple[int, ...] = ()
    insert: tuple[int, ...] = ()
    reason: str = ""
    strategy: str = ""
    penalize: tuple[tuple[int, float], ...] = ()
    match_end: int | None = None
    ban_phrase: str = ""

    def __post_init__(self) -> None:
        for pair in self.penalize:
            if len(pair) != 2 or isinstance(pair[1], bool) or not 0 < pair[1] <= 1:
                raise ValueError(f"penalize takes (token, factor) pairs with factor in (0, 1], got {pair!r}")
        if self.match_end is not None and not (isinstance(self.match_end, int) and self.match_end >= self.position):
            raise ValueError(f"match_end must be a position >= position {self.position!r}, got {self.match_end!r}")

    @property
    def bans_match(self) -> bool:
        """Whether this rewind bans matched text (``match_end`` set, nothing inserted): the retry ladder applies."""
        return self.match_end is not None and not self.insert


@dataclass(frozen=True)
class Stop:
    """End the generation after the token just sampled (``keep_token=True``) or before it.

    Args:
        reason: why, in words (the finish event's ``detail``).
        keep_token: keep the token just sampled.
        strategy: the name of the strategy that asked; filled in by ``ChainStrategy``.
        finish: the finish event's ``reason``: ``"stop"``, or ``"length"`` when the
            strategy ended early because of the token limit (JsonStrategy closing its
            document to fit ``max_new_tokens``).
    """

    reason: str = "stop"
    keep_token: bool = True
    strategy: str = ""
    finish: Literal["stop", "length"] = "stop"

    def __post_init__(self) -> None:
        if self.finish not in ("stop", "length"):
            raise ValueError(f"finish must be 'stop' or 'length', got {self.finish!r}")


Decision = Continue | Rewind | Stop
CONTINUE = Continue()
