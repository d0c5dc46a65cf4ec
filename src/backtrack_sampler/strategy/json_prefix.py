r"""An incremental validator of JSON prefixes (RFC 8259), fed one character at a time.

The validator is a pushdown automaton whose whole state is one immutable
``JsonState``: a mode, a small ``aux`` value and the stack of open containers
as a persistent linked list (``(kind, parent)`` tuples). Stepping never
mutates anything, so a snapshot is the state object itself: keeping the state
after each token and going back to any of them costs O(1).

A character is rejected exactly when the text read so far plus that character
is no longer the beginning of any JSON document: ``[1,]`` fails at ``]``,
``tru e`` at the space, ``01`` at ``1``, ``"a<newline>`` at the newline, and a
document followed by anything but whitespace at that first character.

The grammar is RFC 8259's: whitespace is space, tab, newline and carriage
return; strings hold no raw control characters (U+0000 to U+001F) and only the
escapes ``\" \\ \/ \b \f \n \r \t \uXXXX``; numbers have no leading zeros,
no leading ``+``, no bare ``.`` and no ``NaN``/``Infinity``. As in the RFC's
grammar (and ``json.loads``), a ``\uXXXX`` escape may name a lone surrogate.

Example:
    >>> v = JsonPrefixValidator()
    >>> v.feed('{"a": [1, tru')
    13
    >>> v.complete, v.completion()
    (False, 'e]}')
    >>> v.feed("e }")
    2
    >>> v.explain("}")
    "expected ',' or ']' after an array element, got '}'"
"""

from __future__ import annotations

from typing import NamedTuple

# Modes of the automaton. Modes in _STRUCTURAL treat whitespace as a no-op.
VALUE = 0  # a value must start here (aux: the root restriction at depth 0)
ARRAY_FIRST = 1  # just after '[': a value or ']'
OBJECT_FIRST = 2  # just after '{': a key or '}'
KEY = 3  # after ',' in an object: a key
COLON = 4  # after a key: ':'
AFTER_VALUE = 5  # after a value inside a container: ',' or the closing bracket
DONE = 6  # the top-level value is complete: only whitespace may follow
STRING = 7  # inside a string (aux: 1 for an object key, 0 for a value)
ESCAPE = 8  # after a backslash in a string (aux as STRING)
HEX0, HEX1, HEX2, HEX3 = 9, 10, 11, 12  # inside \\uXXXX, 0-3 hex digits read (aux as STRING)
LITERAL = 13  # inside true/false/null (aux: the letters still expected)
MINUS = 14  # after a leading '-'
ZERO = 15  # after a leading '0' (complete number)
INTEGER = 16  # in the digits of the integer part (complete number)
DOT = 17  # after '.' (a digit must follow)
FRACTION = 18  # in the fraction digits (complete number)
EXPONENT = 19  # after 'e' or 'E'
EXPONENT_SIGN = 20  # after the exponent's sign
EXPONENT_DIGITS = 21  # in the exponent digits (complete number)

STRUCTURAL = frozenset({VALUE, ARRAY_FIRST, OBJECT_FIRST, KEY, COLON, AFTER_VALUE, DONE})
"""Modes in which whitespace changes nothing."""
IN_STRING = frozenset({STRING, ESCAPE, HEX0, HEX1, HEX2, HEX3})
NUMBER_END = frozenset({ZERO, INTEGER, FRACTION, EXPONENT_DIGITS})
"""Number modes in which the number may end."""

ROOTS = ("any", "object", "array")
_WHITESPACE = frozenset(" \t\n\r")
_DIGITS = frozenset("0123456789")
_HEX = frozenset("0123456789abcdefABCDEF")
_SIMPLE_ESCAPES = frozenset('"\\/bfnrt')
_LITERALS = {"t": "rue", "f": "alse", "n": "ull"}
_CLOSER = {"{": "}", "[": "]"}

