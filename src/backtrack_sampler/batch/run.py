"""``run_batch``: plan, then run the jobs on the providers (one job per provider at a time) and write the records."""

from __future__ import annotations

import json
import os
import sys
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from queue import Queue
from typing import Any, TextIO

from backtrack_sampler.batch.errors import BatchError, SettingsError
from backtrack_sampler.batch.ftpo import FtpoSettings
from backtrack_sampler.batch.job import JobRecords, run_job
from backtrack_sampler.batch.jsonl import JsonlAppender
from backtrack_sampler.batch.lines import BatchDefaults, Job
from backtrack_sampler.batch.plan import plan_batch
from backtrack_sampler.batch.progress import Progress
from backtrack_sampler.concurrency import WorkerThreads
from backtrack_sampler.core.base_provider import BaseProvider
from backtrack_sampler.core.budget import RewindBudget
from backtrack_sampler.core.text_files import open_binary


@dataclass(frozen=True)
class BatchSummary:
    """Counts of one run: input lines, answered before, answered now, errors, tokens, rewinds, pairs or FTPO records."""

    total: int
    done_before: int
    ran: int
    errors: int
    tokens: int
    rewinds: int
    pairs: int


def run_batch(
    input_path: str | os.PathLike[str],
    output_path: str | os.PathLike[str],
    providers: Sequence[BaseProvider],
    defaults: BatchDefaults | None = None,
    events_path: str | os.PathLike[str] | None = None,
    budget: RewindBudget | None = None,
    progress: TextIO | None = sys.stderr,
    ftpo: FtpoSettings | None = None,
) -> BatchSummary:
    """Run every line of ``input_path`` not yet answered in ``output_path``; one worker per provider.

    Args:
        input_path: the JSONL prompts.
        output_path: the JSONL results (appended to; created when missing).
        providers: one per concurrent sequence, each running one job at a
            time: the slots of a local llama.cpp model
            (``[batched.provider() for _ in range(n)]`` of a ``BatchedLlamacpp``
            of ``n`` slots, decoded together), ``OpenAICompatibleProvider.spawn``
            for more of a remote one, or a single provider. Records are
            written in the order the jobs finish.
        defaults: settings for lines that give none.
        events_path: where preference pairs go (``preference_pairs``), or ``None``.
        budget: the rewind budget of every generation.
        progress: where the progress line goes (``None``: nowhere).
        ftpo: write FTPO records (``ftpo_records``) to ``events_path``
            instead of DPO pairs, made with these settings. A file holding
            the other kind is refused (``BatchError``).

    Raises:
        BatchError: a file cannot be read or written, or the remote server
            cannot be reached; what was written stays valid, so running again
            goes on from there.
        SettingsError: (a ``BatchError``) found before anything is written:
            the output was begun with prompts sent the other way (chat
            template or raw, ``plan``), or a ``prompt`` line needs the chat
            template and the model has none; change the command.
        KeyboardInterrupt: after the running generations stopped; nothing is lost.
        Exception: what a generation raised (a bug, not bad input): the run
            stops at once, and that line is not written.
    """
    if not providers:
        raise ValueError("providers must hold at least one provider")
    defaults = defaults or BatchDefaults()
    events = Path(events_path) if events_path is not None else None
    if events is not None:
        _check_events_kind(events, ftpo is not None)
    plan = plan_batch(Path(input_path), Path(output_path), defaults, events)
    _check_chat_template(plan.jobs, providers[0])
    meter = Progress(plan.total, plan.done_before, progress)
    outputs = _Outputs(Path(output_path), events, meter)
    try:
        meter.show()
        for record in plan.errors:
            outputs.write(record)
        with WorkerThreads(len(providers), "batch") as threads:
            work = _worker(providers, budget, events is not None, threads.stop, ftpo)
            for job, done in threads.as_completed(plan.jobs, work):
                record, pairs = _records(job, done)
                if record is not None:
                    outputs.write(record, pairs)
    finally:
        outputs.close()
        meter.show(final=True)
    ran = meter.done - plan.done_before
    return BatchSummary(plan.total, plan.done_before, ran, meter.errors, meter.tokens, meter.rewinds, outputs.pairs)


