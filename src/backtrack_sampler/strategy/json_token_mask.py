"""Which tokens of a vocabulary can come next in a JSON prefix, computed per automaton state and cached.

A mask for one ``JsonState`` says, for every token id, whether the token's
text keeps the output a JSON prefix. Computing it never runs the automaton
over the whole vocabulary:

- Inside a string, a token made only of characters a string holds raw is
  valid whatever the state (a vectorised test); only the few tokens whose
  first other character is a quote or a backslash are run through the
  automaton.
- Elsewhere the token texts, sorted, form an implicit trie (a prefix is a
  contiguous range, found by bisection): a depth-first walk feeds each
  distinct next character once per branch and drops a whole branch at its
  first impossible character, so it visits only the few branches that stay
  valid.

Masks are cached by state; a generation meets few distinct states (the same
state recurs at every value of a flat object, say), so most steps are one
dictionary look-up.

Beside each mask the same walk gives each allowed token's *closing cost*: the
length of the shortest text that would close the document after that token
(``len(completion(...))``), so a generation near its token limit can keep only
the tokens it still has room to close after (``ClosingCosts``).
"""

from __future__ import annotations

import re
import threading
import weakref
from bisect import bisect_left
from collections.abc import Iterable, Sequence
from typing import NamedTuple

import numpy as np

from backtrack_sampler.core.vocabulary import Vocabulary
from backtrack_sampler.strategy.json_prefix import STRING, JsonState, advance, can_end, completion, step

_STRING_SAFE = re.compile(r'[^"\\\x00-\x1f]*')
_BY_PROVIDER: weakref.WeakKeyDictionary[Vocabulary, JsonTokenMask] = weakref.WeakKeyDictionary()
_BY_PROVIDER_LOCK = threading.Lock()


class ClosingCosts(NamedTuple):
    """Per allowed token of one state: the characters that would still close the document after it.

    Every allowed token costs ``default`` except the tokens ``ids``, which cost
    ``costs`` (EOS, allowed only on a complete document, costs 0). Characters
    count tokens from above: closing is spelled one character per token.
    """

    default: int
    ids: np.ndarray  # int64 token ids
    costs: np.ndarray  # int64, aligned with ids
    most: int  # the largest cost of any allowed token

    def over(self, allowed: np.ndarray, budget: int) -> np.ndarray:
        """Boolean array of shape (vocab,): the allowed tokens that would leave more than ``budget`` to close."""
        too_far = allowed.copy() if self.default > budget else np.zeros_like(allowed)
        too_far[self.ids] = self.costs > budget
        return too_far


