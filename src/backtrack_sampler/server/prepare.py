"""Checking a request against the model and the limits, and turning it into a ``GenerationPlan``.

Everything that can be wrong with a request is found here, before it is
queued: every problem raises ``APIError`` (400, naming the parameter), so
the worker only runs plans that make sense. This runs in a thread of its own
(tokenizing and building ban automata may take a moment), never in the
worker that runs the model.

Other servers' names for a field (the dialect block of ``schemas``) are
resolved here: an alias is read only when the OpenAI name is absent, and an
error names the field the client sent.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Sequence
from typing import Any

from backtrack_sampler.core.budget import RewindBudget
from backtrack_sampler.core.checks import surely_too_long
from backtrack_sampler.core.sampling import SamplingParams
from backtrack_sampler.provider.base_provider import BaseProvider
from backtrack_sampler.server.errors import APIError, short_repr
from backtrack_sampler.server.generation import ChoiceSpec, GenerationPlan
from backtrack_sampler.server.schemas import (
    ChatCompletionRequest,
    CompletionRequest,
    SamplingRequest,
    banned_token_parts,
    token_ids_in,
)
from backtrack_sampler.server.settings import ServerSettings
from backtrack_sampler.server.strategies import BanLimits, DryParams, build_strategy
from backtrack_sampler.strategy.ban_scope import BanScope
from backtrack_sampler.strategy.base_strategy import BaseStrategy

TOKEN_ID = re.compile("0|[1-9][0-9]*")
COMPLETIONS_DEFAULT_MAX_TOKENS = 16  # OpenAI's default for /v1/completions
LOGIT_BIAS_LIMIT = 100.0
DEFAULT_REWINDS_PER_POSITION = 16
DRY_DEFAULT_BREAKERS = ("\n", ":", '"', "*")  # llama.cpp's and SillyTavern's defaults


def check_model(requested: str | None, settings: ServerSettings) -> None:
    """404 when the request names another model than the one served (``""``, as SillyTavern may send: none)."""
    if requested and requested != settings.model_name:
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
    requested, param = _requested_max_tokens(request, settings)
    max_tokens = _max_tokens(requested, param, settings, COMPLETIONS_DEFAULT_MAX_TOKENS)
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
    if request.max_completion_tokens is not None:
        requested, param = request.max_completion_tokens, "max_completion_tokens"
    else:
        requested, param = _requested_max_tokens(request, settings)
    return _max_tokens(requested, param, settings, settings.max_tokens_limit)


def _requested_max_tokens(request: SamplingRequest, settings: ServerSettings) -> tuple[int | None, str]:
    """``max_tokens``, or else the first alias given (llama.cpp's ``n_predict: -1``: the server's limit)."""
    for param in ("max_tokens", "max_new_tokens", "max_length", "n_predict"):
        value = getattr(request, param)
        if value is not None:
            return (settings.max_tokens_limit if value == -1 else value), param
    return None, "max_tokens"


def _first_given(request: SamplingRequest, *names: str) -> tuple[str, Any]:
    """The first of ``names`` the request gives (not null), and its value; ``(names[0], None)`` when none."""
    for name in names:
        value = getattr(request, name)
        if value is not None:
            return name, value
    return names[0], None


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
    stop_param, stops = _first_given(request, "stop", "stopping_strings", "stop_sequence")
    stops = stops or []
    if len(stops) > settings.max_stop:
        raise APIError(
            f"{stop_param}: at most {settings.max_stop} stop strings, got {len(stops)}", param=stop_param, code="limit"
        )
    token_ids, token_phrases = banned_token_parts(request.banned_tokens)
    phrases = _phrases(request.banned_strings, token_phrases)
    patterns = request.banned_regex or []
    if len(phrases) + len(patterns) > settings.max_bans:
        param = "banned_strings" if request.banned_strings else "banned_tokens" if token_phrases else "banned_regex"
        raise APIError(
            f"{param}: at most {settings.max_bans} banned strings and patterns together, "
            f"got {len(phrases) + len(patterns)}",
            param=param,
            code="limit",
        )
    _check_patterns(patterns, settings)
    never = _never_tokens(request, token_ids, provider)
    min_tokens = request.min_tokens or 0
    if min_tokens > max_tokens:
        raise APIError(
            f"min_tokens: at most the request's max_tokens ({max_tokens}), got {min_tokens}",
            param="min_tokens",
            code="invalid_value",
        )
    scope = _ban_scope(request)
    dry = _dry_params(request)
    limits = BanLimits(settings.max_bans, settings.max_regex_length)
    # One strategy object per choice: strategies keep state, and choices may run at the same time.
    strategies = [
        build_strategy(
            provider, request.strategy, phrases, patterns, json_root, limits, request.exempt_prompt_terms, scope, dry
        )
        for _ in range(len(prompts) * request.n)
    ]
    ignore_eos = _first_given(request, "ignore_eos", "ban_eos_token")[1] or False
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
        never=never,
        ignore_eos=ignore_eos,
        min_tokens=min_tokens,
    )


def _phrases(banned_strings: str | list[str] | None, token_phrases: list[str]) -> list[str]:
    """The phrases of ``banned_strings`` (one string: one phrase) and of ``banned_tokens``, each once."""
    given = [banned_strings] if isinstance(banned_strings, str) else list(banned_strings or [])
    return list(dict.fromkeys(given + token_phrases))


def _never_tokens(request: SamplingRequest, banned_ids: list[int], provider: BaseProvider) -> tuple[int, ...]:
    """The token ids banned at every position: ``banned_tokens``' ids and ``custom_token_bans``.

    Raises:
        APIError: an id outside the vocabulary, naming the field and the id.
    """
    custom = request.custom_token_bans
    custom_ids = token_ids_in(custom) if isinstance(custom, str) else list(custom or [])
    for param, ids in (("banned_tokens", banned_ids), ("custom_token_bans", custom_ids)):
        bad = next((t for t in ids if t >= provider.vocab_size), None)
        if bad is not None:
            message = f"{param}: token ids must be in [0, {provider.vocab_size}), got {bad}"
            raise APIError(message, param=param, code="invalid_value")
    return tuple(dict.fromkeys(banned_ids + custom_ids))


def _dry_params(request: SamplingRequest) -> DryParams | None:
    """The DRY penalty the ``dry_*`` fields ask for; ``None`` unless ``dry_multiplier`` > 0.

    ``dry_sequence_breakers`` may be a JSON string (SillyTavern sends one; TabbyAPI's
    form without the brackets too); it is read only when DRY is on, as KoboldCpp does.
    """
    if not request.dry_multiplier:
        return None
    breakers: Any = request.dry_sequence_breakers
    if breakers is None:
        breakers = list(DRY_DEFAULT_BREAKERS)
    elif isinstance(breakers, str):
        text = breakers.strip()
        try:
            breakers = json.loads(text if text.startswith("[") else f"[{text}]")
        except ValueError:
            breakers = None
        if not isinstance(breakers, list) or not all(isinstance(b, str) for b in breakers):
            raise APIError(
                "dry_sequence_breakers: must be a list of strings or that list as a JSON string, "
                f"got {short_repr(request.dry_sequence_breakers)}",
                param="dry_sequence_breakers",
                code="invalid_value",
            )
    last_n = request.dry_penalty_last_n
    return DryParams(
        multiplier=request.dry_multiplier,
        base=1.75 if request.dry_base is None else request.dry_base,
        allowed_length=2 if request.dry_allowed_length is None else request.dry_allowed_length,
        sequence_breakers=tuple(b for b in breakers if b),
        penalty_last_n=-1 if last_n is None or last_n == 0 else last_n,
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
    if banned_token_parts(request.banned_tokens)[1]:
        return "banned_tokens"
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
            # top_p 0 keeps the most likely token alone (llama.cpp's nucleus keeps at least one token)
            top_k=1 if request.top_p == 0 else max(0, request.top_k or 0),
            top_p=None if request.top_p >= 1 or request.top_p == 0 else request.top_p,
            min_p=request.min_p or None,
            max_new_tokens=max_tokens,
        )
    except ValueError as exc:  # the schema's checks come first; this is only a safety net
        raise APIError(str(exc), code="invalid_value") from None
    first_seed = _first_given(request, "seed", "sampler_seed")[1]
    if first_seed is not None and first_seed < 0:  # -1: random, as llama.cpp, KoboldCpp and TabbyAPI read it
        first_seed = None
    choices = []
    for p, tokens in enumerate(prompts):
        for j in range(request.n):
            seed = None if first_seed is None else first_seed + j
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


_NUMBER_LIKE = re.compile(r"\s*[+-]?\.?\d")
"""A ``logit_bias`` key that reads as a number (Unicode digits, signs and spaces included)."""


def _logit_bias(
    bias: dict[str, float | bool] | list[tuple[int | str, float | bool]] | None, provider: BaseProvider
) -> dict[int, float]:
    """``{token id: bias}`` from every form ``logit_bias`` takes (``schemas.SamplingRequest.logit_bias``).

    As llama.cpp reads it: an object's key is a token id in decimal or else a text, and a list holds
    ``[id, bias]`` or ``["text", bias]`` (a text is always a text there); each token of a text gets
    the bias, ``false`` is -inf (never), and a token named twice gets the sum. Each sum is clamped to
    [-100, 100]; -inf stays. Unlike llama.cpp, a key that reads as a number but is no canonical token id
    (``" 1"``, ``"+1"``, ``"01"``) and an id outside the vocabulary are refused, not skipped.
    """
    if isinstance(bias, dict):
        entries: list[tuple[int | str, float | bool]] = []
        for key, value in bias.items():
            if TOKEN_ID.fullmatch(key):
                entries.append((int(key), value))
            elif not key.strip() or _NUMBER_LIKE.match(key):
                raise APIError(
                    "logit_bias: keys must be token ids in decimal (ASCII digits, no sign, space or leading zero) "
                    f"or texts that do not begin as a number, got {key!r}",
                    param="logit_bias",
                    code="invalid_value",
                )
            else:
                entries.append((key, value))
    else:
        entries = list(bias or [])
    sums: dict[int, float] = {}
    for key, value in entries:
        tokens = [key] if isinstance(key, int) else _bias_text_tokens(key, provider)
        for token in tokens:
            if not 0 <= token < provider.vocab_size:
                raise APIError(
                    f"logit_bias: token ids must be in [0, {provider.vocab_size}), got {token}",
                    param="logit_bias",
                    code="invalid_value",
                )
            amount = -math.inf if value is False else float(value)
            sums[token] = sums.get(token, 0.0) + amount
    return {t: v if v == -math.inf else max(-LOGIT_BIAS_LIMIT, min(LOGIT_BIAS_LIMIT, v)) for t, v in sums.items()}


def _bias_text_tokens(text: str, provider: BaseProvider) -> list[int]:
    """The tokens of a ``logit_bias`` text, without BOS (llama.cpp: ``common_tokenize(vocab, text, false)``)."""
    try:
        tokens = provider.encode(text, add_bos=False)
    except (ValueError, UnicodeError) as exc:
        raise APIError(
            f"logit_bias: the model cannot encode {short_repr(text)}: {exc}", param="logit_bias", code="invalid_value"
        ) from None
    if not tokens:
        raise APIError(f"logit_bias: {short_repr(text)} has no tokens", param="logit_bias", code="invalid_value")
    return tokens


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
