"""The handle shared by a request (event loop) and its generation (worker thread)."""

from __future__ import annotations

import threading


class JobControl:
    """Cancellation and progress of one request's generation.

    The event loop calls ``cancel`` (client gone); the generation checks
    ``cancelled`` after every sampled token and stops there. The choices of
    one request share it, possibly from several threads at once.

    Attributes:
        tokens_sampled: tokens sampled so far (rewound ones included), all choices together.
        tokens_at_cancel: ``tokens_sampled`` when ``cancel`` was first called, else ``None``.
    """

    def __init__(self) -> None:
        self._cancelled = threading.Event()
        self._lock = threading.Lock()
        self.tokens_sampled = 0
        self.tokens_at_cancel: int | None = None

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def cancel(self) -> None:
        with self._lock:
            if not self._cancelled.is_set():
                self.tokens_at_cancel = self.tokens_sampled
                self._cancelled.set()

    def count_token(self) -> None:
        """One more token sampled (by any choice)."""
        with self._lock:
            self.tokens_sampled += 1

    @property
    def tokens_after_cancel(self) -> int | None:
        """Tokens sampled after ``cancel``: 0 or 1 when the generation stopped within a token."""
        if self.tokens_at_cancel is None:
            return None
        return self.tokens_sampled - self.tokens_at_cancel
