"""Batch generation: a JSONL file of prompts in, a JSONL file of results out, resumable after any kill.

Each input line is an object::

    {"id": "story-1", "prompt": "Once upon a time"}                     # sent as is
    {"id": 2, "messages": [{"role": "user", "content": "Hi"}],          # through the chat template
     "max_tokens": 200, "temperature": 0.8, "seed": 1, "top_p": 0.95, "top_k": 40, "min_p": 0.05,
     "banned_strings": ["tapestry"], "strategy": "antislop"}

Each output line is ``{"id", "line", "text", "finish_reason", "stats"}``, or
``{"id", "line", "error": {"type", "message"}}`` for a line that cannot run
(its id may be ``null`` when the line has none). With ``events_out``, every
rewind that banned text becomes a preference pair (``preference_pairs``).

How a run survives being killed at any moment (even SIGKILL):

1. Every record is one ``write`` of one whole line on a file opened for
   appending, followed by ``fsync``; a result is written only after its
   pairs, so a result on disk means its pairs are there too.
2. On start, each output file is cut after its last newline (a line being
   written when the process died is dropped), and what it holds is read:
   ids with a result, lines with a line-level error.
3. Pairs of ids without a result (written just before a kill) are dropped.
4. The input is read again; lines already answered are skipped, the rest run.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path
from queue import Queue
from typing import Any, TextIO

from backtrack_sampler.core.budget import RewindBudget
from backtrack_sampler.core.engine import BacktrackSampler
from backtrack_sampler.core.events import FinishEvent, RewindEvent
from backtrack_sampler.core.token_text import TokenText
from backtrack_sampler.provider.base_provider import BaseProvider
from backtrack_sampler.strategy.base_strategy import BaseStrategy

# Errors keyed by input line (the line has no usable id of its own); every other record is keyed by id.
LINE_ERRORS = ("invalid_line", "duplicate_id")
LINE_FIELDS = (
    "id",
    "prompt",
    "messages",
    "max_tokens",
    "temperature",
    "seed",
    "top_p",
    "top_k",
    "min_p",
    "banned_strings",
    "strategy",
)
STRATEGY_NAMES = ("none", "antislop", "replace", "creative", "adaptive", "json")


class BatchError(Exception):
    """A problem that stops the whole run (unreadable files, an unreachable server); nothing is lost."""


class LineError(Exception):
    """A line that cannot run: reported in the output with ``kind`` and the run goes on."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class BatchDefaults:
    """Settings of lines that do not give their own (the command line's options)."""

    max_tokens: int = 256
    temperature: float = 1.0
    top_k: int = 50
    top_p: float | None = None
    min_p: float | None = None
    seed: int | None = None
    bans: tuple[Any, ...] = ()  # phrases for every line (str or BanPhrase), added to each line's own
    strategy: str | None = None


@dataclass(frozen=True)
class Job:
    """One input line ready to run."""

    id: str | int
    line: int
    prompt: str | None
    messages: list[dict[str, str]] | None
    sampling: dict[str, Any]
    bans: tuple[Any, ...]
    strategy: str | dict[str, Any] | None


@dataclass
class Plan:
    """What a run has to do: jobs to run and line errors to report; how much was done before."""

    jobs: list[Job] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    total: int = 0
    done_before: int = 0


# -- input ------------------------------------------------------------------------------------------
def _record_key(record: dict[str, Any]) -> tuple[str, str]:
    error = record.get("error")
    if isinstance(error, dict) and error.get("type") in LINE_ERRORS:
        return "line", str(record.get("line"))
    return "id", json.dumps(record.get("id"))


