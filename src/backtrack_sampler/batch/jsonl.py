"""Crash-safe JSONL files: whole lines appended with ``fsync`` (``JsonlAppender``), a partial last line cut off."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from backtrack_sampler.batch.errors import BatchError


class JsonlAppender:
    """Appends whole JSON lines, each with one ``write`` and an ``fsync``: a kill leaves at most a partial last line."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def append(self, record: dict[str, Any]) -> None:
        data = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
        os.fsync(self._fd)

    def close(self) -> None:
        os.close(self._fd)


def recover_jsonl(path: Path) -> list[dict[str, Any]]:
    """The records of a JSONL file written by ``JsonlAppender``, after cutting a partial last line off the file."""
    if not path.exists():
        return []
    with path.open("rb+") as handle:
        data = handle.read()
        end = data.rfind(b"\n") + 1
        if end < len(data):
            handle.truncate(end)
            handle.flush()
            os.fsync(handle.fileno())
    records = []
    for number, raw in enumerate(data[:end].splitlines(), 1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
        except ValueError:
            raise BatchError(f"{path}: line {number} is not JSON; the file was not written by this command") from None
        if not isinstance(record, dict):
            raise BatchError(f"{path}: line {number} is not a JSON object")
        records.append(record)
    return records


def rewrite_jsonl(path: Path, records: Sequence[dict[str, Any]]) -> None:
    """Replace ``path`` by ``records`` atomically (write a temporary file, fsync, rename)."""
    temporary = path.with_name(path.name + ".tmp")
    with temporary.open("w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
