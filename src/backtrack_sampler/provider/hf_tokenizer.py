"""A ``transformers`` tokenizer seen byte-exactly, one token at a time (imports no torch).

Used by ``TransformersProvider`` and by the remote provider's local tokenizer.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def byte_level_alphabet() -> dict[str, int]:
    """The inverse of GPT-2's bytes-to-unicode table: printable char -> byte."""
    printable = {*range(33, 127), *range(161, 173), *range(174, 256)}  # "!".."~", "¡".."¬", "®".."ÿ"
    chars, extra = {}, 0
    for byte in range(256):
        if byte in printable:
            chars[chr(byte)] = byte
        else:
            chars[chr(256 + extra)] = byte
            extra += 1
    return chars


class HFTokenizer:
    """Encode without a second BOS, the exact bytes of each token, and the chat template."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        ids = {tokenizer.eos_token_id} if isinstance(tokenizer.eos_token_id, int) else set()
        self.eos_token_ids = frozenset(ids)
        self._bos = tokenizer.bos_token_id
        self._wants_bos = self._bos is not None and tokenizer("a")["input_ids"][:1] == [self._bos]
        self._special = set(tokenizer.all_special_ids)
        decoder = getattr(getattr(tokenizer, "backend_tokenizer", None), "decoder", None)
        self._alphabet = byte_level_alphabet() if type(decoder).__name__ == "ByteLevel" else {}
        self._bytes: dict[int, bytes] = {}

    @property
    def vocab_size(self) -> int:
        return len(self.tokenizer)

    def encode(self, text: str, add_bos: bool = True) -> list[int]:
        tokens = list(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        if add_bos and self._wants_bos and tokens[:1] != [self._bos]:
            tokens.insert(0, self._bos)
        return tokens

    def token_bytes(self, token: int) -> bytes:
        token = int(token)
        piece = self._bytes.get(token)
        if piece is None:
            piece = self._bytes[token] = self._token_bytes(token)
        return piece

    def _token_bytes(self, token: int) -> bytes:
        if token in self._special or not 0 <= token < len(self.tokenizer):
            return b""
        text = self.tokenizer.convert_ids_to_tokens(token)
        if self._alphabet and all(c in self._alphabet for c in text):
            return bytes(self._alphabet[c] for c in text)
        if text.startswith("<0x") and text.endswith(">") and len(text) == 6:  # SentencePiece byte fallback
            return bytes([int(text[3:5], 16)])
        if "▁" in text:  # SentencePiece word boundary
            return text.replace("▁", " ").encode("utf-8")
        return self.tokenizer.decode([token]).encode("utf-8")

    def apply_chat_template(self, messages: Sequence[dict[str, str]]) -> str:
        if not getattr(self.tokenizer, "chat_template", None):
            raise NotImplementedError("this tokenizer has no chat template; pass a raw prompt")
        return self.tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)


class HFTokenizerVocabulary:
    """A provider's vocabulary methods from its ``HFTokenizer`` (``self._text``) and size (``self._n_vocab``).

    Mixed into ``TransformersProvider`` and ``MlxProvider``, whose models both come with a Hugging Face tokenizer.
    """

    _text: HFTokenizer
    _n_vocab: int

    @property
    def vocab_size(self) -> int:
        return self._n_vocab

    def encode(self, text: str, add_bos: bool = True) -> list[int]:
        return self._text.encode(text, add_bos)

    def token_bytes(self, token: int) -> bytes:
        return self._text.token_bytes(token)

    def apply_chat_template(self, messages: Sequence[dict[str, str]]) -> str:
        return self._text.apply_chat_template(messages)
