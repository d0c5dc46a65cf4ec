"""Saved KV states of earlier sequences, so a prompt that continues one of them skips its prefill.

A provider holds one KV cache. When several clients take turns on it (a
server, or a remote provider stepping many sequences through it), each new
request would otherwise re-evaluate its whole prefix. Before the provider
leaves a sequence it saves the state here; a later prompt that shares a longer
prefix with a saved state than with the live cache restores it instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

MIN_GAIN = 16  # positions: below this a restore saves less than it costs


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the longest common prefix of two token sequences."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


@dataclass(frozen=True)
class Snapshot:
    """A saved KV state: the tokens it holds, the backend's blob, and the blob's size in bytes."""

    tokens: tuple[int, ...]
    blob: Any
    size: int


class KVSnapshots:
    """Least-recently-used store of KV states, bounded by count and by bytes.

    Args:
        max_count: the most states kept (at least 1).
        max_bytes: the most bytes all kept states may take together.
    """

    def __init__(self, max_count: int, max_bytes: int = 512 << 20) -> None:
        if max_count < 1:
            raise ValueError(f"max_count must be at least 1, got {max_count}")
        if max_bytes < 1:
            raise ValueError(f"max_bytes must be at least 1, got {max_bytes}")
        self.max_count = max_count
        self.max_bytes = max_bytes
        self._items: list[Snapshot] = []  # oldest first
        self.restores = 0

    def __len__(self) -> int:
        return len(self._items)

    @property
    def bytes(self) -> int:
        return sum(s.size for s in self._items)

    def best(self, tokens: Sequence[int]) -> tuple[Snapshot, int] | None:
        """The state sharing the longest prefix with ``tokens``, and that length (``None`` when empty)."""
        found: tuple[Snapshot, int] | None = None
        for snapshot in self._items:
            n = common_prefix(snapshot.tokens, tokens)
            if found is None or n > found[1]:
                found = (snapshot, n)
        return found

    def covers(self, tokens: Sequence[int]) -> bool:
        """Whether a kept state already holds ``tokens`` (or more after them)."""
        wanted = tuple(tokens)
        return any(s.tokens[: len(wanted)] == wanted for s in self._items)

    def add(self, tokens: Sequence[int], blob: Any, size: int) -> None:
        """Keep a state; states whose tokens it extends are dropped, then the oldest beyond the bounds."""
        new = Snapshot(tuple(tokens), blob, size)
        self._items = [s for s in self._items if s.tokens != new.tokens[: len(s.tokens)]]
        self._items.append(new)
        while len(self._items) > self.max_count or (len(self._items) > 1 and self.bytes > self.max_bytes):
            self._items.pop(0)
        if self.bytes > self.max_bytes:  # a single state larger than the budget
            self._items.clear()

    def discard(self, snapshot: Snapshot) -> None:
        """Forget a state."""
        self._items.remove(snapshot)

    def keep(self, snapshot: Snapshot) -> None:
        """Keep a state again, as the most recently used."""
        self._items.append(snapshot)
