"""Building a request's strategy from JSON: the ``strategy`` spec plus ``banned_strings``/``banned_regex``.

Each built-in is registered by name with its class; its JSON parameters are
checked against the constructor's signature, and the constructor's own
``ValueError``/``TypeError`` becomes a 400 naming the parameter. Strategies
that talk to a terminal (debug, human) are not offered. What a request may
ask for is bounded: chains nest at most 4 deep, at most 16 strategies, bans
(phrases and patterns, wherever given) count against ``max_bans``, and the
regex timeout and pattern length are the server's.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from backtrack_sampler.provider.base_provider import BaseProvider
from backtrack_sampler.server.errors import APIError, short_repr
from backtrack_sampler.server.schemas import StrategySpec
from backtrack_sampler.strategy.adaptive_temperature_strategy import AdaptiveTemperatureStrategy
from backtrack_sampler.strategy.antislop_strategy import AntiSlopStrategy
from backtrack_sampler.strategy.base_strategy import BaseStrategy
from backtrack_sampler.strategy.chain_strategy import ChainStrategy
from backtrack_sampler.strategy.creative_writing_strategy import CreativeWritingStrategy
from backtrack_sampler.strategy.json_strategy import JsonStrategy
from backtrack_sampler.strategy.replace_strategy import ReplaceStrategy

# name -> strategy class; aliases share the class.
STRATEGY_CLASSES: dict[str, type[BaseStrategy]] = {
    "antislop": AntiSlopStrategy,
    "creative_writing": CreativeWritingStrategy,
    "creative": CreativeWritingStrategy,
    "adaptive_temperature": AdaptiveTemperatureStrategy,
    "adaptive": AdaptiveTemperatureStrategy,
    "replace": ReplaceStrategy,
    "json": JsonStrategy,
}
CHAIN = "chain"


def strategy_names() -> list[str]:
    """Every name ``strategy`` accepts."""
    return sorted([*STRATEGY_CLASSES, CHAIN])


MAX_CHAIN_DEPTH = 4
MAX_STRATEGIES = 16
# Constructor parameters a client may not set: the server sets them (they bound the work of a request).
SERVER_SET = {AntiSlopStrategy: ("regex_timeout", "max_pattern_length")}


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
) -> BaseStrategy | None:
    """The request's strategy: the spec's, AntiSlop for the bans, JSON output; chained when several.

    Raises:
        APIError: 400 naming ``strategy...``, ``banned_strings`` or ``banned_regex``.
    """
    return _Builder(provider, limits or BanLimits()).build(spec, banned_strings, banned_regex, json_root)


class _Builder:
    """Builds one request's strategies, counting what they ban against the limits."""

    def __init__(self, provider: BaseProvider, limits: BanLimits) -> None:
        self.provider = provider
        self.limits = limits
        self.bans = 0
        self.built = 0

    def build(
        self,
        spec: StrategySpec | str | list | None,
        banned_strings: Sequence[str] | None,
        banned_regex: Sequence[str] | None,
        json_root: str | None,
    ) -> BaseStrategy | None:
        strategies: list[BaseStrategy] = []
        if spec is not None:
            strategies.append(self._build(spec, "strategy", depth=1))
        if banned_strings or banned_regex:
            phrases, patterns = list(banned_strings or []), list(banned_regex or [])
            param = "banned_regex" if patterns else "banned_strings"
            self._count_bans(len(phrases) + len(patterns), param)
            kwargs = {"regex": patterns, "max_pattern_length": self.limits.max_pattern_length}
            strategies.append(_call(lambda: AntiSlopStrategy(self.provider, phrases, **kwargs), {}, param))
        if json_root is not None:
            strategies.append(JsonStrategy(self.provider, root=json_root))
        if not strategies:
            return None
        return strategies[0] if len(strategies) == 1 else ChainStrategy(strategies)

    def _count_bans(self, n: int, param: str) -> None:
        self.bans += n
        if self.bans > self.limits.max_bans:
            raise APIError(
                f"{param}: at most {self.limits.max_bans} banned strings and patterns in one request, got {self.bans}",
                param=param,
                code="limit",
            )

    def _build(self, spec: StrategySpec | str | list, param: str, depth: int) -> BaseStrategy:
        self.built += 1
        if self.built > MAX_STRATEGIES:
            raise APIError(f"{param}: at most {MAX_STRATEGIES} strategies in one request", param=param, code="limit")
        if isinstance(spec, list):
            return self._chain(spec, param, depth)
        if isinstance(spec, str):
            spec = StrategySpec(name=spec)
        name = spec.name.strip().lower().replace("-", "_")
        if name == CHAIN:
            unknown = set(spec.params) - {"strategies"}
            if unknown:
                bad = sorted(unknown)[0]
                message = f"{param}.params: chain takes only 'strategies', got {bad!r}"
                raise APIError(message, param=f"{param}.params.{bad}")
            return self._chain(spec.params.get("strategies"), f"{param}.params.strategies", depth)
        cls = STRATEGY_CLASSES.get(name)
        if cls is None:
            raise APIError(
                f"{param}.name: unknown strategy {spec.name!r}; choose one of {', '.join(strategy_names())}",
                param=f"{param}.name",
                code="unknown_strategy",
            )
        return self._construct(cls, spec.params, f"{param}.params")

    def _chain(self, members: Any, param: str, depth: int) -> BaseStrategy:
        if not isinstance(members, list) or not members:
            message = f"{param}: a chain needs a non-empty list of strategies, got {short_repr(members)}"
            raise APIError(message, param=param)
        if depth > MAX_CHAIN_DEPTH:
            raise APIError(f"{param}: chains nest at most {MAX_CHAIN_DEPTH} deep", param=param, code="limit")
        specs = [_spec(m, f"{param}.{i}") for i, m in enumerate(members)]
        return ChainStrategy([self._build(s, f"{param}.{i}", depth + 1) for i, s in enumerate(specs)])

    def _construct(self, cls: type[BaseStrategy], params: dict[str, Any], param: str) -> BaseStrategy:
        signature = inspect.signature(cls.__init__)
        accepted = [n for n in signature.parameters if n not in ("self", "provider", *SERVER_SET.get(cls, ()))]
        for key in params:
            if key not in accepted:
                reason = "is set by the server" if key in SERVER_SET.get(cls, ()) else "is not a parameter"
                raise APIError(
                    f"{param}: {key!r} {reason} of {cls.__name__}; it takes {', '.join(accepted) or 'none'}",
                    param=f"{param}.{key}",
                )
        kwargs = dict(params)
        if cls is AntiSlopStrategy:
            self._count_bans(_length(kwargs.get("slops")) + _length(kwargs.get("regex")), param)
            kwargs["max_pattern_length"] = self.limits.max_pattern_length
        if "provider" in signature.parameters:
            kwargs["provider"] = self.provider
        return _call(cls, kwargs, param, label=f"{cls.__name__}: ")


