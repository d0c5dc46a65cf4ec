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
from collections.abc import Iterator
from dataclasses import asdict
from typing import Any

from backtrack_sampler.batch.errors import BatchError, LineError, error_record
from backtrack_sampler.batch.ftpo import FtpoSettings, ftpo_records
from backtrack_sampler.batch.lines import Job, is_no_strategy
from backtrack_sampler.batch.pairs import preference_pairs
from backtrack_sampler.core.base_provider import BaseProvider
from backtrack_sampler.core.base_strategy import BaseStrategy
from backtrack_sampler.core.budget import RewindBudget
from backtrack_sampler.core.engine import BacktrackSampler
from backtrack_sampler.core.events import Event, FinishEvent, RewindEvent
from backtrack_sampler.provider.remote.wire import RemoteError
from backtrack_sampler.strategy import registry
from backtrack_sampler.strategy.chain_strategy import ChainStrategy

# What ``run_job`` gives: the output record (``None`` when stopped) and the job's preference pairs (or FTPO records).
JobRecords = tuple["dict[str, Any] | None", list[dict[str, Any]]]


def build_strategy(job: Job, provider: BaseProvider) -> BaseStrategy | None:
    """The job's strategy (``strategy.registry``), plus an AntiSlop for its bans; chained when both.

    An ``antislop`` spec takes the bans into its own ``slops`` instead (and the line's
    ``exempt_prompt_terms`` and ``ban_scope``, unless its params set them).
    Raises ``LineError`` when a constructor refuses its parameters.
    """
    from backtrack_sampler.strategy.antislop_strategy import AntiSlopStrategy

    spec = None if is_no_strategy(job.strategy) else job.strategy
    takes_bans = _names_antislop(spec)
    if takes_bans:
        params = spec.get("params", {}) if isinstance(spec, dict) else {}
        slops = params.get("slops", [])
        if not isinstance(slops, list):
            raise LineError("invalid_params", f"strategy.params.slops: must be a list of phrases, got {slops!r}")
        spec = {"name": "antislop", "params": {**job.ban_options, **params, "slops": [*job.bans, *slops]}}
    strategies = []
    try:
        if spec is not None:
            strategies.append(registry.build_strategy(spec, provider, interactive=False))
        if job.bans and not takes_bans:
            strategies.append(AntiSlopStrategy(provider, job.bans, **job.ban_options))
    except ValueError as exc:  # StrategySpecError, or AntiSlop refusing a ban
        raise LineError("invalid_params", str(exc)) from None
    if takes_bans and not strategies[0].phrases and not strategies[0].patterns:
        raise LineError("invalid_params", "strategy 'antislop' needs banned_strings (or --ban)")
    if len(strategies) < 2:
        return strategies[0] if strategies else None
    return ChainStrategy(strategies)


def _names_antislop(spec: Any) -> bool:
    """Whether ``spec`` is AntiSlop by name or alias (a chain is not)."""
    name = spec.get("name") if isinstance(spec, dict) else spec
    entry = registry.lookup(name) if isinstance(name, str) else None
    return entry is not None and entry.name == "antislop"


def prepare(
    job: Job, provider: BaseProvider, budget: RewindBudget | None = None, candidates_min_p: float | None = None
) -> tuple[str, Iterator[Event]]:
    """The job's prompt text and its events, not started yet; raises ``LineError`` for what the line got wrong.

    ``BacktrackSampler.stream`` checks its arguments before the first event
    (the prompt is encoded and measured against the context), so every check
    that can blame the line is done by the time this returns.
    ``candidates_min_p`` is passed to it (the likely tokens of each rewind).
    """
    strategy = build_strategy(job, provider)
    prompt = job.prompt if job.raw else _chat_prompt(job, provider)
    try:
        sampler = BacktrackSampler(provider, strategy, budget)
        return prompt, sampler.stream(prompt, job.params, candidates_min_p=candidates_min_p)
    except ValueError as exc:
        raise LineError("invalid_params", str(exc)) from None


def _chat_prompt(job: Job, provider: BaseProvider) -> str:
    """The job's messages (or its prompt as a user message) through the model's chat template."""
    field = "messages" if job.messages is not None else "prompt"
    hint = "" if job.messages is not None else ' (give the line "raw": true, or run with --raw)'
    try:
        return provider.apply_chat_template(job.chat_messages)
    except (NotImplementedError, ValueError) as exc:
        raise LineError("invalid_params", f"{field}: {exc}{hint}") from None


def run_job(
    job: Job,
    provider: BaseProvider,
    budget: RewindBudget | None = None,
    want_pairs: bool = False,
    stop: threading.Event | None = None,
    ftpo: FtpoSettings | None = None,
) -> JobRecords:
    """Generate one job: its result record (or error record) and its preference pairs.

    With ``want_pairs``, the pairs are DPO pairs (``preference_pairs``), or,
    with ``ftpo`` settings, FTPO records (``ftpo_records``). Returns
    ``(None, [])`` when ``stop`` was set mid-generation: nothing is written,
    and the next run does the job again.

    Raises:
        BatchError: the remote server failed (not a 4xx); run again to go on.
        Exception: whatever the generation raised: a bug, which must stop the run.
    """
    try:
        prompt, events = prepare(job, provider, budget, ftpo.min_p if want_pairs and ftpo else None)
    except LineError as error:
        return error_record(job.id, job.line, error.kind, str(error)), []
    try:
        rewinds, finish = _follow(events, stop)
    except RemoteError as exc:
        if exc.status is not None and 400 <= exc.status < 500:
            return error_record(job.id, job.line, "rejected_by_server", str(exc)), []
        raise BatchError(f"{exc}; run the same command again to go on") from None
    finally:
        events.close()  # a stopped generation ends now: its provider is free (a batched slot given back)
    if finish is None:
        return None, []
    pairs = _pairs(job, provider, prompt, finish, rewinds, ftpo) if want_pairs else []
    return result_record(job, finish), [{"id": job.id, "line": job.line, **pair} for pair in pairs]


def _pairs(
    job: Job,
    provider: BaseProvider,
    prompt: str,
    finish: FinishEvent,
    rewinds: list[RewindEvent],
    ftpo: FtpoSettings | None,
) -> list[dict[str, Any]]:
    """The job's DPO pairs, or its FTPO records (judged by fresh copies of its ban strategies)."""
    if ftpo is None:
        return preference_pairs(prompt, finish, rewinds, provider.token_bytes)
    given = job.prompt if job.prompt is not None else job.messages
    bans = _ban_strategies(build_strategy(job, provider))
    return ftpo_records(given or "", prompt, finish, rewinds, provider, bans, ftpo.max_chosen)


def _ban_strategies(strategy: BaseStrategy | None) -> list[BaseStrategy]:
    """The ``AntiSlopStrategy`` objects in ``strategy`` (itself, or members of a chain)."""
    from backtrack_sampler.strategy.antislop_strategy import AntiSlopStrategy

    if isinstance(strategy, ChainStrategy):
        return [s for member in strategy.strategies for s in _ban_strategies(member)]
    return [strategy] if isinstance(strategy, AntiSlopStrategy) else []


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
    record["prompt_mode"] = job.prompt_mode  # a resumed run checks it (``plan``), ``score --prompts`` reads it
    if finish.detail:
        record["finish_detail"] = finish.detail
    return record