Stack = tuple | None
"""Open containers, innermost first: ``("{" or "[", parent)``, or ``None`` at the top level."""


class JsonState(NamedTuple):
    """The whole state of the automaton (immutable and hashable)."""

    mode: int
    aux: int | str
    stack: Stack


def initial_state(root: str = "any") -> JsonState:
    """The state before any character.

    Args:
        root: ``"any"`` for any JSON value, ``"object"`` or ``"array"`` to
            require that the document is one.
    """
    if root not in ROOTS:
        raise ValueError(f"root must be one of {', '.join(ROOTS)}, got {root!r}")
    return JsonState(VALUE, root, None)


_DONE_STATE = JsonState(DONE, 0, None)


def _after_value(stack: Stack) -> JsonState:
    return _DONE_STATE if stack is None else JsonState(AFTER_VALUE, 0, stack)


def _start_value(ch: str, stack: Stack) -> JsonState | None:
    if ch == '"':
        return JsonState(STRING, 0, stack)
    if "1" <= ch <= "9":
        return JsonState(INTEGER, 0, stack)
    if ch == "{":
        return JsonState(OBJECT_FIRST, 0, ("{", stack))
    if ch == "[":
        return JsonState(ARRAY_FIRST, 0, ("[", stack))
    if ch == "0":
        return JsonState(ZERO, 0, stack)
    if ch == "-":
        return JsonState(MINUS, 0, stack)
    rest = _LITERALS.get(ch)
    if rest is not None:
        return JsonState(LITERAL, rest, stack)
    return None


def _in_string(state: JsonState, ch: str) -> JsonState | None:
    if ch == '"':
        return JsonState(COLON, 0, state.stack) if state.aux else _after_value(state.stack)
    if ch == "\\":
        return JsonState(ESCAPE, state.aux, state.stack)
    return None if ch < " " else state


def _after_element(state: JsonState, ch: str) -> JsonState | None:
    stack = state.stack
    kind = stack[0]
    if ch == ",":
        return JsonState(KEY, 0, stack) if kind == "{" else JsonState(VALUE, 0, stack)
    return _after_value(stack[1]) if ch == _CLOSER[kind] else None


def _value(state: JsonState, ch: str) -> JsonState | None:
    _, root, stack = state
    if stack is None and root != "any" and ch != ("{" if root == "object" else "["):
        return None
    return _start_value(ch, stack)


def _object_first(state: JsonState, ch: str) -> JsonState | None:
    if ch == '"':
        return JsonState(STRING, 1, state.stack)
    return _after_value(state.stack[1]) if ch == "}" else None


def _literal(state: JsonState, ch: str) -> JsonState | None:
    _, rest, stack = state
    if ch != rest[0]:
        return None
    return _after_value(stack) if len(rest) == 1 else JsonState(LITERAL, rest[1:], stack)


def _escape(state: JsonState, ch: str) -> JsonState | None:
    if ch in _SIMPLE_ESCAPES:
        return JsonState(STRING, state.aux, state.stack)
    return JsonState(HEX0, state.aux, state.stack) if ch == "u" else None


def _hex(state: JsonState, ch: str) -> JsonState | None:
    if ch not in _HEX:
        return None
    return JsonState(STRING if state.mode == HEX3 else state.mode + 1, state.aux, state.stack)


def _digits(state: JsonState, ch: str) -> JsonState | None:
    """INTEGER, FRACTION, EXPONENT_DIGITS: more digits, or the next part, or the number ends before ``ch``."""
    mode = state.mode
    if ch in _DIGITS:
        return state
    if ch == "." and mode == INTEGER:
        return JsonState(DOT, 0, state.stack)
    if ch in "eE" and mode != EXPONENT_DIGITS:
        return JsonState(EXPONENT, 0, state.stack)
    return step(_after_value(state.stack), ch)


