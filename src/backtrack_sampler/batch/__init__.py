"""Batch generation: a JSONL file of prompts in, a JSONL file of results out, resumable after any kill.

Each input line is an object::

    {"id": "story-1", "prompt": "Write a story about a dog."}          # a user message, through the chat template
    {"id": "story-2", "prompt": "Once upon a time", "raw": true}       # sent as is
    {"id": 3, "messages": [{"role": "user", "content": "Hi"}],          # through the chat template
     "max_tokens": 200, "temperature": 0.8, "seed": 1, "top_p": 0.95, "top_k": 40, "min_p": 0.05,
     "banned_strings": ["tapestry"], "strategy": "antislop"}

A ``prompt`` means what ``generate PROMPT`` means: a user message through the
model's chat template, unless the line says ``"raw": true`` or the run says
``raw`` (``BatchDefaults.raw``, ``batch --raw``, as ``generate --raw``); a
line's ``"raw"`` wins over the run's. On a model without a chat template a
``prompt`` line that is not raw stops the run before it starts (as
``generate`` refuses it without ``--raw``).

Each output line is ``{"id", "line", "text", "finish_reason", "stats", "prompt_mode"}``
(``prompt_mode``: ``"chat"`` or ``"raw"``, how the prompt reached the model), or
``{"id", "line", "error": {"type", "message"}}`` for a line that cannot run
(its id may be ``null`` when the line has none). With ``events_out``, every
rewind that banned text becomes a preference pair (``preference_pairs``), or,
with ``ftpo``, a Final Token Preference Optimization record (``ftpo_records``).
Only bad input gives an error record; an error while generating is a bug and
stops the run.

How a run survives being killed at any moment (even SIGKILL):

1. Every record is one ``write`` of one whole line on a file opened for
   appending, followed by ``fsync``; a result is written only after its
   pairs, so a result on disk means its pairs are there too.
2. On start, each output file is cut after its last newline (a line being
   written when the process died is dropped), and what it holds is read:
   ids with a result, lines with a line-level error.
3. Pairs of ids without a result (written just before a kill) are dropped.
4. The input is read again; lines already answered are skipped, the rest run.
   A run that would send an answered line's prompt the other way (chat
   template or raw) is refused before it writes anything (``SettingsError``).

The modules, in the order a run uses them: ``lines`` (input lines and their
checks), ``plan`` (what is left to do), ``job`` (running one line),
``pairs`` (preference pairs), ``ftpo`` (FTPO records), ``jsonl`` (the crash-safe files), ``progress``
and ``run`` (``run_batch``); ``errors`` holds the two kinds of failure.
"""

from backtrack_sampler.batch.errors import LINE_ERRORS, BatchError, LineError, SettingsError, error_record
from backtrack_sampler.batch.ftpo import FtpoSettings, ftpo_records
from backtrack_sampler.batch.job import build_strategy, prepare, result_record, run_job
from backtrack_sampler.batch.jsonl import JsonlAppender, recover_jsonl, rewrite_jsonl
from backtrack_sampler.batch.lines import (
    CHAT,
    LINE_FIELDS,
    NO_STRATEGY,
    RAW,
    BatchDefaults,
    Job,
    check_strategy,
    make_job,
    parse_line,
    read_line,
    sampling_params,
)
from backtrack_sampler.batch.pairs import comparable_continuation, preference_pairs
from backtrack_sampler.batch.plan import Plan, plan_batch, record_key
from backtrack_sampler.batch.progress import Progress
from backtrack_sampler.batch.run import BatchSummary, run_batch

__all__ = [
    "CHAT",
    "LINE_ERRORS",
    "LINE_FIELDS",
    "NO_STRATEGY",
    "RAW",
    "BatchDefaults",
    "BatchError",
    "BatchSummary",
    "FtpoSettings",
    "Job",
    "JsonlAppender",
    "LineError",
    "Plan",
    "Progress",
    "SettingsError",
    "build_strategy",
    "check_strategy",
    "comparable_continuation",
    "error_record",
    "ftpo_records",
    "make_job",
    "parse_line",
    "plan_batch",
    "prepare",
    "preference_pairs",
    "read_line",
    "record_key",
    "recover_jsonl",
    "result_record",
    "rewrite_jsonl",
    "run_batch",
    "run_job",
    "sampling_params",
]
