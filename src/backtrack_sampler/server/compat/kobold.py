"""KoboldCpp's native API (SillyTavern's "KoboldAI Classic" mode, KoboldAI Lite, and its "KoboldCpp" text mode).

- ``POST /api/v1/generate``: KoboldCpp's body (``prompt``, ``memory``, ``max_length``,
  ``sampler_seed``, ``stop_sequence``, ``genkey``, ``n``; every ``/v1/completions``
  field besides, ``banned_tokens`` and ``banned_strings`` included) ->
  ``{"results": [{"text", "finish_reason"}]}``, one result per ``n``.
- ``POST /api/extra/generate/stream``: the same, as ``event: message`` /
  ``data: {"token": piece, "finish_reason": "null"}`` events; the last carries
  ``"finish_reason": "stop"`` or ``"length"`` (an error: ``"error"`` and an ``error`` object).
- ``POST /api/extra/abort``: stops the generations sent with the body's ``genkey``;
  without one (SillyTavern sends no body), KoboldCpp's rule: the generation
  running when it is the only one queued or running, whatever route started it
  (SillyTavern's KoboldCpp mode generates through ``/v1/completions``), else
  those sent here without a genkey -> ``{"success": "true"|"false", "done": ...}``.
- ``POST /api/extra/tokencount``: ``{"prompt"}`` -> ``{"value": n, "ids": [...]}``.
- ``GET /api/v1/model`` (``{"result": "koboldcpp/<model>"}``), ``GET /api/extra/version``
  (``{"result": "KoboldCpp", "version": "1.76", ...}``: SillyTavern then streams,
  tokenizes and sends ``min_p``), ``GET /api/v1/info/version`` (KoboldAI United
  ``1.2.5``: SillyTavern then sends ``stop_sequence``),
  ``GET /api/v1/config/max_context_length`` (``{"value": n}``).

Without ``max_length`` a generation writes at most 180 tokens (KoboldCpp's
default), or the server's limit if lower. ``max_context_length``, ``trim_stop``
(stop strings are always left out), ``rep_pen`` and the other KoboldCpp samplers
not in ``/v1/completions`` are accepted and ignored.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from backtrack_sampler.server import jobs
from backtrack_sampler.server.compat import dialect, tokens
from backtrack_sampler.server.compat.shapes import (
    KoboldAbortRequest,
    KoboldGenerateRequest,
    KoboldTokenCountRequest,
)
from backtrack_sampler.server.errors import APIError, error_body
from backtrack_sampler.server.generation import ChoiceDone, Output, TextOut
from backtrack_sampler.server.openapi import ROUTE_RESPONSES
from backtrack_sampler.server.sse import EventStreamResponse
from backtrack_sampler.server.worker import Job, JobFailed, ModelWorker

KOBOLDCPP_VERSION = "1.76"
"""The KoboldCpp version we answer as: at or above every version SillyTavern checks (1.30 streaming,
1.41 tokenizing, 1.48 min_p)."""
KOBOLD_UNITED_VERSION = "1.2.5"
DEFAULT_MAX_LENGTH = 180  # KoboldCpp's default max_length
RENAMES = {"max_length": "max_tokens", "sampler_seed": "seed", "stop_sequence": "stop"}
DROPPED = ("model", "genkey", "memory", "trim_stop", "max_context_length", "logprobs", "stream", "stream_options")
"""KoboldCpp's fields that are not ``/v1/completions`` fields of the same meaning (``logprobs`` is a boolean
there; ``model`` is ignored, as KoboldCpp does)."""


def kobold_event(data: dict[str, Any]) -> str:
    """One event of KoboldCpp's stream."""
    return f"event: message\ndata: {json.dumps(data, ensure_ascii=False, separators=(',', ':'))}\n\n"


def generate_body(body: KoboldGenerateRequest, limit: int) -> tuple[dict[str, Any], dict[str, str]]:
    """KoboldCpp's generate body as a ``/v1/completions`` body, and ``{our field: theirs}``."""
    raw = body.model_dump(exclude_unset=True)
    raw["prompt"] = (body.memory or "") + body.prompt
    if "stop_sequence" in raw:  # KoboldCpp skips empty stop strings
        raw["stop_sequence"] = [s for s in raw["stop_sequence"] or [] if s] or None
    out, origins = dialect.translate(raw, RENAMES, DROPPED)
    if out.get("stop") is None:
        out.pop("stop", None)
    dialect.default_max_tokens(out, min(DEFAULT_MAX_LENGTH, limit))
    return out, origins


@dataclass
class Generations:
    """The generations running through this API, by ``genkey`` ("" for none), for ``/api/extra/abort``."""

    running: list[tuple[str, Job]] = field(default_factory=list)

    def add(self, genkey: str, job: Job) -> None:
        self.running.append((genkey, job))

    def remove(self, job: Job) -> None:
        self.running = [(key, j) for key, j in self.running if j is not job]

    def abort(self, genkey: str) -> bool:
        """Cancel every generation sent with ``genkey``; whether there was one."""
        found = [job for key, job in self.running if key == genkey]
        for job in found:
            job.cancel()
        return bool(found)

    def abort_keyless(self, worker: ModelWorker) -> bool:
        """An abort without ``genkey``: the server's only generation, or those sent here without a key.

        KoboldCpp stops its one generation when no other request waits; with
        several running, only the keyless ones of this API are stopped.
        """
        job = worker.running
        if job is not None and worker.status()["queued_or_running"] == 1:
            if any(j is job and key for key, j in self.running):
                return False  # it was sent with a key: only that key stops it
            job.cancel()
            return True
        return self.abort("")


