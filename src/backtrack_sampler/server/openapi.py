"""What the OpenAPI document (``/openapi.json``, ``/docs``) says each route answers.

The routes build their JSON themselves (``responses``), so these pydantic
models only describe it: the bodies of ``200`` (a completion, a chat
completion, or a ``text/event-stream`` when ``stream`` is true) and the error
body every failure carries. ``ROUTE_RESPONSES`` lists, per kind of route, the
statuses the server really sends; FastAPI's default ``422`` never happens (a
body that fails validation is a 400) and is not listed.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field


class ErrorDetail(BaseModel):
    """What went wrong."""

    message: str = Field(description="What went wrong, naming the value.")
    type: str = Field(description="`invalid_request_error`, or `server_error`.")
    param: str | None = Field(description="The request parameter at fault (`messages.0.content`), or null.")
    code: str | None = Field(description="A short machine-readable code, or null.")


class ErrorBody(BaseModel):
    """The body of every error (and the event that ends a stream that failed)."""

    error: ErrorDetail


class Usage(BaseModel):
    """Tokens read and written."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class BacktrackStats(BaseModel):
    """The statistics of one choice (with ``backtrack_events``)."""

    tokens: int
    positions_evaluated: int
    rewinds: int
    tokens_rewound: int
    rewinds_refused: int
    elapsed_s: float
    tokens_per_second: float


class _Choice(BaseModel):
    index: int
    finish_reason: Literal["stop", "length"] | None
    backtrack_events: list[dict[str, Any]] | None = Field(
        None, description="With `backtrack_events`: the rewinds, in order."
    )
    backtrack_stats: BacktrackStats | None = Field(None, description="With `backtrack_events`.")


class CompletionLogprobs(BaseModel):
    """vLLM's shape: per generated token, its name, its logprob, the top alternatives and its offset."""

    tokens: list[str]
    token_logprobs: list[float | None]
    top_logprobs: list[dict[str, float] | None]
    text_offset: list[int]


class CompletionChoice(_Choice):
    """One choice of a completion."""

    text: str
    logprobs: CompletionLogprobs | None


class CompletionResponse(BaseModel):
    """``POST /v1/completions`` without ``stream``."""

    id: str
    object: Literal["text_completion"]
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage


class TopLogprob(BaseModel):
    """A likely token at one position."""

    token: str
    logprob: float
    bytes: list[int]


class TokenLogprob(TopLogprob):
    """A generated token, its logprob and the likeliest alternatives."""

    top_logprobs: list[TopLogprob]


class ChatLogprobs(BaseModel):
    """The logprobs of a chat choice."""

    content: list[TokenLogprob]


class AssistantMessage(BaseModel):
    """The answer."""

    role: Literal["assistant"]
    content: str


class ChatChoice(_Choice):
    """One choice of a chat completion."""

    message: AssistantMessage
    logprobs: ChatLogprobs | None


class ChatCompletionResponse(BaseModel):
    """``POST /v1/chat/completions`` without ``stream``."""

    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage


class ModelCard(BaseModel):
    """The served model."""

    id: str
    object: Literal["model"]
    created: int
    owned_by: str
    max_model_len: int | None
    sampling_defaults: dict[str, float | str] | None = Field(
        None,
        description="The model's recommended temperature, top_k, top_p and min_p (else llama.cpp's defaults) and "
        "their source; the playground starts from them. A request that omits a field keeps OpenAI's default.",
    )


class ModelList(BaseModel):
    """``GET /v1/models``."""

    object: Literal["list"]
    data: list[ModelCard]


class Health(BaseModel):
    """``GET /health``."""

    status: Literal["ok"]
    model: str
    generation: dict[str, int] = Field(description="Jobs queued or running, choices running, finished jobs.")
    batch: dict[str, Any] | None = Field(None, description="A batched model's counters.")


_ERRORS = {
    400: "A bad request: malformed JSON, a wrong type, a value out of range or over a limit (names `param`).",
    401: "The API key is missing or wrong (only when the server has one).",
    403: "The `Host` header names a host this server does not answer to.",
    404: "No such model (or route).",
    413: "The request body is larger than the server accepts.",
    502: "The remote engine (`serve --remote-url`) failed or refused while generating.",
    "4XX": "Any other client error (405: a method the route does not take; 408: the body came too slowly).",
}
_STREAM = {
    "schema": {
        "type": "object",
        "description": "With `stream: true`, server-sent events; the schema is one event's.",
        "properties": {
            "data": {
                "type": "string",
                "description": 'A chunk of the endpoint\'s (JSON), an `{"error": ...}` body, or `[DONE]` last.',
            },
        },
        "required": ["data"],
    }
}


