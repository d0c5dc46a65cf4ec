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


def step(state: JsonState, ch: str) -> JsonState | None:
    """The state after one more character, or ``None`` when no JSON document can begin this way."""
    mode, aux, stack = state
    if mode == STRING:
        if ch == '"':
            return JsonState(COLON, 0, stack) if aux else _after_value(stack)
        if ch == "\\":
            return JsonState(ESCAPE, aux, stack)
        return None if ch < " " else state
    if mode in STRUCTURAL and ch in _WHITESPACE:
        return state
    if mode == AFTER_VALUE:
        kind = stack[0]
        if ch == ",":
            return JsonState(KEY, 0, stack) if kind == "{" else JsonState(VALUE, 0, stack)
        return _after_value(stack[1]) if ch == _CLOSER[kind] else None
    if mode == VALUE:
        if stack is None and aux != "any" and ch != ("{" if aux == "object" else "["):
            return None
        return _start_value(ch, stack)
    if mode == COLON:
        return JsonState(VALUE, 0, stack) if ch == ":" else None
    if mode == OBJECT_FIRST:
        if ch == '"':
            return JsonState(STRING, 1, stack)
        return _after_value(stack[1]) if ch == "}" else None
    if mode == KEY:
        return JsonState(STRING, 1, stack) if ch == '"' else None
    if mode == ARRAY_FIRST:
        return _after_value(stack[1]) if ch == "]" else _start_value(ch, stack)
    if mode == LITERAL:
        if ch != aux[0]:
            return None
        return _after_value(stack) if len(aux) == 1 else JsonState(LITERAL, aux[1:], stack)
    if mode == ESCAPE:
        if ch in _SIMPLE_ESCAPES:
            return JsonState(STRING, aux, stack)
        return JsonState(HEX0, aux, stack) if ch == "u" else None
    if HEX0 <= mode <= HEX3:
        if ch not in _HEX:
            return None
        return JsonState(STRING if mode == HEX3 else mode + 1, aux, stack)
    if mode == DONE:
        return None
    # Numbers.
    digit = ch in _DIGITS
    if mode == INTEGER or mode == FRACTION or mode == EXPONENT_DIGITS:
        if digit:
            return state
        if ch == "." and mode == INTEGER:
            return JsonState(DOT, 0, stack)
        if ch in "eE" and mode != EXPONENT_DIGITS:
            return JsonState(EXPONENT, 0, stack)
        return step(_after_value(stack), ch)  # the number ended just before ch
    if mode == ZERO:
        if digit:
            return None
        if ch == ".":
            return JsonState(DOT, 0, stack)
        if ch in "eE":
            return JsonState(EXPONENT, 0, stack)
        return step(_after_value(stack), ch)
    if mode == MINUS:
        if ch == "0":
            return JsonState(ZERO, 0, stack)
        return JsonState(INTEGER, 0, stack) if digit else None
    if mode == DOT:
        return JsonState(FRACTION, 0, stack) if digit else None
    if mode == EXPONENT:
        if ch in "+-":
            return JsonState(EXPONENT_SIGN, 0, stack)
        return JsonState(EXPONENT_DIGITS, 0, stack) if digit else None
    if mode == EXPONENT_SIGN:
        return JsonState(EXPONENT_DIGITS, 0, stack) if digit else None
    raise AssertionError(f"unknown mode {mode}")  # pragma: no cover


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


def expected(state: JsonState) -> str:
    """What may come next, in words (for messages)."""
    mode, aux, stack = state
    if mode == VALUE:
        if stack is None and aux == "object":
            return "'{' (the document must be an object)"
        if stack is None and aux == "array":
            return "'[' (the document must be an array)"
        return "a value ('{', '[', '\"', a number, true, false or null)"
    if mode == ARRAY_FIRST:
        return "a value or ']'"
    if mode == OBJECT_FIRST:
        return "'\"' (a key) or '}'"
    if mode == KEY:
        return "'\"' (a key; JSON allows no trailing comma)"
    if mode == COLON:
        return "':' after the key"
    if mode == AFTER_VALUE:
        return "',' or '}' after a member" if stack[0] == "{" else "',' or ']' after an array element"
    if mode == DONE:
        return "only whitespace after the complete document"
    if mode == STRING:
        return "a string character (control characters must be escaped)"
    if mode == ESCAPE:
        return 'an escape letter (one of " \\ / b f n r t u)'
    if HEX0 <= mode <= HEX3:
        return "a hex digit of a \\u escape"
    if mode == LITERAL:
        return f"{aux[0]!r} (spelling a JSON literal)"
    if mode == MINUS:
        return "a digit after '-'"
    if mode == ZERO:
        return "'.', an exponent or the end of the number (no leading zeros)"
    if mode == DOT:
        return "a digit after the decimal point"
    if mode == EXPONENT:
        return "a sign or a digit in the exponent"
    if mode == EXPONENT_SIGN:
        return "a digit in the exponent"
    return "a digit or the end of the number"  # INTEGER, FRACTION, EXPONENT_DIGITS


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
