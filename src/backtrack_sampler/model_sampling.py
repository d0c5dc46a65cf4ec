"""The sampling a loaded model recommends: read from its file, chosen by ``core.sampling_defaults``.

``generate``, ``batch`` and the server's playground start from these values
when the user sets none. A GGUF's keys come from the loaded ``Llama``'s
``metadata`` (else its header is read, ``gguf_header``); a transformers
directory's ``generation_config.json`` is read as JSON. A provider with no file behind it (a remote engine, a scripted
model) gets llama.cpp's defaults.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from backtrack_sampler import gguf_header
from backtrack_sampler.core.sampling_defaults import (
    GGUF_KEYS,
    SamplingDefaults,
    choose_defaults,
    from_generation_config,
    from_gguf_metadata,
)

GENERATION_CONFIG = "generation_config.json"
GGUF_ORIGIN = "the GGUF's general.sampling.*"


def model_file(provider: Any) -> Path | None:
    """The GGUF file or the transformers directory behind ``provider``; ``None`` when there is none.

    Knows ``LlamacppProvider`` (its ``Llama``'s ``model_path``), a
    ``BatchedLlamacpp`` slot (its shared ``Llama``), ``TransformersProvider``
    (its model's ``name_or_path``) and an ``MlxProvider`` from
    ``models.load_provider`` (its ``model_path``); reads attributes only,
    imports no backend.
    """
    llm_path = getattr(_llama(provider), "model_path", None)
    if isinstance(llm_path, str) and llm_path:
        return Path(llm_path)
    hf_path = getattr(getattr(provider, "model", None), "name_or_path", None)
    if isinstance(hf_path, str) and hf_path and Path(hf_path).is_dir():
        return Path(hf_path)
    mlx_path = getattr(provider, "model_path", None)  # an MlxProvider that models.load_provider loaded
    if isinstance(mlx_path, Path) and mlx_path.is_dir():
        return mlx_path
    return None


def recommended_for_path(path: Path | None) -> SamplingDefaults:
    """The defaults of the model at ``path`` (a ``.gguf`` file or a transformers directory; ``None``: no file).

    A file that cannot be read, or holds no usable value, recommends nothing:
    llama.cpp's defaults apply.
    """
    if path is None:
        return choose_defaults({}, "")
    if path.is_dir():
        return choose_defaults(_generation_config(path / GENERATION_CONFIG), f"{GENERATION_CONFIG} of the model")
    try:
        metadata = gguf_header.read_metadata(path)
    except (OSError, ValueError):
        metadata = {}
    return choose_defaults(from_gguf_metadata(metadata), GGUF_ORIGIN)


def recommended_sampling(provider: Any) -> SamplingDefaults:
    """The defaults of the model behind ``provider`` (see ``model_file`` and ``recommended_for_path``).

    A llama.cpp model already loaded gives its header's keys itself (``Llama.metadata``, values as text):
    reading the header again would walk the whole vocabulary.
    """
    metadata = getattr(_llama(provider), "metadata", None)
    if isinstance(metadata, dict) and metadata:
        return choose_defaults(from_gguf_metadata(_numbers(metadata)), GGUF_ORIGIN)
    return recommended_for_path(model_file(provider))


def _llama(provider: Any) -> Any:
    """The ``llama_cpp.Llama`` behind a ``LlamacppProvider`` or a ``BatchedLlamacpp`` slot, else ``None``."""
    vocab = getattr(getattr(provider, "batched", None), "vocab", None)
    return getattr(provider if vocab is None else vocab, "llm", None)


def _numbers(metadata: dict[str, Any]) -> dict[str, Any]:
    """``Llama.metadata``'s sampling values (text such as ``"0.600000"``) as numbers; the rest left out."""
    numbers = {}
    for key in GGUF_KEYS:
        try:
            numbers[key] = float(metadata[key])
        except (KeyError, TypeError, ValueError):
            continue
        if key.endswith("top_k") and numbers[key].is_integer():
            numbers[key] = int(numbers[key])
    return numbers


def _generation_config(path: Path) -> dict[str, float | int]:
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return from_generation_config(config) if isinstance(config, dict) else {}
