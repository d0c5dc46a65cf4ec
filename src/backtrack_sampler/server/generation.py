"""Running a validated request on the model: engine events in, endpoint-neutral outputs out.

``run_choice`` runs in a worker thread, one choice of a request at a time
(the choices of one request may run in several threads at once). It wraps
the choice's strategy in a ``RequestStrategy``, streams the engine's events
and turns them into ``TextOut`` (final text with its tokens), ``BacktrackOut``
(a rewind, only when the request asked for backtrack events) and
``ChoiceDone`` (finish reason, usage, statistics). The endpoints only format
these.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from backtrack_sampler.core.budget import RewindBudget
from backtrack_sampler.core.engine import BacktrackSampler
from backtrack_sampler.core.events import (
    Event,
    FinishEvent,
    GenerationStats,
    RewindEvent,
    RewindRefusedEvent,
    TextEvent,
)
from backtrack_sampler.core.sampling import SamplingParams
from backtrack_sampler.provider.base_provider import BaseProvider
from backtrack_sampler.server.control import JobControl
from backtrack_sampler.server.request_strategy import RequestStrategy, TokenRecord
from backtrack_sampler.server.stop_strings import StopScanner
from backtrack_sampler.strategy.base_strategy import BaseStrategy

FinishReason = Literal["stop", "length"]


class RequestRejected(Exception):
    """The engine refused the request's arguments, or its strategy failed (answered 400 naming ``param``)."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


@dataclass(frozen=True)
class ChoiceSpec:
    """One choice to generate: which prompt, how to sample it (its own seed included), and its strategy.

    Each choice has a strategy object of its own (strategies keep state
    during a generation, and choices may run at the same time).
    """

    index: int
    prompt_tokens: list[int]
    params: SamplingParams
    strategy: BaseStrategy | None = None


@dataclass(frozen=True)
class GenerationPlan:
    """Everything a request asks for, checked and ready to run."""

    choices: list[ChoiceSpec]
    budget: RewindBudget = field(default_factory=RewindBudget)
    logit_bias: dict[int, float] = field(default_factory=dict)
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    stops: list[str] = field(default_factory=list)
    top_logprobs: int | None = None
    backtrack_events: bool = False
    failure_param: str | None = None
    """The parameter an error names when the request's strategy fails while generating
    (``banned_regex`` for a pattern that searched too long)."""
    never: tuple[int, ...] = ()
    """Token ids never sampled (``custom_token_bans``, the ids of ``banned_tokens``)."""
    ignore_eos: bool = False
    """The end-of-sequence tokens are never sampled."""
    min_tokens: int = 0
    """Before this many tokens, no end-of-sequence token is sampled and no stop string ends the generation."""


@dataclass(frozen=True)
class TextOut:
    """Final text of choice ``index``; the texts of ``tokens`` join into ``text``."""

    index: int
    text: str
    tokens: tuple[TokenRecord, ...]


@dataclass(frozen=True)
class BacktrackOut:
    """A rewind (or refused rewind) of choice ``index``, as the JSON object sent to clients."""

    index: int
    event: dict[str, Any]


@dataclass(frozen=True)
class ChoiceDone:
    """Choice ``index`` ended."""

    index: int
    finish_reason: FinishReason
    prompt_tokens: int
    completion_tokens: int
    stats: GenerationStats


Output = TextOut | BacktrackOut | ChoiceDone


def run_choice(
    provider: BaseProvider,
    plan: GenerationPlan,
    choice: ChoiceSpec,
    control: JobControl,
    emit: Callable[[Output], None],
) -> None:
    """Generate ``choice`` of ``plan`` on ``provider``, passing outputs to ``emit``; return early when cancelled.

    Raises:
        RequestRejected: the engine refused the prompt or the arguments, or the strategy failed.
    """
    if control.cancelled:
        return
    strategy = RequestStrategy(
        choice.strategy,
        control,
        logit_bias=plan.logit_bias,
        presence_penalty=plan.presence_penalty,
        frequency_penalty=plan.frequency_penalty,
        stops=plan.stops,
        top_logprobs=plan.top_logprobs,
        never=plan.never,
        ignore_eos=plan.ignore_eos,
        min_tokens=plan.min_tokens,
    )
    sampler = BacktrackSampler(provider, strategy, plan.budget)
    try:  # the engine checks the prompt against the model here, before the first event
        events = sampler.stream(choice.prompt_tokens, params=choice.params)
    except (ValueError, TypeError) as exc:
        raise RequestRejected(str(exc)) from exc
    outputs = _ChoiceOutputs(choice, strategy, StopScanner(plan.stops, plan.min_tokens), plan, emit)
    try:
        for event in events:
            if control.cancelled:
                return
            outputs.handle(event)
    finally:
        events.close()