def _errors(*statuses: int | str) -> dict[int | str, dict[str, Any]]:
    return {status: {"model": ErrorBody, "description": _ERRORS[status]} for status in statuses}


def _generation(model: type[BaseModel]) -> dict[int | str, dict[str, Any]]:
    ok = {"model": model, "description": "The completion, or its stream.", "content": {"text/event-stream": _STREAM}}
    return {200: ok, **_errors(400, 401, 403, 404, 413, "4XX", 502)}


_KOBOLD_STREAM = {
    "schema": {
        "type": "object",
        "description": 'Server-sent events, each `event: message` and `data: {"token": ..., "finish_reason": ...}`; '
        'the last has `finish_reason` `"stop"` or `"length"` (or `"error"` and an `error` object).',
        "properties": {"event": {"const": "message"}, "data": {"type": "string"}},
        "required": ["event", "data"],
    }
}


def _answer(model: type[BaseModel], *statuses: int | str) -> dict[int | str, dict[str, Any]]:
    return {200: {"model": model}, **_errors(*statuses)}


def _dialect_generation(model: type[BaseModel], stream: dict[str, Any]) -> dict[int | str, dict[str, Any]]:
    ok = {"model": model, "description": "The completion, or its stream.", "content": {"text/event-stream": stream}}
    return {200: ok, **_errors(400, 401, 403, 413, "4XX", 502)}


def _compat_responses() -> dict[str, dict[int | str, dict[str, Any]]]:
    """The routes of the other servers' dialects (``server.compat``)."""
    from backtrack_sampler.server.compat import shapes

    llama_stream = {
        "schema": {
            "type": "object",
            "description": 'Server-sent events `data: {"content": ..., "stop": false, ...}`, then the answer with '
            '`stop: true` (an error: `{"error": ...}`); no `[DONE]`.',
            "properties": {"data": {"type": "string"}},
            "required": ["data"],
        }
    }
    body_errors = (400, 401, 403, 413, "4XX")
    return {
        "tabby_model": _answer(shapes.TabbyModelCard, 401, 403, "4XX"),
        "tabby_model_list": _answer(shapes.TabbyModelList, 401, 403, "4XX"),
        "tabby_encode": _answer(shapes.TokensAndLength, *body_errors),
        "tabby_decode": _answer(shapes.DecodedText, *body_errors),
        "ooba_model_info": _answer(shapes.OobaModelInfo, 401, 403, "4XX"),
        "ooba_encode": _answer(shapes.TokensAndLength, *body_errors),
        "ooba_decode": _answer(shapes.DecodedText, *body_errors),
        "ooba_token_count": _answer(shapes.TokenCount, *body_errors),
        "tokenize": _answer(shapes.TokenizeResponse, *body_errors),
        "detokenize": _answer(shapes.DetokenizeResponse, *body_errors),
        "props": _answer(shapes.Props, 401, 403, "4XX"),
        "llamacpp_completion": _dialect_generation(shapes.LlamaCompletionResponse, llama_stream),
        "kobold_generate": _dialect_generation(shapes.KoboldResults, _KOBOLD_STREAM),
        "kobold_generate_stream": {
            200: {"description": "KoboldCpp's stream.", "content": {"text/event-stream": _KOBOLD_STREAM}},
            **_errors(*body_errors),
        },
        "kobold_abort": _answer(shapes.KoboldAbort, *body_errors),
        "kobold_tokencount": _answer(shapes.KoboldTokenCount, *body_errors),
        "kobold_result": _answer(shapes.KoboldResult1, 401, 403, "4XX"),
        "kobold_version": _answer(shapes.KoboldVersion, 401, 403, "4XX"),
        "kobold_value": _answer(shapes.KoboldValue, 401, 403, "4XX"),
    }


ROUTE_RESPONSES: dict[str, dict[int | str, dict[str, Any]]] = {
    "completions": _generation(CompletionResponse),
    "chat": _generation(ChatCompletionResponse),
    "models": {200: {"model": ModelList}, **_errors(401, 403, "4XX")},
    "model": {200: {"model": ModelCard}, **_errors(401, 403, 404, "4XX")},
    "health": {200: {"model": Health}, **_errors(403, "4XX")},
    **_compat_responses(),
}
"""The ``responses`` of each route (by the route's name in ``app``; the other servers' routes in ``server.compat``)."""
