"""The longest suffix of a growing sequence that already occurred earlier in it (what LoopGuard watches).

Example:
    >>> index = RepeatIndex()
    >>> [index.append(unit) for unit in "abcxabc"]
    [0, 0, 0, 0, 1, 2, 3]
    >>> index.truncate(5)
    >>> index.longest[-1]
    1
"""

from __future__ import annotations

from collections.abc import Hashable


class RepeatIndex:
    """Units appended one by one; after each, the length of the longest suffix that also ends earlier.

    An occurrence may overlap the suffix (``a a a`` repeats ``a a``). A unit
    ``None`` is a break: it matches nothing, so no repeat runs across it.

    The suffix lengths are kept per earlier end point and extended by one at
    each step (the common-suffix recurrence), so ``append`` costs the number
    of earlier occurrences of the new unit, not a rescan of the sequence;
    ``truncate`` drops the latest units in O(units dropped).

    Attributes:
        longest: for each unit, the length of the longest suffix ending at it
            that also ends at an earlier unit (0: the unit is new there).
    """

    def __init__(self) -> None:
        self.units: list[Hashable | None] = []
        self.longest: list[int] = []
        self._ends: dict[Hashable, list[int]] = {}  # unit -> the indices where it occurs, in order
        self._matches: list[dict[int, int]] = []  # per unit: earlier end index -> common suffix length

    def __len__(self) -> int:
        return len(self.units)

    def append(self, unit: Hashable | None) -> int:
        """Add ``unit``; return the length of the longest suffix that also ends earlier (0 if none)."""
        index = len(self.units)
        matches: dict[int, int] = {}
        if unit is not None:
            previous = self._matches[-1] if self._matches else {}
            ends = self._ends.setdefault(unit, [])
            matches = {end: previous.get(end - 1, 0) + 1 for end in ends}
            ends.append(index)
        self.units.append(unit)
        self._matches.append(matches)
        longest = max(matches.values(), default=0)
        self.longest.append(longest)
        return longest

    def truncate(self, n_units: int) -> None:
        """Keep the first ``n_units`` units."""
        while len(self.units) > n_units:
            unit = self.units.pop()
            if unit is not None:
                self._ends[unit].pop()
            self._matches.pop()
            self.longest.pop()