# name -> (is the value acceptable, what it must be)
_NUMBERS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "max_tokens": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "temperature": (lambda v: _is_number(v) and v >= 0, "a number >= 0"),
    "seed": (lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
    "top_k": (lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
    "top_p": (lambda v: _is_number(v) and 0 < v <= 1, "a number in (0, 1]"),
    "min_p": (lambda v: _is_number(v) and 0 <= v < 1, "a number in [0, 1)"),
}


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def read_line(text: str, line: int) -> tuple[dict[str, Any], str | int]:
    """The object on one input line and its id; raises ``LineError("invalid_line")``."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise LineError("invalid_line", f"line {line} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise LineError("invalid_line", f"line {line} must be a JSON object, got {type(data).__name__}")
    job_id = data.get("id")
    if not (_is_int(job_id) or (isinstance(job_id, str) and job_id)):
        raise LineError("invalid_line", f"line {line}: id must be a non-empty string or an integer, got {job_id!r}")
    return data, job_id


def make_job(data: dict[str, Any], job_id: str | int, line: int, defaults: BatchDefaults) -> Job:
    """A ``Job`` from a line's object; raises ``LineError("invalid_params")`` naming the field."""
    unknown = sorted(set(data) - set(LINE_FIELDS))
    if unknown:
        raise LineError("invalid_params", f"unknown field {unknown[0]!r} (known: {', '.join(LINE_FIELDS)})")
    prompt, messages = data.get("prompt"), data.get("messages")
    if (prompt is None) == (messages is None):
        raise LineError("invalid_params", "give exactly one of prompt (raw text) and messages (chat)")
    if prompt is not None and (not isinstance(prompt, str) or not prompt):
        raise LineError("invalid_params", f"prompt must be a non-empty string, got {prompt!r}")
    if messages is not None and not (
        isinstance(messages, list)
        and messages
        and all(
            isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
            for m in messages
        )
    ):
        raise LineError("invalid_params", "messages must be a non-empty list of {role, content} string objects")
    given = {name: data[name] for name in _NUMBERS if data.get(name) is not None}
    for name, value in given.items():
        acceptable, wanted = _NUMBERS[name]
        if not acceptable(value):
            raise LineError("invalid_params", f"{name} must be {wanted}, got {value!r}")
    sampling = {
        "max_new_tokens": given.get("max_tokens", defaults.max_tokens),
        "temperature": given.get("temperature", defaults.temperature),
        "top_k": given.get("top_k", defaults.top_k),
        "top_p": given.get("top_p", defaults.top_p),
        "min_p": given.get("min_p", defaults.min_p),
        "seed": given.get("seed", defaults.seed),
    }
    banned = data.get("banned_strings") or []
    if not isinstance(banned, list) or not all(isinstance(b, str) and b for b in banned):
        raise LineError("invalid_params", f"banned_strings must be a list of non-empty strings, got {banned!r}")
    strategy = data.get("strategy", defaults.strategy)
    _check_strategy_spec(strategy)
    return Job(job_id, line, prompt, messages, sampling, (*defaults.bans, *banned), strategy)


def parse_line(text: str, line: int, defaults: BatchDefaults) -> Job:
    """A ``Job`` from one input line; raises ``LineError`` naming what is wrong."""
    data, job_id = read_line(text, line)
    return make_job(data, job_id, line, defaults)


def _check_strategy_spec(spec: Any) -> None:
    if spec is None:
        return
    name = spec.get("name") if isinstance(spec, dict) else spec
    if not isinstance(name, str) or name not in STRATEGY_NAMES:
        raise LineError(
            "invalid_params", f"strategy must be one of {', '.join(STRATEGY_NAMES)} (or {{name, params}}), got {spec!r}"
        )
    if isinstance(spec, dict):
        extra = set(spec) - {"name", "params"}
        if extra or not isinstance(spec.get("params", {}), dict):
            raise LineError("invalid_params", f"strategy must look like {{name, params: {{...}}}}, got {spec!r}")


def build_strategy(job: Job, provider: BaseProvider) -> BaseStrategy | None:
    """The job's strategy: the named one (with its params), plus AntiSlop for the bans; chained when both."""
    from backtrack_sampler.strategy.adaptive_temperature_strategy import AdaptiveTemperatureStrategy
    from backtrack_sampler.strategy.antislop_strategy import AntiSlopStrategy
    from backtrack_sampler.strategy.chain_strategy import ChainStrategy
    from backtrack_sampler.strategy.creative_writing_strategy import CreativeWritingStrategy
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
        "json": lambda: _json_strategy(provider, params),
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


def _json_strategy(provider: BaseProvider, params: dict[str, Any]) -> BaseStrategy:
    from backtrack_sampler.strategy.json_strategy import JsonStrategy

    return JsonStrategy(provider, **params)


# -- crash-safe JSONL -------------------------------------------------------------------------------
class JsonlAppender:
    """Appends whole JSON lines, each with one ``write`` and an ``fsync``: a kill leaves at most a partial last line."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def append(self, record: dict[str, Any]) -> None:
        data = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
        os.fsync(self._fd)

    def close(self) -> None:
        os.close(self._fd)


def recover_jsonl(path: Path) -> list[dict[str, Any]]:
    """The records of a JSONL file written by ``JsonlAppender``, after cutting a partial last line off the file."""
    if not path.exists():
        return []
    with path.open("rb+") as handle:
        data = handle.read()
        end = data.rfind(b"\n") + 1
        if end < len(data):
            handle.truncate(end)
            handle.flush()
            os.fsync(handle.fileno())
    records = []
    for number, raw in enumerate(data[:end].splitlines(), 1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
        except ValueError:
            raise BatchError(f"{path}: line {number} is not JSON; the file was not written by this command") from None
        if not isinstance(record, dict):
            raise BatchError(f"{path}: line {number} is not a JSON object")
        records.append(record)
    return records


def _rewrite_jsonl(path: Path, records: Sequence[dict[str, Any]]) -> None:
    """Replace ``path`` by ``records`` atomically (write a temporary file, fsync, rename)."""
    temporary = path.with_name(path.name + ".tmp")
    with temporary.open("w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


# -- planning --------------------------------------------------------------------------------------
def plan_batch(input_path: Path, output_path: Path, defaults: BatchDefaults, events_path: Path | None = None) -> Plan:
    """Read what is done, repair the output files, and list what is left to do."""
    try:
        lines = input_path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise BatchError(f"cannot read {str(input_path)!r}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise BatchError(f"{input_path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    done = {_record_key(r) for r in recover_jsonl(output_path)}
    if events_path is not None:
        pairs = recover_jsonl(events_path)
        kept = [p for p in pairs if ("id", json.dumps(p.get("id"))) in done]
        if len(kept) < len(pairs):
            _rewrite_jsonl(events_path, kept)
    plan = Plan()
    first_line: dict[str, int] = {}  # id (as JSON) -> the line where it first appears
    for number, text in enumerate(lines, 1):
        if not text.strip():
            continue
        plan.total += 1
        try:
            data, job_id = read_line(text, number)
        except LineError as error:
            _report(plan, done, ("line", str(number)), error_record(None, number, error.kind, str(error)))
            continue
        key_id = json.dumps(job_id)
        if key_id in first_line:
            message = f"duplicate id {job_id!r} (first on line {first_line[key_id]})"
            _report(plan, done, ("line", str(number)), error_record(job_id, number, "duplicate_id", message))
            continue
        first_line[key_id] = number
        try:
            job = make_job(data, job_id, number, defaults)
        except LineError as error:
            _report(plan, done, ("id", key_id), error_record(job_id, number, error.kind, str(error)))
            continue
        if ("id", key_id) in done:
            plan.done_before += 1
        else:
            plan.jobs.append(job)
    return plan


def _report(plan: Plan, done: set[tuple[str, str]], key: tuple[str, str], record: dict[str, Any]) -> None:
    if key in done:
        plan.done_before += 1
    else:
        plan.errors.append(record)


def error_record(job_id: Any, line: int, kind: str, message: str) -> dict[str, Any]:
    """The output record of a line that could not run."""
    return {"id": job_id, "line": line, "error": {"type": kind, "message": message}}


# -- preference pairs ----------------------------------------------------------------------------------
_SENTENCE_END = re.compile(r"[.!?…](?=\s|$)|\n")


def comparable_continuation(text: str, length: int) -> str:
    """The start of ``text``: up to the end of its first sentence, or the first word end after ``length`` chars."""
    body = len(text) - len(text.lstrip())
    sentence = _SENTENCE_END.search(text, body)
    cut = sentence.end() if sentence else len(text)
    space = re.compile(r"\s").search(text, max(length, body + 1))
    if space is not None:
        cut = min(cut, space.start())
    return text[:cut]


def preference_pairs(
    prompt: str, finish: FinishEvent, rewinds: Sequence[RewindEvent], token_bytes: Callable[[int], bytes]
) -> list[dict[str, Any]]:
    """DPO-style ``{prompt, chosen, rejected, metadata}`` records, one per rewind that banned text.

    ``rejected`` is the text the rewind erased (it holds the banned phrase);
    ``chosen`` is what the final text has at the same place, cut to a
    comparable length (``comparable_continuation``); ``prompt`` is the prompt
    and the generated text before that place. A rewind whose context was
    itself erased later (a deeper rewind came after it) has no final
    continuation and gives no pair, nor does one whose continuation is empty
    or still holds the phrase.
    """
    text = TokenText(token_bytes)
    for token in finish.tokens:
        text.append(token)
    final = finish.text
    pairs = []
    for index, event in enumerate(rewinds):
        if not event.banned or event.position > len(finish.tokens):
            continue
        if any(later.position < event.position for later in rewinds[index + 1 :]):
            continue  # its context did not survive
        start = text.char_start(event.position) if event.position < len(finish.tokens) else len(final)
        chosen = comparable_continuation(final[start:], len(event.suppressed_text))
        if not chosen.strip() or chosen == event.suppressed_text:
            continue
        if event.ban_phrase and event.ban_phrase.lower() in chosen.lower():
            continue  # the phrase was let through in the end (the retry ladder gave up): no preference
        pairs.append(
            {
                "prompt": prompt + final[:start],
                "chosen": chosen,
                "rejected": event.suppressed_text,
                "metadata": {
                    "position": event.position,
                    "char_offset": start,
                    "ban_phrase": event.ban_phrase,
                    "reason": event.reason,
                    "strategy": event.strategy,
                    "escalation": event.escalation,
                    "banned_token_ids": list(event.banned),
                    "rewind_index": index,
                },
            }
        )
    return pairs


# -- running -------------------------------------------------------------------------------------------
@dataclass
class Progress:
    """The progress line on stderr: done / total, tokens/s, rewinds, errors."""

    total: int
    done: int
    out: TextIO | None
    tokens: int = 0
    rewinds: int = 0
    errors: int = 0
    started: float = field(default_factory=time.monotonic)
    _last: float = 0.0

    def add(self, record: dict[str, Any]) -> None:
        self.done += 1
        if "error" in record:
            self.errors += 1
        else:
            self.tokens += record["stats"]["tokens_emitted"]
            self.rewinds += record["stats"]["rewinds"]
        self.show()

    def line(self) -> str:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        return (
            f"[batch] {self.done}/{self.total} done | {self.tokens / elapsed:.1f} tokens/s | "
            f"{self.rewinds} rewinds | {self.errors} errors"
        )

    def show(self, final: bool = False) -> None:
        if self.out is None:
            return
        tty = getattr(self.out, "isatty", lambda: False)()
        now = time.monotonic()
        if tty:
            self.out.write("\r\033[K" + self.line() + ("\n" if final else ""))
        elif final or now - self._last >= 5:
            self.out.write(self.line() + "\n")
            self._last = now
        self.out.flush()


@dataclass(frozen=True)
class BatchSummary:
    """Counts of one run: input lines, answered before, answered now, errors, tokens, rewinds, pairs."""

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
) -> BatchSummary:
    """Run every line of ``input_path`` not yet answered in ``output_path``; one worker per provider.

    Args:
        input_path: the JSONL prompts.
        output_path: the JSONL results (appended to; created when missing).
        providers: one per concurrent sequence (``OpenAICompatibleProvider.spawn``
            makes more of a remote one; a local model gives one).
        defaults: settings for lines that give none.
        events_path: where preference pairs go (``preference_pairs``), or ``None``.
        budget: the rewind budget of every generation.
        progress: where the progress line goes (``None``: nowhere).

    Raises:
        BatchError: a file cannot be read or written, or the remote server
            cannot be reached; what was written stays valid, so running again
            goes on from there.
        KeyboardInterrupt: after the running generations stopped; nothing is lost.
    """
    if not providers:
        raise ValueError("providers must hold at least one provider")
    defaults = defaults or BatchDefaults()
    inputs, output = Path(input_path), Path(output_path)
    events = Path(events_path) if events_path is not None else None
    plan = plan_batch(inputs, output, defaults, events)
    meter = Progress(plan.total, plan.done_before, progress)
    try:
        results = JsonlAppender(output)
        pair_log = JsonlAppender(events) if events is not None else None
    except OSError as exc:
        raise BatchError(f"cannot open the output: {exc}") from None
    lock, stop = threading.Lock(), threading.Event()
    counts = {"pairs": 0}

    def write(record: dict[str, Any], pairs: Sequence[dict[str, Any]] = ()) -> None:
        with lock:
            if pair_log is not None:
                for pair in pairs:
                    pair_log.append(pair)
                counts["pairs"] += len(pairs)
            results.append(record)  # after its pairs: a result on disk means its pairs are there
            meter.add(record)

    try:
        meter.show()
        for record in plan.errors:
            write(record)
        _run_jobs(plan.jobs, providers, budget, events is not None, stop, write)
    finally:
        stop.set()
        results.close()
        if pair_log is not None:
            pair_log.close()
        meter.show(final=True)
    ran = meter.done - plan.done_before
    return BatchSummary(plan.total, plan.done_before, ran, meter.errors, meter.tokens, meter.rewinds, counts["pairs"])


def _run_jobs(
    jobs: list[Job],
    providers: Sequence[BaseProvider],
    budget: RewindBudget | None,
    want_pairs: bool,
    stop: threading.Event,
    write: Callable[..., None],
) -> None:
    pool: Queue[BaseProvider] = Queue()
    for provider in providers:
        pool.put(provider)

    def work(job: Job) -> None:
        if stop.is_set():
            return
        provider = pool.get()
        try:
            record, pairs = run_job(job, provider, budget, want_pairs, stop)
        except BatchError:
            raise
        except Exception as exc:  # a bug, not bad input: stop rather than write thousands of error records
            raise BatchError(f"line {job.line} (id {job.id!r}) failed: {type(exc).__name__}: {exc}") from exc
        finally:
            pool.put(provider)
        if record is not None:
            write(record, pairs)

    executor = ThreadPoolExecutor(len(providers), thread_name_prefix="batch")
    pending: set[Future] = set()
    queued = iter(jobs)
    try:
        while True:
            for job in _take(queued, 2 * len(providers) - len(pending)):
                pending.add(executor.submit(work, job))
            if not pending:
                break
            finished, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
            for future in finished:
                future.result()  # a BatchError stops the run
    except BaseException:
        stop.set()
        raise
    finally:
        executor.shutdown(wait=True, cancel_futures=True)


def _take(iterator: Iterator[Job], n: int) -> list[Job]:
    taken = []
    for _ in range(max(0, n)):
        job = next(iterator, None)
        if job is None:
            break
        taken.append(job)
    return taken


def run_job(
    job: Job,
    provider: BaseProvider,
    budget: RewindBudget | None = None,
    want_pairs: bool = False,
    stop: threading.Event | None = None,
) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """Generate one job: its result record (or error record) and its preference pairs.

    Returns ``(None, [])`` when ``stop`` was set mid-generation: nothing is
    written, and the next run does the job again.
    """
    from backtrack_sampler.provider.openai_compatible_provider import RemoteError

    try:
        strategy = build_strategy(job, provider)
        prompt = job.prompt if job.prompt is not None else provider.apply_chat_template(job.messages)
        sampler = BacktrackSampler(provider, strategy, budget)
        rewinds: list[RewindEvent] = []
        finish: FinishEvent | None = None
        for event in sampler.stream(prompt, **job.sampling):
            if stop is not None and stop.is_set():
                return None, []
            if isinstance(event, RewindEvent):
                rewinds.append(event)
            elif isinstance(event, FinishEvent):
                finish = event
    except LineError as error:
        return error_record(job.id, job.line, error.kind, str(error)), []
    except NotImplementedError as exc:
        return error_record(job.id, job.line, "invalid_params", f"messages: {exc}"), []
    except (ValueError, TypeError) as exc:
        return error_record(job.id, job.line, "invalid_params", str(exc)), []
    except RemoteError as exc:
        if exc.status is not None and 400 <= exc.status < 500:
            return error_record(job.id, job.line, "rejected_by_server", str(exc)), []
        raise BatchError(f"{exc}; run the same command again to go on") from None
    assert finish is not None
    stats = asdict(finish.stats) | {"tokens_per_second": round(finish.stats.tokens_per_second, 3)}
    record = {"id": job.id, "line": job.line, "text": finish.text, "finish_reason": finish.reason, "stats": stats}
    if finish.detail:
        record["finish_detail"] = finish.detail
    pairs = []
    if want_pairs:
        for pair in preference_pairs(prompt, finish, rewinds, provider.token_bytes):
            pairs.append({"id": job.id, "line": job.line, **pair})
    return record, pairs
