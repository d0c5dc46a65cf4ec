"""The read-only view of a running generation that strategies receive."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from backtrack_sampler.core.token_text import TokenText

if TYPE_CHECKING:
    from backtrack_sampler.core.base_provider import BaseProvider


class GenerationContext:
    """What a strategy may read about the generation in progress.

    Positions index the generated tokens (0 is the first token after the
    prompt). Strategies must not mutate anything reachable from here.
    """

    def __init__(
        self,
        provider: BaseProvider,
        prompt_tokens: Sequence[int],
        tokens: list[int],
        text: TokenText,
        raw_logits: dict[int, np.ndarray],
    ) -> None:
        self.provider = provider
        self.prompt_tokens = prompt_tokens
        self.tokens: Sequence[int] = tokens
        self._text = text
        self._raw_logits = raw_logits
        self.committed = 0
        """Tokens before this position were emitted: they can no longer be rewound."""
        self.forced = False
        """Whether the latest token was inserted by a ``Rewind(insert=...)`` rather than sampled."""
        self.max_new_tokens = 0

    @property
    def position(self) -> int:
        """Index of the next position to sample (the number of generated tokens)."""
        return len(self.tokens)

    @property
    def text(self) -> str:
        """All generated text so far (O(length): prefer ``text_from``)."""
        return self._text.text_from(0)

    def text_from(self, position: int) -> str:
        """Generated text from token ``position`` on."""
        return self._text.text_from(position)

    def char_start(self, position: int) -> int:
        """Character offset (in the generated text) where token ``position``'s text starts."""
        return self._text.char_start(position)

    @property
    def n_chars(self) -> int:
        """Length of the generated text in characters."""
        return self._text.n_chars

    def token_at_char(self, char_index: int) -> int:
        """The generated token in which character ``char_index`` began."""
        return self._text.token_at_char(char_index)

    def ends_mid_character(self, position: int) -> bool:
        """Whether token ``position`` left bytes of a character that a later token completes."""
        return self._text.ends_mid_character(position)

    def logprob(self, position: int, token: int | None = None) -> float | None:
        """Log-probability of ``token`` (default: the token there) at ``position``, under the raw model.

        ``None`` when that position's logits are no longer kept (already emitted).
        """
        logits = self._raw_logits.get(position)
        if logits is None:
            return None
        if token is None:
            token = self.tokens[position]
        top = float(np.max(logits))
        return float(logits[token]) - top - float(np.log(np.exp(logits - top).sum()))
