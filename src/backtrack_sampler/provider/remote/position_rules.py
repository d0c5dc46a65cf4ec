"""Bans and penalties scoped to positions, and their wire format for vLLM (``vllm_xargs``).

vLLM's ``logit_bias`` weighs on every position of a request. With the
logits processor ``backtrack_sampler.vllm_plugin:PositionBans`` loaded, a
request can instead carry rules for single positions in its ``vllm_xargs``
(whose values vLLM accepts only as strings or numbers, hence JSON strings):

- ``backtrack_bans``: ``{"<position>": [token ids]}``: those tokens cannot be
  sampled at that position;
- ``backtrack_penalties``: ``{"<position>": {"<token id>": factor}}``: the
  probability of each token at that position is multiplied by its factor, in
  (0, 1] (``log(factor)`` is added to its logit).

Positions count the tokens the request generates: 0 is its first one. The
remote provider sends the prompt and every accepted token as the prompt of
each request, so the position it has just rewound is 0.

Both sides share this module: the provider writes the rules
(``PositionRules.to_xargs``), the plugin reads them (``from_xargs``, which
vLLM calls when it admits the request: a bad value is a 400 naming the key)
and turns them into logit edits (``logit_edits``). It needs neither vLLM nor
numpy.

Example:
    >>> rules = PositionRules(bans={0: frozenset({42})}, penalties={1: {7: 0.5}})
    >>> rules.to_xargs()
    {'backtrack_bans': '{"0":[42]}', 'backtrack_penalties': '{"1":{"7":0.5}}'}
    >>> PositionRules.from_xargs(rules.to_xargs()) == rules
    True
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

BANS_KEY = "backtrack_bans"
PENALTIES_KEY = "backtrack_penalties"
MAX_POSITION = 1 << 20
"""The largest position a rule may name (far beyond any context)."""
MAX_ENTRIES = 1 << 16
"""The most (position, token) rules one request may carry, bans and penalties together."""


@dataclass(frozen=True)
class PositionRules:
    """Tokens banned and penalized at single positions of one request.

    Attributes:
        bans: position -> the token ids that cannot be sampled there.
        penalties: position -> ``{token id: factor}``, factors in (0, 1].
    """

    bans: Mapping[int, frozenset[int]] = field(default_factory=dict)
    penalties: Mapping[int, Mapping[int, float]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return any(self.bans.values()) or any(self.penalties.values())

    @property
    def last_position(self) -> int:
        """The last position that has a rule (-1 when there is none): past it, nothing is left to do."""
        positions = [p for p, t in self.bans.items() if t] + [p for p, t in self.penalties.items() if t]
        return max(positions, default=-1)

    def to_xargs(self) -> dict[str, str]:
        """The ``vllm_xargs`` entries of these rules (empty when there is none)."""
        xargs = {}
        bans = {str(p): sorted(t) for p, t in sorted(self.bans.items()) if t}
        if bans:
            xargs[BANS_KEY] = json.dumps(bans, separators=(",", ":"))
        penalties = {
            str(p): {str(t): float(f) for t, f in sorted(factors.items())}
            for p, factors in sorted(self.penalties.items())
            if factors
        }
        if penalties:
            xargs[PENALTIES_KEY] = json.dumps(penalties, separators=(",", ":"))
        return xargs

    @classmethod
    def from_xargs(cls, extra_args: Mapping[str, Any] | None) -> PositionRules:
        """The rules a request's extra arguments carry (none when it carries neither key).

        Raises:
            ValueError: a value that is not the JSON described in the module
                docstring; the message names the key and the value.
        """
        extra_args = extra_args or {}
        bans = _parse(extra_args, BANS_KEY, _ban_list)
        penalties = _parse(extra_args, PENALTIES_KEY, _factor_map)
        entries = sum(len(t) for t in bans.values()) + sum(len(f) for f in penalties.values())
        if entries > MAX_ENTRIES:
            limit = f"{BANS_KEY} and {PENALTIES_KEY} name at most {MAX_ENTRIES} tokens together"
            raise ValueError(f"{limit}, got {entries}")
        return cls(bans, penalties)


def logit_edits(
    rows: Mapping[int, tuple[PositionRules, Sequence[int]]], vocab_size: int
) -> tuple[list[int], list[int], list[int], list[int], list[float]]:
    """What to change in a batch of logits, shape (batch, vocab), to apply each row's rules at its position.

    Args:
        rows: batch row -> (its request's rules, the tokens it has generated so
            far); the number generated is the position being sampled.
        vocab_size: the width of the logits; ids outside it are skipped.

    Returns:
        ``(ban_rows, ban_tokens, penalty_rows, penalty_tokens, penalty_logs)``:
        set ``logits[ban_rows, ban_tokens]`` to ``-inf`` and add
        ``penalty_logs`` to ``logits[penalty_rows, penalty_tokens]``.
    """
    ban_rows: list[int] = []
    ban_tokens: list[int] = []
    penalty_rows: list[int] = []
    penalty_tokens: list[int] = []
    penalty_logs: list[float] = []
    for row, (rules, generated) in rows.items():
        position = len(generated)
        for token in rules.bans.get(position, ()):
            if token < vocab_size:
                ban_rows.append(row)
                ban_tokens.append(token)
        for token, factor in rules.penalties.get(position, {}).items():
            if token < vocab_size:
                penalty_rows.append(row)
                penalty_tokens.append(token)
                penalty_logs.append(math.log(factor))
    return ban_rows, ban_tokens, penalty_rows, penalty_tokens, penalty_logs


# -- parsing ----------------------------------------------------------------------------------------------
def _parse(extra_args: Mapping[str, Any], key: str, parse_value: Any) -> dict[int, Any]:
    """``{position: parse_value(key, value)}`` from the JSON object under ``key``; ``{}`` when absent."""
    raw = extra_args.get(key)
    if raw is None:
        return {}
    if not isinstance(raw, str):
        raise ValueError(f"{key} must be a JSON string, got {_short(raw)}")
    try:
        decoded = json.loads(raw)
    except ValueError:
        raise ValueError(f"{key} must be valid JSON, got {_short(raw)}") from None
    if not isinstance(decoded, dict):
        raise ValueError(f"{key} must be a JSON object of positions, got {_short(raw)}")
    rules = {}
    for position, value in decoded.items():
        rules[_position(key, position)] = parse_value(key, position, value)
    return rules


def _position(key: str, text: str) -> int:
    if not (text.isascii() and text.isdigit()) or int(text) > MAX_POSITION:
        raise ValueError(f"{key}: positions must be integers in [0, {MAX_POSITION}], got {text!r}")
    return int(text)


def _token(key: str, position: str, value: Any) -> int:
    if isinstance(value, str) and value.isascii() and value.isdigit():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{key}[{position!r}]: token ids must be integers >= 0, got {_short(value)}")
    return value


def _ban_list(key: str, position: str, value: Any) -> frozenset[int]:
    if not isinstance(value, list):
        raise ValueError(f"{key}[{position!r}] must be a list of token ids, got {_short(value)}")
    return frozenset(_token(key, position, t) for t in value)


def _factor_map(key: str, position: str, value: Any) -> dict[int, float]:
    if not isinstance(value, dict):
        raise ValueError(f"{key}[{position!r}] must be an object {{token id: factor}}, got {_short(value)}")
    factors = {}
    for token, factor in value.items():
        ok = isinstance(factor, (int, float)) and not isinstance(factor, bool) and 0 < factor <= 1
        if not ok:
            raise ValueError(f"{key}[{position!r}]: factors must be numbers in (0, 1], got {_short(factor)}")
        factors[_token(key, position, token)] = float(factor)
    return factors


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
