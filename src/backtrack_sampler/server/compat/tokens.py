"""Tokenizing, detokenizing and describing the model, for every dialect's endpoints.

Token ids are the served model's own (``provider.encode``), so a client that
tokenizes its ban list or ``logit_bias`` through any of these endpoints gets
ids this server understands. Tokenizing runs in a thread (a long text takes a
moment); the body's size is bounded by ``RequestGuard``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from backtrack_sampler.provider.base_provider import BaseProvider
from backtrack_sampler.server.errors import APIError


def provider_of(http: Request) -> BaseProvider:
    """The provider the app plans with (it never generates: safe to tokenize on)."""
    return http.app.state.provider


async def encode(http: Request, text: str, add_bos: bool, param: str) -> list[int]:
    """The tokens of ``text`` (with the model's BOS when ``add_bos`` and the model uses one)."""
    provider = provider_of(http)
    try:
        return await run_in_threadpool(provider.encode, text, add_bos)
    except (ValueError, UnicodeError) as exc:
        raise APIError(f"{param}: the model cannot encode it: {exc}", param=param, code="invalid_value") from None


def check_ids(provider: BaseProvider, tokens: Sequence[int], param: str) -> list[int]:
    """``tokens``, each a token id of the model; a 400 naming the first that is not."""
    for i, token in enumerate(tokens):
        if not 0 <= token < provider.vocab_size:
            raise APIError(
                f"{param}.{i}: token ids must be in [0, {provider.vocab_size}), got {token}",
                param=f"{param}.{i}",
                code="invalid_value",
            )
    return list(tokens)


def decode(http: Request, tokens: Sequence[int], param: str) -> str:
    """The text of ``tokens`` (invalid UTF-8 as U+FFFD); a 400 naming an id the model does not have."""
    provider = provider_of(http)
    return provider.decode(check_ids(provider, tokens, param))


def piece(provider: BaseProvider, token: int) -> str | list[int]:
    """llama.cpp's ``piece``: the token's text, or its bytes when they are not valid UTF-8 by themselves."""
    data = provider.token_bytes(token)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return list(data)


def chat_template(provider: BaseProvider) -> str:
    """The model's chat template (Jinja source), or ``""`` when it has none or it cannot be read."""
    llm = getattr(provider, "llm", None)  # LlamacppProvider: the GGUF's metadata
    metadata = getattr(llm, "metadata", None)
    if isinstance(metadata, dict) and isinstance(metadata.get("tokenizer.chat_template"), str):
        return metadata["tokenizer.chat_template"]
    text = getattr(provider, "_text", None)  # TransformersProvider: its tokenizer
    template = getattr(getattr(text, "tokenizer", None), "chat_template", None)
    return template if isinstance(template, str) else ""


def context_length(http: Request) -> int:
    """The tokens one sequence may hold (0 when the provider does not say)."""
    return provider_of(http).context_length or 0


def model_name(http: Request) -> str:
    """The served model's id."""
    return http.app.state.settings.model_name


def slots(http: Request) -> int:
    """How many sequences the model decodes at once."""
    return http.app.state.worker.parallel


def render_chat(provider: BaseProvider, messages: list[dict[str, Any]], param: str) -> str:
    """``messages`` rendered with the model's chat template (ending with the assistant's turn)."""
    try:
        return provider.apply_chat_template(messages)
    except NotImplementedError as exc:
        raise APIError(f"{param}: {exc}", param=param, code="no_chat_template") from None
    except Exception as exc:  # a template may refuse a conversation
        raise APIError(f"{param}: the chat template refused it: {exc}", param=param, code="invalid_value") from None
