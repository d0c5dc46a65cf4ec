"""Stop strings on the final text: release tokens that cannot begin one, cut the text where one begins."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Protocol


class HasText(Protocol):
    """Anything with the text it adds (a ``TokenRecord``)."""

    text: str


class StopScanner:
    r"""Turn the engine's final tokens into what the client receives, given stop strings.

    Tokens are released whole and in order, except those from the earliest
    character that could begin a stop string on. When a stop string appears,
    the text is cut where it begins: earlier tokens are released, the token in
    which it begins is released with its text shortened (dropped when
    nothing is left), and ``stopped`` becomes true. Text never runs past a stop.

    With ``min_tokens`` (vLLM's meaning), a stop string counts only if it ends
    in token ``min_tokens`` (the first token fed is token 1) or a later one;
    one that ends earlier stays in the text.

    Example:
        >>> scanner = StopScanner(["\n\n"])
        >>> [r.text for r in scanner.feed([Piece("Hi"), Piece("\n")])]
        ['Hi']
        >>> [r.text for r in scanner.feed([Piece("\nBye")])], scanner.stopped
        ([], True)
    """

    def __init__(self, stops: Sequence[str], min_tokens: int = 0) -> None:
        self.stops = [s for s in stops if s]
        self.stopped = False
        self._pending: list = []
        self._min_tokens = min_tokens
        self._fed = 0  # tokens fed so far
        self._released_chars = 0  # characters of the tokens released (they precede the pending ones)
        self._armed_at: int | None = 0 if min_tokens <= 1 else None
        """Where a stop string must end after to count (a character offset), once known."""

    def feed(self, records: Sequence[HasText]) -> list:
        """Add tokens (anything with a ``text``); return those now safe to send, possibly cut."""
        if self.stopped:
            return []
        self._pending.extend(records)
        self._arm(records)
        if not self.stops:
            return self._release(len(self._pending))
        text = "".join(r.text for r in self._pending)
        hits = self._hits(text)
        if hits:
            self.stopped = True
            return self._release_until_char(min(hits))
        return self._release_until_char(self._first_open_char(text), whole_only=True)

    def flush(self) -> list:
        """The tokens still held (the generation ended without a stop string in them)."""
        return [] if self.stopped else self._release(len(self._pending))

    def _arm(self, records: Sequence[HasText]) -> None:
        """Note where token ``min_tokens`` begins once the tokens before it are all fed."""
        if self._armed_at is None and self._fed + len(records) >= self._min_tokens - 1:
            before = self._min_tokens - 1 - self._fed  # of these records, those before token min_tokens
            pending_before = len(self._pending) - len(records) + before
            self._armed_at = self._released_chars + sum(len(r.text) for r in self._pending[:pending_before])
        self._fed += len(records)

    def _hits(self, text: str) -> list[int]:
        """Where stop strings begin in ``text`` (the pending tokens' text), of those that count."""
        if self._armed_at is None:
            return []
        armed = self._armed_at - self._released_chars  # a stop must end after this index of text
        found = (text.find(s, max(0, armed - len(s) + 1)) for s in self.stops)
        return [i for i in found if i >= 0]

    def _first_open_char(self, text: str) -> int:
        """The earliest index from which ``text``'s end could still grow into a stop string."""
        longest = max(len(s) for s in self.stops)
        for start in range(max(0, len(text) - longest + 1), len(text)):
            tail = text[start:]
            if any(s.startswith(tail) for s in self.stops):
                return start
        return len(text)

    def _release_until_char(self, limit: int, whole_only: bool = False) -> list:
        released, chars = [], 0
        for record in self._pending:
            end = chars + len(record.text)
            if end <= limit:
                released.append(record)
            elif not whole_only and chars < limit:
                released.append(dataclasses.replace(record, text=record.text[: limit - chars]))
                break
            else:
                break
            chars = end
        if whole_only:
            del self._pending[: len(released)]
        else:
            self._pending.clear()
        self._released_chars += sum(len(r.text) for r in released)
        return released

    def _release(self, n: int) -> list:
        released = self._pending[:n]
        del self._pending[:n]
        self._released_chars += sum(len(r.text) for r in released)
        return released


@dataclasses.dataclass(frozen=True)
class Piece:
    """A bare text token (for examples and tests)."""

    text: str
