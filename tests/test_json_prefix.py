"""The incremental JSON prefix validator: every valid document accepted, every invalid one rejected at its first
impossible character, checked against hand-written corpora and against ``json.loads`` (hypothesis)."""

from __future__ import annotations

import itertools
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backtrack_sampler.strategy.json_prefix import (
    DONE,
    JsonPrefixValidator,
    advance,
    can_end,
    completion,
    depth,
    explain,
    initial_state,
)


def _refuse_constant(name):
    raise ValueError(f"{name} is not JSON")


def loads_strict(text: str):
    """``json.loads`` without its extensions (NaN, Infinity and -Infinity are not JSON)."""
    return json.loads(text, parse_constant=_refuse_constant)


def parses(text: str) -> bool:
    try:
        loads_strict(text)
    except (ValueError, RecursionError):
        return False
    return True


def accepted(text: str, root: str = "any") -> tuple[int, object]:
    """Feed ``text`` one character at a time; (characters accepted, final state)."""
    state = initial_state(root)
    for i, ch in enumerate(text):
        following, n = advance(state, ch)
        if n == 0:
            return i, state
        state = following
    return len(text), state


VALID = [
    # numbers
    "0",
    "-0",
    "7",
    "-12",
    "1234567890",
    "1.5",
    "-0.0",
    "0.000",
    "1e5",
    "1E5",
    "1e+5",
    "1e-5",
    "1.25e-07",
    "0e0",
    "-0.0E+00",
    "-12.340e10",
    "1e999",
    "123456789012345678901234567890",
    # literals
    "true",
    "false",
    "null",
    # strings and escapes
    '""',
    '"a"',
    '"\\"\\\\\\/\\b\\f\\n\\r\\t"',
    '"\\u0041\\u00e9\\u00E9\\uFFFF"',
    '"\\uD83D\\uDE00 a surrogate pair"',
    '"\\ud800 a lone surrogate (allowed by the grammar)"',
    '"é ü 中文 😀 \u2028 \x7f"',
    '"quote \\" inside"',
    '"/ and \\/"',
    # containers, nesting, whitespace
    "[]",
    "{}",
    "[ ]",
    "{ }",
    "[1,2,3]",
    "[[[[[]]]]]",
    '{"":""}',
    '{"a":1,"b":[true,false,null],"c":{"d":"e"}}',
    '{"a":{"a":{"a":{}}}}',
    ' \t\n\r{\n  "k" : [ 1 , { } , [ ] ]\r\n}\t ',
    '{"a" : -0.5e-3 , "b":[ "x" ,"y" ] }',
    '[1, "two", 3.0, [4], {"five": 5}, true, null]',
    '{"dup": 1, "dup": 2}',
    "  42  ",
    "\n[\n\t1\n]\n",
    "[" * 300 + "]" * 300,
    '{"a":' * 200 + "1" + "}" * 200,
    json.dumps({"name": "Mia", "age": 3, "tags": ["a", "b"], "nested": {"x": [1.5, -2e-3, None]}}, indent=2),
    json.dumps({"ü": "中文 😀", "ctrl": "\x00\x1f\n\t"}, ensure_ascii=False),
    json.dumps({"ü": "中文 😀", "ctrl": "\x00\x1f\n\t"}, ensure_ascii=True, indent="\t"),
]

INCOMPLETE = [
    "",
    "  ",
    "-",
    "1.",
    "1e",
    "1e+",
    "-0.",
    '"abc',
    '"\\',
    '"\\u12',
    "[",
    "[1,",
    '{"a"',
    '{"a":',
    "tru",
    "nul",
]

