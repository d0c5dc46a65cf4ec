"""Running one job (``run_job``): its strategy, its prompt, its generation, and the records it gives.

A job runs in two steps. ``prepare`` does every check that needs the model
(the strategy's constructor, the chat template, encoding the prompt, the
context length) and turns what fails into a ``LineError``: the line's fault,
reported in the output. Then the generation runs; what it raises is a bug,
not bad input, and stops the run (a remote server that fails is a
``BatchError``: nothing is lost, run again).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import asdict
from typing import Any

from backtrack_sampler.batch.errors import BatchError, LineError, error_record
from backtrack_sampler.batch.lines import Job
from backtrack_sampler.batch.pairs import preference_pairs
from backtrack_sampler.core.base_provider import BaseProvider
from backtrack_sampler.core.base_strategy import BaseStrategy
from backtrack_sampler.core.budget import RewindBudget
from backtrack_sampler.core.engine import BacktrackSampler
from backtrack_sampler.core.events import Event, FinishEvent, RewindEvent
from backtrack_sampler.provider.remote.wire import RemoteError

# What ``run_job`` gives: the output record (``None`` when stopped) and the job's preference pairs.
JobRecords = tuple["dict[str, Any] | None", list[dict[str, Any]]]


def build_strategy(job: Job, provider: BaseProvider) -> BaseStrategy | None:
    """The job's strategy: the named one (with its params), plus AntiSlop for the bans; chained when both."""
    from backtrack_sampler.strategy.adaptive_temperature_strategy import AdaptiveTemperatureStrategy
    from backtrack_sampler.strategy.antislop_strategy import AntiSlopStrategy
    from backtrack_sampler.strategy.chain_strategy import ChainStrategy
    from backtrack_sampler.strategy.creative_writing_strategy import CreativeWritingStrategy
    from backtrack_sampler.strategy.json_strategy import JsonStrategy
    from backtrack_sampler.strategy.replace_strategy import ReplaceStrategy

    spec = job.strategy
    name = spec.get("name") if isinstance(spec, dict) else spec
    params = dict(spec.get("params", {})) if isinstance(spec, dict) else {}
    if name == "none" and job.bans:
        raise LineError("invalid_params", "strategy 'none' cannot apply banned_strings (or --ban)")
    factories: dict[str, Callable[[], BaseStrategy]] = {
        "antislop": lambda: AntiSlopStrategy(provider, [*job.bans, *params.pop("slops", [])], **params),
        "replace": lambda: ReplaceStrategy(provider, **params),
        "creative": lambda: CreativeWritingStrategy(provider, **params),
        "adaptive": lambda: AdaptiveTemperatureStrategy(**params),
        "json": lambda: JsonStrategy(provider, **params),
    }
    strategies = []
    try:
        if name in factories:
            strategies.append(factories[name]())
        if job.bans and name != "antislop":
            strategies.append(AntiSlopStrategy(provider, job.bans))
    except (TypeError, ValueError) as exc:
        raise LineError("invalid_params", f"strategy {name!r}: {exc}") from None
    if name == "antislop" and not strategies[0].phrases and not strategies[0].patterns:
        raise LineError("invalid_params", "strategy 'antislop' needs banned_strings (or --ban)")
    if not strategies:
        return None
    return strategies[0] if len(strategies) == 1 else ChainStrategy(strategies)


def prepare(job: Job, provider: BaseProvider, budget: RewindBudget | None = None) -> tuple[str, Iterator[Event]]:
    """The job's prompt text and its events, not started yet; raises ``LineError`` for what the line got wrong.

    ``BacktrackSampler.stream`` checks its arguments before the first event
    (the prompt is encoded and measured against the context), so every check
    that can blame the line is done by the time this returns.
    """
    strategy = build_strategy(job, provider)
    prompt = job.prompt if job.prompt is not None else _chat_prompt(job, provider)
    try:
        sampler = BacktrackSampler(provider, strategy, budget)
        return prompt, sampler.stream(prompt, job.params)
    except ValueError as exc:
        raise LineError("invalid_params", str(exc)) from None


def _chat_prompt(job: Job, provider: BaseProvider) -> str:
    try:
        return provider.apply_chat_template(job.messages)
    except (NotImplementedError, ValueError) as exc:
        raise LineError("invalid_params", f"messages: {exc}") from None


def run_job(
    job: Job,
    provider: BaseProvider,
    budget: RewindBudget | None = None,
    want_pairs: bool = False,
    stop: threading.Event | None = None,
) -> JobRecords:
    """Generate one job: its result record (or error record) and its preference pairs.

    Returns ``(None, [])`` when ``stop`` was set mid-generation: nothing is
    written, and the next run does the job again.

    Raises:
        BatchError: the remote server failed (not a 4xx); run again to go on.
        Exception: whatever the generation raised: a bug, which must stop the run.
    """
    try:
        prompt, events = prepare(job, provider, budget)
    except LineError as error:
        return error_record(job.id, job.line, error.kind, str(error)), []
    try:
        rewinds, finish = _follow(events, stop)
    except RemoteError as exc:
        if exc.status is not None and 400 <= exc.status < 500:
            return error_record(job.id, job.line, "rejected_by_server", str(exc)), []
        raise BatchError(f"{exc}; run the same command again to go on") from None
    if finish is None:
        return None, []
    pairs = []
    if want_pairs:
        for pair in preference_pairs(prompt, finish, rewinds, provider.token_bytes):
            pairs.append({"id": job.id, "line": job.line, **pair})
    return result_record(job, finish), pairs


def _follow(events: Iterator[Event], stop: threading.Event | None) -> tuple[list[RewindEvent], FinishEvent | None]:
    """The rewinds and the finish of a generation; no finish when ``stop`` was set first."""
    rewinds: list[RewindEvent] = []
    for event in events:
        if stop is not None and stop.is_set():
            return rewinds, None
        if isinstance(event, RewindEvent):
            rewinds.append(event)
        elif isinstance(event, FinishEvent):
            return rewinds, event
    raise AssertionError("a stream always ends with a FinishEvent")  # pragma: no cover


def result_record(job: Job, finish: FinishEvent) -> dict[str, Any]:
    """The output record of a finished job: its text, finish reason and stats."""
    stats = asdict(finish.stats) | {"tokens_per_second": round(finish.stats.tokens_per_second, 3)}
    record = {"id": job.id, "line": job.line, "text": finish.text, "finish_reason": finish.reason, "stats": stats}
    if finish.detail:
        record["finish_detail"] = finish.detail
    return record
