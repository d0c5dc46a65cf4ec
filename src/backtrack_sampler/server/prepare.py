"""Checking a request against the model and the limits, and turning it into a ``GenerationPlan``.

Everything that can be wrong with a request is found here, before it is
queued: every problem raises ``APIError`` (400, naming the parameter), so
the worker only runs plans that make sense. This runs in a thread of its own
(tokenizing and building ban automata may take a moment), never in the
worker that runs the model.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from backtrack_sampler.core.budget import RewindBudget
from backtrack_sampler.core.checks import surely_too_long
from backtrack_sampler.core.sampling import SamplingParams
from backtrack_sampler.provider.base_provider import BaseProvider
from backtrack_sampler.server.errors import APIError, short_repr
from backtrack_sampler.server.generation import ChoiceSpec, GenerationPlan
from backtrack_sampler.server.schemas import ChatCompletionRequest, CompletionRequest, SamplingRequest
from backtrack_sampler.server.settings import ServerSettings
from backtrack_sampler.server.strategies import BanLimits, build_strategy
from backtrack_sampler.strategy.ban_scope import BanScope
from backtrack_sampler.strategy.base_strategy import BaseStrategy

COMPLETIONS_DEFAULT_MAX_TOKENS = 16  # OpenAI's default for /v1/completions
LOGIT_BIAS_LIMIT = 100.0
DEFAULT_REWINDS_PER_POSITION = 16


def check_model(requested: str | None, settings: ServerSettings) -> None:
    """404 when the request names another model than the one served."""
    if requested is not None and requested != settings.model_name:
        raise APIError(
            f"model {requested!r} is not served here; this server serves {settings.model_name!r}",
            param="model",
            status=404,
            code="model_not_found",
        )


def completion_plan(
    request: CompletionRequest, provider: BaseProvider, settings: ServerSettings
) -> tuple[GenerationPlan, list[int]]:
    """The plan of a ``/v1/completions`` request, and the token count of each prompt."""
    check_model(request.model, settings)
    if request.echo:
        raise APIError("echo: only false is supported", param="echo", code="unsupported")
    if request.suffix:
        raise APIError("suffix: not supported", param="suffix", code="unsupported")
    if request.best_of is not None and request.best_of != request.n:
        raise APIError(
            f"best_of: only best_of == n is supported, got {request.best_of}", param="best_of", code="unsupported"
        )
    if request.logprobs is not None and request.logprobs > settings.max_logprobs:
        raise APIError(
            f"logprobs: at most {settings.max_logprobs}, got {request.logprobs}", param="logprobs", code="limit"
        )
    texts = request.prompts()
    _check_choices(len(texts), request.n, settings)
    prompts = [_prompt_tokens(p, provider, settings, "prompt") for p in texts]
    max_tokens = _max_tokens(request.max_tokens, "max_tokens", settings, COMPLETIONS_DEFAULT_MAX_TOKENS)
    plan = _plan(request, prompts, provider, settings, max_tokens, request.logprobs)
    return plan, [len(p) for p in prompts]


def chat_plan(
    request: ChatCompletionRequest, provider: BaseProvider, settings: ServerSettings
) -> tuple[GenerationPlan, list[int]]:
    """The plan of a ``/v1/chat/completions`` request, and the prompt's token count."""
    check_model(request.model, settings)
    if request.tools:
        raise APIError("tools: not supported", param="tools", code="unsupported")
    _check_choices(1, request.n, settings)
    json_root = _json_root(request.response_format)
    top = _chat_top_logprobs(request, settings)
    max_tokens = _chat_max_tokens(request, settings)
    tokens = _prompt_tokens(_chat_prompt(request, provider), provider, settings, "messages")
    return _plan(request, [tokens], provider, settings, max_tokens, top, json_root), [len(tokens)]


def _chat_top_logprobs(request: ChatCompletionRequest, settings: ServerSettings) -> int | None:
    """How many alternatives to show per token (``logprobs`` and ``top_logprobs``); ``None``: no logprobs."""
    if not request.logprobs:  # top_logprobs without logprobs: refused by the schema
        return None
    top = request.top_logprobs or 0
    if top > settings.max_logprobs:
        raise APIError(f"top_logprobs: at most {settings.max_logprobs}, got {top}", param="top_logprobs", code="limit")
    return top


def _chat_max_tokens(request: ChatCompletionRequest, settings: ServerSettings) -> int:
    """``max_completion_tokens`` or its older name ``max_tokens`` (both given: they must agree)."""
    if request.max_tokens is not None and request.max_completion_tokens is not None:
        if request.max_tokens != request.max_completion_tokens:
            raise APIError(
                "max_completion_tokens: differs from max_tokens; give one",
                param="max_completion_tokens",
                code="invalid_value",
            )
    requested = request.max_completion_tokens or request.max_tokens
    param = "max_completion_tokens" if request.max_completion_tokens else "max_tokens"
    return _max_tokens(requested, param, settings, settings.max_tokens_limit)


