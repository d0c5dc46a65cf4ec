"""Limits that make every generation end."""

from __future__ import annotations

from dataclasses import dataclass

from backtrack_sampler.core.checks import check_int, check_optional_int


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
        check_int("per_position", self.per_position)
        check_optional_int("per_generation", self.per_generation)
        check_optional_int("max_positions_evaluated", self.max_positions_evaluated)

    def generation_limit(self, max_new_tokens: int) -> int:
        """The per-generation rewind limit for a generation of ``max_new_tokens``."""
        if self.per_generation is not None:
            return self.per_generation
        return max(64, 2 * max_new_tokens)
