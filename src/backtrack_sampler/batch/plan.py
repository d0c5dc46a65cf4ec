"""Planning a run (``plan_batch``): what the output already answers, what is left to run, which lines are bad.

Reading the outputs repairs them first (``jsonl.recover_jsonl`` cuts a
partial last line), and drops preference pairs whose result never reached
the output (written just before a kill).

A result records how its prompt reached the model (``"prompt_mode"``:
``"chat"`` or ``"raw"``). A run that would send an answered line's prompt
the other way is refused (``SettingsError``), so one output file never mixes
the two meanings; a result written before the field existed was raw for a
``prompt`` line (``prompt`` was raw text then) and chat for ``messages``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from backtrack_sampler.batch.errors import LINE_ERRORS, BatchError, LineError, SettingsError, error_record
from backtrack_sampler.batch.jsonl import recover_jsonl, rewrite_jsonl
from backtrack_sampler.batch.lines import CHAT, RAW, BatchDefaults, Job, make_job, read_line
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
    changed_modes: list[tuple[Job, str, bool]] = field(default_factory=list)
    """Answered lines whose prompt this run would send another way: (job, recorded mode, recorded by an old version)."""


def record_key(record: dict[str, Any]) -> Key:
    """The input the output ``record`` answers."""
    error = record.get("error")
    if isinstance(error, dict) and error.get("type") in LINE_ERRORS:
        return "line", str(record.get("line"))
    return "id", json.dumps(record.get("id"))


def plan_batch(input_path: Path, output_path: Path, defaults: BatchDefaults, events_path: Path | None = None) -> Plan:
    """Read what is done, repair the output files, and list what is left to do."""
    lines = _input_lines(input_path)
    done = {record_key(r): r for r in recover_jsonl(output_path, OUTPUT_KEYS)}
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
    if plan.changed_modes:
        raise SettingsError(_changed_mode_message(output_path, plan.changed_modes), path=output_path)
    return plan


def _recorded_mode(record: dict[str, Any], job: Job) -> tuple[str | None, bool]:
    """How ``record`` sent ``job``'s prompt (``None``: an error record), and whether it predates the field."""
    if "error" in record:
        return None, False
    mode = record.get("prompt_mode")
    if mode is None:  # written when a line's prompt was raw text
        return (RAW if job.messages is None else CHAT), True
    return str(mode), False


def _changed_mode_message(path: Path, changed: list[tuple[Job, str, bool]]) -> str:
    job, recorded, old_version = changed[0]
    where = f"{str(path)!r} line {job.line} (id {job.id!r})"
    more = f" (and {len(changed) - 1} more answered lines)" if len(changed) > 1 else ""
    if recorded == RAW and old_version:
        return (
            f'{where}{more} was answered by an earlier version, which sent a line\'s "prompt" as raw text; '
            "\"prompt\" now goes through the model's chat template, as generate's PROMPT does. "
            'To finish this file with the old meaning run with --raw (or give those lines "raw": true); '
            "for the chat template, write to a new OUTPUT"
        )
    if recorded == RAW:
        return (
            f"{where}{more} was answered with its prompt sent raw (without the chat template); this run sends it "
            'through the chat template. Run with --raw (or give the line "raw": true) to finish this file as '
            "it was begun, or write to a new OUTPUT"
        )
    return (
        f"{where}{more} was answered with its prompt through the model's chat template; this run sends it raw. "
        'Run without --raw (or give the line "raw": false) to finish this file as it was begun, '
        "or write to a new OUTPUT"
    )


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
    plan: Plan,
    done: dict[Key, dict[str, Any]],
    first_line: dict[str, int],
    text: str,
    number: int,
    defaults: BatchDefaults,
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
        recorded, old_version = _recorded_mode(done["id", key_id], job)
        if recorded is not None and recorded != job.prompt_mode:
            plan.changed_modes.append((job, recorded, old_version))
    else:
        plan.jobs.append(job)


def _report(plan: Plan, done: dict[Key, dict[str, Any]], key: Key, record: dict[str, Any]) -> None:
    if key in done:
        plan.done_before += 1
    else:
        plan.errors.append(record)
