"""The strategy the server runs for a request: the request's own strategy, wrapped.

``RequestStrategy`` delegates every hook to the strategy the request asked
for (if any) and adds, in ``adjust_logits`` and ``on_token``:

1. a record of each token: its text, where that text starts, and (when
   logprobs are asked for) its raw log-probability and the top alternatives,
   read from the model's logits before any bias, penalty or strategy;
2. ``logit_bias`` and the presence/frequency penalties, added to the logits
   before the request's strategy sees them;
3. the tokens never to sample, after the request's strategy (it cannot bring
   them back): the ids banned at every position, the end-of-sequence tokens
   with ``ignore_eos``, or before ``min_tokens`` tokens;
4. a ``Stop`` when a stop string appears in the text (from token
   ``min_tokens`` on), when the client went away (``JobControl.cancel``),
   checked after every token, or when the request's strategy raised
   ``ValueError`` (kept in ``failure``).

Like every strategy it only answers decisions; the engine does the rewinding.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from backtrack_sampler.core.context import GenerationContext
from backtrack_sampler.core.decisions import CONTINUE, Decision, Rewind, Stop
from backtrack_sampler.server.control import JobControl
from backtrack_sampler.strategy.base_strategy import BaseStrategy

STOP_STRING = "stop string"
CANCELLED = "cancelled"
FAILED = "failed"


@dataclass(frozen=True)
class TokenRecord:
    """One generated token as the client sees it.

    Attributes:
        token: the token id.
        text: the characters this token completed (the texts of consecutive tokens join into the output).
        offset: where ``text`` starts in the generated text, in characters.
        logprob: its log-probability under the raw model, or ``None`` (not asked, or inserted by a strategy).
        top: the most likely ``(token id, logprob)`` at that position, best first; empty when not asked.
    """

    token: int
    text: str
    offset: int
    logprob: float | None
    top: tuple[tuple[int, float], ...]


class RequestStrategy(BaseStrategy):
    """Wrap ``inner`` (or nothing) with logit bias, penalties, stop strings, cancellation and token records.

    Args:
        inner: the request's strategy, or ``None``.
        control: the request's cancellation flag and counters.
        logit_bias: ``{token id: bias}``, already clamped to [-100, 100].
        presence_penalty: subtracted once from the logits of every token generated so far.
        frequency_penalty: subtracted from them once per use.
        stops: stop strings.
        top_logprobs: how many alternatives to record per token; ``None`` records no logprobs.
        never: token ids never sampled (their logits become -inf).
        ignore_eos: the provider's end-of-sequence tokens are never sampled.
        min_tokens: before this many tokens the end-of-sequence tokens are not sampled, and
            a stop string counts only if it ends in token ``min_tokens`` or later (vLLM's rule).
    """

    def __init__(
        self,
        inner: BaseStrategy | None,
        control: JobControl,
        logit_bias: Mapping[int, float] | None = None,
        presence_penalty: float = 0.0,
        frequency_penalty: float = 0.0,
        stops: Sequence[str] = (),
        top_logprobs: int | None = None,
        never: Sequence[int] = (),
        ignore_eos: bool = False,
        min_tokens: int = 0,
    ) -> None:
        self.inner = inner
        self.control = control
        bias = dict(logit_bias or {})
        self._bias_ids = np.array(list(bias), dtype=np.int64)
        self._bias_values = np.array(list(bias.values()), dtype=np.float32)
        self.presence_penalty = presence_penalty
        self.frequency_penalty = frequency_penalty
        self.stops = list(stops)
        self._longest_stop = max((len(s) for s in self.stops), default=0)
        self.top_logprobs = top_logprobs
        self._never = np.array(sorted(set(never)), dtype=np.int64)
        self.ignore_eos = ignore_eos
        self.min_tokens = min_tokens
        self.needs_full_logits = bool(inner and inner.needs_full_logits)
        self.records: list[TokenRecord] = []
        self.failure: str | None = None
        """Why the request's strategy failed (it raised ``ValueError``), if it did."""
        self._raw: dict[int, _RawStep] = {}  # position -> the raw model's distribution, until sampled

    @property
    def name(self) -> str:
        return self.inner.name if self.inner is not None else "none"

    @property
    def adjusts_logits(self) -> bool:
        changes = bool(self._bias_ids.size or self.presence_penalty or self.frequency_penalty)
        changes = changes or bool(self._never.size or self.ignore_eos or self.min_tokens)
        records = self.top_logprobs is not None
        return changes or records or bool(self.inner is not None and self.inner.adjusts_logits)

    def reset(self) -> None:
        self.failure = None
        self.records.clear()
        self._raw.clear()
        if self.inner is not None:
            self.inner.reset()

    def adjust_logits(self, ctx: GenerationContext, logits: np.ndarray) -> np.ndarray:
        if self.top_logprobs is not None:
            self._raw[ctx.position] = _RawStep(logits.copy(), *_log_total_and_top(logits, self.top_logprobs))
        if self._bias_ids.size:
            logits[self._bias_ids] += self._bias_values
        if (self.presence_penalty or self.frequency_penalty) and ctx.tokens:
            counts = np.bincount(np.asarray(ctx.tokens, dtype=np.int64), minlength=logits.shape[0])
            used = np.nonzero(counts)[0]
            logits[used] -= self.presence_penalty + self.frequency_penalty * counts[used]
        if self.inner is not None:
            logits = self.inner.adjust_logits(ctx, logits)
        if self._never.size:
            logits[self._never] = -np.inf
        if self.ignore_eos or ctx.position < self.min_tokens:
            logits[list(ctx.provider.eos_token_ids)] = -np.inf
        return logits

    def on_token(self, ctx: GenerationContext, token: int) -> Decision:
        self.control.count_token()
        if self.control.cancelled:
            return Stop(CANCELLED, keep_token=False)
        position = len(ctx.tokens) - 1
        logprob, top = None, ()
        step = self._raw.pop(position, None)
        if step is not None:  # sampled here (a token inserted by a strategy has no logprobs)
            logprob, top = float(step.logits[token]) - step.log_total, step.top
        del self.records[position:]
        record = TokenRecord(token, ctx.text_from(position), ctx.char_start(position), logprob, top)
        self.records.append(record)
        try:
            decision = self.inner.on_token(ctx, token) if self.inner is not None else CONTINUE
        except ValueError as exc:  # the request's own settings failed (a banned regex that searched too long)
            self.failure = str(exc)
            return Stop(FAILED, keep_token=False)
        if isinstance(decision, (Rewind, Stop)):
            return decision
        if self.stops and len(ctx.tokens) >= self.min_tokens and self._stop_string_ends_here(ctx, len(record.text)):
            return Stop(STOP_STRING)
        return decision

    def on_rewind(self, ctx: GenerationContext, position: int) -> None:
        del self.records[position:]
        if self.inner is not None:
            self.inner.on_rewind(ctx, position)

    def commit_boundary(self, ctx: GenerationContext, upto: int) -> int:
        if self.inner is None:
            return upto
        return self.inner.commit_boundary(ctx, upto)

    def _stop_string_ends_here(self, ctx: GenerationContext, new_chars: int) -> bool:
        """Whether a stop string ends within the latest token's characters."""
        if not new_chars:
            return False
        first = max(0, ctx.n_chars - new_chars - self._longest_stop + 1)
        tail = ctx.text_from(ctx.token_at_char(first))
        new = len(tail) - new_chars  # where the latest token's characters begin in tail
        # Only a stop that ends in them: one that ended earlier was found then, or came before min_tokens.
        return any(tail.find(stop, max(0, new - len(stop) + 1)) >= 0 for stop in self.stops)


@dataclass(frozen=True)
class _RawStep:
    logits: np.ndarray  # (vocab,), the raw model's
    log_total: float  # log of the sum of exp(logits)
    top: tuple[tuple[int, float], ...]


def _log_total_and_top(logits: np.ndarray, n: int) -> tuple[float, tuple[tuple[int, float], ...]]:
    """``log(sum(exp(logits)))`` of raw ``logits`` (shape (vocab,)), and their ``n`` best ``(id, logprob)``."""
    top = float(np.max(logits))
    log_total = top + float(np.log(np.exp(logits - top, dtype=np.float64).sum()))
    n = min(n, logits.shape[0])
    if n <= 0:
        return log_total, ()
    ids = np.argpartition(-logits, n - 1)[:n]
    ids = ids[np.argsort(-logits[ids], kind="stable")]
    return log_total, tuple((int(i), float(logits[i]) - log_total) for i in ids)
