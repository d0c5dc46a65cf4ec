"""A provider over ``llama_cpp.Llama`` (llama-cpp-python), rewinding by KV truncation.

Only the last row of logits is read after each evaluation (``logits_all`` is
not needed), and a rewind is one call that drops KV cells: no re-prefill.
"""

from __future__ import annotations

import ctypes
from collections.abc import Sequence
from typing import Any

import numpy as np

from backtrack_sampler.core.base_provider import BaseProvider


class LlamacppProvider(BaseProvider):
    """Wrap a ``llama_cpp.Llama`` the user already built.

    Args:
        llm: the model, e.g. ``Llama(model_path=..., n_ctx=2048, verbose=False)``.
        cache: accepted for compatibility (the seed passes a ``LlamaRAMCache``);
            unused, since the KV cache is rewound in place.
        device: accepted for compatibility (the seed passes a torch device);
            unused, llama.cpp places the model itself.
    """

    def __init__(self, llm: Any, cache: Any = None, device: Any = None) -> None:
        import llama_cpp

        super().__init__()
        if not isinstance(llm, llama_cpp.Llama):
            raise TypeError(f"llm must be a llama_cpp.Llama, got {type(llm).__name__}")
        self._lib = llama_cpp
        self.llm = llm
        self.cache = cache
        self.device = device
        self._n_vocab = llm.n_vocab()
        # Below 256 llama.cpp rounds n_ctx up, but llama-cpp-python's token buffer keeps the size asked for.
        self.context_length = min(llm.n_ctx(), len(llm.input_ids))
        vocab = llama_cpp.llama_model_get_vocab(llm.model)
        eog = {t for t in range(self._n_vocab) if llama_cpp.llama_vocab_is_eog(vocab, t)}
        self.eos_token_ids = frozenset(eog or {llm.token_eos()})
        self._bos = llm.token_bos()
        self._wants_bos = bool(llama_cpp.llama_vocab_get_add_bos(vocab))
        self._bytes: list[bytes | None] = [None] * self._n_vocab

    @property
    def vocab_size(self) -> int:
        return self._n_vocab

    def encode(self, text: str, add_bos: bool = True) -> list[int]:
        tokens = self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)
        if add_bos and self._wants_bos and self._bos >= 0 and tokens[:1] != [self._bos]:
            tokens.insert(0, self._bos)
        return tokens

    def token_bytes(self, token: int) -> bytes:
        piece = self._bytes[token]
        if piece is None:
            piece = self._bytes[token] = self.llm.detokenize([token], special=False)
        return piece

    def apply_chat_template(self, messages: Sequence[dict[str, str]]) -> str:
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        template = self.llm.metadata.get("tokenizer.chat_template")
        if not template:
            raise NotImplementedError("this GGUF carries no tokenizer.chat_template; pass a raw prompt")

        def special(token: int) -> str:
            return self.llm.detokenize([token], special=True).decode("utf-8", errors="replace")

        eos = special(self.llm.token_eos()) if self.llm.token_eos() >= 0 else ""
        bos = special(self._bos) if self._bos >= 0 else ""
        return Jinja2ChatFormatter(template, eos_token=eos, bos_token=bos)(messages=list(messages)).prompt

    def prefill(self, tokens: Sequence[int]) -> np.ndarray:
        # The Llama may have been used directly since our last call: trust its own record.
        held = self.llm.n_tokens
        self._kv_tokens = [int(t) for t in self.llm.input_ids[:held]]
        return super().prefill(tokens)

    def _forward(self, tokens: Sequence[int]) -> np.ndarray:
        self.llm.n_tokens = len(self._kv_tokens)
        self.llm.eval(tokens)
        row = self._lib.llama_get_logits_ith(self.llm.ctx, -1)
        return np.ctypeslib.as_array(row, shape=(self._n_vocab,)).copy()

    def _rewind(self, n_tokens: int) -> None:
        memory = self._lib.llama_get_memory(self.llm.ctx)
        if not self._lib.llama_memory_seq_rm(memory, -1, n_tokens, -1):
            # Recurrent and hybrid models cannot drop a suffix: rebuild from the start.
            self._lib.llama_memory_clear(memory, True)
            self.llm.n_tokens = 0
            if n_tokens:
                self.llm.eval(self._kv_tokens[:n_tokens])
        self.llm.n_tokens = n_tokens

    def _save_state(self) -> tuple[object, int]:
        ctx = self.llm.ctx
        size = self._lib.llama_state_seq_get_size(ctx, 0)
        blob = (ctypes.c_uint8 * size)()
        written = self._lib.llama_state_seq_get_data(ctx, blob, size, 0)
        return blob, int(written)

    def _load_state(self, blob: object, tokens: Sequence[int]) -> None:
        memory = self._lib.llama_get_memory(self.llm.ctx)
        self._lib.llama_memory_clear(memory, True)
        if not self._lib.llama_state_seq_set_data(self.llm.ctx, blob, len(blob), 0):  # type: ignore[arg-type]
            self._lib.llama_memory_clear(memory, True)
            self.llm.n_tokens = 0
            raise RuntimeError("llama.cpp could not restore a saved KV state")
        self.llm.n_tokens = len(tokens)
        self.llm.input_ids[: len(tokens)] = tokens