# (document, index of the first character that no JSON document can continue with)
INVALID = [
    ('"a\nb"', 2),  # raw newline in a string
    ('"a\tb"', 2),  # raw tab
    ('"\x00"', 1),
    ('"\x1f"', 1),
    ('"\\x41"', 2),  # unknown escape
    ('"\\U0041"', 2),
    ('"\\u12G4"', 5),
    ('"\\u"', 3),
    ('"abc"def', 5),  # text after the string
    ('{"a": "b"c"}', 9),  # an unescaped quote ends the string early
    ("[1,2}", 4),  # wrong closing bracket
    ('{"a":1]', 6),
    ("[}", 1),
    ("{]", 1),
    ("[[]]]", 4),
    ('{"a":1}}', 7),
    ("[1,]", 3),  # trailing commas
    ('{"a":1,}', 7),
    ("[,1]", 1),
    ("[1,,2]", 3),
    ("{,}", 1),
    ('{"a" 1}', 5),  # missing colon
    ('{"a",1}', 4),
    ('{"a"::1}', 5),
    ('{"a":1,"b"}', 10),
    ("{a:1}", 1),  # unquoted or single-quoted keys
    ("{'a':1}", 1),
    ("[1 2]", 3),  # missing comma
    ('"a" "b"', 4),
    ("01", 1),  # numbers
    ("-01", 2),
    ("[01]", 2),
    ("+1", 0),
    (".5", 0),
    ("1.e5", 2),
    ("1.5.3", 3),
    ("1e5.0", 3),
    ("1ee5", 2),
    ("1e+-5", 3),
    ("--1", 1),
    ("-a", 1),
    ("[-]", 2),
    ("[1.]", 3),
    ('{"a":-}', 6),
    ("0x10", 1),
    ("123abc", 3),
    ("1 2", 2),
    ("NaN", 0),  # json.loads extensions are not JSON
    ("Infinity", 0),
    ("-Infinity", 1),
    ("tru e", 3),  # literals
    ("nul l", 3),
    ("True", 0),
    ("falsy", 4),
    ('{"a":tru}', 8),
    ("]", 0),  # structure
    ("}", 0),
    ("{} {}", 3),
    ("{}x", 2),
    ("[1]x", 3),
    ("1 x", 2),
    ("\ufeff{}", 0),  # a BOM is not whitespace
    ("\u00a0{}", 0),  # nor is a no-break space
    ("\x0c[]", 0),  # nor a form feed
]


@pytest.mark.parametrize("doc", VALID)
def test_valid_documents_accepted_char_by_char_and_complete(doc):
    n, state = accepted(doc)
    assert n == len(doc)
    assert can_end(state)
    assert parses(doc)


@pytest.mark.parametrize("doc", [d for d in VALID if len(d) < 400])
def test_every_prefix_of_a_valid_document_completes_and_is_complete_iff_json_loads_agrees(doc):
    state = initial_state()
    for i in range(len(doc) + 1):
        prefix = doc[:i]
        assert parses(prefix + completion(state)), (prefix, completion(state))
        assert can_end(state) == parses(prefix), prefix
        if i < len(doc):
            state, n = advance(state, doc[i])
            assert n == 1


@pytest.mark.parametrize("doc", INCOMPLETE)
def test_incomplete_documents_are_accepted_but_not_complete(doc):
    n, state = accepted(doc)
    assert n == len(doc)
    assert not can_end(state)
    assert not parses(doc)
    assert parses(doc + completion(state))


@pytest.mark.parametrize(("doc", "index"), INVALID)
def test_invalid_documents_rejected_at_the_first_impossible_character(doc, index):
    n, state = accepted(doc)
    assert n == index, f"{doc!r}: rejected at {n}, expected {index}"
    assert not parses(doc)
    # The accepted prefix can still be completed ...
    assert parses(doc[:index] + completion(state))
    # ... and no short suffix repairs the prefix that includes the rejected character.
    for size in range(4):
        for suffix in itertools.product('0"]}:,e ', repeat=size):
            assert not parses(doc[: index + 1] + "".join(suffix))
    assert explain(state, doc[index])  # a message exists for every rejection


def test_messages_name_the_problem_and_the_character():
    def message(doc):
        n, state = accepted(doc)
        return explain(state, doc[n])

    assert message('"a\nb"') == "raw control character '\\n' inside a string (it must be escaped)"
    assert message("01") == "a number cannot have a leading zero, got '1' after '0'"
    assert message("[1,2}") == "expected ',' or ']' after an array element, got '}'"
    assert message('{"a":1,}') == "expected '\"' (a key; JSON allows no trailing comma), got '}'"
    assert message("tru e") == "expected 'e' (spelling a JSON literal), got ' '"
    assert message('{"a" 1}') == "expected ':' after the key, got '1'"
    assert message("{}x") == "expected only whitespace after the complete document, got 'x'"


