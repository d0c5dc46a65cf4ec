"""Crash-safe JSONL files: whole lines appended with ``fsync`` (``JsonlAppender``), a partial last line cut off.

Every ``OSError`` (a read-only file system, a full disk, a directory where a
file was expected) becomes a ``BatchError`` that names the file; a file that
this command did not write is refused before anything in it changes.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from backtrack_sampler.batch.errors import BatchError


@contextmanager
def _file_errors(path: Path, action: str) -> Iterator[None]:
    """Turn an ``OSError`` on ``path`` into a ``BatchError``: ``cannot write 'out.jsonl': Read-only file system``."""
    try:
        yield
    except OSError as exc:
        raise BatchError(f"cannot {action} {str(path)!r}: {exc.strerror or exc}", path=path) from None


class JsonlAppender:
    """Appends whole JSON lines, each with one ``write`` and an ``fsync``: a kill leaves at most a partial last line."""

    def __init__(self, path: Path) -> None:
        self.path = path
        with _file_errors(path, "write"):
            self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def append(self, record: dict[str, Any]) -> None:
        data = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
        view = memoryview(data)
        with _file_errors(self.path, "write"):
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
            os.fsync(self._fd)

    def close(self) -> None:
        os.close(self._fd)


def recover_jsonl(path: Path, required: Sequence[str] = ()) -> list[dict[str, Any]]:
    """The records of a JSONL file written by ``JsonlAppender``, after cutting a partial last line off the file.

    Args:
        path: the file (missing: no records).
        required: keys every record of this kind has; a record without one
            means the file holds something else.

    Raises:
        BatchError: the file cannot be read or repaired, or it was not written
            by this command (a line that is not a JSON object with the
            ``required`` keys, or a last line that is not the start of one);
            the file is left as it was.
    """
    with _file_errors(path, "read"):
        if not path.exists():
            return []
        data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    records = [_record(path, number, raw, required) for number, raw in enumerate(data[:end].splitlines(), 1)]
    tail = data[end:]
    if tail:
        if tail.strip() and not tail.lstrip().startswith(b"{"):  # not a record cut short: someone else's text
            number = data[:end].count(b"\n") + 1
            raise BatchError(f"{path}: line {number} is not JSON; the file was not written by this command", path=path)
        with _file_errors(path, "repair"):
            fd = os.open(path, os.O_WRONLY)
            try:
                os.ftruncate(fd, end)
                os.fsync(fd)
            finally:
                os.close(fd)
    return [record for record in records if record is not None]


def _record(path: Path, number: int, raw: bytes, required: Sequence[str]) -> dict[str, Any] | None:
    """One complete line of ``path`` as a record (``None`` for a blank line)."""
    if not raw.strip():
        return None
    try:
        record = json.loads(raw)
    except ValueError:
        raise BatchError(
            f"{path}: line {number} is not JSON; the file was not written by this command", path=path
        ) from None
    if not isinstance(record, dict):
        raise BatchError(f"{path}: line {number} is not a JSON object", path=path)
    missing = [key for key in required if key not in record]
    if missing:
        raise BatchError(
            f"{path}: line {number} has no {missing[0]!r}; the file was not written by this command", path=path
        )
    return record


def rewrite_jsonl(path: Path, records: Sequence[dict[str, Any]]) -> None:
    """Replace ``path`` by ``records`` atomically (write a temporary file, fsync, rename)."""
    temporary = path.with_name(path.name + ".tmp")
    data = "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records).encode("utf-8")
    with _file_errors(path, "write"):
        try:
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(temporary, path)
        except OSError:
            temporary.unlink(missing_ok=True)
            raise
