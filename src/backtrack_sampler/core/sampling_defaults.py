"""The sampling a generation starts from when the user sets none: the model's own, else llama.cpp's.

A model may carry the sampling its authors recommend: a transformers
directory in its ``generation_config.json``, a GGUF in its
``general.sampling.*`` keys (llama.cpp's ``llama-arch.cpp``). The functions
here map those fields to ours and fill what the model leaves out with
llama.cpp's defaults; they read no file (``backtrack_sampler.model_sampling``
does) and import no backend.

Example::

    >>> chosen = choose_defaults(from_gguf_metadata({"general.sampling.temp": 0.6}), "the GGUF")
    >>> chosen.describe()
    "temperature 0.6, top_k 40, top_p 0.95, min_p 0.05 (the GGUF: temperature; llama.cpp's defaults for the rest)"
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

FIELDS = ("temperature", "top_k", "top_p", "min_p")
"""The settings a model may recommend that ``SamplingParams`` has (no repetition penalty: we have none)."""

LLAMA_CPP = {"temperature": 0.8, "top_k": 40, "top_p": 0.95, "min_p": 0.05}
"""llama.cpp's own defaults (``common_params_sampling``), used where the model recommends nothing."""

LLAMA_CPP_SOURCE = "llama.cpp's defaults; the model carries none"

GGUF_KEYS = {
    "general.sampling.temp": "temperature",
    "general.sampling.top_k": "top_k",
    "general.sampling.top_p": "top_p",
    "general.sampling.min_p": "min_p",
}
"""GGUF metadata key -> our field (llama.cpp's ``LLM_KV_GENERAL_SAMPLING_*``)."""

GENERATION_CONFIG_KEYS = {"temperature": "temperature", "top_k": "top_k", "top_p": "top_p", "min_p": "min_p"}
"""``generation_config.json`` key -> our field."""


@dataclass(frozen=True)
class SamplingDefaults:
    """The sampling settings of a generation whose user set none, and where they come from.

    Args:
        temperature: 0 means greedy.
        top_k: 0 disables it.
        top_p: in (0, 1]; 1 keeps every token.
        min_p: in [0, 1); 0 keeps every token.
        source: where the values come from, for people (``"llama.cpp's defaults; the model carries none"``).
    """

    temperature: float
    top_k: int
    top_p: float
    min_p: float
    source: str

    def values(self) -> dict[str, float | int]:
        """``{"temperature": ..., "top_k": ..., "top_p": ..., "min_p": ...}``."""
        return {name: getattr(self, name) for name in FIELDS}

    def describe(self) -> str:
        """``"temperature 0.8, top_k 40, top_p 0.95, min_p 0.05 (llama.cpp's defaults; the model carries none)"``."""
        shown = ", ".join(f"{name} {value:g}" for name, value in self.values().items())
        return f"{shown} ({self.source})"


def _valid(field: str, value: Any) -> float | int | None:
    """``value`` as ``field`` takes it, or ``None`` when it is out of range (a model's value we cannot use)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    if field == "top_k":
        return int(value) if value >= 0 and value == int(value) else None
    if field == "temperature":
        return float(value) if value >= 0 else None
    if field == "top_p":
        return float(value) if 0 < value <= 1 else None
    return float(value) if 0 <= value < 1 else None  # min_p


def _mapped(values: Mapping[str, Any], keys: Mapping[str, str]) -> dict[str, float | int]:
    found = {}
    for key, field in keys.items():
        value = _valid(field, values.get(key))
        if value is not None:
            found[field] = value
    return found


def from_gguf_metadata(metadata: Mapping[str, Any]) -> dict[str, float | int]:
    """The sampling a GGUF header recommends (its ``general.sampling.*`` keys); values out of range are left out.

    The header stores float32: a value is read back with its 7 significant digits (0.3, not 0.30000001192...).
    """
    found = _mapped(metadata, GGUF_KEYS)
    return {name: float(f"{value:.7g}") if isinstance(value, float) else value for name, value in found.items()}


def from_generation_config(config: Mapping[str, Any]) -> dict[str, float | int]:
    """The sampling a ``generation_config.json`` recommends; values out of range are left out.

    ``do_sample: false`` means greedy: temperature 0, whatever the other keys say.
    """
    found = _mapped(config, GENERATION_CONFIG_KEYS)
    if config.get("do_sample") is False:
        found["temperature"] = 0.0
    return found


def choose_defaults(recommended: Mapping[str, float | int], origin: str) -> SamplingDefaults:
    """The model's ``recommended`` settings (read from ``origin``), llama.cpp's defaults for the rest.

    ``recommended`` holds some of ``FIELDS`` (as ``from_gguf_metadata`` gives
    them); empty, the defaults are llama.cpp's alone.
    """
    unknown = sorted(set(recommended) - set(FIELDS))
    if unknown:
        raise ValueError(f"recommended must hold only {', '.join(FIELDS)}, got {unknown[0]!r}")
    if not recommended:
        return SamplingDefaults(**LLAMA_CPP, source=LLAMA_CPP_SOURCE)
    named = [name for name in FIELDS if name in recommended]
    source = f"{origin}: {', '.join(named)}"
    if len(named) < len(FIELDS):
        source += "; llama.cpp's defaults for the rest"
    return SamplingDefaults(**{**LLAMA_CPP, **recommended}, source=source)
