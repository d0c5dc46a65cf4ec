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
"""

from __future__ import annotations

import re
import threading
import weakref
from bisect import bisect_left
from collections.abc import Iterable, Sequence

import numpy as np

from backtrack_sampler.core.vocabulary import Vocabulary
from backtrack_sampler.strategy.json_prefix import STRING, JsonState, advance, can_end, step

_STRING_SAFE = re.compile(r'[^"\\\x00-\x1f]*')
_BY_PROVIDER: weakref.WeakKeyDictionary[Vocabulary, JsonTokenMask] = weakref.WeakKeyDictionary()
_BY_PROVIDER_LOCK = threading.Lock()


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
            mask = self._compute(state)
            mask.flags.writeable = False
            with self._lock:
                if len(self._cache) >= self.cache_size:
                    del self._cache[next(iter(self._cache))]
                self._cache[state] = mask
        return mask

    def _compute(self, state: JsonState) -> np.ndarray:
        if state.mode == STRING:
            mask = self._string_safe.copy()
            for token, start in self._string_exits:
                text = self.texts[token]
                mask[token] = advance(state, text[start:])[1] == len(text) - start
        else:
            mask = np.zeros(self.vocab_size, dtype=bool)
            mask[self._order[self._walk(state)]] = True
        mask[self.eos] = can_end(state)
        return mask

    def _walk(self, state: JsonState) -> list[int]:
        """Indices into the sorted texts of every token whose whole text may follow ``state``."""
        texts = self._sorted
        valid: list[int] = []
        pending = [(0, 0, len(texts), state)]  # (prefix length, lo, hi, state after the prefix)
        while pending:
            length, lo, hi, current = pending.pop()
            i = lo
            while i < hi and len(texts[i]) == length:  # tokens that end at this prefix
                valid.append(i)
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
