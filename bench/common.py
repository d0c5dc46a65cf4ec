"""Shared pieces of the benchmark scripts: the machine, the backends, medians, markdown tables.

Every benchmark measures our engine and the raw backend in the same process,
interleaved, and reports ratios: absolute times on a shared machine are noise.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

PROMPT = "Once upon a time"
BACKENDS = ("llamacpp", "transformers")


def machine() -> str:
    """One line describing the machine and the library versions."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    import numpy

    parts = [f"{cpu}, {os.cpu_count()} cores", f"Python {platform.python_version()}", f"numpy {numpy.__version__}"]
    for module in ("llama_cpp", "torch", "transformers"):
        try:
            parts.append(f"{module} {__import__(module).__version__}")
        except ImportError:
            pass
    return "; ".join(parts)


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def timed(fn: Callable[[], int]) -> float:
    """Tokens per second of ``fn``, which returns the number of tokens it generated."""
    start = time.perf_counter()
    count = fn()
    return count / (time.perf_counter() - start)


@dataclass
class Backend:
    """A loaded backend: our provider over it, and its own greedy generation for comparison."""

    name: str
    provider: Any
    raw_greedy: Callable[[list[int], int], list[int]]
    reset: Callable[[], None]


def load_backend(name: str, n_ctx: int = 2048, model: str | None = None) -> Backend:
    """The embedded model (or ``model``) on ``name``: 'llamacpp' or 'transformers'."""
    if name == "llamacpp":
        from backtrack_sampler.models import load_llama
        from backtrack_sampler.provider.llamacpp_provider import LlamacppProvider

        llm = load_llama(model, n_ctx=n_ctx)

        def llama_greedy(tokens: list[int], n: int) -> list[int]:
            llm.reset()
            out = llm.create_completion(tokens, max_tokens=n, temperature=0)
            return [0] * out["usage"]["completion_tokens"]

        return Backend(name, LlamacppProvider(llm), llama_greedy, llm.reset)
    if name == "transformers":
        import torch
        from transformers.utils import logging

        from backtrack_sampler.models import load_transformers
        from backtrack_sampler.provider.transformers_provider import TransformersProvider

        logging.disable_progress_bar()
        hf_model, tokenizer = load_transformers(model)
        provider = TransformersProvider(hf_model, tokenizer)

        def hf_greedy(tokens: list[int], n: int) -> list[int]:
            ids = torch.tensor([tokens])
            with torch.inference_mode():
                out = hf_model.generate(
                    ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, do_sample=False, pad_token_id=0
                )
            return out[0, len(tokens) :].tolist()

        return Backend(name, provider, hf_greedy, lambda: provider.rewind(0))
    raise ValueError(f"backend must be one of {BACKENDS}, got {name!r}")


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A markdown table (numbers right-aligned)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---:" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)
