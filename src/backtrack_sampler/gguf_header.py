"""The metadata of a GGUF file, read from its header (no weights, no llama.cpp): enough to size a context.

``read_metadata`` gives the header's key/value pairs (long arrays such as
the vocabulary are skipped); ``training_context`` and
``kv_bytes_per_position`` read what the memory check of ``models`` needs.
The format: https://github.com/ggml-org/ggml/blob/master/docs/gguf.md
(little-endian; versions 2 and 3).
"""

from __future__ import annotations

import os
import struct
from typing import Any, BinaryIO

MAGIC = b"GGUF"
# value type -> struct format of a scalar
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9
MAX_KEPT_ARRAY = 4096  # longer arrays (the vocabulary, the merges) are skipped, not kept
F16_BYTES = 2  # llama.cpp's default KV cache type
MAX_STRING = 2**30  # a longer string in a header means a damaged file


class _Reader:
    def __init__(self, handle: BinaryIO) -> None:
        self.handle = handle

    def raw(self, size: int) -> bytes:
        if size > MAX_STRING:
            raise ValueError(f"a GGUF header string of {size} bytes: the file is damaged")
        data = self.handle.read(size)
        if len(data) < size:
            raise ValueError("the GGUF header ends early")
        return data

    def scalar(self, kind: int) -> Any:
        fmt = _SCALARS[kind]
        return struct.unpack(fmt, self.raw(struct.calcsize(fmt)))[0]

    def string(self) -> str:
        return self.raw(self.scalar(10)).decode("utf-8", errors="replace")

    def value(self, kind: int) -> Any:
        """A value of type ``kind``; ``None`` for an array too long to keep (skipped)."""
        if kind in _SCALARS:
            return self.scalar(kind)
        if kind == _STRING:
            return self.string()
        if kind != _ARRAY:
            raise ValueError(f"unknown GGUF value type {kind}")
        item, count = self.scalar(4), self.scalar(10)
        if count <= MAX_KEPT_ARRAY:
            return [self.value(item) for _ in range(count)]
        if item in _SCALARS:
            self.handle.seek(count * struct.calcsize(_SCALARS[item]), os.SEEK_CUR)
        else:
            for _ in range(count):
                self.value(item)
        return None


def read_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The key/value pairs of a GGUF header; arrays longer than ``MAX_KEPT_ARRAY`` are ``None``.

    Raises:
        ValueError: not a GGUF file, an unknown version, or a header cut short.
        OSError: the file cannot be read.
    """
    with open(path, "rb") as handle:
        reader = _Reader(handle)
        if reader.raw(4) != MAGIC:
            raise ValueError(f"{os.fspath(path)!r} is not a GGUF file")
        version = reader.scalar(4)
        if version not in (2, 3):
            raise ValueError(f"GGUF version {version} is not supported")
        reader.scalar(10)  # the tensor count
        count = reader.scalar(10)
        metadata = {}
        for _ in range(count):
            key = reader.string()
            metadata[key] = reader.value(reader.scalar(4))
    return metadata


def _get(metadata: dict[str, Any], name: str) -> Any:
    """``{architecture}.{name}``: ``context_length``, ``attention.head_count``..."""
    return metadata.get(f"{metadata.get('general.architecture')}.{name}")


def training_context(metadata: dict[str, Any]) -> int | None:
    """The context length the model was trained with, or ``None`` when the header does not say."""
    value = _get(metadata, "context_length")
    return value if isinstance(value, int) and value > 0 else None


def kv_bytes_per_position(metadata: dict[str, Any]) -> int | None:
    """Bytes of KV cache one position takes in llama.cpp (f16 keys and values, every layer).

    ``None`` when the header lacks the attention shape (a recurrent model,
    whose state does not grow with the context). Per-layer head counts
    (a list) are summed.
    """
    layers, width, heads = (
        _get(metadata, "block_count"),
        _get(metadata, "embedding_length"),
        _get(metadata, "attention.head_count"),
    )
    if not isinstance(layers, int) or not isinstance(width, int) or not heads:
        return None
    kv_heads = _get(metadata, "attention.head_count_kv") or heads
    per_layer_heads = kv_heads if isinstance(kv_heads, list) else [kv_heads] * layers
    first_heads = heads[0] if isinstance(heads, list) else heads
    if not first_heads or not all(isinstance(h, int) for h in per_layer_heads):
        return None
    key_length = _get(metadata, "attention.key_length") or width // first_heads
    value_length = _get(metadata, "attention.value_length") or width // first_heads
    return sum(per_layer_heads) * (key_length + value_length) * F16_BYTES
