r"""DRY ("Don't Repeat Yourself"): penalize each token that would continue a repeat, as llama.cpp's DRY sampler does.

This is llama.cpp's ``llama_sampler_dry`` (designed by p-e-w for
text-generation-webui, ported from KoboldCpp) step for step, so that the
``dry_*`` fields a SillyTavern or KoboldCpp user sets mean here what they mean
there. Before each sampled position, over the last ``penalty_last_n`` tokens of
the context (the prompt's tokens, then the generated ones):

1. *Restarts.* A sequence breaker is a string; a token whose text contains it
   is a breaker by itself, and a token whose text ends with the start of it
   begins a breaker when the tokens of the rest follow (``restart_sequences``).
   A repeat never runs back across the last breaker in the context: ``limit``
   is the number of tokens after it (no penalty at all when that is below
   ``allowed_length``).
2. *Repeats.* For each earlier position, the length of the longest run ending
   there that also ends the context (overlaps allowed), capped at ``limit``
   (llama.cpp runs the Z-algorithm backwards; here every candidate end is
   extended in step with numpy, which gives the same lengths).
3. *Candidates.* A run of at least ``allowed_length`` tokens ending at a position
   makes the token that followed it there a candidate: emitting it again would
   extend the repeat. Each candidate keeps its longest run.
4. *Penalty.* Each candidate that is not itself a breaker loses
   ``multiplier * base ** (length - allowed_length)`` from its logit, the exponent
   capped so that the penalty stays a finite float32.

The penalty is computed in llama.cpp's precision (float32 parameters, the
power in double, the result rounded to float32), so on float32 logits the
result equals llama.cpp's own DRY bit for bit.
"""

from __future__ import annotations

import math
import threading
import weakref
from collections.abc import Sequence

import numpy as np

from backtrack_sampler.core.base_strategy import BaseStrategy
from backtrack_sampler.core.checks import check_int, check_number
from backtrack_sampler.core.context import GenerationContext
from backtrack_sampler.core.vocabulary import Vocabulary

DEFAULT_SEQUENCE_BREAKERS = ("\n", ":", '"', "*")
"""llama.cpp's (and SillyTavern's) default breakers."""

MAX_BREAKER_BYTES = 40  # llama.cpp keeps the first 40 bytes of a breaker ...
MAX_TAIL_TOKENS = 20  # ... and the first 20 tokens of what follows a head token
FLOAT_MAX_LOG = np.float32(88.7228391)  # about log(float32 max): base ** exponent stays below it


class Restarts:
    """The sequence breakers of one vocabulary as token sequences: a head token, then the tokens that must follow it.

    Args:
        tails: head token -> the tails that complete a breaker after it; ``()`` when the head
            alone is one (its text contains a whole breaker).
        vocab_size: the number of token ids.
    """

    def __init__(self, tails: dict[int, tuple[tuple[int, ...], ...]], vocab_size: int) -> None:
        self.tails = tails
        self.is_head = np.zeros(vocab_size, dtype=bool)  # (vocab,)
        self.is_head[list(tails)] = True
        self.alone = np.zeros(vocab_size, dtype=bool)  # (vocab,): breakers by themselves, never penalized
        self.alone[[token for token, found in tails.items() if () in found]] = True

    def limit(self, window: np.ndarray) -> int:
        """How many tokens at the end of ``window`` follow its last breaker (all of them when none)."""
        end = len(window)
        for pos in np.flatnonzero(self.is_head[window])[::-1]:
            distance = end - 1 - int(pos)  # tokens after the head
            longest = -1
            for tail in self.tails[int(window[pos])]:
                n = len(tail)
                if longest < n <= distance and tuple(window[pos + 1 : pos + 1 + n].tolist()) == tail:
                    longest = n
            if longest >= 0:
                return distance - longest
        return end