class JsonTokenMask:
    """Masks of the tokens that may come next, per ``JsonState``, over one vocabulary.

    Args:
        texts: the text of every token id (invalid UTF-8 decoded as U+FFFD,
            which, like any non-ASCII character, is valid only inside a string).
        eos_token_ids: ids allowed exactly when the document is complete.
        cache_size: the most masks kept (each is ``len(texts)`` bytes).

    Tokens with empty text other than EOS (control tokens) are never allowed:
    they add nothing to the document.
    """

    def __init__(self, texts: Sequence[str], eos_token_ids: Iterable[int], cache_size: int = 256) -> None:
        self.vocab_size = len(texts)
        eos = set(eos_token_ids)
        self.eos = np.array(sorted(eos), dtype=np.int64)
        self.texts = list(texts)
        nonempty = [t for t in range(self.vocab_size) if self.texts[t] and t not in eos]
        self._order = np.array(sorted(nonempty, key=self.texts.__getitem__), dtype=np.int64)
        self._sorted = [self.texts[t] for t in self._order]
        self._string_safe = np.zeros(self.vocab_size, dtype=bool)
        self._string_exits: list[tuple[int, int]] = []  # (token, index of its first quote or backslash)
        for token in nonempty:
            text = self.texts[token]
            safe = _STRING_SAFE.match(text).end()
            if safe == len(text):
                self._string_safe[token] = True
            elif text[safe] in '"\\':
                self._string_exits.append((token, safe))
        self.cache_size = cache_size
        self._cache: dict[JsonState, np.ndarray] = {}
        self._costs: dict[JsonState, ClosingCosts] = {}
        self._single: dict[str, int] = {}  # a character -> a token whose whole text it is
        for token in nonempty:
            if len(self.texts[token]) == 1:
                self._single.setdefault(self.texts[token], token)
        self._lock = threading.Lock()  # generations in several threads may share one mask cache

    @classmethod
    def for_provider(cls, provider: Vocabulary) -> JsonTokenMask:
        """The mask cache of ``provider``'s vocabulary, built on first use and shared while the provider lives."""
        with _BY_PROVIDER_LOCK:
            mask = _BY_PROVIDER.get(provider)
            if mask is None:
                texts = [provider.token_bytes(t).decode("utf-8", errors="replace") for t in range(provider.vocab_size)]
                mask = _BY_PROVIDER[provider] = cls(texts, provider.eos_token_ids)
        return mask

    def allowed(self, state: JsonState) -> np.ndarray:
        """Read-only boolean array of shape (vocab,): True for each token that may follow ``state``."""
        mask = self._cache.get(state)
        if mask is None:
            mask = self._fill(state)[0]
        return mask

    def closing_costs(self, state: JsonState) -> ClosingCosts:
        """The closing cost of each token allowed after ``state`` (computed with its mask)."""
        costs = self._costs.get(state)
        if costs is None:
            costs = self._fill(state)[1]
        return costs

    def spell(self, text: str) -> tuple[int, ...] | None:
        """Tokens that spell ``text`` one character each, or ``None`` if a character has no token of its own."""
        tokens = tuple(self._single.get(ch, -1) for ch in text)
        return None if -1 in tokens else tokens

    def _fill(self, state: JsonState) -> tuple[np.ndarray, ClosingCosts]:
        mask, costs = self._compute(state)
        mask.flags.writeable = False
        with self._lock:
            for cache, value in ((self._cache, mask), (self._costs, costs)):
                if len(cache) >= self.cache_size:
                    del cache[next(iter(cache))]
                cache[state] = value
        return mask, costs

    def _compute(self, state: JsonState) -> tuple[np.ndarray, ClosingCosts]:
        ids: list[int] = []
        after: list[JsonState] = []
        if state.mode == STRING:  # a string-safe token leaves the state as it is
            mask = self._string_safe.copy()
            default = len(completion(state))
            for token, start in self._string_exits:
                text = self.texts[token]
                following, accepted = advance(state, text[start:])
                mask[token] = accepted == len(text) - start
                if mask[token]:
                    ids.append(token)
                    after.append(following)
        else:
            mask = np.zeros(self.vocab_size, dtype=bool)
            default = 0
            for index, following in self._walk(state):
                ids.append(int(self._order[index]))
                after.append(following)
            mask[ids] = True
        mask[self.eos] = can_end(state)
        lengths = {s: len(completion(s)) for s in set(after)}
        costs = np.array([lengths[s] for s in after], dtype=np.int64)
        most = max(default if mask.any() else 0, int(costs.max()) if len(costs) else 0)
        return mask, ClosingCosts(default, np.array(ids, dtype=np.int64), costs, most)

    def _walk(self, state: JsonState) -> list[tuple[int, JsonState]]:
        """``(index into the sorted texts, state after it)`` for every token whose whole text may follow ``state``."""
        texts = self._sorted
        valid: list[tuple[int, JsonState]] = []
        pending = [(0, 0, len(texts), state)]  # (prefix length, lo, hi, state after the prefix)
        while pending:
            length, lo, hi, current = pending.pop()
            i = lo
            while i < hi and len(texts[i]) == length:  # tokens that end at this prefix
                valid.append((i, current))
                i += 1
            while i < hi:
                ch = texts[i][length]
                code = ord(ch)
                end = hi if code == 0x10FFFF else bisect_left(texts, texts[i][:length] + chr(code + 1), i, hi)
                following = step(current, ch)
                if following is not None:
                    pending.append((length + 1, i, end, following))
                i = end
        return valid
