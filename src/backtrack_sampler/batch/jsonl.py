"""Crash-safe JSONL files: whole lines appended with ``fsync`` (``JsonlAppender``), a partial last line cut off.

Every ``OSError`` (a read-only file system, a full disk, a directory or a
device where a file was expected) becomes a ``BatchError`` that names the file;
a file that this command did not write is refused before anything in it
changes. Only regular files are opened (``/dev/full`` would be read forever),
and they are read a line at a time (``core.text_files``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from backtrack_sampler.batch.errors import BatchError
from backtrack_sampler.core.text_files import open_regular, read_lines


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
            self._fd = open_regular(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)

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
    records, tail = [], None
    with _file_errors(path, "read"):
        try:
            for line in read_lines(path):  # a line at a time: the file may be large
                if not line.ended:
                    tail = line
                    break
                record = _record(path, line.number, line.data, required)
                if record is not None:
                    records.append(record)
        except FileNotFoundError:
            return []
    if tail is not None:
        if tail.data.strip() and not tail.data.lstrip().startswith(b"{"):  # not a record cut short: someone's text
            message = f"{path}: line {tail.number} is not JSON; the file was not written by this command"
            raise BatchError(message, path=path)
        with _file_errors(path, "repair"):
            fd = open_regular(path, os.O_WRONLY)
            try:
                os.ftruncate(fd, tail.offset)
                os.fsync(fd)
            finally:
                os.close(fd)
    return records


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
            fd = open_regular(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
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