def restart_sequences(vocab: Vocabulary, breakers: Sequence[str]) -> Restarts:
    """The token sequences of ``breakers`` in ``vocab``, as llama.cpp's ``get_overlapping_token_sequences`` finds them.

    Every token whose bytes contain a breaker is a breaker alone; a token whose
    bytes end with the breaker's first k bytes (and not the whole) is the head of
    a breaker completed by the tokens of the remaining bytes (at most 20 of
    them). A breaker is cut to its first 40 bytes. Tokens are read by the bytes
    they write (control tokens write none, where llama.cpp reads their names),
    and a rest that does not start on a character boundary is skipped (it has
    no text to encode).
    """
    tails: dict[int, set[tuple[int, ...]]] = {}
    pieces = [vocab.token_bytes(token) for token in range(vocab.vocab_size)]
    for breaker in breakers:
        needle = breaker.encode("utf-8")[:MAX_BREAKER_BYTES]
        rests: dict[int, tuple[int, ...] | None] = {}  # bytes matched -> tokens of the rest
        for token, word in enumerate(pieces):
            if needle in word:
                tails.setdefault(token, set()).add(())
                continue
            pos = word.find(needle[:1])
            while pos >= 0:
                matched = len(word) - pos
                if matched < len(needle) and word[pos:] == needle[:matched]:
                    if matched not in rests:
                        rests[matched] = _encode_rest(vocab, needle[matched:])
                    if rests[matched] is not None:
                        tails.setdefault(token, set()).add(rests[matched])
                pos = word.find(needle[:1], pos + 1)
    return Restarts({token: tuple(sorted(found)) for token, found in tails.items()}, vocab.vocab_size)


def _encode_rest(vocab: Vocabulary, rest: bytes) -> tuple[int, ...] | None:
    try:
        text = rest.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return tuple(vocab.encode(text, add_bos=False)[:MAX_TAIL_TOKENS])


_BY_VOCAB: weakref.WeakKeyDictionary[Vocabulary, dict[tuple[str, ...], Restarts]] = weakref.WeakKeyDictionary()
_BY_VOCAB_LOCK = threading.Lock()


def cached_restarts(vocab: Vocabulary, breakers: tuple[str, ...]) -> Restarts:
    """``restart_sequences``, computed once per vocabulary and list of breakers (it reads the whole vocabulary).

    A vocabulary that cannot be weakly referenced or hashed is read again each time.
    """
    try:
        with _BY_VOCAB_LOCK:
            found = _BY_VOCAB.setdefault(vocab, {}).get(breakers)
    except TypeError:
        return restart_sequences(vocab, breakers)
    if found is None:
        found = restart_sequences(vocab, breakers)
        with _BY_VOCAB_LOCK:
            _BY_VOCAB[vocab][breakers] = found
    return found


def repeat_candidates(window: np.ndarray, allowed_length: int, restarts: Restarts) -> tuple[np.ndarray, np.ndarray]:
    """``(tokens, lengths)``: each token that would extend a repeat of >= ``allowed_length`` tokens, and its longest.

    ``window`` holds the token ids the penalty looks at (int64, oldest first).
    Both results are int64 arrays, ``tokens`` sorted and unique.
    """
    none = np.zeros(0, dtype=np.int64)
    size = len(window)
    if size <= allowed_length:
        return none, none
    limit = restarts.limit(window)
    if limit < allowed_length:
        return none, none
    # lengths[j]: the longest run ending at j that also ends the window, at most `limit`.
    lengths = np.zeros(size - 1, dtype=np.int64)
    ends = np.flatnonzero(window[:-1] == window[-1])
    matched = 0
    while ends.size and matched < limit:
        matched += 1
        lengths[ends] = matched
        ends = ends[ends >= matched]
        ends = ends[window[ends - matched] == window[size - 1 - matched]]
    # The token after each long enough run would extend it; keep each token's longest run.
    long_enough = lengths >= allowed_length
    tokens, runs = window[1:][long_enough], lengths[long_enough]
    order = np.lexsort((runs, tokens))
    tokens, runs = tokens[order], runs[order]
    last = np.r_[tokens[1:] != tokens[:-1], True] if tokens.size else np.zeros(0, dtype=bool)
    return tokens[last], runs[last]


