"""The strategy registry: strategy names (and aliases), and building a strategy from a spec.

A *spec* is how a user chooses a strategy; it reads the same on the command
line (``--strategy NAME``), in a batch line and in a server request
(``"strategy": ...``):

- a name: ``"antislop"``, or an alias such as ``"creative"`` (``strategy_names()`` lists them);
- ``{"name": "creative_writing", "params": {"top_p_flat": 0.5}}``: ``params`` are the
  constructor's arguments; ``provider`` is filled in;
- a list of specs, or ``{"name": "chain", "params": {"strategies": [spec, ...]}}``:
  a ``ChainStrategy`` (members may be chains again).

Strategies are found through the entry point group ``backtrack_sampler.strategies``
(``name = "module:Class"``), as plugins are found by ``llm``. The built-ins are
declared there too, in pyproject.toml, and load the same way; ``BUILTINS`` holds
their aliases and stands in when the package metadata lacks them (a source tree
installed before the entry points existed). ``register`` adds a strategy from code.

A spec that cannot be built raises ``StrategySpecError`` (a ``ValueError``) whose
``param`` is the path of the bad part, ``strategy.params.top_p_flat`` or
``strategy.0.name``. A server bounds what one spec may ask for with ``SpecLimits``.

Example:
    >>> from backtrack_sampler.strategy.registry import build_strategy
    >>> strategy = build_strategy({"name": "creative", "params": {"top_p_flat": 0.5}}, provider)  # doctest: +SKIP
    >>> chain = build_strategy(["json", {"name": "antislop", "params": {"slops": ["x"]}}], provider)  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from backtrack_sampler.core.base_provider import BaseProvider
from backtrack_sampler.core.base_strategy import BaseStrategy
from backtrack_sampler.core.checks import check_int
from backtrack_sampler.strategy.chain_strategy import ChainStrategy

ENTRY_POINT_GROUP = "backtrack_sampler.strategies"

# A spec: a name, {"name": ..., "params": {...}}, or a list of specs (a chain).
Spec = str | Mapping[str, Any] | Sequence[Any]


@dataclass(frozen=True)
class StrategyEntry:
    """One registered strategy.

    Args:
        name: the name specs use (lower case, words joined by ``_``).
        target: the class, or where it lives: ``"module:Class"`` (imported when first built).
        aliases: other names for it.
        interactive: it talks to a terminal (menus, answers read from stdin);
            servers and batch runs do not offer it.
    """

    name: str
    target: str | type[BaseStrategy]
    aliases: tuple[str, ...] = ()
    interactive: bool = False

    def load(self) -> type[BaseStrategy]:
        """The strategy class (imported on first use)."""
        return _import(self.target) if isinstance(self.target, str) else self.target


_PACKAGE = "backtrack_sampler.strategy"
BUILTINS = (
    StrategyEntry("antislop", f"{_PACKAGE}.antislop_strategy:AntiSlopStrategy"),
    StrategyEntry("creative_writing", f"{_PACKAGE}.creative_writing_strategy:CreativeWritingStrategy", ("creative",)),
    StrategyEntry(
        "adaptive_temperature",
        f"{_PACKAGE}.adaptive_temperature_strategy:AdaptiveTemperatureStrategy",
        ("adaptive",),
    ),
    StrategyEntry("replace", f"{_PACKAGE}.replace_strategy:ReplaceStrategy"),
    StrategyEntry("json", f"{_PACKAGE}.json_strategy:JsonStrategy"),
    StrategyEntry("debug", f"{_PACKAGE}.debug_strategy:DebugStrategy", interactive=True),
    StrategyEntry("human", f"{_PACKAGE}.human_guidance_strategy:HumanGuidanceStrategy", interactive=True),
    StrategyEntry("loop_guard", f"{_PACKAGE}.loop_guard_strategy:LoopGuardStrategy", ("loopguard",)),
    StrategyEntry("dry", f"{_PACKAGE}.dry_strategy:DryStrategy"),
    StrategyEntry("chain", f"{_PACKAGE}.chain_strategy:ChainStrategy"),
)
"""The built-in strategies, with their aliases: the same names pyproject.toml declares as entry points."""


class StrategySpecError(ValueError):
    """A strategy spec that cannot be built.

    Args:
        message: what is wrong, starting with ``param`` and naming the bad value.
        param: the path of the bad part of the spec, e.g. ``strategy.params.top_p_flat``.
        code: ``"unknown_strategy"``, ``"limit"``, or ``None``.
        detail: the message without the path (the constructor's own words, when it refused).
    """

    def __init__(self, message: str, param: str, code: str | None = None, detail: str | None = None) -> None:
        super().__init__(message)
        self.param = param
        self.code = code
        self.detail = detail or message


@dataclass(frozen=True)
class SpecLimits:
    """What one spec (one request) may ask for: a server's bounds; the command line and batch pass none.

    Args:
        max_depth: how deep chains may nest.
        max_strategies: the most strategies in one spec, chains counted.
        max_bans: the most banned phrases and patterns (AntiSlop's ``slops`` and ``regex``),
            wherever they are given; ``StrategyBuilder.count_bans`` adds those given elsewhere.
        max_pattern_length: the longest regex pattern; every AntiSlop gets it.
        host_set: AntiSlop parameters a spec may not set: the host sets them (they bound the work).
    """

    max_depth: int = 4
    max_strategies: int = 16
    max_bans: int = 1000
    max_pattern_length: int = 500
    host_set: tuple[str, ...] = ("regex_timeout", "max_pattern_length")

    def __post_init__(self) -> None:
        for name in ("max_depth", "max_strategies", "max_bans", "max_pattern_length"):
            check_int(name, getattr(self, name))


# -- the registry -----------------------------------------------------------------------------------
_entries: dict[str, StrategyEntry] = {}
_aliases: dict[str, str] = {}
_discovered = False


def _key(name: str) -> str:
    return name.strip().lower().replace("-", "_")


def _import(target: str) -> type[BaseStrategy]:
    module, _, attr = target.partition(":")
    cls = importlib.import_module(module)
    for part in attr.split("."):
        cls = getattr(cls, part)
    return cls


def _add(entry: StrategyEntry) -> None:
    old = _entries.get(entry.name)
    for alias in old.aliases if old else ():
        _aliases.pop(alias, None)
    _entries[entry.name] = entry
    for alias in entry.aliases:
        _aliases[alias] = entry.name


def _registry() -> dict[str, StrategyEntry]:
    """The entries, found through the entry points on first use."""
    global _discovered
    if not _discovered:
        _discovered = True
        builtins = {entry.name: entry for entry in BUILTINS}
        for point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            name = _key(point.name)
            if name in _entries:  # the same distribution seen twice: the first wins
                continue
            builtin = builtins.pop(name, None)
            entry = replace(builtin, target=point.value) if builtin else _plugin_entry(name, point)
            if entry is not None:
                _add(entry)
        for entry in builtins.values():  # metadata without our entry points: an install older than them
            _add(entry)
    return _entries


def _plugin_entry(name: str, point: importlib.metadata.EntryPoint) -> StrategyEntry | None:
    """A plugin's entry; its class may declare ``aliases`` and ``interactive`` (read here, so it is loaded)."""
    try:
        cls = point.load()
    except Exception as exc:  # a broken plugin must not take the built-ins down with it
        warnings.warn(f"strategy plugin {name!r} ({point.value}) failed to load: {exc}", stacklevel=3)
        return None
    aliases = tuple(_key(a) for a in getattr(cls, "aliases", ()))
    return StrategyEntry(name, cls, aliases, bool(getattr(cls, "interactive", False)))


def register(
    name: str, target: str | type[BaseStrategy], aliases: Sequence[str] = (), interactive: bool = False
) -> StrategyEntry:
    """Register ``target`` (a class or ``"module:Class"``) under ``name``, replacing a strategy of that name.

    Example:
        >>> register("shout", "my_package.shout:ShoutStrategy", aliases=["loud"])  # doctest: +SKIP
    """
    if not isinstance(name, str) or not _key(name):
        raise ValueError(f"name must be a non-empty string, got {name!r}")
    if isinstance(target, str):
        if ":" not in target:
            raise ValueError(f"target must be a class or 'module:Class', got {target!r}")
    elif not (isinstance(target, type) and issubclass(target, BaseStrategy)):
        raise TypeError(f"target must be a BaseStrategy subclass or 'module:Class', got {target!r}")
    if isinstance(aliases, str) or not all(isinstance(a, str) and _key(a) for a in aliases):
        raise ValueError(f"aliases must be a list of non-empty names, got {aliases!r}")
    _registry()
    entry = StrategyEntry(_key(name), target, tuple(_key(a) for a in aliases), bool(interactive))
    _add(entry)
    return entry


def unregister(name: str) -> None:
    """Remove the strategy called ``name`` (with its aliases); ``KeyError`` when there is none."""
    entry = _registry().pop(_key(name))
    for alias in entry.aliases:
        if _aliases.get(alias) == entry.name:
            del _aliases[alias]


def lookup(name: str) -> StrategyEntry | None:
    """The entry called ``name`` or one of its aliases (case, ``-`` and ``_`` aside), or ``None``."""
    entries, key = _registry(), _key(name)
    return entries.get(key) or entries.get(_aliases.get(key, ""))


def strategy_entries(interactive: bool = True) -> list[StrategyEntry]:
    """The registered strategies by name; ``interactive=False`` leaves out those that need a terminal."""
    return sorted((e for e in _registry().values() if interactive or not e.interactive), key=lambda e: e.name)


def strategy_names(interactive: bool = True) -> list[str]:
    """The registered names, sorted (aliases aside); ``interactive=False`` leaves out terminal-bound ones."""
    return [entry.name for entry in strategy_entries(interactive)]


# -- building ---------------------------------------------------------------------------------------
def build_strategy(
    spec: Spec | None,
    provider: BaseProvider | None,
    *,
    limits: SpecLimits | None = None,
    interactive: bool = True,
    param: str = "strategy",
) -> BaseStrategy | None:
    """The strategy ``spec`` describes (``None`` for ``None``), built for ``provider``.

    Args:
        spec: a name, ``{"name": ..., "params": {...}}``, or a list of specs (a chain).
        provider: passed to every constructor that takes a ``provider``.
        limits: bounds on the spec (a server's); ``None``: unbounded.
        interactive: whether terminal-bound strategies (debug, human) are offered.
        param: the spec's own name, the root of every error path.

    Raises:
        StrategySpecError: naming the path of the bad part and its value.
    """
    if spec is None:
        return None
    return StrategyBuilder(provider, limits, interactive).build(spec, param)


def check_spec(
    spec: Spec | None, *, limits: SpecLimits | None = None, interactive: bool = True, param: str = "strategy"
) -> None:
    """Check ``spec`` as ``build_strategy`` would (shapes, names, parameter names, limits), building nothing.

    The constructors' own checks of the values run only when the strategy is built.
    """
    if spec is not None:
        StrategyBuilder(None, limits, interactive, construct=False).build(spec, param)


class StrategyBuilder:
    """Builds strategies from specs for one provider, counting what they ask for against ``limits``.

    One builder serves one request: its counts (``built``, ``bans``) add up over its ``build`` calls.

    Args:
        provider: passed to every constructor that takes a ``provider``.
        limits: bounds on the specs; ``None``: unbounded.
        interactive: whether terminal-bound strategies are offered.
        construct: ``False`` checks the specs without building anything (``build`` returns ``None``).
    """

    def __init__(
        self,
        provider: BaseProvider | None,
        limits: SpecLimits | None = None,
        interactive: bool = True,
        construct: bool = True,
    ) -> None:
        self.provider = provider
        self.limits = limits
        self.interactive = interactive
        self.construct = construct
        self.built = 0
        self.bans = 0

    def build(self, spec: Spec, param: str = "strategy") -> BaseStrategy:
        """The strategy of ``spec``; errors name their path from ``param``."""
        return self._build(spec, param, depth=1)

    def count_bans(self, n: int, param: str) -> None:
        """Count ``n`` more bans (given at ``param``) against ``limits.max_bans``."""
        self.bans += n
        if self.limits is not None and self.bans > self.limits.max_bans:
            raise StrategySpecError(
                f"{param}: at most {self.limits.max_bans} banned strings and patterns in one request, got {self.bans}",
                param,
                code="limit",
            )

    def _build(self, spec: Spec, param: str, depth: int) -> BaseStrategy:
        self.built += 1
        if self.limits is not None and self.built > self.limits.max_strategies:
            raise StrategySpecError(
                f"{param}: at most {self.limits.max_strategies} strategies in one request", param, code="limit"
            )
        if isinstance(spec, (list, tuple)):
            return self._chain(ChainStrategy, spec, param, depth)
        name, params = _name_and_params(spec, param)
        cls = self._entry(name, param).load()
        if issubclass(cls, ChainStrategy):
            unknown = sorted(set(params) - {"strategies"})
            if unknown:
                path = f"{param}.params.{unknown[0]}"
                raise StrategySpecError(f"{path}: a chain takes only 'strategies', got {unknown[0]!r}", path)
            return self._chain(cls, params.get("strategies"), f"{param}.params.strategies", depth)
        return self._construct(cls, params, f"{param}.params")

    def _entry(self, name: str, param: str) -> StrategyEntry:
        entry = lookup(name)
        if entry is not None and (self.interactive or not entry.interactive):
            return entry
        why = "unknown strategy" if entry is None else "a strategy that needs a terminal, not offered here:"
        raise StrategySpecError(
            f"{param}.name: {why} {name!r}; choose one of {', '.join(strategy_names(self.interactive))}",
            f"{param}.name",
            code="unknown_strategy",
        )

    def _chain(self, cls: type[ChainStrategy], members: Any, param: str, depth: int) -> BaseStrategy:
        if not isinstance(members, (list, tuple)) or not members:
            raise StrategySpecError(
                f"{param}: a chain needs a non-empty list of strategies, got {_short(members)}", param
            )
        if self.limits is not None and depth > self.limits.max_depth:
            raise StrategySpecError(f"{param}: chains nest at most {self.limits.max_depth} deep", param, code="limit")
        built = [self._build(member, f"{param}.{i}", depth + 1) for i, member in enumerate(members)]
        return cls(built) if self.construct else None

    def _construct(self, cls: type[BaseStrategy], params: dict[str, Any], param: str) -> BaseStrategy:
        signature = inspect.signature(cls)
        host_set = self.limits.host_set if self.limits is not None and _is_antislop(cls) else ()
        open_ended = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in signature.parameters.values())
        accepted = [
            n
            for n, p in signature.parameters.items()
            if n not in ("provider", *host_set) and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        ]
        for key in params:
            if key not in accepted and (key in host_set or not open_ended):
                reason = "is set by the server" if key in host_set else "is not a parameter"
                path = f"{param}.{key}"
                message = f"{key!r} {reason} of {cls.__name__}; it takes {', '.join(accepted) or 'none'}"
                raise StrategySpecError(f"{path}: {message}", path, detail=message)
        kwargs = dict(params)
        if self.limits is not None and _is_antislop(cls):
            self.count_bans(_length(kwargs.get("slops")) + _length(kwargs.get("regex")), param)
            kwargs["max_pattern_length"] = self.limits.max_pattern_length
        if not self.construct:
            return None
        if "provider" in signature.parameters:
            kwargs["provider"] = self.provider
        try:
            return cls(**kwargs)
        except (TypeError, ValueError) as exc:
            path, name = _named_param(param, str(exc), params)
            value = "" if name is None or _short(params[name]) in str(exc) else f" (value: {_short(params[name])})"
            raise StrategySpecError(f"{path}: {cls.__name__}: {exc}{value}", path, detail=str(exc)) from None


def _name_and_params(spec: Any, param: str) -> tuple[str, dict[str, Any]]:
    """``(name, params)`` of a spec that is a name or ``{"name": ..., "params": {...}}``."""
    if isinstance(spec, str):
        return spec, {}
    if not isinstance(spec, Mapping):
        raise StrategySpecError(
            f"{param}: must be a name or {{'name': ..., 'params': {{...}}}}, got {_short(spec)}", param
        )
    extra = sorted(set(spec) - {"name", "params"}, key=str)
    if extra:
        path = f"{param}.{extra[0]}"
        raise StrategySpecError(f"{path}: a strategy spec holds only 'name' and 'params', got {extra[0]!r}", path)
    name, params = spec.get("name"), spec.get("params", {})
    if not isinstance(name, str) or not name.strip():
        raise StrategySpecError(f"{param}.name: must be a strategy name, got {_short(name)}", f"{param}.name")
    if not isinstance(params, Mapping) or not all(isinstance(k, str) for k in params):
        raise StrategySpecError(f"{param}.params: must be an object, got {_short(params)}", f"{param}.params")
    return name, dict(params)


def _is_antislop(cls: type) -> bool:
    from backtrack_sampler.strategy.antislop_strategy import AntiSlopStrategy

    return issubclass(cls, AntiSlopStrategy)


def _length(value: Any) -> int:
    return len(value) if isinstance(value, (list, tuple)) else 0


def _named_param(param: str, message: str, params: Mapping[str, Any]) -> tuple[str, str | None]:
    """``(param.<name>, name)`` when the constructor's message starts with a given parameter's name."""
    for name in sorted(params, key=len, reverse=True):
        if message.startswith(name):
            return f"{param}.{name}", name
    return param, None


def _short(value: Any, limit: int = 80) -> str:
    """``repr(value)``, cut to ``limit`` characters."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