def _zero(state: JsonState, ch: str) -> JsonState | None:
    if ch in _DIGITS:
        return None
    if ch == ".":
        return JsonState(DOT, 0, state.stack)
    if ch in "eE":
        return JsonState(EXPONENT, 0, state.stack)
    return step(_after_value(state.stack), ch)


def _minus(state: JsonState, ch: str) -> JsonState | None:
    if ch == "0":
        return JsonState(ZERO, 0, state.stack)
    return JsonState(INTEGER, 0, state.stack) if ch in _DIGITS else None


def _exponent(state: JsonState, ch: str) -> JsonState | None:
    if ch in "+-":
        return JsonState(EXPONENT_SIGN, 0, state.stack)
    return JsonState(EXPONENT_DIGITS, 0, state.stack) if ch in _DIGITS else None


def _then(mode: int, accepted: str | frozenset[str]):
    """A step that goes to ``mode`` (same stack) on one of ``accepted``, and fails otherwise."""

    def step_to(state: JsonState, ch: str) -> JsonState | None:
        return JsonState(mode, 0, state.stack) if ch in accepted else None

    return step_to


_STEPS = {
    VALUE: _value,
    ARRAY_FIRST: lambda state, ch: _after_value(state.stack[1]) if ch == "]" else _start_value(ch, state.stack),
    OBJECT_FIRST: _object_first,
    KEY: lambda state, ch: JsonState(STRING, 1, state.stack) if ch == '"' else None,
    COLON: _then(VALUE, ":"),
    AFTER_VALUE: _after_element,
    DONE: lambda state, ch: None,
    STRING: _in_string,
    ESCAPE: _escape,
    HEX0: _hex,
    HEX1: _hex,
    HEX2: _hex,
    HEX3: _hex,
    LITERAL: _literal,
    MINUS: _minus,
    ZERO: _zero,
    INTEGER: _digits,
    DOT: _then(FRACTION, _DIGITS),
    FRACTION: _digits,
    EXPONENT: _exponent,
    EXPONENT_SIGN: _then(EXPONENT_DIGITS, _DIGITS),
    EXPONENT_DIGITS: _digits,
}
"""One small transition function per mode."""


def step(state: JsonState, ch: str) -> JsonState | None:
    """The state after one more character, or ``None`` when no JSON document can begin this way."""
    if ch in _WHITESPACE and state.mode in STRUCTURAL:
        return state
    return _STEPS[state.mode](state, ch)


def advance(state: JsonState, text: str) -> tuple[JsonState, int]:
    """Feed ``text``; return the state after the accepted characters and how many were accepted.

    Fewer than ``len(text)`` accepted means the next character is the first
    impossible one; the returned state is the one just before it.
    """
    for index, ch in enumerate(text):
        following = step(state, ch)
        if following is None:
            return state, index
        state = following
    return state, len(text)


def can_end(state: JsonState) -> bool:
    """Whether the text read so far is a whole JSON document (so the text may end here)."""
    return state.mode == DONE or (state.stack is None and state.mode in NUMBER_END)


def depth(state: JsonState) -> int:
    """Number of open containers."""
    n, stack = 0, state.stack
    while stack is not None:
        n, stack = n + 1, stack[1]
    return n


def completion(state: JsonState) -> str:
    """A shortest text that makes the text read so far a whole JSON document."""
    mode, aux, stack = state
    closers = []
    node = stack
    while node is not None:
        closers.append(_CLOSER[node[0]])
        node = node[1]
    close = "".join(closers)
    if mode == VALUE:
        if stack is None and aux == "object":
            return "{}"
        if stack is None and aux == "array":
            return "[]"
        return "0" + close
    if mode in (ARRAY_FIRST, OBJECT_FIRST, AFTER_VALUE) or mode in NUMBER_END or mode == DONE:
        return close
    if mode == KEY:
        return '"":0' + close
    if mode == COLON:
        return ":0" + close
    if mode in IN_STRING:
        escape = {ESCAPE: "n", HEX0: "0000", HEX1: "000", HEX2: "00", HEX3: "0"}.get(mode, "")
        return escape + '"' + (":0" if aux else "") + close
    if mode == LITERAL:
        return aux + close
    return "0" + close  # MINUS, DOT, EXPONENT, EXPONENT_SIGN: one digit


