"""Limits that make every generation end."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RewindBudget:
    """How many rewinds the engine carries out before it refuses more.

    Args:
        per_position: rewinds that may land on one position while the text
            before it stays the same.
        per_generation: rewinds in one generation; ``None`` means
            ``max(64, 2 * max_new_tokens)``.
        max_positions_evaluated: optional cap on generated positions fed to
            the model; reaching it ends the generation with reason ``"budget"``.
    """

    per_position: int = 16
    per_generation: int | None = None
    max_positions_evaluated: int | None = None

    def __post_init__(self) -> None:
        for name in ("per_position", "per_generation", "max_positions_evaluated"):
            value = getattr(self, name)
            if value is None and name != "per_position":
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be an integer >= 0, got {value!r}")

    def generation_limit(self, max_new_tokens: int) -> int:
        """The per-generation rewind limit for a generation of ``max_new_tokens``."""
        if self.per_generation is not None:
            return self.per_generation
        return max(64, 2 * max_new_tokens)
