"""The app factory: an OpenAI-compatible API and the playground page over one model.

Routes:

- ``POST /v1/completions`` and ``POST /v1/chat/completions``: streamed (SSE)
  or not; see ``schemas`` for the fields, ``responses`` for the shapes.
- ``GET /v1/models``, ``GET /health``.
- ``GET /``: the playground (static files under ``server/static``).
- The endpoints of TabbyAPI, text-generation-webui, llama.cpp's server and
  KoboldCpp (``compat``), so their clients work unchanged; a generating one
  runs as the ``/v1/completions`` request it means.

Every request first passes ``guard.RequestGuard`` (its ``Host``, the API key,
the body's size and time); ``openapi`` describes what each route answers.
Below the app, ``http11`` bounds the request's head (size and time) and
answers malformed HTTP with the same JSON error body, when ``serve`` runs it.
A request is checked and planned in a thread (``prepare``), then its choices
are queued on the model's worker (``worker``): one thread for a provider,
one per slot for a ``SequencePool`` (``BatchedLlamacpp``, continuous
batching). The event loop only waits for outputs (``jobs``) and formats
them. A client that disconnects cancels its job.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from backtrack_sampler import __version__
from backtrack_sampler.core.sampling_defaults import SamplingDefaults
from backtrack_sampler.model_sampling import recommended_sampling
from backtrack_sampler.provider.base_provider import BaseProvider
from backtrack_sampler.server import jobs
from backtrack_sampler.server.compat import include_compat_routes
from backtrack_sampler.server.errors import APIError, error_body, install_error_handlers
from backtrack_sampler.server.generation import GenerationPlan
from backtrack_sampler.server.guard import RequestGuard
from backtrack_sampler.server.openapi import ROUTE_RESPONSES
from backtrack_sampler.server.prepare import chat_plan, completion_plan
from backtrack_sampler.server.responses import ChatFormatter, CompletionFormatter, Formatter
from backtrack_sampler.server.schemas import ChatCompletionRequest, CompletionRequest, SamplingRequest
from backtrack_sampler.server.settings import ServerSettings
from backtrack_sampler.server.sse import DONE, EventStreamResponse, sse
from backtrack_sampler.server.worker import Job, JobFailed, ModelWorker, SequencePool

STATIC_DIR = Path(__file__).resolve().parent / "static"


def create_app(
    provider: BaseProvider | SequencePool,
    model_name: str,
    api_key: str | None = None,
    **limits: Any,
) -> FastAPI:
    """An app serving ``provider`` under the id ``model_name``.

    Args:
        provider: the model: a provider (one sequence at a time, one worker
            thread), or a ``SequencePool`` such as ``BatchedLlamacpp`` (up to
            ``n_slots`` sequences decoded together, one worker thread per
            slot; prompts are checked against one slot's context). Every app
            on one model shares its worker.
        model_name: the id listed by ``/v1/models``.
        api_key: when given, every request but ``/health``, ``/`` and ``/static/...`` needs it
            (``Authorization: Bearer <api_key>`` or ``x-api-key: <api_key>``).
        **limits: the other fields of ``ServerSettings``: ``allowed_hosts`` (the names
            clients may send in ``Host``; default: this machine's loopback names, so an app
            served on another address, or tested with FastAPI's ``TestClient`` (``testserver``),
            names its hosts), ``max_prompt_tokens``, ``max_tokens_limit``, ``max_bans``,
            ``max_n``, ``max_choices``, ``max_body_bytes``, ...

    Example:
        >>> app = create_app(LlamacppProvider(llm), "smollm2")  # doctest: +SKIP
        >>> app = create_app(BatchedLlamacpp(llm, n_slots=8), "smollm2")  # doctest: +SKIP
        >>> uvicorn.run(app, host="127.0.0.1", port=8000)  # doctest: +SKIP
    """
    if not isinstance(provider, (BaseProvider, SequencePool)):
        raise TypeError(f"provider must be a BaseProvider or a SequencePool, got {type(provider).__name__}")
    settings = ServerSettings(model_name=model_name, api_key=api_key, **limits)
    worker = ModelWorker.for_provider(provider)
    # Requests are planned (tokenized, checked against the context) on a provider that never generates.
    planner = provider if isinstance(provider, BaseProvider) else provider.provider()
    app = FastAPI(
        title="backtrack_sampler",
        version=__version__,
        description="An OpenAI-compatible API whose sampling strategies can backtrack.",
    )
    app.state.settings = settings
    app.state.provider = planner
    app.state.worker = worker
    install_error_handlers(app)
    app.add_middleware(RequestGuard, settings=settings)
    started = int(time.time())

    api = APIRouter(prefix="/v1")  # RequestGuard checks the API key

    # The playground starts from these; requests that omit a field keep OpenAI's meaning of it.
    sampling = recommended_sampling(planner)

    @api.get("/models", response_model=None, responses=ROUTE_RESPONSES["models"])
    async def list_models() -> dict[str, Any]:
        return {"object": "list", "data": [_model_card(settings, planner, started, sampling)]}

    @api.get("/models/{model_id}", response_model=None, responses=ROUTE_RESPONSES["model"])
    async def get_model(model_id: str) -> dict[str, Any]:
        if model_id != settings.model_name:
            raise APIError(f"model {model_id!r} is not served here", param="model", status=404, code="model_not_found")
        return _model_card(settings, planner, started, sampling)

    @api.post("/completions", response_model=None, responses=ROUTE_RESPONSES["completions"])
    async def completions(request: Request, body: CompletionRequest):
        return await _generate(request, body, completion_plan, CompletionFormatter)

    @api.post("/chat/completions", response_model=None, responses=ROUTE_RESPONSES["chat"])
    async def chat_completions(request: Request, body: ChatCompletionRequest):
        return await _generate(request, body, chat_plan, ChatFormatter)

    app.include_router(api)
    include_compat_routes(app)  # TabbyAPI's, text-generation-webui's, llama.cpp's and KoboldCpp's routes

    @app.get("/health", response_model=None, responses=ROUTE_RESPONSES["health"])
    async def health() -> dict[str, Any]:
        body = {"status": "ok", "model": settings.model_name, "generation": worker.status()}
        batch = worker.batch_stats()
        if batch is not None:
            body["batch"] = batch
        return body

    @app.get("/", include_in_schema=False)
    async def playground() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app


def _model_card(
    settings: ServerSettings, provider: BaseProvider, created: int, sampling: SamplingDefaults
) -> dict[str, Any]:
    return {
        "id": settings.model_name,
        "object": "model",
        "created": created,
        "owned_by": "backtrack_sampler",
        "max_model_len": provider.context_length,
        "sampling_defaults": {**sampling.values(), "source": sampling.source},
    }


async def _generate(
    request: Request,
    body: SamplingRequest,
    make_plan: Callable[[Any, BaseProvider, ServerSettings], tuple[GenerationPlan, list[int]]],
    formatter_type: type[Formatter],
):
    """Both endpoints: plan ``body`` (in a thread), queue the plan, answer with ``formatter_type``'s shapes."""
    state = request.app.state
    settings: ServerSettings = state.settings
    plan, prompt_tokens = await run_in_threadpool(make_plan, body, state.provider, settings)
    formatter = formatter_type(
        state.provider,
        settings.model_name,
        plan.top_logprobs,
        body.return_tokens_as_token_ids,
        body.backtrack_events,
        bool(body.stream and body.stream_options and body.stream_options.include_usage),
        prompt_tokens,
    )
    return await _respond(request, state.worker.submit(plan), formatter, body.stream)


async def _respond(request: Request, job: Job, formatter: Formatter, stream: bool):
    if stream:
        return EventStreamResponse(_event_stream(job, formatter))
    failure = await jobs.collect(request, job, formatter.collect)
    if failure is not None:
        raise APIError(failure.message, param=failure.param, status=failure.status)
    return JSONResponse(formatter.response())


async def _event_stream(job: Job, formatter: Formatter) -> AsyncIterator[str]:
    """The SSE body of a streamed request; leaving it early (client gone) cancels the job."""
    try:
        async for item in jobs.outputs(job):
            if isinstance(item, JobFailed):
                kind = "invalid_request_error" if item.status < 500 else "server_error"
                yield sse(error_body(item.message, kind, item.param))
                break
            for chunk in formatter.chunks(item):
                yield sse(chunk)
        if formatter.include_usage:
            yield sse(formatter.usage_chunk())
        yield DONE
    finally:
        job.cancel()