_EXPECTED = {
    ARRAY_FIRST: "a value or ']'",
    OBJECT_FIRST: "'\"' (a key) or '}'",
    KEY: "'\"' (a key; JSON allows no trailing comma)",
    COLON: "':' after the key",
    DONE: "only whitespace after the complete document",
    STRING: "a string character (control characters must be escaped)",
    ESCAPE: 'an escape letter (one of " \\ / b f n r t u)',
    HEX0: "a hex digit of a \\u escape",
    HEX1: "a hex digit of a \\u escape",
    HEX2: "a hex digit of a \\u escape",
    HEX3: "a hex digit of a \\u escape",
    MINUS: "a digit after '-'",
    ZERO: "'.', an exponent or the end of the number (no leading zeros)",
    DOT: "a digit after the decimal point",
    EXPONENT: "a sign or a digit in the exponent",
    EXPONENT_SIGN: "a digit in the exponent",
}


def expected(state: JsonState) -> str:
    """What may come next, in words (for messages)."""
    mode, aux, stack = state
    if mode == VALUE:
        if stack is None and aux == "object":
            return "'{' (the document must be an object)"
        if stack is None and aux == "array":
            return "'[' (the document must be an array)"
        return "a value ('{', '[', '\"', a number, true, false or null)"
    if mode == AFTER_VALUE:
        return "',' or '}' after a member" if stack[0] == "{" else "',' or ']' after an array element"
    if mode == LITERAL:
        return f"{aux[0]!r} (spelling a JSON literal)"
    return _EXPECTED.get(mode, "a digit or the end of the number")  # INTEGER, FRACTION, EXPONENT_DIGITS


def explain(state: JsonState, ch: str) -> str:
    """Why ``ch`` is impossible after ``state`` (for rewind reasons)."""
    if state.mode in NUMBER_END and not (ch in _DIGITS or ch in ".eE"):
        state = _after_value(state.stack)  # the number ended; the character is judged after it
    if state.mode == STRING and ch < " ":
        return f"raw control character {ch!r} inside a string (it must be escaped)"
    if state.mode == ZERO and ch in _DIGITS:
        return f"a number cannot have a leading zero, got {ch!r} after '0'"
    return f"expected {expected(state)}, got {ch!r}"


class JsonPrefixValidator:
    """Checks text, fed in pieces, is the beginning of a JSON document.

    Args:
        root: ``"any"``, ``"object"`` or ``"array"``: what the document must be.

    ``snapshot()`` returns the state (immutable) and ``restore(state)`` goes
    back to it, both O(1).
    """

    def __init__(self, root: str = "any") -> None:
        self.state = initial_state(root)

    def feed(self, text: str) -> int:
        """Feed ``text``; return how many characters were accepted (``len(text)`` when all were).

        On a rejection the state stays just before the first impossible
        character, which is ``text[returned]``.
        """
        self.state, accepted = advance(self.state, text)
        return accepted

    def snapshot(self) -> JsonState:
        return self.state

    def restore(self, state: JsonState) -> None:
        self.state = state

    @property
    def complete(self) -> bool:
        """Whether the text so far is a whole document (the text may end here)."""
        return can_end(self.state)

    @property
    def finished(self) -> bool:
        """Whether the top-level value is closed: only whitespace may follow."""
        return self.state.mode == DONE

    @property
    def depth(self) -> int:
        return depth(self.state)

    def completion(self) -> str:
        """A shortest text that completes the document."""
        return completion(self.state)

    def expected(self) -> str:
        return expected(self.state)

    def explain(self, ch: str) -> str:
        """Why ``ch`` cannot come next."""
        return explain(self.state, ch)
