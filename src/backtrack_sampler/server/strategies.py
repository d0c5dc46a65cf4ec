"""Building a request's strategy from JSON: the ``strategy`` spec plus ``banned_strings``/``banned_regex``.

Each built-in is registered by name with its class; its JSON parameters are
checked against the constructor's signature, and the constructor's own
``ValueError``/``TypeError`` becomes a 400 naming the parameter. Strategies
that talk to a terminal (debug, human) are not offered.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
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


def build_strategy(
    provider: BaseProvider,
    spec: StrategySpec | str | list[StrategySpec | str] | None,
    banned_strings: Sequence[str] | None = None,
    banned_regex: Sequence[str] | None = None,
    json_root: str | None = None,
) -> BaseStrategy | None:
    """The request's strategy: the spec's, AntiSlop for the bans, JSON output; chained when several.

    Raises:
        APIError: 400 naming ``strategy...``, ``banned_strings`` or ``banned_regex``.
    """
    strategies: list[BaseStrategy] = []
    if spec is not None:
        strategies.append(_build(provider, spec, "strategy"))
    if banned_strings or banned_regex:
        strategies.append(_build_bans(provider, banned_strings or [], banned_regex or []))
    if json_root is not None:
        strategies.append(JsonStrategy(provider, root=json_root))
    if not strategies:
        return None
    return strategies[0] if len(strategies) == 1 else ChainStrategy(strategies)


def _build(provider: BaseProvider, spec: StrategySpec | str | list, param: str) -> BaseStrategy:
    if isinstance(spec, list):
        if not spec:
            raise APIError(f"{param}: a chain needs at least one strategy, got []", param=param)
        return ChainStrategy([_build(provider, s, f"{param}.{i}") for i, s in enumerate(spec)])
    if isinstance(spec, str):
        spec = StrategySpec(name=spec)
    name = spec.name.strip().lower().replace("-", "_")
    if name == CHAIN:
        members = spec.params.get("strategies")
        unknown = set(spec.params) - {"strategies"}
        if unknown:
            bad = sorted(unknown)[0]
            raise APIError(f"{param}.params: chain takes only 'strategies', got {bad!r}", param=f"{param}.params.{bad}")
        if not isinstance(members, list) or not members:
            raise APIError(
                f"{param}.params.strategies: a chain needs a non-empty list of strategies, got {short_repr(members)}",
                param=f"{param}.params.strategies",
            )
        specs = [_spec(m, f"{param}.params.strategies.{i}") for i, m in enumerate(members)]
        return ChainStrategy([_build(provider, s, f"{param}.params.strategies.{i}") for i, s in enumerate(specs)])
    cls = STRATEGY_CLASSES.get(name)
    if cls is None:
        raise APIError(
            f"{param}.name: unknown strategy {spec.name!r}; choose one of {', '.join(strategy_names())}",
            param=f"{param}.name",
            code="unknown_strategy",
        )
    return _construct(cls, provider, spec.params, f"{param}.params")


def _spec(value: Any, param: str) -> StrategySpec | str:
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("name"), str):
        params = value.get("params", {})
        if not isinstance(params, dict):
            raise APIError(f"{param}.params: must be an object, got {short_repr(params)}", param=f"{param}.params")
        return StrategySpec(name=value["name"], params=params)
    message = f"{param}: must be a name or {{'name': ..., 'params': {{...}}}}, got {short_repr(value)}"
    raise APIError(message, param=param)


def _construct(cls: type[BaseStrategy], provider: BaseProvider, params: dict[str, Any], param: str) -> BaseStrategy:
    signature = inspect.signature(cls.__init__)
    accepted = [n for n in signature.parameters if n not in ("self", "provider")]
    for key in params:
        if key not in accepted:
            raise APIError(
                f"{param}: {cls.__name__} has no parameter {key!r}; it takes {', '.join(accepted) or 'none'}",
                param=f"{param}.{key}",
            )
    kwargs = dict(params)
    if "provider" in signature.parameters:
        kwargs["provider"] = provider
    return _call(cls, kwargs, param, label=f"{cls.__name__}: ")


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


def _build_bans(provider: BaseProvider, phrases: Sequence[str], patterns: Sequence[str]) -> BaseStrategy:
    """AntiSlop with the library's defaults: case-insensitive, whole words (use ``strategy`` to change them)."""
    param = "banned_regex" if patterns else "banned_strings"
    return _call(lambda: AntiSlopStrategy(provider, list(phrases), regex=list(patterns)), {}, param)