class _ChoiceOutputs:
    """Turns the engine events of one choice into outputs: text cut at stop strings, rewinds, the end."""

    def __init__(
        self,
        choice: ChoiceSpec,
        strategy: RequestStrategy,
        scanner: StopScanner,
        plan: GenerationPlan,
        emit: Callable[[Output], None],
    ) -> None:
        self.choice = choice
        self.strategy = strategy
        self.scanner = scanner
        self.backtrack_events = plan.backtrack_events
        self.failure_param = plan.failure_param
        self.emit = emit
        self.emitted = 0  # tokens the engine has made final

    def handle(self, event: Event) -> None:
        if isinstance(event, TextEvent):
            self._text(event)
        elif isinstance(event, (RewindEvent, RewindRefusedEvent)):
            if self.backtrack_events and not self.scanner.stopped:
                self.emit(BacktrackOut(self.choice.index, _backtrack_json(event, self.strategy)))
        elif isinstance(event, FinishEvent):
            self._finish(event)

    def _text(self, event: TextEvent) -> None:
        records = self.strategy.records
        batch = list(records[self.emitted : self.emitted + len(event.tokens)])
        self.emitted += len(event.tokens)
        joined = "".join(r.text for r in batch)
        if len(event.text) > len(joined):  # an unfinished character at the very end, as U+FFFD
            offset = batch[-1].offset + len(batch[-1].text) if batch else _char_end(self.strategy, self.emitted)
            batch.append(TokenRecord(-1, event.text[len(joined) :], offset, None, ()))
        _emit_text(self.choice.index, self.scanner.feed(batch), self.emit)

    def _finish(self, event: FinishEvent) -> None:
        if self.strategy.failure is not None:
            param = self.failure_param
            raise RequestRejected(f"{param}: {self.strategy.failure}" if param else self.strategy.failure, param)
        _emit_text(self.choice.index, self.scanner.flush(), self.emit)
        stopped = self.scanner.stopped or event.reason in ("eos", "stop")
        done = ChoiceDone(
            self.choice.index,
            "stop" if stopped else "length",
            prompt_tokens=len(self.choice.prompt_tokens),
            completion_tokens=len(event.tokens),
            stats=event.stats,
        )
        self.emit(done)


def _emit_text(index: int, records: list[TokenRecord], emit: Callable[[Output], None]) -> None:
    if records:
        emit(TextOut(index, "".join(r.text for r in records), tuple(records)))


def _char_end(strategy: RequestStrategy, position: int) -> int:
    """Character offset where generated token ``position`` begins (from the records before it)."""
    if position <= 0 or not strategy.records:
        return 0
    last = strategy.records[min(position, len(strategy.records)) - 1]
    return last.offset + len(last.text)


def _backtrack_json(event: RewindEvent | RewindRefusedEvent, strategy: RequestStrategy) -> dict[str, Any]:
    if isinstance(event, RewindEvent):
        return {
            "type": "rewind",
            "position": event.position,
            "char_offset": _char_end(strategy, event.position),
            "suppressed_text": event.suppressed_text,
            "suppressed_tokens": list(event.suppressed_tokens),
            "banned_tokens": list(event.banned),
            "inserted_tokens": list(event.inserted),
            "reason": event.reason,
            "strategy": event.strategy,
        }
    return {
        "type": "rewind_refused",
        "position": event.position,
        "cause": event.cause,
        "reason": event.reason,
        "strategy": event.strategy,
        "message": event.message,
    }


def stats_json(stats: GenerationStats) -> dict[str, Any]:
    """The ``backtrack_stats`` object of a finished choice."""
    return {
        "tokens": stats.tokens_emitted,
        "positions_evaluated": stats.positions_evaluated,
        "rewinds": stats.rewinds,
        "tokens_rewound": stats.tokens_rewound,
        "rewinds_refused": stats.rewinds_refused,
        "elapsed_s": round(stats.elapsed_s, 4),
        "tokens_per_second": round(stats.tokens_per_second, 2),
    }
