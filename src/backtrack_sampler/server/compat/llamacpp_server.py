"""llama.cpp server's native endpoints (SillyTavern's "llama.cpp" mode).

- ``POST /tokenize``: ``{"content", "add_special"?, "with_pieces"?}`` -> ``{"tokens": [...]}``
  (ids, or ``{"id", "piece"}`` objects); vLLM's ``{"prompt"}`` form also answers
  ``count`` and ``max_model_len``.
- ``POST /detokenize``: ``{"tokens"}`` -> ``{"content"}``.
- ``GET /props``: ``default_generation_settings`` (``n_ctx``, ``params``), ``total_slots``,
  ``model_path`` (the served model's id), ``chat_template`` (the model's Jinja source or ``""``).
- ``POST /completion``: llama.cpp's request (``prompt`` text or token ids, ``n_predict``,
  ``n_probs``, ``stream``...; every ``/v1/completions`` field besides) run as a
  ``/v1/completions`` request. Not streamed: one object (``content``, ``stop: true``,
  ``stop_type``, ``tokens_predicted``, ``timings``...). Streamed: ``data: {"content":
  piece, "stop": false, ...}`` per piece of final text, then the same object as
  unstreamed with ``stop: true`` and empty ``content``; no ``[DONE]``.

``completion_probabilities`` carries both llama.cpp's current names (``token``,
``logprob``, ``top_logprobs``) and its older ones (``content``, ``probs`` of
``tok_str``/``prob``, which SillyTavern 1.12 reads). ``n_predict`` of -1 (or none)
means the server's ``max_tokens_limit``. A request of several prompts is not
supported (400 naming ``prompt``).
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from backtrack_sampler import __version__
from backtrack_sampler.server import jobs
from backtrack_sampler.server.compat import dialect, tokens
from backtrack_sampler.server.compat.shapes import DetokenizeRequest, LlamaCompletionRequest, TokenizeRequest
from backtrack_sampler.server.errors import APIError, error_body
from backtrack_sampler.server.generation import ChoiceDone, Output, TextOut
from backtrack_sampler.server.openapi import ROUTE_RESPONSES
from backtrack_sampler.server.request_strategy import TokenRecord
from backtrack_sampler.server.responses import LOGPROB_FLOOR
from backtrack_sampler.server.sse import EventStreamResponse, sse
from backtrack_sampler.server.worker import JobFailed

RANDOM_SEED = 4294967295  # what llama.cpp shows for "random" (-1 as uint32)


def props(http: Request) -> dict[str, Any]:
    """``GET /props``'s body."""
    provider = tokens.provider_of(http)
    return {
        "default_generation_settings": {
            "id": 0,
            "id_task": -1,
            "n_ctx": tokens.context_length(http),
            "speculative": False,
            "is_processing": http.app.state.worker.status()["running"] > 0,
            "params": _params(http, None),
        },
        "total_slots": tokens.slots(http),
        "model_path": tokens.model_name(http),
        "chat_template": tokens.chat_template(provider),
        "modalities": {"vision": False, "audio": False},
        "build_info": f"backtrack_sampler {__version__}",
    }


def _params(http: Request, request: Any) -> dict[str, Any]:
    """llama.cpp's ``params`` of a completion (``request``: a ``CompletionRequest``, or ``None``: the defaults)."""
    limit = http.app.state.settings.max_tokens_limit
    if request is None:
        return {"n_predict": -1, "seed": RANDOM_SEED, "temperature": 1.0, "top_k": 0, "top_p": 1.0, "min_p": 0.0}
    seed = request.seed if isinstance(request.seed, int) and request.seed >= 0 else RANDOM_SEED
    return {
        "n_predict": request.max_tokens or limit,
        "seed": seed,
        "temperature": request.temperature,
        "top_k": request.top_k or 0,
        "top_p": request.top_p,
        "min_p": request.min_p or 0.0,
        "presence_penalty": request.presence_penalty,
        "frequency_penalty": request.frequency_penalty,
        "stop": request.stop or [],
        "n_probs": request.logprobs or 0,
        "stream": request.stream,
    }


