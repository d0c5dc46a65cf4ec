"""Following a ``PhraseAutomaton`` along the generated text, token by token, through rewinds."""

from __future__ import annotations

from backtrack_sampler.core.context import GenerationContext
from backtrack_sampler.strategy.phrase_automaton import PhraseAutomaton


class PhraseTracker:
    """The automaton state after each generated token, and what must be held back.

    ``feed`` advances over the latest token's characters and returns the
    phrases it completed; ``truncate`` follows a rewind; ``holdback`` is the
    number of trailing tokens after the last boundary where no phrase prefix
    was open. Holding back to that boundary (not just the current open
    prefix) matters: a rewind to any later position restores a state whose
    open prefix starts at or after it, so no match can begin in emitted text.
    """

    def __init__(self, automaton: PhraseAutomaton) -> None:
        self.automaton = automaton
        self.reset()

    def reset(self) -> None:
        self._states: list[int] = []  # automaton state after each token
        self._fed: list[int] = []  # folded characters fed up to each token
        self._origin: list[int] = []  # text offset of the character behind each folded one
        self._closed: list[int] = []  # last boundary c <= i + 1 with no open prefix after token c - 1

    def feed(self, ctx: GenerationContext) -> list[tuple[int, str]]:
        """Advance over the latest token; return ``(start_char, phrase)`` of each match it completed.

        At each character only the longest phrase ending there is reported.
        """
        position = len(ctx.tokens) - 1
        self.truncate(position)  # entries past it remain only after a refused rewind
        state = self._states[-1] if self._states else 0
        automaton, origin = self.automaton, self._origin
        offset = ctx.char_start(position)
        matches = []
        for i, char in enumerate(ctx.text_from(position)):
            for folded in automaton.fold(char):
                origin.append(offset + i)
                state = automaton.step(state, folded)
                length = automaton.longest_match[state]
                if length:
                    matches.append((origin[len(origin) - length], automaton.phrase_at[state]))
        self._states.append(state)
        self._fed.append(len(origin))
        closed = position + 1 if automaton.depth[state] == 0 else (self._closed[-1] if self._closed else 0)
        self._closed.append(closed)
        return matches

    def truncate(self, position: int) -> None:
        """Keep the entries of the first ``position`` tokens."""
        del self._states[position:], self._fed[position:], self._closed[position:]
        del self._origin[self._fed[-1] if self._fed else 0 :]

    def commit_boundary(self, upto: int) -> int:
        """The last boundary <= ``upto`` after which no phrase prefix was open."""
        if len(self.automaton) == 1 or upto == 0:  # no phrases, or nothing to emit
            return upto
        return self._closed[min(upto, len(self._closed)) - 1] if self._closed else 0
