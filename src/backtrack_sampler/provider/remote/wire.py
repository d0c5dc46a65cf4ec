"""The wire format of the OpenAI-compatible completions API: request bodies in, tokens and log-probabilities out.

A request sends token ids (``prompt`` as a list of ints), asks for the top-k
log-probabilities of every generated token with ``return_tokens_as_token_ids``
(so tokens come back as ``"token_id:N"``), and may carry a ``logit_bias`` or,
for vLLM with our logits processor, position-scoped rules in ``vllm_xargs``
(``position_rules``). An
answer, whole or streamed as server-sent events (``data: {json}`` lines ending
with ``data: [DONE]``), holds one choice whose ``logprobs`` this module turns
into a ``Piece``: token ids, the top-k log-probabilities of each position, the
finish reason.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence, Set
from typing import Any

import numpy as np

from backtrack_sampler.core.base_provider import BackendError
from backtrack_sampler.core.sampling import SamplingParams
from backtrack_sampler.core.text_files import split_lines

BAN_BIAS = -100.0  # the strongest bias the OpenAI API (and vLLM) accepts
TOKEN_PREFIX = "token_id:"

# One answer or streamed piece: token ids, the top-k log-probabilities of each position, the finish reason.
Piece = tuple[list[int], list[dict[int, float]], "str | None"]


class RemoteError(BackendError):
    """The remote engine refused a request or answered something this provider cannot use."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


# -- requests ---------------------------------------------------------------------------------------
def completion_body(
    model: str,
    prefix: Sequence[int],
    max_tokens: int,
    top_logprobs: int,
    sampling: dict[str, Any],
    banned: Set[int] = frozenset(),
    xargs: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The JSON body of one completion of up to ``max_tokens`` after the token ids ``prefix``.

    ``sampling`` holds the sampling fields (``sampling_fields`` or greedy);
    every id in ``banned`` gets a ``BAN_BIAS`` in ``logit_bias`` (at every
    position); ``xargs`` go to vLLM's ``vllm_xargs`` (``PositionRules.to_xargs``).
    """
    body: dict[str, Any] = {
        "model": model,
        "prompt": [int(t) for t in prefix],
        "max_tokens": max_tokens,
        "logprobs": top_logprobs,
        "return_tokens_as_token_ids": True,
    }
    body.update(sampling)
    if banned:
        body["logit_bias"] = {str(int(t)): BAN_BIAS for t in sorted(banned)}
    if xargs:
        body["vllm_xargs"] = dict(xargs)
    return body


GREEDY: dict[str, Any] = {"temperature": 0.0}
"""The sampling fields of a request where only the log-probabilities matter: cheapest, and no seed to spend."""


def sampling_fields(params: SamplingParams, rng: np.random.Generator) -> dict[str, Any]:
    """The sampling fields of a request that samples remotely with ``params``.

    The seed is drawn from ``rng``, the generation's generator: reproducible
    with a seed, and a chunk asked again after a rewind is a fresh draw.
    """
    fields: dict[str, Any] = {"temperature": float(params.temperature)}
    if params.temperature > 0:
        if params.top_k:
            fields["top_k"] = int(params.top_k)
        if params.top_p is not None:
            fields["top_p"] = float(params.top_p)
        if params.min_p:
            fields["min_p"] = float(params.min_p)
        fields["seed"] = int(rng.integers(0, 2**31 - 1))
    return fields


# -- answers ----------------------------------------------------------------------------------------
def sse_payloads(chunks: Iterable[bytes]) -> Iterator[Any]:
    """The JSON payloads of server-sent events (``data: {json}`` lines), up to ``data: [DONE]``.

    ``chunks`` is the body as it arrives (``response.iter_bytes()``); lines end
    at line feeds only (``core.text_files.split_lines``): JSON may hold U+2028
    and the other characters ``httpx``'s ``iter_lines`` would split at.
    """
    for line in split_lines(chunks):
        if not line.data.startswith(b"data:"):
            continue
        try:
            data = line.data[len(b"data:") :].decode("utf-8").strip()
        except UnicodeDecodeError:
            raise RemoteError(f"the server streamed something that is not UTF-8: {line.data[:200]!r}") from None
        if data == "[DONE]":
            return
        try:
            yield json.loads(data)
        except ValueError as exc:
            raise RemoteError(f"the server streamed something that is not JSON: {data[:200]!r}") from exc


def first_choice(payload: Any) -> dict[str, Any]:
    """The first choice of an answer; an ``error`` the server reported raises ``RemoteError``."""
    if isinstance(payload, dict) and isinstance(payload.get("error"), (dict, str)):
        error = payload["error"]
        message = error.get("message") if isinstance(error, dict) else error
        raise RemoteError(f"the server reported an error: {message}")
    choices = payload.get("choices") if isinstance(payload, dict) else None
    if not choices or not isinstance(choices[0], dict):
        raise RemoteError(f"the server's answer has no choices: {str(payload)[:200]!r}")
    return choices[0]


def parse_choice(choice: dict[str, Any], vocab_size: int) -> Piece:
    """Token ids and top-k log-probabilities of one (possibly streamed) choice.

    Each position's top-k holds its chosen token too. Raises ``RemoteError``
    for an answer without log-probabilities or with ids outside ``vocab_size``.
    """
    finish = choice.get("finish_reason")
    logprobs = choice.get("logprobs")
    if not logprobs:
        if choice.get("text"):
            raise RemoteError(
                "the server returned text without logprobs; it must support `logprobs` on /v1/completions"
            )
        return [], [], finish
    tokens = [token_id(t, vocab_size) for t in logprobs.get("tokens") or []]
    tops = logprobs.get("top_logprobs") or []
    chosen = logprobs.get("token_logprobs") or [None] * len(tokens)
    if len(tops) != len(tokens) or len(chosen) != len(tokens):
        raise RemoteError(
            f"the server returned {len(tokens)} tokens, {len(tops)} top_logprobs "
            f"and {len(chosen)} token_logprobs: they must match"
        )
    top_logprobs = []
    for token, top, logprob in zip(tokens, tops, chosen, strict=True):
        entry = {token_id(k, vocab_size): finite(v) for k, v in (top or {}).items()}
        if token not in entry:
            entry[token] = finite(logprob)
        top_logprobs.append(entry)
    return tokens, top_logprobs, finish


def token_id(key: Any, vocab_size: int) -> int:
    """The id in a ``"token_id:N"`` key, checked against the tokenizer's vocabulary."""
    if not isinstance(key, str) or not key.startswith(TOKEN_PREFIX):
        raise RemoteError(
            f"the server returned the token {key!r}, not 'token_id:N'; it must support "
            "`return_tokens_as_token_ids` (vLLM, SGLang, backtrack-sampler serve)"
        )
    try:
        token = int(key[len(TOKEN_PREFIX) :])
    except ValueError:
        raise RemoteError(f"the server returned a malformed token id {key!r}") from None
    if not 0 <= token < vocab_size:
        raise RemoteError(
            f"the server returned token id {token}, outside the tokenizer's vocabulary of {vocab_size}; "
            "is the tokenizer the served model's?"
        )
    return token


def finite(value: Any) -> float:
    """A log-probability from JSON; ``None`` or ``-inf`` (an impossible token) becomes a very low number."""
    if value is None:
        return -1e30
    value = float(value)
    return value if math.isfinite(value) else -1e30


def error_message(response: Any) -> str:
    """The message of an error answer: ``error.message``, ``error``, else the start of the body."""
    try:
        error = response.json().get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
        if isinstance(error, str):
            return error
    except (ValueError, AttributeError):
        pass
    return response.text[:300] or response.reason_phrase
