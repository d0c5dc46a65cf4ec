"""What can go wrong in a batch run: ``BatchError`` stops it, ``LineError`` becomes an error record."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

# Errors keyed by input line (the line has no usable id of its own); every other record is keyed by id.
LINE_ERRORS = ("invalid_line", "duplicate_id")


class BatchError(Exception):
    """A problem that stops the whole run (unreadable files, an unreachable server); nothing is lost.

    ``path`` is the file at fault, when one is (so a front end can name the argument that gave it).
    """

    def __init__(self, message: str, path: str | os.PathLike[str] | None = None) -> None:
        super().__init__(message)
        self.path = Path(path) if path is not None else None


class SettingsError(BatchError):
    """The command does not fit its output or its model; found before anything is written: change the command.

    A prompt mode other than the one the output was begun with, or prompts for
    a chat template the model lacks. Running again unchanged fails again.
    """


class LineError(Exception):
    """A line that cannot run: reported in the output with ``kind`` and the run goes on.

    Only checks of the input raise it, all before the line's first token:
    an error during the generation itself is a bug, and stops the run.
    """

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def error_record(job_id: Any, line: int, kind: str, message: str) -> dict[str, Any]:
    """The output record of a line that could not run."""
    return {"id": job_id, "line": line, "error": {"type": kind, "message": message}}