def completion_body(body: LlamaCompletionRequest, limit: int) -> tuple[dict[str, Any], dict[str, str]]:
    """llama.cpp's ``/completion`` body as a ``/v1/completions`` body, and ``{our field: theirs}``."""
    out = body.model_dump(exclude_unset=True)
    origins: dict[str, str] = {}
    for name in ("model", "return_tokens", "cache_prompt", "logprobs", "stream_options", "n"):
        out.pop(name, None)
    n_probs = out.pop("n_probs", None)
    if n_probs:
        out["logprobs"] = n_probs
        origins["logprobs"] = "n_probs"
    # n_predict, else max_tokens (llama.cpp reads both); -1 (or any negative): as much as the server allows
    if out.get("n_predict") is not None:
        out["max_tokens"] = out.pop("n_predict")
        origins["max_tokens"] = "n_predict"
    if isinstance(out.get("max_tokens"), int) and out["max_tokens"] < 0:
        out["max_tokens"] = limit
    dialect.default_max_tokens(out, limit)
    if isinstance(out.get("temperature"), (int, float)) and out["temperature"] < 0:
        out["temperature"] = 0.0  # llama.cpp: below 0, greedy
    if out.get("temperature") is None:
        out.pop("temperature", None)
    return out, origins


class LlamaCompletion:
    """Collects one choice's outputs and writes llama.cpp's ``/completion`` objects."""

    def __init__(self, http: Request, submitted: dialect.Submitted, return_tokens: bool) -> None:
        self.http = http
        self.request = submitted.request
        self.prompt_tokens = submitted.prompt_tokens[0]
        self.return_tokens = return_tokens or bool(self.request.stream)
        self.n_probs = self.request.logprobs or 0
        self.provider = tokens.provider_of(http)
        self.text: list[str] = []
        self.records: list[TokenRecord] = []
        self.done: ChoiceDone | None = None

    def collect(self, item: Output) -> None:
        if isinstance(item, TextOut):
            self.text.append(item.text)
            self.records.extend(item.tokens)
        elif isinstance(item, ChoiceDone):
            self.done = item

    def chunk(self, item: TextOut) -> dict[str, Any]:
        """The streamed event of one piece of final text."""
        self.collect(item)
        event: dict[str, Any] = {
            "index": 0,
            "content": item.text,
            "tokens": [r.token for r in item.tokens if r.token >= 0],
            "stop": False,
            "id_slot": 0,
            "tokens_predicted": sum(1 for r in self.records if r.token >= 0),
            "tokens_evaluated": self.prompt_tokens,
        }
        if self.n_probs:
            event["completion_probabilities"] = self.probabilities(item.tokens)
        return event

    def final(self, streamed: bool) -> dict[str, Any]:
        """The whole answer (streamed: the last event, without the text sent already)."""
        content = "".join(self.text)
        emitted = [r.token for r in self.records if r.token >= 0]
        done = self.done
        predicted = done.completion_tokens if done else len(emitted)
        stop_type, stopping_word = self.stop_type(done, predicted, len(emitted))
        elapsed_ms = done.stats.elapsed_s * 1000 if done else 0.0
        body: dict[str, Any] = {
            "index": 0,
            "content": "" if streamed else content,
            "tokens": [] if streamed or not self.return_tokens else emitted,
            "id_slot": 0,
            "stop": True,
            "model": tokens.model_name(self.http),
            "tokens_predicted": predicted,
            "tokens_evaluated": self.prompt_tokens,
            "generation_settings": {
                "n_ctx": tokens.context_length(self.http),
                "model": tokens.model_name(self.http),
                "params": _params(self.http, self.request),
            },
            "prompt": self.prompt_text(),
            "has_new_line": "\n" in content,
            "truncated": False,
            "stop_type": stop_type,
            "stopping_word": stopping_word,
            "tokens_cached": 0,
            "timings": {
                "prompt_n": float(self.prompt_tokens),
                "prompt_ms": 0.0,
                "predicted_n": float(predicted),
                "predicted_ms": round(elapsed_ms, 3),
                "predicted_per_token_ms": round(elapsed_ms / predicted, 3) if predicted else 0.0,
                "predicted_per_second": round(done.stats.tokens_per_second, 3) if done else 0.0,
            },
        }
        if self.n_probs and not streamed:
            body["completion_probabilities"] = self.probabilities(self.records)
        return body

    def stop_type(self, done: ChoiceDone | None, predicted: int, emitted: int) -> tuple[str, str]:
        """``stop_type`` and ``stopping_word``.

        ``limit`` at the length limit; ``word`` when a stop string held back tokens (the word is
        named when the request gave only one: which one matched is not known here); else ``eos``.
        """
        if done is None or done.finish_reason == "length":
            return "limit", ""
        stops = self.request.stop or []
        if stops and predicted > emitted:  # EOS is not counted; a stop string's tokens are, not emitted
            return "word", stops[0] if len(stops) == 1 else ""
        return "eos", ""

    def prompt_text(self) -> str:
        prompt = self.request.prompt
        return prompt if isinstance(prompt, str) else self.provider.decode(prompt)

    def probabilities(self, records: Any) -> list[dict[str, Any]]:
        out = []
        for record in records:
            if record.token < 0:
                continue
            top = [self.candidate(token, value) for token, value in record.top[: self.n_probs]]
            chosen = self.candidate(record.token, record.logprob, record.text)
            out.append({**chosen, "top_logprobs": top, "content": chosen["token"], "probs": top})
        return out

    def candidate(self, token: int, logprob: float | None, text: str | None = None) -> dict[str, Any]:
        value = logprob if logprob is not None and math.isfinite(logprob) else LOGPROB_FLOOR
        name = text if text is not None else self.provider.decode([token])
        return {
            "id": token,
            "token": name,
            "logprob": value,
            "bytes": list(self.provider.token_bytes(token)),
            "tok_str": name,
            "prob": math.exp(value),
        }


