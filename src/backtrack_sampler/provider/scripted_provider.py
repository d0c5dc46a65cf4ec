"""A deterministic provider over a tiny vocabulary, for exact tests of the engine and of strategies.

Example:
    >>> from backtrack_sampler.provider.scripted_provider import ScriptedProvider
    >>> provider = ScriptedProvider(["<eos>", "a", "b"], lambda toks: [0.0, 2.0, 1.0], 0)
    >>> provider.encode("abba")
    [1, 2, 2, 1]
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from backtrack_sampler.core.base_provider import BaseProvider

CHAT_START = "<|im_start|>"  # the markers of apply_chat_template
CHAT_END = "<|im_end|>"


class ScriptedProvider(BaseProvider):
    """Logits come from ``next_logits(tokens_so_far)``; nothing is cached but the token list.

    Args:
        vocab: the text of each token id; ``vocab[eos_token_id]`` decodes to
            nothing.
        next_logits: maps the whole token sequence (prompt and generated) to
            the logits of the next position, one float per vocab entry.
        eos_token_id: the id that ends a generation.
        context_length: the most positions a sequence may hold.

    ``eval_count`` is the number of positions evaluated so far; encode is a
    greedy longest match over ``vocab``; decode joins the pieces;
    ``apply_chat_template`` writes ChatML-like turns.
    """

    def __init__(
        self,
        vocab: list[str],
        next_logits: Callable[[list[int]], Sequence[float]],
        eos_token_id: int,
        context_length: int | None = 4096,
    ) -> None:
        super().__init__()
        if not vocab:
            raise ValueError("vocab must not be empty")
        if not 0 <= eos_token_id < len(vocab):
            raise ValueError(f"eos_token_id must be in [0, {len(vocab)}), got {eos_token_id}")
        self.vocab = list(vocab)
        self.next_logits = next_logits
        self.eos_token_ids = frozenset({eos_token_id})
        self.context_length = context_length
        self._bytes = [b"" if i == eos_token_id else v.encode() for i, v in enumerate(self.vocab)]
        self._by_length = sorted(
            ((v, i) for i, v in enumerate(self.vocab) if v and i != eos_token_id),
            key=lambda item: -len(item[0]),
        )

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    @property
    def eval_count(self) -> int:
        """Positions evaluated so far (the prompt included)."""
        return self.positions_evaluated

    def encode(self, text: str, add_bos: bool = True) -> list[int]:
        tokens, i = [], 0
        while i < len(text):
            for piece, token in self._by_length:
                if text.startswith(piece, i):
                    tokens.append(token)
                    i += len(piece)
                    break
            else:
                raise ValueError(f"text cannot be encoded with this vocab at {text[i : i + 10]!r}")
        return tokens

    def token_bytes(self, token: int) -> bytes:
        return self._bytes[token]

    def apply_chat_template(self, messages: Sequence[dict[str, str]]) -> str:
        r"""A ChatML-like template, ``<|im_start|>{role}\n{content}<|im_end|>\n`` per message, then the assistant's.

        The text is spelled with the vocab by ``encode`` like any other, so a
        vocab meant for chat holds the markers (or their characters).

        Example:
            >>> ScriptedProvider(["<eos>", "a"], lambda toks: [0.0, 0.0], 0).apply_chat_template(
            ...     [{"role": "user", "content": "a"}]
            ... )
            '<|im_start|>user\na<|im_end|>\n<|im_start|>assistant\n'
        """
        turns = [f"{CHAT_START}{m['role']}\n{m['content']}{CHAT_END}\n" for m in messages]
        return "".join(turns) + f"{CHAT_START}assistant\n"

    def _forward(self, tokens: Sequence[int]) -> np.ndarray:
        logits = np.asarray(self.next_logits([*self._kv_tokens, *tokens]), dtype=np.float32)
        if logits.shape != (len(self.vocab),):
            raise ValueError(f"next_logits must return {len(self.vocab)} floats, got shape {logits.shape}")
        return logits.copy()

    def _rewind(self, n_tokens: int) -> None:
        """Nothing to drop: the token list is the whole state."""

    def _save_state(self) -> tuple[object, int]:
        """The token list is the whole state; the base class restores it."""
        return tuple(self._kv_tokens), 8 * len(self._kv_tokens)

    def _load_state(self, blob: object, tokens: Sequence[int]) -> None:
        """Nothing to load beyond the token list."""
