"""The standard streams when they are closed, full or gone: one ``error:`` line where one can go, never a traceback.

``guarded_streams`` surrounds every command (``main``):

- A standard descriptor that is closed (``<&-``, ``>&-``, ``2>&-``) gets
  ``/dev/null``, so no file the command opens later takes its number (llama.cpp
  writes its log to descriptor 2: it would land in the output file).
- stdout carries what the command makes (the generated text, the tables): a
  write that fails there (closed, ``/dev/full``, the reader gone) raises
  ``StdoutError``, which ``main`` turns into one line on stderr and exit status
  1 (without the line when the reader went away: ``| head``).
- stderr carries diagnostics, written on a best-effort basis: when it is closed
  or a write fails, they are dropped and the command goes on.
- stdin stays ``None`` when closed; the commands that read it say so.
"""

from __future__ import annotations

import errno
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TextIO


class StdoutError(Exception):
    """A write to stdout failed: the command's output is lost (exit status 1).

    Not an ``OSError``, so no handler meant for files takes it for one.
    """

    def __init__(self, error: OSError) -> None:
        self.errno = error.errno
        super().__init__(f"cannot write to stdout: {error.strerror or error}")


class _Stdout:
    """stdout whose failures are ``StdoutError``s; everything else is the stream's own."""

    def __init__(self, stream: TextIO | None) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        if self._stream is None:
            raise StdoutError(OSError(errno.EBADF, "it is closed"))
        try:
            return self._stream.write(text)
        except OSError as exc:
            raise StdoutError(exc) from None

    def flush(self) -> None:
        if self._stream is None:
            return
        try:
            self._stream.flush()
        except OSError as exc:
            raise StdoutError(exc) from None

    def isatty(self) -> bool:
        return self._stream is not None and self._stream.isatty()

    def __getattr__(self, name: str) -> Any:
        if self._stream is None:
            raise AttributeError(f"stdout is closed: no {name}")
        return getattr(self._stream, name)


class _Diagnostics:
    """stderr on a best-effort basis: closed or failing, what is written is dropped."""

    def __init__(self, stream: TextIO | None) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        if self._stream is not None:
            try:
                self._stream.write(text)
            except (OSError, ValueError):  # ValueError: written after it was closed
                self._drop()
        return len(text)

    def flush(self) -> None:
        if self._stream is not None:
            try:
                self._stream.flush()
            except (OSError, ValueError):
                self._drop()

    def _drop(self) -> None:
        """Stop writing here; what the stream still holds goes to /dev/null when Python flushes it at exit."""
        _to_devnull(self._stream)
        self._stream = None

    def isatty(self) -> bool:
        return self._stream is not None and self._stream.isatty()

    def __getattr__(self, name: str) -> Any:
        if self._stream is None:
            raise AttributeError(f"stderr is closed: no {name}")
        return getattr(self._stream, name)


@contextmanager
def guarded_streams() -> Iterator[None]:
    """Within: ``sys.stdout`` raises ``StdoutError`` when it fails, ``sys.stderr`` never fails (see the docstring)."""
    _reopen_closed_descriptors()
    saved = sys.stdout, sys.stderr
    sys.stdout = _Stdout(sys.stdout)  # type: ignore[assignment]
    sys.stderr = _Diagnostics(sys.stderr)  # type: ignore[assignment]
    try:
        yield
    finally:
        sys.stdout, sys.stderr = saved


def drop_stdout() -> None:
    """After a ``StdoutError``: what stdout still holds goes to /dev/null (Python flushes it at exit)."""
    stream = sys.stdout._stream if isinstance(sys.stdout, _Stdout) else sys.stdout
    _to_devnull(stream)


def diagnostic_stdout() -> None:
    """For a command whose stdout carries only logs (``serve``): a stdout that fails drops them, as stderr does."""
    if isinstance(sys.stdout, _Stdout):
        sys.stdout = _Diagnostics(sys.stdout._stream)  # type: ignore[assignment]


def _to_devnull(stream: TextIO | None) -> None:
    """Point the descriptor under ``stream`` at /dev/null, so that flushing what it buffers cannot fail."""
    try:
        fd = stream.fileno() if stream is not None else -1
    except (OSError, ValueError, AttributeError):  # not a real file (a test's capture), or closed
        return
    if fd in (1, 2):
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, fd)
        os.close(null)


def _reopen_closed_descriptors() -> None:
    """Put /dev/null on each of descriptors 0, 1 and 2 that is closed (``os.open`` takes the lowest free one)."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            opened = os.open(os.devnull, os.O_RDWR)
            if opened != fd:  # a lower one was free after all: leave things as they were
                os.close(opened)