def _chat_prompt(request: ChatCompletionRequest, provider: BaseProvider) -> str:
    """The conversation rendered with the model's chat template."""
    messages = [{"role": m.role, "content": m.text()} for m in request.messages]
    try:
        return provider.apply_chat_template(messages)
    except NotImplementedError as exc:
        raise APIError(f"messages: {exc}; use /v1/completions", param="messages", code="no_chat_template") from None
    except Exception as exc:  # a template may reject a conversation (roles out of order, ...)
        raise APIError(
            f"messages: the chat template refused them: {exc}", param="messages", code="invalid_value"
        ) from None


def _json_root(response_format: dict | None) -> str | None:
    """``"object"`` for ``{"type": "json_object"}`` (JsonStrategy), ``None`` for plain text."""
    kind = (response_format or {}).get("type", "text")
    if kind == "text":
        return None
    if kind == "json_object":
        return "object"
    raise APIError(
        f"response_format.type: only 'text' and 'json_object' are supported, got {short_repr(kind)}",
        param="response_format.type",
        code="unsupported",
    )


# -- shared checks ----------------------------------------------------------------------------
def _plan(
    request: SamplingRequest,
    prompts: list[list[int]],
    provider: BaseProvider,
    settings: ServerSettings,
    max_tokens: int,
    top_logprobs: int | None,
    json_root: str | None = None,
) -> GenerationPlan:
    stops = request.stop or []
    if len(stops) > settings.max_stop:
        raise APIError(f"stop: at most {settings.max_stop} stop strings, got {len(stops)}", param="stop", code="limit")
    phrases, patterns = request.banned_strings or [], request.banned_regex or []
    if len(phrases) + len(patterns) > settings.max_bans:
        param = "banned_strings" if phrases else "banned_regex"
        raise APIError(
            f"{param}: at most {settings.max_bans} banned strings and patterns together, "
            f"got {len(phrases) + len(patterns)}",
            param=param,
            code="limit",
        )
    _check_patterns(patterns, settings)
    scope = _ban_scope(request)
    limits = BanLimits(settings.max_bans, settings.max_regex_length)
    # One strategy object per choice: strategies keep state, and choices may run at the same time.
    strategies = [
        build_strategy(
            provider, request.strategy, phrases, patterns, json_root, limits, request.exempt_prompt_terms, scope
        )
        for _ in range(len(prompts) * request.n)
    ]
    return GenerationPlan(
        choices=_choices(request, prompts, max_tokens, strategies),
        budget=_rewind_budget(request, settings, max_tokens),
        logit_bias=_logit_bias(request.logit_bias, provider),
        presence_penalty=request.presence_penalty,
        frequency_penalty=request.frequency_penalty,
        stops=stops,
        top_logprobs=top_logprobs,
        backtrack_events=request.backtrack_events,
        failure_param=_failure_param(request, json_root),
    )


def _ban_scope(request: SamplingRequest) -> BanScope | None:
    """``ban_scope`` as a ``BanScope`` (the schema checked that the request has bans for it)."""
    try:
        return BanScope.of(request.ban_scope, "ban_scope")
    except ValueError as exc:
        raise APIError(str(exc), param="ban_scope", code="invalid_value") from None


def _check_choices(prompts: int, n: int, settings: ServerSettings) -> None:
    """``n`` within ``max_n``, and prompts x ``n`` within ``max_choices`` (checked before tokenizing)."""
    if n > settings.max_n:
        raise APIError(f"n: at most {settings.max_n}, got {n}", param="n", code="limit")
    if prompts * n > settings.max_choices:
        param = "prompt" if prompts > 1 else "n"
        raise APIError(
            f"{param}: at most {settings.max_choices} choices (prompts x n) in one request, "
            f"got {prompts} x {n} = {prompts * n}",
            param=param,
            code="limit",
        )


def _rewind_budget(request: SamplingRequest, settings: ServerSettings, max_tokens: int) -> RewindBudget:
    """The request's rewind budget within the server's limits.

    A value over a limit is answered 400; none given: the engine's default, capped by the limit.
    """
    limits = (
        ("max_rewinds", request.max_rewinds, settings.max_rewinds_limit),
        ("rewinds_per_position", request.rewinds_per_position, settings.rewinds_per_position_limit),
    )
    for param, value, limit in limits:
        if value is not None and value > limit:
            raise APIError(f"{param}: this server allows at most {limit}, got {value}", param=param, code="limit")
    per_position = request.rewinds_per_position
    if per_position is None:
        per_position = min(DEFAULT_REWINDS_PER_POSITION, settings.rewinds_per_position_limit)
    per_generation = request.max_rewinds
    if per_generation is None:
        per_generation = min(RewindBudget().generation_limit(max_tokens), settings.max_rewinds_limit)
    return RewindBudget(per_position=per_position, per_generation=per_generation)


