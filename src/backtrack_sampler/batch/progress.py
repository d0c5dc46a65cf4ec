"""The progress line of a batch run on stderr (``Progress``): done / total, tokens/s, rewinds, errors."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, TextIO


@dataclass
class Progress:
    """The progress line on stderr: done / total, tokens/s, rewinds, errors.

    On a terminal the line is redrawn after every record; elsewhere (a log
    file) it is written at most every 5 seconds, and once at the end.
    """

    total: int
    done: int
    out: TextIO | None
    tokens: int = 0
    rewinds: int = 0
    errors: int = 0
    started: float = field(default_factory=time.monotonic)
    _last: float = 0.0

    def add(self, record: dict[str, Any]) -> None:
        self.done += 1
        if "error" in record:
            self.errors += 1
        else:
            self.tokens += record["stats"]["tokens_emitted"]
            self.rewinds += record["stats"]["rewinds"]
        self.show()

    def line(self) -> str:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        return (
            f"[batch] {self.done}/{self.total} done | {self.tokens / elapsed:.1f} tokens/s | "
            f"{self.rewinds} rewinds | {self.errors} errors"
        )

    def show(self, final: bool = False) -> None:
        if self.out is None:
            return
        tty = getattr(self.out, "isatty", lambda: False)()
        now = time.monotonic()
        if tty:
            self.out.write("\r\033[K" + self.line() + ("\n" if final else ""))
        elif final or now - self._last >= 5:
            self.out.write(self.line() + "\n")
            self._last = now
        self.out.flush()