def _length(value: Any) -> int:
    return len(value) if isinstance(value, (list, tuple)) else 0


def _spec(value: Any, param: str) -> StrategySpec | str | list:
    if isinstance(value, (str, list)):  # a name, or a list: a chain inside the chain
        return value
    if isinstance(value, dict) and isinstance(value.get("name"), str):
        params = value.get("params", {})
        if not isinstance(params, dict):
            raise APIError(f"{param}.params: must be an object, got {short_repr(params)}", param=f"{param}.params")
        return StrategySpec(name=value["name"], params=params)
    message = f"{param}: must be a name or {{'name': ..., 'params': {{...}}}}, got {short_repr(value)}"
    raise APIError(message, param=param)


def _call(factory: Callable[..., BaseStrategy], kwargs: dict[str, Any], param: str, label: str = "") -> BaseStrategy:
    try:
        return factory(**kwargs)
    except TypeError as exc:
        raise APIError(f"{param}: {label}{exc}", param=param) from None
    except ValueError as exc:
        raise APIError(f"{param}: {label}{exc}", param=_named_param(param, str(exc), kwargs)) from None


def _named_param(param: str, message: str, kwargs: dict[str, Any]) -> str:
    """``param.<name>`` when the constructor's message starts with one of its argument names."""
    for name in kwargs:
        if message.startswith(name):
            return f"{param}.{name}"
    return param
