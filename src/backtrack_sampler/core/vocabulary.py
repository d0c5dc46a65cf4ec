"""``Vocabulary``: the part of a provider that strategies read.

Strategies turn text into token ids and back; they never evaluate the model
or touch its cache. Any object with these members will do: every
``BaseProvider`` is one, and a test may pass a small stand-in.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable


@runtime_checkable
class Vocabulary(Protocol):
    """Token ids, their bytes and text, and the ids that end a generation."""

    @property
    def vocab_size(self) -> int:
        """Number of token ids (the length of a logits vector)."""
        ...

    @property
    def eos_token_ids(self) -> frozenset[int]:
        """Ids that end a generation."""
        ...

    def encode(self, text: str, add_bos: bool = True) -> list[int]:
        """Token ids of ``text``."""
        ...

    def decode(self, tokens: Sequence[int] | int) -> str:
        """Text of ``tokens``; invalid UTF-8 becomes U+FFFD."""
        ...

    def token_bytes(self, token: int) -> bytes:
        """The UTF-8 bytes ``token`` contributes to the text (b"" for control tokens)."""
        ...