class KoboldResults:
    """Collects the choices of a generation as KoboldCpp's ``results``."""

    def __init__(self) -> None:
        self.text: dict[int, list[str]] = {}
        self.finish: dict[int, str] = {}

    def collect(self, item: Output) -> None:
        if isinstance(item, TextOut):
            self.text.setdefault(item.index, []).append(item.text)
        elif isinstance(item, ChoiceDone):
            self.text.setdefault(item.index, [])
            self.finish[item.index] = item.finish_reason

    def response(self, choices: int) -> dict[str, Any]:
        # A choice that was aborted has no finish: KoboldCpp answers "length" then (its stop reason is not EOS).
        results = [
            {"text": "".join(self.text.get(i, [])), "finish_reason": self.finish.get(i, "length")}
            for i in range(choices)
        ]
        return {"results": results}


def kobold_router() -> APIRouter:
    """KoboldCpp's routes (``RequestGuard`` checks the API key)."""
    router = APIRouter(tags=["KoboldCpp"])
    generations = Generations()

    async def start(request: Request, body: KoboldGenerateRequest) -> dialect.Submitted:
        converted, origins = generate_body(body, request.app.state.settings.max_tokens_limit)
        submitted = await dialect.submit(request, converted, origins)
        generations.add(body.genkey or "", submitted.job)
        return submitted

    @router.post("/api/v1/generate", response_model=None, responses=ROUTE_RESPONSES["kobold_generate"])
    async def generate(request: Request, body: KoboldGenerateRequest):
        submitted = await start(request, body)
        results = KoboldResults()
        try:
            failure = await jobs.collect(request, submitted.job, results.collect)
        finally:
            generations.remove(submitted.job)
        if failure is not None:
            raise dialect.failure_error(failure, submitted.origins)
        return JSONResponse(results.response(len(submitted.job.plan.choices)))

    @router.post("/api/extra/generate/stream", response_model=None, responses=ROUTE_RESPONSES["kobold_generate_stream"])
    async def generate_stream(request: Request, body: KoboldGenerateRequest):
        if body.n > 1:
            raise APIError(f"n: a stream carries one result, got {body.n}", param="n", code="unsupported")
        submitted = await start(request, body)
        return EventStreamResponse(_stream(submitted, generations))

    @router.post("/api/extra/abort", response_model=None, responses=ROUTE_RESPONSES["kobold_abort"])
    async def abort(request: Request, body: KoboldAbortRequest | None = None) -> dict[str, Any]:
        genkey = (body.genkey if body else None) or ""
        found = generations.abort(genkey) if genkey else generations.abort_keyless(request.app.state.worker)
        return {"success": "true" if found else "false", "done": "true" if found else "false"}

    @router.post("/api/extra/tokencount", response_model=None, responses=ROUTE_RESPONSES["kobold_tokencount"])
    async def tokencount(request: Request, body: KoboldTokenCountRequest) -> dict[str, Any]:
        ids = await tokens.encode(request, body.prompt, body.special, "prompt")
        return {"value": len(ids), "ids": ids}

    @router.get("/api/v1/model", response_model=None, responses=ROUTE_RESPONSES["kobold_result"])
    async def model(request: Request) -> dict[str, Any]:
        return {"result": f"koboldcpp/{tokens.model_name(request)}"}

    @router.get("/api/v1/info/version", response_model=None, responses=ROUTE_RESPONSES["kobold_result"])
    async def united_version() -> dict[str, Any]:
        return {"result": KOBOLD_UNITED_VERSION}

    @router.get("/api/extra/version", response_model=None, responses=ROUTE_RESPONSES["kobold_version"])
    async def version(request: Request) -> dict[str, Any]:
        protected = request.app.state.settings.api_key is not None
        return {
            "result": "KoboldCpp",
            "version": KOBOLDCPP_VERSION,
            "protected": protected,
            "txt2img": False,
            "vision": False,
            "transcribe": False,
        }

    @router.get("/api/v1/config/max_context_length", response_model=None, responses=ROUTE_RESPONSES["kobold_value"])
    async def max_context_length(request: Request) -> dict[str, Any]:
        return {"value": tokens.context_length(request)}

    return router


async def _stream(submitted: dialect.Submitted, generations: Generations) -> AsyncIterator[str]:
    """KoboldCpp's events: a token event per piece of final text, then one with the finish reason."""
    finish = "length"  # aborted: KoboldCpp's reason when the stop was not EOS
    try:
        async for item in jobs.outputs(submitted.job):
            if isinstance(item, JobFailed):
                error = dialect.failure_error(item, submitted.origins)
                body = error_body(error.message, error.type, error.param, error.code)
                yield kobold_event({"token": "", "finish_reason": "error", **body})
                return
            if isinstance(item, TextOut):
                yield kobold_event({"token": item.text, "finish_reason": "null"})
            elif isinstance(item, ChoiceDone):
                finish = item.finish_reason
        yield kobold_event({"token": "", "finish_reason": finish})
    finally:
        generations.remove(submitted.job)
        submitted.job.cancel()
