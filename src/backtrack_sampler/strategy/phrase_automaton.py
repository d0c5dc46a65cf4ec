"""An Aho-Corasick automaton over many keys, stepped one symbol at a time, in compact arrays.

Per symbol the cost is one dictionary lookup once the transition was seen
(transitions are cached as they are computed), whatever the number of keys,
and the state says whether any key could still be completed from the text
fed so far (``state != 0``): that is what a strategy must hold back.

Layout: states are numbered in breadth-first order, so the children of a
state are consecutive numbers, sorted by symbol. For 50,000 phrases of about
20 characters (about 550,000 states) the arrays take some 11 MB and the
build takes a second or two.
"""

from __future__ import annotations

from array import array
from bisect import bisect_left
from collections.abc import Iterator, Sequence

SHIFT = 21
"""Code points are < 2**21: the key of a transition in ``moves`` is ``state << SHIFT | symbol``."""
_CACHE_LIMIT = 1 << 18  # transitions cached (some 25 MB at most); past it, a miss costs a few bisections


class PhraseAutomaton:
    """Finds every key ending at each symbol fed.

    Args:
        keys: non-empty strings; a key's index identifies it in reports (the
            same text may appear under several indices).

    State 0 is the root (no key prefix open). ``step(state, symbol)`` gives
    the next state for a symbol (a code point); ``ends(state)`` yields the
    indices of the keys that end there; ``key_length[i]`` is ``len(keys[i])``.
    For hot loops, ``moves`` caches each transition seen as
    ``state << SHIFT | symbol -> target << 1 | (1 if a key ends at target)``,
    and ``move`` computes (and caches) one that is missing.

    Example:
        >>> automaton = PhraseAutomaton(["he", "she", "hers"])
        >>> state = 0
        >>> for char in "ushers":
        ...     state = automaton.step(state, ord(char))
        ...     print(char, sorted(automaton.ends(state)))
        u []
        s []
        h []
        e [0, 1]
        r []
        s [2]
    """

    def __init__(self, keys: Sequence[str]) -> None:
        for i, key in enumerate(keys):
            if not isinstance(key, str) or not key:
                raise ValueError(f"keys[{i}] must be a non-empty string, got {key!r}")
        self.key_length = [len(key) for key in keys]
        order = sorted(range(len(keys)), key=keys.__getitem__)
        sorted_keys = [keys[i] for i in order]
        self._symbol = array("I", [0])  # the symbol on the edge into each state
        self._first_child = array("I")  # children of s: _first_child[s] .. _first_child[s + 1] - 1
        self._ends: dict[int, tuple[int, ...]] = {}  # state -> indices of the keys ending exactly there
        self._build_trie(sorted_keys, order)
        self._fail = array("I", bytes(4 * len(self)))
        self._report = array("I", bytes(4 * len(self)))  # nearest state on the suffix chain with ends, or 0
        self._build_links()
        self.moves: dict[int, int] = {}

    def __len__(self) -> int:
        """Number of states."""
        return len(self._symbol)

    def _build_trie(self, keys: list[str], order: list[int]) -> None:
        # Each state stands for the run keys[lo:hi] of sorted keys sharing its prefix.
        lo, hi, depth = array("I", [0]), array("I", [len(keys)]), array("I", [0])
        symbol, first_child, ends = self._symbol, self._first_child, self._ends
        state = 0
        while state < len(symbol):
            i, end, d = lo[state], hi[state], depth[state]
            first_child.append(len(symbol))
            while i < end and len(keys[i]) == d:  # shorter keys sort first
                ends[state] = (*ends.get(state, ()), order[i])
                i += 1
            while i < end:
                char = keys[i][d]
                j = i + 1
                while j < end and keys[j][d] == char:
                    j += 1
                symbol.append(ord(char))
                lo.append(i)
                hi.append(j)
                depth.append(d + 1)
                i = j
            state += 1
        first_child.append(len(symbol))

    def _build_links(self) -> None:
        symbol, first_child, fail, report, ends = self._symbol, self._first_child, self._fail, self._report, self._ends
        for state in range(len(symbol)):  # breadth-first: a parent's failure link is settled before its children's
            for child in range(first_child[state], first_child[state + 1]):
                target = 0 if state == 0 else self._goto(fail[state], symbol[child])
                fail[child] = target
                report[child] = child if child in ends else report[target]

    def _child(self, state: int, symbol: int) -> int:
        lo, hi = self._first_child[state], self._first_child[state + 1]
        i = bisect_left(self._symbol, symbol, lo, hi)
        return i if i < hi and self._symbol[i] == symbol else 0

    def _goto(self, state: int, symbol: int) -> int:
        while True:
            child = self._child(state, symbol)
            if child or state == 0:
                return child
            state = self._fail[state]

    def step(self, state: int, symbol: int) -> int:
        """The state after feeding ``symbol`` (a code point) in ``state``."""
        packed = self.moves.get(state << SHIFT | symbol)
        return (packed if packed is not None else self.move(state, symbol)) >> 1

    def move(self, state: int, symbol: int) -> int:
        """``target << 1 | (1 if a key ends at target)`` for ``symbol`` fed in ``state``; cached in ``moves``."""
        target = self._goto(state, symbol)
        packed = target << 1 | (self._report[target] != 0)
        if len(self.moves) < _CACHE_LIMIT:
            self.moves[state << SHIFT | symbol] = packed
        return packed

    def ends(self, state: int) -> Iterator[int]:
        """Indices of every key that ends at ``state`` (the longest first)."""
        report, fail, ends = self._report, self._fail, self._ends
        found = report[state]
        while found:
            yield from ends[found]
            found = report[fail[found]]

    def has_ends(self, state: int) -> bool:
        """Whether any key ends at ``state``."""
        return self._report[state] != 0
