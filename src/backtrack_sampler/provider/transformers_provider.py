"""A provider over a Hugging Face causal LM: a plain forward pass on a KV cache that is cropped on rewind.

Logits are the model's raw last-position logits (no generation-config
processors), computed for one row only (``logits_to_keep=1``).
"""

from __future__ import annotations

import copy
import inspect
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from backtrack_sampler.core.base_provider import BaseProvider
from backtrack_sampler.provider.hf_tokenizer import HFTokenizer, HFTokenizerVocabulary


class TransformersProvider(HFTokenizerVocabulary, BaseProvider):
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
        self._text = HFTokenizer(tokenizer)
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

    def _save_state(self) -> tuple[object, int]:
        with self._torch.inference_mode():
            cache = copy.deepcopy(self._cache)
        size = sum(
            tensor.numel() * tensor.element_size()
            for layer in getattr(cache, "layers", ())
            for tensor in (getattr(layer, "keys", None), getattr(layer, "values", None))
            if isinstance(tensor, self._torch.Tensor)
        )
        return cache, max(size, 1)

    def _load_state(self, blob: object, tokens: Sequence[int]) -> None:
        with self._torch.inference_mode():  # a copy: the saved state must outlive the forwards that follow
            self._cache = copy.deepcopy(blob)
