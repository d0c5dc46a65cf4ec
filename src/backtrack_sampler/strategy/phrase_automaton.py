"""An Aho-Corasick automaton over phrases, stepped one character at a time.

Per character the cost is O(1) amortized, whatever the number of phrases,
and the state says how much of the text could still grow into a phrase
(``depth``), which is exactly what a strategy must hold back.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence


class PhraseAutomaton:
    """Matches any of ``phrases`` ending at each character fed.

    Args:
        phrases: non-empty strings.
        ignore_case: fold case (``str.casefold``) on phrases and on fed text.

    State 0 is the root. ``step(state, char)`` returns the next state;
    ``longest_match[state]`` is the length (in folded characters) of the
    longest phrase ending there (0 if none), ``depth[state]`` the length of
    the longest phrase prefix that ends there.
    """

    def __init__(self, phrases: Sequence[str], ignore_case: bool = True) -> None:
        self.ignore_case = ignore_case
        self._goto: list[dict[str, int]] = [{}]
        self.depth: list[int] = [0]
        self.longest_match: list[int] = [0]
        self.phrase_at: list[str | None] = [None]
        for phrase in phrases:
            node = 0
            for char in self.fold(phrase):
                child = self._goto[node].get(char)
                if child is None:
                    child = len(self._goto)
                    self._goto[node][char] = child
                    self._goto.append({})
                    self.depth.append(self.depth[node] + 1)
                    self.longest_match.append(0)
                    self.phrase_at.append(None)
                node = child
            self.longest_match[node] = self.depth[node]
            self.phrase_at[node] = phrase
        self._fail = [0] * len(self._goto)
        queue = deque(self._goto[0].values())
        while queue:  # breadth-first: a node's failure link is settled before its children's
            node = queue.popleft()
            for char, child in self._goto[node].items():
                fail = self._fail[node]
                while fail and char not in self._goto[fail]:
                    fail = self._fail[fail]
                target = self._goto[fail].get(char, 0)
                self._fail[child] = target if target != child else 0
                if self.longest_match[child] == 0:
                    self.longest_match[child] = self.longest_match[self._fail[child]]
                    self.phrase_at[child] = self.phrase_at[self._fail[child]]
                queue.append(child)

    def __len__(self) -> int:
        """Number of states."""
        return len(self._goto)

    def fold(self, text: str) -> str:
        return text.casefold() if self.ignore_case else text

    def step(self, state: int, char: str) -> int:
        """The state after feeding one (already folded) character."""
        goto, fail = self._goto, self._fail
        while True:
            child = goto[state].get(char)
            if child is not None:
                return child
            if state == 0:
                return 0
            state = fail[state]