def llamacpp_router() -> APIRouter:
    """llama.cpp server's routes (``RequestGuard`` checks the API key)."""
    router = APIRouter(tags=["llama.cpp server"])

    @router.post("/tokenize", response_model=None, responses=ROUTE_RESPONSES["tokenize"])
    async def tokenize(request: Request, body: TokenizeRequest) -> dict[str, Any]:
        text, param = (body.content, "content") if body.content is not None else (body.prompt, "prompt")
        if text is None:
            raise APIError("content is required", param="content", code="missing_parameter")
        ids = await tokens.encode(request, text, body.add_special, param)
        provider = tokens.provider_of(request)
        answer: dict[str, Any] = {"tokens": ids}
        if body.with_pieces:
            answer["tokens"] = [{"id": t, "piece": tokens.piece(provider, t)} for t in ids]
        if body.content is None:  # vLLM's form
            answer.update(count=len(ids), max_model_len=tokens.context_length(request))
        return answer

    @router.post("/detokenize", response_model=None, responses=ROUTE_RESPONSES["detokenize"])
    async def detokenize(request: Request, body: DetokenizeRequest) -> dict[str, Any]:
        return {"content": tokens.decode(request, body.tokens, "tokens")}

    @router.get("/props", response_model=None, responses=ROUTE_RESPONSES["props"])
    async def get_props(request: Request) -> dict[str, Any]:
        return props(request)

    @router.post("/completion", response_model=None, responses=ROUTE_RESPONSES["llamacpp_completion"])
    async def completion(request: Request, body: LlamaCompletionRequest):
        if isinstance(body.prompt, list) and not all(isinstance(t, int) for t in body.prompt):
            raise APIError("prompt: only one prompt is supported", param="prompt", code="unsupported")
        converted, origins = completion_body(body, request.app.state.settings.max_tokens_limit)
        submitted = await dialect.submit(request, converted, origins)
        answer = LlamaCompletion(request, submitted, body.return_tokens)
        if body.stream:
            return EventStreamResponse(_stream(submitted, answer))
        failure = await jobs.collect(request, submitted.job, answer.collect)
        if failure is not None:
            raise dialect.failure_error(failure, origins)
        return JSONResponse(answer.final(streamed=False))

    return router


async def _stream(submitted: dialect.Submitted, answer: LlamaCompletion) -> AsyncIterator[str]:
    """``data: {...}`` per piece of text, then the final object (``stop: true``); an error ends it as ``{"error"}``."""
    try:
        async for item in jobs.outputs(submitted.job):
            if isinstance(item, JobFailed):
                error = dialect.failure_error(item, submitted.origins)
                yield sse(error_body(error.message, error.type, error.param, error.code))
                return
            if isinstance(item, TextOut):
                yield sse(answer.chunk(item))
            else:
                answer.collect(item)
        yield sse(answer.final(streamed=True))
    finally:
        submitted.job.cancel()
