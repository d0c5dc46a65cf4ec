"""A provider over an ``mlx_lm`` model (Apple's MLX; Metal on a Mac, the CPU elsewhere), rewinding by trimming.

The KV cache is ``mlx_lm``'s prompt cache (``make_prompt_cache``); a rewind
trims it (``trim_prompt_cache``), so no prompt is evaluated again. Tokens are
evaluated as ``mlx_lm.generate_step`` does: all but the last in chunks whose
cache alone is computed (MLX is lazy: their logits never are), then the last
one, whose single row of logits is handed to the engine.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from backtrack_sampler.core.base_provider import BaseProvider
from backtrack_sampler.provider.hf_tokenizer import HFTokenizer, HFTokenizerVocabulary

PREFILL_STEP = 2048  # mlx_lm.generate_step's prefill_step_size: positions per chunk of a long prompt


class MlxProvider(HFTokenizerVocabulary, BaseProvider):
    """Wrap an ``mlx_lm`` model and its tokenizer, as ``mlx_lm.load(path_or_repo)`` returns them.

    Args:
        model: the ``mlx_lm`` model (an ``mlx.nn.Module``).
        tokenizer: its tokenizer: ``mlx_lm``'s ``TokenizerWrapper`` or the
            ``transformers`` tokenizer inside it.

    Raises:
        ValueError: when the model's cache cannot be trimmed (the engine
            rewinds by trimming it).

    Example:
        >>> from mlx_lm import load  # doctest: +SKIP
        >>> provider = MlxProvider(*load("mlx-community/SmolLM2-135M-Instruct"))  # doctest: +SKIP
    """

    def __init__(self, model: Any, tokenizer: Any) -> None:
        import mlx.core as mx
        from mlx_lm.models import cache as mlx_cache

        super().__init__()
        self._mx = mx
        self._cache_lib = mlx_cache
        self.model = model
        self.tokenizer = tokenizer
        self.model_path: Path | None = None  # the directory it was loaded from, when known
        self._cache = mlx_cache.make_prompt_cache(model)
        if not mlx_cache.can_trim_prompt_cache(self._cache):
            kinds = sorted({type(c).__name__ for c in self._cache if not c.is_trimmable()})
            raise ValueError(
                f"model: the KV cache of this {type(model).__name__} cannot be trimmed ({', '.join(kinds)}), "
                "and a rewind trims it; this model cannot run on the MLX provider"
            )
        hf_tokenizer = getattr(tokenizer, "_tokenizer", tokenizer)
        self._text = HFTokenizer(hf_tokenizer)
        args = getattr(model, "args", None)
        self._n_vocab = int(getattr(args, "vocab_size", 0) or len(hf_tokenizer))
        self.context_length = getattr(args, "max_position_embeddings", None)
        eos = getattr(tokenizer, "eos_token_ids", None) or self._text.eos_token_ids
        self.eos_token_ids = frozenset(int(t) for t in eos)

    def _forward(self, tokens: Sequence[int]) -> np.ndarray:
        mx = self._mx
        ids = mx.array(list(tokens), dtype=mx.uint32)  # (T,)
        for start in range(0, len(ids) - 1, PREFILL_STEP):  # every position but the last: their cache only
            self.model(ids[start : min(start + PREFILL_STEP, len(ids) - 1)][None], cache=self._cache)
            mx.eval([c.state for c in self._cache])
        logits = self.model(ids[-1:][None], cache=self._cache)  # (1, 1, vocab)
        row = logits[0, -1].astype(mx.float32)  # (vocab,)
        mx.eval(row)
        return np.array(row)  # a copy of one row

    def _rewind(self, n_tokens: int) -> None:
        trimmed = self._cache_lib.trim_prompt_cache(self._cache, len(self._kv_tokens) - n_tokens)
        if trimmed != len(self._kv_tokens) - n_tokens:  # a cache that kept fewer positions: start again
            self._cache = self._cache_lib.make_prompt_cache(self.model)
            if n_tokens:
                self._forward(self._kv_tokens[:n_tokens])

    def _save_state(self) -> tuple[object, int]:
        layers = [(type(c), self._copy(c.state), getattr(c, "meta_state", None)) for c in self._cache]
        return layers, max(sum(_nbytes(c) for c in self._cache), 1)

    def _load_state(self, blob: object, tokens: Sequence[int]) -> None:
        caches = []
        for kind, state, meta in blob:  # type: ignore[attr-defined]
            cache = kind.from_state(self._copy(state))  # a copy: the saved state must outlive later updates
            if meta:
                cache.meta_state = meta
            caches.append(cache)
        self._cache = caches

    def _copy(self, state: Any) -> Any:
        """``state`` with every MLX array a new array (an update writes into the cache's own array objects)."""
        if isinstance(state, (tuple, list)):
            return type(state)(self._copy(s) for s in state)
        return self._mx.array(state) if isinstance(state, self._mx.array) else state


def _nbytes(cache: Any) -> int:
    try:
        return int(cache.nbytes)
    except (NotImplementedError, AttributeError):
        return 0
