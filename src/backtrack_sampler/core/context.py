"""The read-only view of a running generation that strategies receive."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, overload

import numpy as np

from backtrack_sampler.core.token_text import TokenText

if TYPE_CHECKING:
    from backtrack_sampler.core.base_provider import BaseProvider


@dataclass
class Progress:
    """What the engine tells strategies about where a generation stands; only the engine writes it.

    Attributes:
        committed: tokens before this position were emitted: they can no longer be rewound.
        forced: whether the latest token was inserted by a ``Rewind(insert=...)`` rather than sampled.
        max_new_tokens: the most tokens this generation may produce (0: not known).
    """

    committed: int = 0
    forced: bool = False
    max_new_tokens: int = 0


class TokenView(Sequence[int]):
    """A read-only window on the engine's list of generated token ids (no copy is made)."""

    __slots__ = ("_tokens",)

    def __init__(self, tokens: list[int]) -> None:
        self._tokens = tokens

    def __len__(self) -> int:
        return len(self._tokens)

    @overload
    def __getitem__(self, index: int) -> int: ...
    @overload
    def __getitem__(self, index: slice) -> list[int]: ...
    def __getitem__(self, index: int | slice) -> int | list[int]:
        return self._tokens[index]

    def __iter__(self) -> Iterator[int]:
        return iter(self._tokens)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, TokenView):
            other = other._tokens
        return isinstance(other, (list, tuple)) and list(other) == self._tokens

    __hash__ = None  # type: ignore[assignment]  # mutable underneath

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        return np.asarray(self._tokens, dtype=dtype)

    def __repr__(self) -> str:
        return f"TokenView({self._tokens!r})"


class GenerationContext:
    """What a strategy may read about the generation in progress; nothing here can be written.

    Positions index the generated tokens (0 is the first token after the
    prompt). ``tokens`` is a view of the engine's own list, so reading it
    costs nothing; the engine alone changes what the view shows.

    Args:
        provider: the model backend (strategies use it as a ``Vocabulary``).
        prompt_tokens: the prompt's token ids.
        tokens: the engine's list of generated token ids.
        text: the engine's incremental text of ``tokens``.
        raw_logits: the raw logits of a position, while they are kept (not yet
            emitted): a mapping or a function of the position.
        progress: the engine's ``Progress`` (a fresh one when omitted).
    """

    def __init__(
        self,
        provider: BaseProvider,
        prompt_tokens: Sequence[int],
        tokens: list[int],
        text: TokenText,
        raw_logits: Mapping[int, np.ndarray] | Callable[[int], np.ndarray | None],
        progress: Progress | None = None,
    ) -> None:
        self._provider = provider
        self._prompt_tokens = prompt_tokens
        self._tokens = TokenView(tokens)
        self._text = text
        self._raw_logits = raw_logits.get if isinstance(raw_logits, Mapping) else raw_logits
        self._progress = progress if progress is not None else Progress()

    @property
    def provider(self) -> BaseProvider:
        """The model backend; strategies read its vocabulary."""
        return self._provider

    @property
    def prompt_tokens(self) -> Sequence[int]:
        """The prompt's token ids."""
        return self._prompt_tokens

    @property
    def tokens(self) -> TokenView:
        """The generated token ids so far (the latest sampled one last)."""
        return self._tokens

    @property
    def committed(self) -> int:
        """Tokens before this position were emitted: they can no longer be rewound."""
        return self._progress.committed

    @property
    def forced(self) -> bool:
        """Whether the latest token was inserted by a ``Rewind(insert=...)`` rather than sampled."""
        return self._progress.forced

    @property
    def max_new_tokens(self) -> int:
        """The most tokens this generation may produce (0: not known)."""
        return self._progress.max_new_tokens

    @property
    def position(self) -> int:
        """Index of the next position to sample (the number of generated tokens)."""
        return len(self._tokens)

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
        logits = self._raw_logits(position)
        if logits is None:
            return None
        if token is None:
            token = self._tokens[position]
        top = float(np.max(logits))
        return float(logits[token]) - top - float(np.log(np.exp(logits - top).sum()))
