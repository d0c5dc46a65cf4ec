"""llama.cpp's own log lines stay off stderr unless asked for (``--verbose``).

llama-cpp-python reads ggml's log levels by an older numbering, so its warnings
(on Gemma 3: ``llama_kv_cache_iswa: using full-size SWA cache (...)``) reached
stderr on every ``generate`` although nothing else of llama.cpp did.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.llamacpp


def generate(model, *extra: str) -> subprocess.CompletedProcess:
    args = [
        "generate",
        "Once upon a time",
        "--raw",
        "--model",
        str(model),
        "--max-new-tokens",
        "2",
        "--temperature",
        "0",
    ]
    return subprocess.run(
        [sys.executable, "-m", "backtrack_sampler", *args, *extra],
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONIOENCODING="utf-8"),
        timeout=300,
    )


@pytest.mark.parametrize("model", ["smollm2", "gemma3"])
def test_only_our_own_lines_reach_stderr_and_verbose_shows_llama_cpp(model, smollm_path):
    from conftest import gemma_gguf

    path = smollm_path if model == "smollm2" else gemma_gguf()
    quiet = generate(path)
    assert quiet.returncode == 0, quiet.stderr
    ours = ("sampling: ", "finished (")  # the sampling defaults that applied, and the summary
    assert quiet.stderr.splitlines() and all(line.startswith(ours) for line in quiet.stderr.splitlines())
    loud = generate(path, "--verbose")
    assert loud.returncode == 0, loud.stderr[-2000:]
    assert "llama_model_loader" in loud.stderr or "llama_context" in loud.stderr
    if model == "gemma3":
        assert "using full-size SWA cache" in loud.stderr
