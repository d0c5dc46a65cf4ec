"""A request in another server's dialect, run as the ``/v1/completions`` request it means.

Each dialect (llama.cpp's ``/completion``, KoboldCpp's ``/api/v1/generate``)
names a few fields its own way. ``completion_request`` renames those to the
fields of ``schemas.CompletionRequest`` (``sampler_seed`` -> ``seed``),
validates the result with it, and plans it with ``prepare.completion_plan``:
the same checks, limits, strategies and engine as ``/v1/completions``.
Every other field goes through unchanged, so what ``CompletionRequest``
accepts (bans, ``banned_tokens``, ``stopping_strings``, ``dry_*``...) works in
every dialect. A 400 names the field as the client sent it
(``max_length: this server allows at most 8, got 9``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from backtrack_sampler.server.errors import APIError, validation_error
from backtrack_sampler.server.prepare import completion_plan
from backtrack_sampler.server.schemas import CompletionRequest
from backtrack_sampler.server.settings import ServerSettings
from backtrack_sampler.server.worker import Job

MAX_TOKENS_NAMES = ("max_tokens", "max_new_tokens", "max_length", "n_predict")
"""The names a request may give its length limit in (``CompletionRequest`` and its aliases)."""


@dataclass(frozen=True)
class Submitted:
    """A dialect request on its way: its job, the validated request, and each prompt's token count."""

    job: Job
    request: CompletionRequest
    prompt_tokens: list[int]
    origins: Mapping[str, str] = field(default_factory=dict)


def translate(body: Mapping[str, Any], renames: Mapping[str, str], drop: Iterable[str] = ()) -> tuple[dict, dict]:
    """``body`` with the dialect's fields renamed (``{theirs: ours}``) and ``drop`` removed.

    A renamed field replaces any field of our name in the body (the dialect's
    server would read only its own). Returns the new body and ``{ours: theirs}``
    for the renames made, to name fields in errors as the client did.
    """
    out = {key: value for key, value in body.items() if key not in set(drop)}
    origins: dict[str, str] = {}
    for theirs, ours in renames.items():
        if theirs in out and theirs != ours:
            out[ours] = out.pop(theirs)
            origins[ours] = theirs
    return out, origins


def renamed(error: APIError, origins: Mapping[str, str]) -> APIError:
    """``error`` naming the field as the client sent it (``max_tokens`` -> ``max_length``)."""
    if not error.param:
        return error
    head, dot, rest = error.param.partition(".")
    theirs = origins.get(head)
    if theirs is None:
        return error
    message = error.message
    if message.startswith(head):
        message = theirs + message[len(head) :]
    return APIError(message, param=theirs + dot + rest, status=error.status, code=error.code)


def validate(body: dict[str, Any], origins: Mapping[str, str]) -> CompletionRequest:
    """``body`` as a ``CompletionRequest``; a 400 naming the client's field when it is not one."""
    try:
        return CompletionRequest.model_validate(body)
    except ValidationError as exc:
        raise renamed(validation_error(RequestValidationError(exc.errors())), origins) from None


async def submit(http: Request, body: dict[str, Any], origins: Mapping[str, str]) -> Submitted:
    """Validate and plan ``body`` (a ``/v1/completions`` body), and queue it on the model's worker."""
    state = http.app.state
    settings: ServerSettings = state.settings
    request = validate(body, origins)
    try:
        plan, prompt_tokens = await run_in_threadpool(completion_plan, request, state.provider, settings)
    except APIError as error:
        raise renamed(error, origins) from None
    return Submitted(state.worker.submit(plan), request, prompt_tokens, origins)


def default_max_tokens(body: dict[str, Any], value: int) -> None:
    """Give ``body`` a ``max_tokens`` of ``value`` when it names none under any name."""
    if all(body.get(name) is None for name in MAX_TOKENS_NAMES):
        body["max_tokens"] = value


def failure_error(failure: Any, origins: Mapping[str, str]) -> APIError:
    """The error of a job that failed while generating (``worker.JobFailed``), named as the client's field."""
    return renamed(APIError(failure.message, param=failure.param, status=failure.status), origins)
