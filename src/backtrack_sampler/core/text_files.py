r"""Reading what users give: regular files only, and lines split at line feeds (``\n``) alone.

Every reader of lines (batch inputs and outputs, ban lists, the inputs of
``score`` and ``mine``, a remote engine's event stream) splits them here, so
they all agree on what a line is:

- A line ends at ``\n`` (a ``\r`` before it is dropped), and nowhere else.
  ``str.splitlines`` (and so ``httpx``'s ``iter_lines``) also splits at
  U+2028, U+2029, U+0085, ``\v``, ``\f`` and ``\x1c``-``\x1e``, which
  ``json.dumps(..., ensure_ascii=False)`` writes raw inside strings: a valid
  JSONL line would become several, and every later line number would shift.
- Only a regular file is read or written: a directory, a device, a FIFO or a
  socket is refused before anything is read (``/dev/zero`` never ends, a FIFO
  blocks). A file is read a chunk at a time, never more than a line at once.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

CHUNK_BYTES = 1 << 16
"""How much of a file is read at once."""

_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISSOCK, "a socket"),
)


class NotRegularFileError(OSError):
    """A path names a directory, a device, a FIFO or a socket where a regular file was expected.

    Its ``strerror`` says what it is (``"is a directory"``, ``"not a regular
    file (a character device)"``), so a handler that prints ``exc.strerror``
    needs nothing new.
    """


def what_is_there(path: str | os.PathLike[str]) -> str | None:
    """What ``path`` names when it is not a regular file: ``"a directory"``, ``"a character device"``...

    ``None`` for a regular file (symbolic links followed) or when nothing is there.
    """
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return None
    return _kind(mode)


def _kind(mode: int) -> str | None:
    if stat.S_ISREG(mode):
        return None
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def _refusal(path: str | os.PathLike[str], kind: str) -> NotRegularFileError:
    if kind == "a directory":
        return NotRegularFileError(errno.EISDIR, "is a directory", os.fspath(path))
    return NotRegularFileError(errno.EINVAL, f"not a regular file ({kind})", os.fspath(path))


def open_regular(path: str | os.PathLike[str], flags: int = os.O_RDONLY, mode: int = 0o644) -> int:
    """``os.open(path, flags, mode)``, refusing anything but a regular file (``NotRegularFileError``).

    The file is opened without blocking (a FIFO with no writer would wait
    forever) and checked once open, so what is checked is what is read.
    """
    fd = os.open(path, flags | os.O_NONBLOCK, mode)
    kind = _kind(os.fstat(fd).st_mode)
    if kind is not None:
        os.close(fd)
        raise _refusal(path, kind)
    return fd


def open_binary(path: str | os.PathLike[str]) -> BinaryIO:
    """``path`` opened for reading in binary (``NotRegularFileError`` unless a regular file)."""
    return os.fdopen(open_regular(path), "rb")


def read_text(path: str | os.PathLike[str]) -> str:
    """All of the regular file ``path`` as UTF-8 text (``UnicodeDecodeError`` when it is not)."""
    with open_binary(path) as file:
        return file.read().decode("utf-8")


@dataclass(frozen=True)
class Line:
    """One line of a file or a stream.

    Attributes:
        number: counted from 1.
        offset: where it begins, in bytes from the start.
        data: its bytes, without the line feed that ends it (nor a carriage return before that).
        ended: whether a line feed ends it: only the last line may lack one.
    """

    number: int
    offset: int
    data: bytes
    ended: bool

    def text(self) -> str:
        """The line as UTF-8 text; ``UnicodeDecodeError`` when it is not (add ``offset`` to its ``start``)."""
        return self.data.decode("utf-8")


def read_lines(path: str | os.PathLike[str]) -> Iterator[Line]:
    """The lines of the regular file ``path`` (see ``split_lines``), read ``CHUNK_BYTES`` at a time.

    Raises:
        OSError: the file cannot be opened or read; ``NotRegularFileError``
            when ``path`` is a directory, a device, a FIFO or a socket.
    """
    with open_binary(path) as file:
        yield from split_lines(iter(lambda: file.read(CHUNK_BYTES), b""))


def split_lines(chunks: Iterable[bytes]) -> Iterator[Line]:
    """The lines of a stream of bytes, split at line feeds only; holds a line at a time, never the whole stream.

    A carriage return before the line feed is dropped; a last line with no
    line feed is yielded with ``ended=False``.
    """
    pending = bytearray()
    number = offset = 0  # lines yielded; where ``pending`` begins in the stream
    for chunk in chunks:
        searched = len(pending)  # the line feeds before this were found already
        pending += chunk
        start = 0
        while (end := pending.find(b"\n", max(start, searched))) >= 0:
            number += 1
            yield Line(number, offset + start, _without_cr(bytes(pending[start:end])), True)
            start = end + 1
        del pending[:start]
        offset += start
    if pending:
        yield Line(number + 1, offset, bytes(pending), False)


def _without_cr(data: bytes) -> bytes:
    return data[:-1] if data.endswith(b"\r") else data
