"""A provider over a Hugging Face causal LM: a plain forward pass on a KV cache that is cropped on rewind.

Logits are the model's raw last-position logits (no generation-config
processors), computed for one row only (``logits_to_keep=1``).
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from backtrack_sampler.provider.base_provider import BaseProvider


def _byte_level_alphabet() -> dict[str, int]:
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


class TransformersProvider(BaseProvider):
    """Wrap a causal LM and its tokenizer, both already loaded by the user.

    Args:
        model: a ``transformers`` causal LM (``AutoModelForCausalLM``).
        tokenizer: its tokenizer.
        device: where to run (``torch.device('cuda')`` in the seed); default:
            the model's device. The model is moved there if needed; CUDA
            asked for on a machine without it falls back to the CPU, with a
            warning.
    """

    def __init__(self, model: Any, tokenizer: Any, device: Any = None) -> None:
        import torch

        super().__init__()
        self._torch = torch
        self.device = torch.device(device) if device is not None else model.device
        if self.device.type == "cuda" and not torch.cuda.is_available():
            warnings.warn("device is cuda but CUDA is not available; running on the CPU", stacklevel=2)
            self.device = torch.device("cpu")
        if model.device != self.device:
            model = model.to(self.device)
        self.model = model.eval()
        self.tokenizer = tokenizer
        self._n_vocab = int(model.get_output_embeddings().weight.shape[0])
        self.context_length = getattr(model.config, "max_position_embeddings", None)
        self.eos_token_ids = frozenset(self._eos_ids(model, tokenizer))
        self._bos = tokenizer.bos_token_id
        self._wants_bos = self._bos is not None and tokenizer("a")["input_ids"][:1] == [self._bos]
        self._special = set(tokenizer.all_special_ids)
        decoder = getattr(getattr(tokenizer, "backend_tokenizer", None), "decoder", None)
        self._byte_level = type(decoder).__name__ == "ByteLevel"
        self._alphabet = _byte_level_alphabet() if self._byte_level else {}
        self._bytes: dict[int, bytes] = {}
        params = inspect.signature(model.forward).parameters
        self._cache_arg = "past_key_values" if "past_key_values" in params else "cache"
        self._cache = self._new_cache()

    @staticmethod
    def _eos_ids(model: Any, tokenizer: Any) -> set[int]:
        ids: set[int] = set()
        configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
        for value in (configured, tokenizer.eos_token_id):
            if isinstance(value, int):
                ids.add(value)
            elif value is not None:
                ids.update(int(v) for v in value)
        return ids

    def _new_cache(self) -> Any:
        from transformers import DynamicCache

        try:
            return DynamicCache(config=self.model.config)
        except TypeError:  # transformers < 4.56 builds it without a config
            return DynamicCache()

    @property
    def vocab_size(self) -> int:
        return self._n_vocab

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
        if token in self._special or token >= len(self.tokenizer):
            return b""
        text = self.tokenizer.convert_ids_to_tokens(token)
        if self._byte_level and all(c in self._alphabet for c in text):
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

    def _forward(self, tokens: Sequence[int]) -> np.ndarray:
        torch = self._torch
        input_ids = torch.tensor([list(tokens)], dtype=torch.long, device=self.device)  # (1, T)
        with torch.inference_mode():
            cache = {self._cache_arg: self._cache}  # updated in place
            out = self.model(input_ids=input_ids, use_cache=True, logits_to_keep=1, **cache)
        return out.logits[0, -1].float().cpu().numpy()  # (vocab,)

    def _rewind(self, n_tokens: int) -> None:
        if n_tokens == 0:
            self._cache = self._new_cache()
        else:  # a negative count removes that many positions (transformers 4 and 5 alike)
            self._cache.crop(n_tokens - len(self._kv_tokens))
