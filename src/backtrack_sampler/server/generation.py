"""Running a validated request on the model: engine events in, endpoint-neutral outputs out.

``run_plan`` runs in the worker thread. For each choice it wraps the
request's strategy in a ``RequestStrategy``, streams the engine's events and
turns them into ``TextOut`` (final text with its tokens), ``BacktrackOut``
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
    FinishEvent,
    GenerationStats,
    RewindEvent,
    RewindRefusedEvent,
    TextEvent,
)
from backtrack_sampler.provider.base_provider import BaseProvider
from backtrack_sampler.server.control import JobControl
from backtrack_sampler.server.request_strategy import RequestStrategy, TokenRecord
from backtrack_sampler.server.stop_strings import StopScanner
from backtrack_sampler.strategy.base_strategy import BaseStrategy

FinishReason = Literal["stop", "length"]


class RequestRejected(Exception):
    """The engine refused the request's arguments (answered 400)."""


@dataclass(frozen=True)
class ChoiceSpec:
    """One choice to generate: which prompt, which seed."""

    index: int
    prompt_tokens: list[int]
    seed: int | None


@dataclass(frozen=True)
class GenerationPlan:
    """Everything a request asks for, checked and ready to run."""

    choices: list[ChoiceSpec]
    max_new_tokens: int
    strategy: BaseStrategy | None = None
    budget: RewindBudget = field(default_factory=RewindBudget)
    temperature: float = 1.0
    top_k: int = 0
    top_p: float | None = None
    min_p: float | None = None
    logit_bias: dict[int, float] = field(default_factory=dict)
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    stops: list[str] = field(default_factory=list)
    top_logprobs: int | None = None
    backtrack_events: bool = False


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
    stop_string: str | None = None


Output = TextOut | BacktrackOut | ChoiceDone


def run_plan(provider: BaseProvider, plan: GenerationPlan, control: JobControl, emit: Callable[[Output], None]) -> None:
    """Generate every choice of ``plan`` in turn, passing outputs to ``emit``; return early when cancelled."""
    for choice in plan.choices:
        if control.cancelled:
            return
        _run_choice(provider, plan, choice, control, emit)


def _run_choice(
    provider: BaseProvider,
    plan: GenerationPlan,
    choice: ChoiceSpec,
    control: JobControl,
    emit: Callable[[Output], None],
) -> None:
    strategy = RequestStrategy(
        plan.strategy,
        control,
        logit_bias=plan.logit_bias,
        presence_penalty=plan.presence_penalty,
        frequency_penalty=plan.frequency_penalty,
        stops=plan.stops,
        top_logprobs=plan.top_logprobs,
    )
    sampler = BacktrackSampler(provider, strategy, plan.budget)
    scanner = StopScanner(plan.stops)
    try:  # the engine checks its arguments here, before the first event
        events = sampler.stream(
            choice.prompt_tokens,
            max_new_tokens=plan.max_new_tokens,
            temperature=plan.temperature,
            top_k=plan.top_k,
            top_p=plan.top_p,
            min_p=plan.min_p,
            seed=choice.seed,
        )
    except (ValueError, TypeError) as exc:
        raise RequestRejected(str(exc)) from exc
    emitted = 0  # tokens the engine has made final
    try:
        for event in events:
            if control.cancelled:
                return
            if isinstance(event, TextEvent):
                batch = list(strategy.records[emitted : emitted + len(event.tokens)])
                emitted += len(event.tokens)
                joined = "".join(r.text for r in batch)
                if len(event.text) > len(joined):  # an unfinished character at the very end, as U+FFFD
                    offset = batch[-1].offset + len(batch[-1].text) if batch else _char_end(strategy, emitted)
                    batch.append(TokenRecord(-1, event.text[len(joined) :], offset, None, ()))
                _emit_text(choice.index, scanner.feed(batch), emit)
            elif isinstance(event, (RewindEvent, RewindRefusedEvent)):
                if plan.backtrack_events and not scanner.stopped:
                    emit(BacktrackOut(choice.index, _backtrack_json(event, strategy)))
            elif isinstance(event, FinishEvent):
                if strategy.failure is not None:
                    raise RequestRejected(strategy.failure)
                _emit_text(choice.index, scanner.flush(), emit)
                stopped = scanner.stopped or event.reason in ("eos", "stop")
                emit(
                    ChoiceDone(
                        choice.index,
                        "stop" if stopped else "length",
                        prompt_tokens=len(choice.prompt_tokens),
                        completion_tokens=len(event.tokens),
                        stats=event.stats,
                        stop_string=scanner.matched,
                    )
                )
    finally:
        events.close()


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