def _failure_param(request: SamplingRequest, json_root: str | None) -> str | None:
    """The parameter to blame when the request's strategy fails while generating (a regex that ran too long)."""
    if request.banned_regex:
        return "banned_regex"
    if request.strategy is not None:
        return "strategy"
    if request.banned_strings:
        return "banned_strings"
    return None if json_root is None else "response_format"


def _choices(
    request: SamplingRequest,
    prompts: list[list[int]],
    max_tokens: int,
    strategies: list[BaseStrategy | None],
) -> list[ChoiceSpec]:
    """``n`` choices per prompt, each with its ``SamplingParams`` and its strategy (in ``strategies``' order).

    Choice j of a prompt samples with seed + j.
    """
    try:
        shared = SamplingParams(
            temperature=request.temperature,
            top_k=max(0, request.top_k or 0),
            top_p=None if request.top_p >= 1 else request.top_p,
            min_p=request.min_p or None,
            max_new_tokens=max_tokens,
        )
    except ValueError as exc:  # the schema's checks come first; this is only a safety net
        raise APIError(str(exc), code="invalid_value") from None
    choices = []
    for p, tokens in enumerate(prompts):
        for j in range(request.n):
            seed = None if request.seed is None else request.seed + j
            index = p * request.n + j
            choices.append(ChoiceSpec(index, tokens, dataclasses.replace(shared, seed=seed), strategies[index]))
    return choices


def _max_tokens(value: int | None, param: str, settings: ServerSettings, default: int) -> int:
    if value is None:
        return min(default, settings.max_tokens_limit)
    if value > settings.max_tokens_limit:
        raise APIError(
            f"{param}: this server allows at most {settings.max_tokens_limit}, got {value}", param=param, code="limit"
        )
    return value


def _prompt_tokens(prompt: str | Sequence[int], provider: BaseProvider, settings: ServerSettings, param: str) -> list:
    if isinstance(prompt, str):
        tokens = _encode(prompt, provider, settings, param)
    else:
        tokens = list(prompt)
        bad = [t for t in tokens if t >= provider.vocab_size]
        if bad:
            message = f"{param}: token ids must be in [0, {provider.vocab_size}), got {bad[0]}"
            raise APIError(message, param=param, code="invalid_value")
    if not tokens:
        raise APIError(f"{param}: the prompt is empty", param=param, code="invalid_value")
    limit = settings.max_prompt_tokens
    if limit is not None and len(tokens) > limit:
        raise APIError(
            f"{param}: the prompt has {len(tokens)} tokens; this server allows at most {limit}",
            param=param,
            code="limit",
        )
    context = provider.context_length
    if context is not None and len(tokens) >= context:
        raise APIError(
            f"{param}: the prompt has {len(tokens)} tokens but the model's context holds {context}",
            param=param,
            code="context_length_exceeded",
        )
    return tokens


def _encode(text: str, provider: BaseProvider, settings: ServerSettings, param: str) -> list[int]:
    """The tokens of ``text``; a text far too long for the model is refused without tokenizing it."""
    limits = [n for n in (settings.max_prompt_tokens, provider.context_length) if n is not None]
    if limits and surely_too_long(text, min(limits)):  # the engine's rule (core.checks)
        raise APIError(
            f"{param}: the prompt has {len(text)} characters, far more than the {min(limits)} tokens this server reads",
            param=param,
            code="context_length_exceeded",
        )
    try:
        return provider.encode(text)
    except (ValueError, UnicodeError) as exc:
        raise APIError(f"{param}: the model cannot encode it: {exc}", param=param, code="invalid_value") from None


def _logit_bias(bias: dict[str, float] | None, provider: BaseProvider) -> dict[int, float]:
    """``{token id: bias}``, each bias clamped; the keys are decimal token ids (``schemas.LogitBias``)."""
    out: dict[int, float] = {}
    for key, value in (bias or {}).items():
        token = int(key)
        if not 0 <= token < provider.vocab_size:
            raise APIError(
                f"logit_bias: token ids must be in [0, {provider.vocab_size}), got {key}",
                param="logit_bias",
                code="invalid_value",
            )
        out[token] = max(-LOGIT_BIAS_LIMIT, min(LOGIT_BIAS_LIMIT, float(value)))
    return out


def _check_patterns(patterns: Sequence[str], settings: ServerSettings) -> None:
    """Each pattern must compile (``regex`` syntax), stay short, and not match the empty string.

    Matching time is bounded by the strategy itself (a search that runs too
    long ends the generation with an error naming the pattern).
    """
    if not patterns:
        return
    try:
        from backtrack_sampler.strategy.regex_tracker import compile_pattern

        for i, pattern in enumerate(patterns):
            try:
                compile_pattern(pattern, settings.max_regex_length)
            except ValueError as exc:
                raise APIError(f"banned_regex.{i}: {exc}", param=f"banned_regex.{i}", code="invalid_value") from None
    except ImportError as exc:
        raise APIError(f"banned_regex: {exc}", param="banned_regex", code="unsupported") from None
