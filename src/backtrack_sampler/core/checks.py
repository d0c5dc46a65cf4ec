"""Argument checks shared by the library and its front ends.

Each check returns the value it was given (so it can be used inline) or
raises ``ValueError`` naming the argument and the value:
``ValueError("top_p must be in (0, 1], got 1.5")``. Booleans are never
accepted as numbers.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def is_int(value: Any) -> bool:
    """Whether ``value`` is an integer (Python or numpy), and not a bool."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """Whether ``value`` is a finite real number (int or float), and not a bool."""
    return (is_int(value) or isinstance(value, (float, np.floating))) and math.isfinite(value)


def check_int(name: str, value: Any, low: int = 0, high: int | None = None, hint: str = "") -> int:
    """``value`` when it is an integer in ``[low, high]``; otherwise a ``ValueError`` naming ``name``."""
    if not is_int(value) or value < low or (high is not None and value > high):
        shown = f"an integer >= {low}" if high is None else f"an integer in [{low}, {high}]"
        raise ValueError(f"{name} must be {shown}{hint}, got {value!r}")
    return int(value)


def check_optional_int(name: str, value: Any, low: int = 0, high: int | None = None) -> int | None:
    """``check_int`` that lets ``None`` through."""
    return None if value is None else check_int(name, value, low, high)


def check_number(
    name: str,
    value: Any,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """``value`` when it is a finite number in the interval; otherwise a ``ValueError`` naming ``name``."""
    ok = is_number(value)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        raise ValueError(f"{name} must be {describe_interval(low, high, low_open, high_open)}, got {value!r}")
    return value


def check_optional_number(
    name: str,
    value: Any,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> float | None:
    """``check_number`` that lets ``None`` through."""
    return None if value is None else check_number(name, value, low, high, low_open, high_open)


def describe_interval(low: float | None, high: float | None, low_open: bool = False, high_open: bool = False) -> str:
    """How an interval reads in a message: ``in (0, 1]``, ``a finite number >= 0``, ``a finite number``."""
    if low is not None and high is not None:
        return f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    if low is not None:
        return f"a finite number {'>' if low_open else '>='} {low:g}"
    if high is not None:
        return f"a finite number {'<' if high_open else '<='} {high:g}"
    return "a finite number"


MAX_CHARS_PER_TOKEN = 32
"""No tokenizer packs more characters than this into a token on ordinary text: a prompt of more
characters than this many per token a model may read is refused before it is tokenized."""


def surely_too_long(text: str, max_tokens: int) -> bool:
    """Whether ``text`` cannot fit in ``max_tokens`` tokens, known without tokenizing it (``MAX_CHARS_PER_TOKEN``).

    Tokenizing takes time in proportion to the text (seconds for megabytes):
    the engine and the server check this first.
    """
    return len(text) > MAX_CHARS_PER_TOKEN * max_tokens
