"""Building a request's strategy: the ``strategy`` spec, a DRY penalty, the bans and JSON output, chained.

The spec is built by the strategy registry (``backtrack_sampler.strategy.registry``),
bounded by the server's ``SpecLimits``: chains nest at most 4 deep, at most 16
strategies, bans (phrases and patterns, wherever given) count against
``max_bans``, and the regex timeout and pattern length are the server's.
Strategies that talk to a terminal (debug, human) are not offered. A spec the
registry refuses becomes a 400 ``APIError`` naming the path of the bad part.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from backtrack_sampler.provider.base_provider import BaseProvider
from backtrack_sampler.server.errors import APIError
from backtrack_sampler.server.schemas import StrategySpec
from backtrack_sampler.strategy import registry
from backtrack_sampler.strategy.antislop_strategy import AntiSlopStrategy
from backtrack_sampler.strategy.ban_scope import BanScope
from backtrack_sampler.strategy.base_strategy import BaseStrategy
from backtrack_sampler.strategy.chain_strategy import ChainStrategy
from backtrack_sampler.strategy.json_strategy import JsonStrategy


def strategy_names() -> list[str]:
    """Every name ``strategy`` accepts."""
    return registry.strategy_names(interactive=False)


@dataclass(frozen=True)
class DryParams:
    """The DRY repetition penalty a request asks for (its ``dry_*`` fields, defaults filled in).

    The arguments of ``strategy.dry_strategy.DryStrategy``; ``penalty_last_n`` -1 scans every token.
    """

    multiplier: float
    base: float = 1.75
    allowed_length: int = 2
    sequence_breakers: tuple[str, ...] = ("\n", ":", '"', "*")
    penalty_last_n: int = -1


_DRY_FIELDS = {"multiplier": "dry_multiplier", "base": "dry_base", "allowed_length": "dry_allowed_length"}
_DRY_FIELDS |= {"sequence_breakers": "dry_sequence_breakers", "penalty_last_n": "dry_penalty_last_n"}


@dataclass(frozen=True)
class BanLimits:
    """What one request may ask of the ban machinery (from ``ServerSettings``)."""

    max_bans: int = 1000
    max_pattern_length: int = 500


def build_strategy(
    provider: BaseProvider,
    spec: StrategySpec | str | list[StrategySpec | str] | None,
    banned_strings: Sequence[str] | None = None,
    banned_regex: Sequence[str] | None = None,
    json_root: str | None = None,
    limits: BanLimits | None = None,
    exempt_prompt_terms: bool = False,
    ban_scope: BanScope | None = None,
    dry: DryParams | None = None,
) -> BaseStrategy | None:
    """The request's strategy: the spec's, DRY, AntiSlop for the bans, JSON output; chained in that order.

    ``exempt_prompt_terms`` and ``ban_scope`` are the AntiSlop options of the bans.

    Raises:
        APIError: 400 naming ``strategy...``, ``banned_strings``, ``banned_regex`` or a ``dry_*`` field.
    """
    limits = limits or BanLimits()
    spec_limits = registry.SpecLimits(max_bans=limits.max_bans, max_pattern_length=limits.max_pattern_length)
    builder = registry.StrategyBuilder(provider, spec_limits, interactive=False)
    try:
        strategies: list[BaseStrategy] = []
        if spec is not None:
            strategies.append(builder.build(_plain(spec), "strategy"))
        if dry is not None:
            strategies.append(_dry_strategy(dry))
        if banned_strings or banned_regex:
            phrases, patterns = list(banned_strings or []), list(banned_regex or [])
            param = "banned_regex" if patterns else "banned_strings"
            builder.count_bans(len(phrases) + len(patterns), param)
            kwargs = {
                "regex": patterns,
                "max_pattern_length": limits.max_pattern_length,
                "exempt_prompt_terms": exempt_prompt_terms,
                "scope": ban_scope,
            }
            strategies.append(_call(lambda: AntiSlopStrategy(provider, phrases, **kwargs), param))
    except registry.StrategySpecError as exc:
        raise APIError(str(exc), param=exc.param, code=exc.code or "invalid_value") from None
    if json_root is not None:
        strategies.append(JsonStrategy(provider, root=json_root))
    if not strategies:
        return None
    return strategies[0] if len(strategies) == 1 else ChainStrategy(strategies)


def _plain(spec: Any) -> Any:
    """The spec with its pydantic ``StrategySpec`` objects as plain ``{"name", "params"}`` dicts."""
    if isinstance(spec, StrategySpec):
        return {"name": spec.name, "params": spec.params}
    if isinstance(spec, list):
        return [_plain(member) for member in spec]
    return spec


def _dry_strategy(dry: DryParams) -> BaseStrategy:
    """``DryStrategy`` with ``dry``'s arguments; its refusal names the request field of the argument at fault."""
    try:
        from backtrack_sampler.strategy.dry_strategy import DryStrategy
    except ImportError:
        raise APIError(
            "dry_multiplier: the DRY penalty is not available in this version",
            param="dry_multiplier",
            code="unsupported",
        ) from None
    try:
        return DryStrategy(
            multiplier=dry.multiplier,
            base=dry.base,
            allowed_length=dry.allowed_length,
            sequence_breakers=list(dry.sequence_breakers),
            penalty_last_n=dry.penalty_last_n,
        )
    except (TypeError, ValueError) as exc:
        message = str(exc)
        param = next((f for a, f in _DRY_FIELDS.items() if message.startswith(a)), "dry_multiplier")
        raise APIError(f"{param}: {message}", param=param, code="invalid_value") from None


def _call(factory: Callable[[], BaseStrategy], param: str) -> BaseStrategy:
    try:
        return factory()
    except (TypeError, ValueError) as exc:
        raise APIError(f"{param}: {exc}", param=param, code="invalid_value") from None
