"""Planning a run (``plan_batch``): what the output already answers, what is left to run, which lines are bad.

Reading the outputs repairs them first (``jsonl.recover_jsonl`` cuts a
partial last line), and drops preference pairs whose result never reached
the output (written just before a kill).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from backtrack_sampler.batch.errors import LINE_ERRORS, BatchError, LineError, error_record
from backtrack_sampler.batch.jsonl import recover_jsonl, rewrite_jsonl
from backtrack_sampler.batch.lines import BatchDefaults, Job, make_job, read_line
from backtrack_sampler.core.text_files import read_lines

# Keys every output record has (results and error records), and every preference pair.
OUTPUT_KEYS = ("id", "line")
PAIR_KEYS = ("id", "prompt", "chosen", "rejected")

# What a record answers: ("id", the id as JSON) or ("line", the line number) for a line without a usable id.
Key = tuple[str, str]


@dataclass
class Plan:
    """What a run has to do: jobs to run and line errors to report; how much was done before."""

    jobs: list[Job] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    total: int = 0
    done_before: int = 0


def record_key(record: dict[str, Any]) -> Key:
    """The input the output ``record`` answers."""
    error = record.get("error")
    if isinstance(error, dict) and error.get("type") in LINE_ERRORS:
        return "line", str(record.get("line"))
    return "id", json.dumps(record.get("id"))


def plan_batch(input_path: Path, output_path: Path, defaults: BatchDefaults, events_path: Path | None = None) -> Plan:
    """Read what is done, repair the output files, and list what is left to do."""
    lines = _input_lines(input_path)
    done = {record_key(r) for r in recover_jsonl(output_path, OUTPUT_KEYS)}
    if events_path is not None:
        pairs = recover_jsonl(events_path, PAIR_KEYS)
        kept = [p for p in pairs if ("id", json.dumps(p.get("id"))) in done]
        if len(kept) < len(pairs):
            rewrite_jsonl(events_path, kept)
    plan = Plan()
    first_line: dict[str, int] = {}  # id (as JSON) -> the line where it first appears
    for number, text in lines:
        if text.strip():
            plan.total += 1
            _plan_line(plan, done, first_line, text, number, defaults)
    return plan


def _input_lines(path: Path) -> list[tuple[int, str]]:
    """The numbered lines of the input, split at line feeds only (``core.text_files``), all read before any run."""
    lines = []
    try:
        for line in read_lines(path):
            try:
                lines.append((line.number, line.text()))
            except UnicodeDecodeError as exc:
                at = line.offset + exc.start
                raise BatchError(f"{path}: not UTF-8 text ({exc.reason} at byte {at})", path=path) from None
    except OSError as exc:
        raise BatchError(f"cannot read {str(path)!r}: {exc.strerror or exc}", path=path) from None
    return lines


def _plan_line(
    plan: Plan, done: set[Key], first_line: dict[str, int], text: str, number: int, defaults: BatchDefaults
) -> None:
    """Add one input line to ``plan``: a job to run, an error to report, or something done before."""
    try:
        data, job_id = read_line(text, number)
    except LineError as error:
        _report(plan, done, ("line", str(number)), error_record(None, number, error.kind, str(error)))
        return
    key_id = json.dumps(job_id)
    if key_id in first_line:
        message = f"duplicate id {job_id!r} (first on line {first_line[key_id]})"
        _report(plan, done, ("line", str(number)), error_record(job_id, number, "duplicate_id", message))
        return
    first_line[key_id] = number
    try:
        job = make_job(data, job_id, number, defaults)
    except LineError as error:
        _report(plan, done, ("id", key_id), error_record(job_id, number, error.kind, str(error)))
        return
    if ("id", key_id) in done:
        plan.done_before += 1
    else:
        plan.jobs.append(job)


def _report(plan: Plan, done: set[Key], key: Key, record: dict[str, Any]) -> None:
    if key in done:
        plan.done_before += 1
    else:
        plan.errors.append(record)