class DryStrategy(BaseStrategy):
    r"""Subtract llama.cpp's DRY penalty from the logits of every token that would continue a repeat; never rewinds.

    The penalty of a token that would make a repeat of the context ``n + 1``
    tokens long (``n >= allowed_length``) is ``multiplier * base ** (n -
    allowed_length)``: it grows with the length of the repeat, so a loop is
    broken before it gets long, while short repeats (names, common phrases of
    ``allowed_length`` tokens or fewer) cost nothing. Repeats do not run across
    sequence breakers, and a breaker token is never penalized. The context is
    the prompt's tokens, then the generated ones (llama.cpp's server feeds its
    DRY the prompt too); the engine's rewinds by other strategies in a chain
    are seen, since the penalty is recomputed from the tokens at each step.
    The module docstring gives the algorithm.

    Args:
        multiplier: the penalty of a repeat one token over ``allowed_length``
            (>= 0; 0 turns DRY off). 0.8 is the usual setting.
        base: how fast the penalty grows with each further token (>= 1).
        allowed_length: the longest repeat that goes unpenalized, in tokens (>= 0).
        sequence_breakers: strings a repeat may not run across (non-empty; each
            cut to its first 40 bytes, as llama.cpp does).
        penalty_last_n: how many of the last tokens of the context are searched:
            -1 the whole context, 0 turns DRY off.

    Example:
        >>> strategy = DryStrategy(multiplier=0.8, base=1.75, allowed_length=2)  # doctest: +SKIP
        >>> sampler = BacktrackSampler(provider, strategy)  # doctest: +SKIP
        >>> sampler.generate_text("Tell me a long story", max_new_tokens=512, seed=1).text  # doctest: +SKIP
    """

    def __init__(
        self,
        multiplier: float,
        base: float = 1.75,
        allowed_length: int = 2,
        sequence_breakers: Sequence[str] = DEFAULT_SEQUENCE_BREAKERS,
        penalty_last_n: int = -1,
    ) -> None:
        check_number("multiplier", multiplier, 0)
        check_number("base", base, 1)
        check_int("allowed_length", allowed_length)
        if isinstance(sequence_breakers, (str, bytes)) or not all(isinstance(b, str) and b for b in sequence_breakers):
            raise ValueError(f"sequence_breakers must be a list of non-empty strings, got {sequence_breakers!r}")
        check_int("penalty_last_n", penalty_last_n, low=-1, hint=" (-1: the whole context, 0: off)")
        # llama.cpp holds both in float32: so do we, for the same penalties.
        self.multiplier = np.float32(multiplier)
        self.base = np.float32(base)
        self.allowed_length = int(allowed_length)
        self.sequence_breakers = tuple(sequence_breakers)
        self.penalty_last_n = int(penalty_last_n)
        # The largest exponent whose power fits a float32 (0: no cap, for a base of 1).
        self.max_exponent = 0
        if self.base > np.float32(1.000001):
            self.max_exponent = int(FLOAT_MAX_LOG / np.float32(math.log(self.base)))
        self._prompt: tuple[object, np.ndarray] | None = None  # (prompt_tokens, as an array)
        self._restarts: tuple[Vocabulary, Restarts] | None = None  # (the vocabulary, its breakers)

    @property
    def enabled(self) -> bool:
        """Whether DRY does anything (llama.cpp's test: a multiplier, and a window)."""
        return self.multiplier != 0 and self.penalty_last_n != 0

    def penalties(self, lengths: np.ndarray) -> np.ndarray:
        """The float32 penalty of each repeat length (``lengths`` >= ``allowed_length``)."""
        exponents = lengths - self.allowed_length
        if self.max_exponent > 0:
            exponents = np.minimum(exponents, self.max_exponent)
        return (np.float64(self.multiplier) * np.float64(self.base) ** exponents).astype(np.float32)

    def window(self, ctx: GenerationContext) -> np.ndarray:
        """The token ids searched for repeats: the last ``penalty_last_n`` of prompt + generated (int64)."""
        if self._prompt is None or self._prompt[0] is not ctx.prompt_tokens:
            self._prompt = (ctx.prompt_tokens, np.asarray(ctx.prompt_tokens, dtype=np.int64))
        tokens = np.concatenate([self._prompt[1], np.asarray(ctx.tokens, dtype=np.int64)])
        return tokens if self.penalty_last_n < 0 else tokens[-self.penalty_last_n :]

    def adjust_logits(self, ctx: GenerationContext, logits: np.ndarray) -> np.ndarray:
        if not self.enabled:
            return logits
        if self._restarts is None or self._restarts[0] is not ctx.provider:
            self._restarts = (ctx.provider, cached_restarts(ctx.provider, self.sequence_breakers))
        restarts = self._restarts[1]
        tokens, lengths = repeat_candidates(self.window(ctx), self.allowed_length, restarts)
        keep = ~restarts.alone[tokens]  # a breaker token is never penalized
        tokens, lengths = tokens[keep], lengths[keep]
        if tokens.size:
            logits[tokens] -= self.penalties(lengths).astype(logits.dtype, copy=False)
        return logits