@pytest.mark.parametrize(
    ("root", "doc", "index"),
    [("object", "[1]", 0), ("object", ' "a"', 1), ("object", "1", 0), ("array", "{}", 0), ("array", " null", 1)],
)
def test_root_restriction(root, doc, index):
    assert accepted(doc, root)[0] == index
    assert accepted('  {"a": [1]}', "object")[0] == 12
    assert accepted("[{}]", "array")[0] == 4


def test_root_must_be_known():
    with pytest.raises(ValueError, match="root must be one of any, object, array, got 'dict'"):
        initial_state("dict")


def test_deep_nesting_costs_nothing_special():
    n = 20_000
    state, accepted_chars = advance(initial_state(), "[" * n)
    assert accepted_chars == n and depth(state) == n
    assert completion(state) == "]" * n
    state, accepted_chars = advance(state, "]" * n)
    assert accepted_chars == n and state.mode == DONE and can_end(state)
    state, accepted_chars = advance(state, "]")
    assert accepted_chars == 0


def test_validator_object_snapshot_and_restore():
    v = JsonPrefixValidator()
    assert v.feed('{"a": [1, ') == 10
    snap = v.snapshot()
    assert v.depth == 2 and not v.complete and not v.finished
    assert v.feed("2]}") == 3 and v.complete and v.finished
    v.restore(snap)
    assert v.feed("}") == 0  # rejected: the state is the one before "}"
    assert v.explain("}") == "expected a value ('{', '[', '\"', a number, true, false or null), got '}'"
    assert v.feed('"x"]}') == 5 and v.complete


# -- property tests against json.loads --------------------------------------------------------------
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4),
    max_leaves=15,
)
whitespace = st.text(alphabet=" \t\n\r", max_size=3)


@st.composite
def documents(draw) -> str:
    value = draw(json_values)
    indent = draw(st.sampled_from([None, 0, 1, 2, "\t", " \n "]))
    separators = draw(st.sampled_from([None, (",", ":"), (", ", ": "), (" ,\n", " :\t")]))
    text = json.dumps(
        value,
        indent=indent,
        separators=separators,
        ensure_ascii=draw(st.booleans()),
        sort_keys=draw(st.booleans()),
    )
    return draw(whitespace) + text + draw(whitespace)


@st.composite
def splits(draw, text: str) -> list[str]:
    cuts = sorted(draw(st.sets(st.integers(0, len(text)), max_size=max(1, len(text) // 2))))
    bounds = [0, *cuts, len(text)]
    return [text[a:b] for a, b in itertools.pairwise(bounds)]


SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(data=st.data())
def test_generated_documents_fed_in_random_pieces_are_accepted_with_o1_rewinds(data):
    doc = data.draw(documents())
    pieces = data.draw(splits(doc))
    state = initial_state()
    snapshots = [state]
    for piece in pieces:
        state, n = advance(state, piece)
        assert n == len(piece)
        snapshots.append(state)
    assert can_end(state)
    # Going back to the state after any piece and feeding the rest again gives the same state.
    back = data.draw(st.integers(0, len(pieces)))
    again, n = advance(snapshots[back], "".join(pieces[back:]))
    assert again == state and n == len("".join(pieces[back:]))
    cut = data.draw(st.integers(0, len(doc)))
    assert parses(doc[:cut] + completion(advance(initial_state(), doc[:cut])[0]))


MUTATION_ALPHABET = '{}[]",:\\ \n\t0123456789-+.eEtrufalsnbxu/\x00é١'


@SETTINGS
@given(data=st.data())
def test_mutated_documents_agree_with_json_loads(data):
    chars = list(data.draw(documents()))
    for _ in range(data.draw(st.integers(1, 3))):
        kind = data.draw(st.sampled_from(["insert", "delete", "replace"]))
        if kind != "insert" and not chars:
            continue
        i = data.draw(st.integers(0, len(chars) - (kind != "insert")))
        if kind == "delete":
            del chars[i]
        else:
            ch = data.draw(st.sampled_from(MUTATION_ALPHABET))
            chars[i : i + (kind == "replace")] = [ch]
    text = "".join(chars)
    n, state = accepted(text)
    ok = n == len(text) and can_end(state)
    assert ok == parses(text), (text, n)
    assert parses(text[:n] + completion(state))
