"""A provider over an ``mlx_lm`` model (Apple's MLX; Metal on a Mac, the CPU elsewhere), rewinding by trimming.

The KV cache is ``mlx_lm``'s prompt cache (``make_prompt_cache``); a rewind
trims it (``trim_prompt_cache``), so no prompt is evaluated again. Tokens are
evaluated as ``mlx_lm.generate_step`` does: all but the last in chunks whose
cache alone is computed (MLX is lazy: their logits never are), then the last
one, whose single row of logits is handed to the engine.

Building a step's graph in Python takes milliseconds (4-7 ms on a 2-core CPU,
where the step itself takes 150 ms). ``mlx_lm.generate_step`` hides it by
building step n+1 on the lazy token of step n while step n runs; here the
engine picks the token, in numpy, after the logits arrive. So while step n
runs, the provider builds step n+1 on its most likely token (a lazy ``argmax``), without evaluating it: when the
engine picks that token the step is ready, otherwise the caches get back the
fields they held before (aliases, no copy) and the step is built again. No
position is computed for a token the engine did not pick.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from backtrack_sampler.core.base_provider import BaseProvider
from backtrack_sampler.provider.hf_tokenizer import HFTokenizer, HFTokenizerVocabulary

PREFILL_STEP = 2048  # mlx_lm.generate_step's prefill_step_size: positions per chunk of a long prompt


@dataclass
class _Ahead:
    """The next step, built on the most likely token and not evaluated, and what the caches held before it."""

    row: Any  # the step's logits row (lazy)
    saved: list[tuple[Any, dict[str, Any]]] = field(default_factory=list)  # (cache, its fields, aliased)
    token: int = -1  # the guessed token, once evaluated
    thread: int = field(default_factory=threading.get_ident)  # MLX streams belong to a thread: only it evaluates

    def undo(self) -> None:
        """Give each cache back the fields it held before this step was built."""
        for cache, fields in self.saved:
            cache.__dict__.update(fields)


class MlxProvider(HFTokenizerVocabulary, BaseProvider):
    """Wrap an ``mlx_lm`` model and its tokenizer, as ``mlx_lm.load(path_or_repo)`` returns them.

    Args:
        model: the ``mlx_lm`` model (an ``mlx.nn.Module``).
        tokenizer: its tokenizer: ``mlx_lm``'s ``TokenizerWrapper`` or the
            ``transformers`` tokenizer inside it.
        build_ahead: build each next step on the most likely token while the
            current one runs (see the module's docstring); the logits are the
            same either way.

    Raises:
        ValueError: when the model's cache cannot be trimmed (the engine
            rewinds by trimming it).

    Example:
        >>> from mlx_lm import load  # doctest: +SKIP
        >>> provider = MlxProvider(*load("mlx-community/SmolLM2-135M-Instruct"))  # doctest: +SKIP
    """

    def __init__(self, model: Any, tokenizer: Any, build_ahead: bool = True) -> None:
        import mlx.core as mx
        from mlx_lm.models import cache as mlx_cache

        super().__init__()
        self._mx = mx
        self._cache_lib = mlx_cache
        self.model = model
        self.tokenizer = tokenizer
        self.model_path: Path | None = None  # the directory it was loaded from, when known
        self.build_ahead = build_ahead
        self.ahead_hits = 0  # steps whose graph was built ahead and taken
        self.ahead_misses = 0  # steps built ahead on a token the engine did not pick
        self._ahead: _Ahead | None = None
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
        row = self._take_ahead(tokens)
        if row is None:
            ids = mx.array(list(tokens), dtype=mx.uint32)  # (T,)
            for start in range(0, len(ids) - 1, PREFILL_STEP):  # every position but the last: their cache only
                self.model(ids[start : min(start + PREFILL_STEP, len(ids) - 1)][None], cache=self._cache)
                mx.eval([c.state for c in self._cache])
            row = self._step(ids[-1:])
        if not self.build_ahead:
            mx.eval(row)
            return np.array(row)  # a copy of one row
        guess = mx.argmax(row)
        mx.async_eval(row, guess)
        ahead = self._build_ahead(guess)  # while the step runs
        logits = np.array(row)  # a copy of one row, once computed
        ahead.token = int(guess.item())  # evaluated with the row
        self._ahead = ahead
        return logits

    def _step(self, ids: Any) -> Any:
        """The logits row (float32, lazy) after feeding the one token ``ids`` (shape (1,))."""
        logits = self.model(ids[None], cache=self._cache)  # (1, 1, vocab)
        return logits[0, -1].astype(self._mx.float32)  # (vocab,)

    def _build_ahead(self, guess: Any) -> _Ahead:
        saved = [(c, _alias_fields(c, self._mx)) for c in _all_caches(self._cache)]
        return _Ahead(self._step(guess.astype(self._mx.uint32).reshape(1)), saved)

    def _take_ahead(self, tokens: Sequence[int]) -> Any:
        """The row built ahead when ``tokens`` is its one token; otherwise ``None``, the caches as before it."""
        ahead, self._ahead = self._ahead, None
        if ahead is None:
            return None
        if len(tokens) == 1 and tokens[0] == ahead.token and ahead.thread == threading.get_ident():
            self.ahead_hits += 1
            ahead.saved.clear()  # no alias left: the caches' arrays are then updated in place, not copied
            return ahead.row
        self.ahead_misses += 1
        ahead.undo()
        return None

    def _drop_ahead(self) -> None:
        if self._ahead is not None:
            self._ahead.undo()
            self._ahead = None

    def _rewind(self, n_tokens: int) -> None:
        self._drop_ahead()
        trimmed = self._cache_lib.trim_prompt_cache(self._cache, len(self._kv_tokens) - n_tokens)
        if trimmed != len(self._kv_tokens) - n_tokens:  # a cache that kept fewer positions: start again
            self._cache = self._cache_lib.make_prompt_cache(self.model)
            if n_tokens:
                self._forward(self._kv_tokens[:n_tokens])

    def _save_state(self) -> tuple[object, int]:
        self._drop_ahead()
        layers = [(type(c), self._copy(c.state), getattr(c, "meta_state", None)) for c in self._cache]
        return layers, max(sum(_nbytes(c) for c in self._cache), 1)

    def _load_state(self, blob: object, tokens: Sequence[int]) -> None:
        self._ahead = None  # built on the caches being replaced
        caches = []
        for kind, state, meta in blob:  # type: ignore[attr-defined]
            cache = kind.from_state(self._copy(state))  # a copy: the saved state must outlive later updates
            if meta:
                cache.meta_state = meta
            caches.append(cache)
        self._cache = caches

    def _copy(self, state: Any) -> Any:
        """``state`` with every MLX array a new array (an update writes into the cache's own array objects)."""
        return _map_arrays(state, self._mx, self._mx.array)


def _nbytes(cache: Any) -> int:
    try:
        return int(cache.nbytes)
    except (NotImplementedError, AttributeError):
        return 0


def _all_caches(caches: Any) -> list[Any]:
    """Every cache object in ``caches``, those nested in a ``CacheList`` included."""
    found = []
    for cache in caches:
        inner = getattr(cache, "caches", None)
        found += _all_caches(inner) if isinstance(inner, (list, tuple)) else [cache]
    return found


def _alias_fields(cache: Any, mx: Any) -> dict[str, Any]:
    """``cache``'s fields, each MLX array a new handle on the same data (an update in place rebinds the old one)."""
    # ``a[...]``: a new handle on the same node, no copy, not even a lazy one (``mx.array(a)`` is a lazy copy)
    return {name: _map_arrays(value, mx, lambda a: a[...]) for name, value in vars(cache).items()}


def _map_arrays(value: Any, mx: Any, leaf: Any) -> Any:
    """``value`` with ``leaf`` applied to every MLX array in it, through nested tuples and lists."""
    if isinstance(value, mx.array):
        return leaf(value)
    if isinstance(value, (list, tuple)):
        return type(value)(_map_arrays(v, mx, leaf) for v in value)
    return value
