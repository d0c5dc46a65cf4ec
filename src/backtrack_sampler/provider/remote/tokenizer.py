"""The local tokenizer of a remote model (``load_tokenizer``): token ids go over the wire, text is made here.

A provider that talks to an engine over HTTP sends token ids (never text the
server would re-tokenize, which moves token boundaries), so it needs the
served model's tokenizer locally. ``load_tokenizer`` accepts:

- a provider (e.g. a ``LlamacppProvider``): its ``encode``/``token_bytes`` are used;
- a path to a ``.gguf`` file: loaded vocabulary-only by llama-cpp-python (fast, no weights);
- a path to a Hugging Face model directory, or a ``transformers`` tokenizer object.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from backtrack_sampler.provider.hf_tokenizer import HFTokenizer


@runtime_checkable
class Tokenizer(Protocol):
    """What a remote provider needs from a tokenizer (every ``BaseProvider`` has it)."""

    eos_token_ids: frozenset[int]

    @property
    def vocab_size(self) -> int: ...

    def encode(self, text: str, add_bos: bool = True) -> list[int]: ...

    def token_bytes(self, token: int) -> bytes: ...

    def apply_chat_template(self, messages: Sequence[dict[str, str]]) -> str: ...


def load_tokenizer(spec: Any) -> Tokenizer:
    """A ``Tokenizer`` from a provider, a ``.gguf`` path, an HF directory or an HF tokenizer object.

    Raises:
        FileNotFoundError: a path that does not exist.
        TypeError: anything else.
    """
    if isinstance(spec, Tokenizer):
        return spec
    if isinstance(spec, (str, os.PathLike)):
        path = Path(spec).expanduser()
        if path.is_file() and path.suffix == ".gguf":
            return _gguf_tokenizer(path)
        if path.is_dir():
            from transformers import AutoTokenizer

            return HFTokenizer(AutoTokenizer.from_pretrained(str(path), local_files_only=True))
        raise FileNotFoundError(f"tokenizer must be a .gguf file or a model directory, got {str(spec)!r}")
    if hasattr(spec, "convert_ids_to_tokens") and hasattr(spec, "all_special_ids"):
        return HFTokenizer(spec)
    raise TypeError(
        "tokenizer must be a provider, a path to a .gguf file or an HF model directory, "
        f"or a transformers tokenizer; got {type(spec).__name__}"
    )


def _gguf_tokenizer(path: Path) -> Tokenizer:
    from llama_cpp import Llama

    from backtrack_sampler.provider.llamacpp_provider import LlamacppProvider

    # vocab_only loads no weights; llama.cpp still wants a (tiny) context.
    with _quiet_stderr():
        llm = Llama(model_path=str(path), vocab_only=True, n_ctx=8, verbose=False)
    tokenizer = LlamacppProvider(llm)
    tokenizer.context_length = None  # the vocabulary-only context says nothing about the served model
    return tokenizer


class _quiet_stderr:  # noqa: N801 - used as a context manager
    """Silence C-level writes to stderr (llama.cpp warns about the tiny context it never uses)."""

    def __enter__(self) -> None:
        import sys

        try:
            self._fd = sys.stderr.fileno()
        except (AttributeError, OSError, ValueError):  # a captured stream without a descriptor
            self._fd = None
            return
        sys.stderr.flush()
        self._saved = os.dup(self._fd)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, self._fd)
        os.close(devnull)

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            os.dup2(self._saved, self._fd)
            os.close(self._saved)