def _worker(
    providers: Sequence[BaseProvider],
    budget: RewindBudget | None,
    want_pairs: bool,
    stop: threading.Event,
    ftpo: FtpoSettings | None = None,
) -> Callable[[Job], JobRecords]:
    """What a worker thread does with a job: run it on a free provider."""
    free: Queue[BaseProvider] = Queue()
    for provider in providers:
        free.put(provider)

    def work(job: Job) -> JobRecords:
        if stop.is_set():
            return None, []
        provider = free.get()  # never waits: there are as many worker threads as providers
        try:
            return run_job(job, provider, budget, want_pairs, stop, ftpo)
        finally:
            free.put(provider)

    return work


def _check_chat_template(jobs: Sequence[Job], provider: BaseProvider) -> None:
    """Refuse prompts meant for the chat template when the model has none, as ``generate`` does (not ``--raw``).

    A ``messages`` line without a template is that line's error record, as before; a
    ``prompt`` line is the run's: ``--raw`` (or ``"raw": true``) says what was meant.
    """
    job = next((job for job in jobs if not job.raw and job.messages is None), None)
    if job is None:
        return
    try:
        provider.apply_chat_template([{"role": "user", "content": "x"}])
    except NotImplementedError as exc:
        raise SettingsError(
            f"{exc}; a line's \"prompt\" goes through the model's chat template, as generate's PROMPT does "
            f"(line {job.line}, id {job.id!r}): run with --raw to send the prompts as they are, "
            'or give such lines "raw": true'
        ) from None
    except Exception:  # a template that refuses this probe is judged line by line (``job.prepare``)
        return


def _check_events_kind(path: Path, ftpo: bool) -> None:
    """Refuse to append FTPO records to a file of DPO pairs, or the reverse (its first whole line tells)."""
    try:
        with open_binary(path) as file:  # a regular file only: /dev/zero has no first line
            first = file.readline()
    except FileNotFoundError:
        return
    except OSError as exc:
        raise BatchError(f"cannot read {str(path)!r}: {exc.strerror or exc}", path=path) from None
    try:
        record = json.loads(first) if first.endswith(b"\n") else None
    except ValueError:
        return  # not JSON: planning says so, naming the line
    if not isinstance(record, dict) or not {"chosen", "rejected"} <= record.keys():
        return
    holds_ftpo = "rejected_decoded" in record
    if holds_ftpo != ftpo:
        held, wanted = ("FTPO records", "DPO pairs") if holds_ftpo else ("DPO pairs", "FTPO records")
        raise BatchError(f"{path} holds {held}; write {wanted} to another file", path=path)


def _records(job: Job, done: Future[JobRecords]) -> JobRecords:
    """A finished job's records; what its generation raised is raised here, naming the line where it can."""
    try:
        return done.result()
    except BatchError:
        raise
    except Exception as exc:
        if hasattr(exc, "add_note"):  # Python >= 3.11
            exc.add_note(f"raised while generating line {job.line} (id {job.id!r}) of the batch input")
        raise


class _Outputs:
    """The output file and the pairs file, written so that a kill at any moment leaves them consistent."""

    def __init__(self, output: Path, events: Path | None, meter: Progress) -> None:
        self.meter = meter
        self.pairs = 0
        self._results = JsonlAppender(output)  # raises BatchError naming the file
        try:
            self._pairs = JsonlAppender(events) if events is not None else None
        except BatchError:
            self._results.close()
            raise

    def write(self, record: dict[str, Any], pairs: Sequence[dict[str, Any]] = ()) -> None:
        """Write a job's pairs, then its record: a result on disk means its pairs are there."""
        if self._pairs is not None:
            for pair in pairs:
                self._pairs.append(pair)
            self.pairs += len(pairs)
        self._results.append(record)
        self.meter.add(record)

    def close(self) -> None:
        self._results.close()
        if self._pairs is not None:
            self._pairs.close()
