"""JsonStrategy: exact rewinds on a scripted vocabulary, the token mask against brute force, and the real model."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backtrack_sampler import (
    AntiSlopStrategy,
    BacktrackSampler,
    ChainStrategy,
    Continue,
    JsonStrategy,
    Rewind,
    RewindBudget,
    RewindEvent,
    RewindRefusedEvent,
    Stop,
)
from backtrack_sampler.strategy.json_prefix import advance, can_end, completion, initial_state
from backtrack_sampler.strategy.json_token_mask import JsonTokenMask
from scripted import EOS, BytesProvider, check_stream, feed, ids, of, random_provider, run, text_provider

PROMPT = "Q:"
VOCAB = [
    EOS,
    "Q:",
    "{",
    "}",
    "[",
    "]",
    '"',
    '"name"',
    ": ",
    ":",
    '"Tom',
    "\n",
    ",",
    " ",
    '"age": ',
    "01",
    "1",
    "0",
    "tru",
    "e",
    " e",
    "true",
    "null",
    '"}',
    "}\n",
    "}.",
    "]]",
    "```",
    "Here",
    "\\",
    "n",
    "u",
    "00e9",
    "\\n",
    ".5",
    "-",
    "e5",
]


def loads_strict(text):
    def refuse(name):
        raise ValueError(name)

    return json.loads(text, parse_constant=refuse)


def scripted_model(wants: dict[str, dict[str, float]]):
    """A model whose preferences depend on the generated text (the prompt is ``PROMPT``)."""

    def rule(text: str) -> dict[str, float]:
        return wants.get(text[len(PROMPT) :], {"}": 1.0})

    return text_provider(VOCAB, rule)


# The model "wants" a raw newline in a string, a trailing comma, a leading zero and an early EOS;
# its second choices are valid.
WANTS = {
    "": {"```": 6.0, "{": 5.0},
    "{": {'"name"': 5.0},
    '{"name"': {": ": 5.0},
    '{"name": ': {'"Tom': 5.0},
    '{"name": "Tom': {"\n": 5.0, '"': 3.0},
    '{"name": "Tom"': {EOS: 6.0, ",": 4.0, "}": 3.0},
    '{"name": "Tom",': {"}": 5.0, " ": 3.0},
    '{"name": "Tom", ': {'"age": ': 5.0},
    '{"name": "Tom", "age": ': {"01": 5.0, "1": 3.0},
    '{"name": "Tom", "age": 1': {"}.": 5.0, "}": 3.0},
}
STEERED = '{"name": "Tom", "age": 1}'


@pytest.mark.parametrize("prefilter", [False, True])
def test_model_that_wants_invalid_json_is_steered_to_valid_json(prefilter):
    provider = scripted_model(WANTS)
    events = run(
        BacktrackSampler(provider, JsonStrategy(provider, prefilter=prefilter)),
        PROMPT,
        max_new_tokens=40,
        temperature=0,
    )
    finish = check_stream(events)
    assert finish.text == STEERED and loads_strict(finish.text) == {"name": "Tom", "age": 1}
    assert finish.reason == "stop" and finish.detail == "the JSON document is complete"
    rewinds = of(events, RewindEvent)
    if prefilter:
        assert rewinds == []  # the mask removed every impossible token before sampling
        return
    assert [(e.suppressed_text, e.reason) for e in rewinds] == [
        ("```", "not JSON at character 0: expected a value ('{', '[', '\"', a number, true, false or null), got '`'"),
        ("\n", "not JSON at character 13: raw control character '\\n' inside a string (it must be escaped)"),
        ("", "end of text in an incomplete JSON document (expected ',' or '}' after a member)"),
        ("}", "not JSON at character 15: expected '\"' (a key; JSON allows no trailing comma), got '}'"),
        ("01", "not JSON at character 24: a number cannot have a leading zero, got '1' after '0'"),
        ("}.", "not JSON at character 25: expected only whitespace after the complete document, got '.'"),
    ]
    assert rewinds[2].banned == (provider.vocab.index(EOS),)
    assert [e.banned for e in rewinds if e.suppressed_text] == [
        tuple(ids(provider, t)) for t in ("```", "\n", "}", "01", "}.")
    ]


def test_feeding_tokens_directly_gives_exact_decisions():
    provider = scripted_model({})
    strategy = JsonStrategy(provider)
    _, decisions = feed(strategy, provider, ids(provider, " ", "[", "tru", " e"))
    assert decisions[:3] == [Continue(), Continue(), Continue()]
    assert decisions[3] == Rewind(3, ban=tuple(ids(provider, " e")), reason=decisions[3].reason)
    assert decisions[3].reason == "not JSON at character 5: expected 'e' (spelling a JSON literal), got ' '"
    _, decisions = feed(strategy, provider, ids(provider, "[", "tru", "e", "]]"))
    assert decisions[-1].position == 3 and "got ']'" in decisions[-1].reason
    _, decisions = feed(strategy, provider, ids(provider, "[", "true", "]"))
    assert decisions == [Continue(), Continue(), Stop("the JSON document is complete")]
    _, decisions = feed(strategy, provider, ids(provider, '"', "\\", "u", "00e9", '"'))
    assert decisions[-1] == Stop("the JSON document is complete")
    _, decisions = feed(strategy, provider, ids(provider, '"', "\\", "n", '"'))
    assert decisions[-1] == Stop("the JSON document is complete")


def test_a_top_level_number_may_end_at_eos_and_completes_at_whitespace():
    provider = scripted_model({})
    strategy = JsonStrategy(provider)
    _, decisions = feed(strategy, provider, ids(provider, "-", "1", ".5", "e5", EOS))
    assert decisions == [Continue()] * 5  # the engine then stops on EOS: "-1.5e5" is a document
    _, decisions = feed(strategy, provider, ids(provider, "-", EOS))
    assert isinstance(decisions[-1], Rewind) and decisions[-1].position == 1
    _, decisions = feed(strategy, provider, ids(provider, "1", " "))
    assert decisions == [Continue(), Stop("the JSON document is complete")]


def test_without_stop_when_complete_only_whitespace_and_eos_follow():
    provider = scripted_model({})
    strategy = JsonStrategy(provider, stop_when_complete=False)
    _, decisions = feed(strategy, provider, ids(provider, "{", "}\n", " ", "Here"))
    assert decisions[:3] == [Continue()] * 3
    assert decisions[3].position == 3 and "got 'H'" in decisions[3].reason
    _, decisions = feed(strategy, provider, ids(provider, "{", "}", " ", EOS))
    assert decisions == [Continue()] * 4


def test_root_object_forces_an_object():
    provider = scripted_model({"": {"[": 5.0, " ": 4.0, "{": 1.0}, " ": {"[": 5.0, "{": 1.0}})
    result = BacktrackSampler(provider, JsonStrategy(provider, root="object")).generate_text(
        PROMPT, max_new_tokens=20, temperature=0
    )
    assert result.text == " {}" and result.finish_reason == "stop"
    provider = scripted_model({"": {"[": 5.0, " ": 4.0, "{": 1.0}, "[": {"]": 5.0}})
    result = BacktrackSampler(provider, JsonStrategy(provider)).generate_text(PROMPT, max_new_tokens=20, temperature=0)
    assert result.text == "[]"


def test_a_refused_rewind_stops_the_generation_with_a_reason():
    provider = scripted_model({"": {"{": 5.0}, "{": {"Here": 5.0}})
    sampler = BacktrackSampler(provider, JsonStrategy(provider, prefilter=False), RewindBudget(per_position=0))
    events = run(sampler, PROMPT, max_new_tokens=20, temperature=0)
    finish = check_stream(events)
    (refusal,) = of(events, RewindRefusedEvent)
    assert refusal.cause == "position_budget" and "got 'H'" in refusal.reason
    assert finish.reason == "stop" and finish.detail == "the output can no longer be JSON: a rewind was refused"
    assert finish.text == "{Here"


def test_a_character_split_over_tokens():
    pieces = [b"", b"Q", b'{"a":"\xc3', b'\xa9"}', b"{\xc3", b"[]", b'{"a":"', b"\xe2\x82", b"\xac", b'"}']

    def prefer(*wanted):
        def next_logits(tokens):
            logits = np.full(len(pieces), -30.0)
            step = len(tokens) - 1
            if step < len(wanted):
                logits[wanted[step]] = 5.0
            logits[5] = -1.0  # "[]" is the fallback
            return logits

        return next_logits

    def generate(*wanted):
        provider = BytesProvider(pieces, prefer(*wanted))
        sampler = BacktrackSampler(provider, JsonStrategy(provider, prefilter=False))
        return sampler.generate_text([1], max_new_tokens=8, temperature=0)

    result = generate(2, 3)
    assert result.text == '{"a":"é"}' and loads_strict(result.text) == {"a": "é"} and not result.rewinds
    result = generate(6, 7, 8, 9)
    assert result.text == '{"a":"€"}' and not result.rewinds
    # "{" followed by the first byte of "é": that character could only sit outside a string.
    result = generate(4)
    (rewind,) = result.rewinds
    assert rewind.position == 0 and rewind.banned == (4,)
    assert rewind.reason == "not JSON at character 1: a non-ASCII character outside a string"
    assert result.text == "[]" and result.finish_reason == "stop"


def test_chained_with_antislop_the_output_is_json_without_the_banned_phrase():
    provider = scripted_model(WANTS)
    chain = ChainStrategy([JsonStrategy(provider), AntiSlopStrategy(provider, ["Tom"])])
    events = run(BacktrackSampler(provider, chain), PROMPT, max_new_tokens=40, temperature=0)
    finish = check_stream(events)
    assert "Tom" not in finish.text and isinstance(loads_strict(finish.text), dict)
    assert any("Tom" in e.suppressed_text for e in of(events, RewindEvent))


def test_only_the_prefilter_changes_the_distribution():
    provider = scripted_model({})
    assert JsonStrategy(provider).adjusts_logits
    assert not JsonStrategy(provider, prefilter=False).adjusts_logits


def test_arguments_are_checked():
    provider = scripted_model({})
    with pytest.raises(ValueError, match="root must be one of any, object, array, got 'obj'"):
        JsonStrategy(provider, root="obj")
    with pytest.raises(TypeError, match="prefilter must be a bool, got 'yes'"):
        JsonStrategy(provider, prefilter="yes")
    with pytest.raises(TypeError, match="provider must be a BaseProvider, got str"):
        JsonStrategy("provider")


# -- the token mask -----------------------------------------------------------------------------
STATE_SOURCES = [
    '{"name": "Tom \\u00e9\\n", "age": [1, -2.5e+3, true, null, {"k": []}]}',
    '[[{"a": [[]]}], "x", 0, 10.0]',
    '  "just \\"a\\" string"  ',
    "-0.5E-10 ",
]


def brute_force_mask(texts, eos, state):
    expected = np.array([bool(t) and advance(state, t)[1] == len(t) for t in texts])
    expected[list(eos)] = can_end(state)
    return expected


def states_of(doc):
    state = initial_state()
    yield state
    for ch in doc:
        state, _ = advance(state, ch)
        yield state


def test_mask_equals_brute_force_on_the_scripted_vocab():
    eos = [VOCAB.index(EOS)]
    texts = ["", *VOCAB[1:]]
    mask = JsonTokenMask(texts, eos)
    for doc in STATE_SOURCES:
        for state in states_of(doc):
            assert np.array_equal(mask.allowed(state), brute_force_mask(texts, eos, state)), (doc, state)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    vocab=st.lists(st.text(alphabet='{}[]",: \n\\u0123456789aeflnrstu-+.E\x00é', min_size=1, max_size=6), max_size=40),
    doc=st.sampled_from(STATE_SOURCES),
    cut=st.integers(0, 80),
)
def test_mask_equals_brute_force_on_random_vocabularies(vocab, doc, cut):
    texts = ["", *vocab]
    mask = JsonTokenMask(texts, [0])
    state, _ = advance(initial_state(), doc[:cut])
    assert np.array_equal(mask.allowed(state), brute_force_mask(texts, [0], state))
    costs = mask.closing_costs(state)
    allowed = mask.allowed(state)
    expected = {t: len(completion(advance(state, texts[t])[0])) if t else 0 for t in np.flatnonzero(allowed)}
    assert costs.most == max(expected.values(), default=0)
    for budget in range(-1, 8):
        over = costs.over(allowed, budget)
        assert {int(t) for t in np.flatnonzero(over)} == {t for t, cost in expected.items() if cost > budget}


def random_runs(vocab, prefilter, seeds=range(40)):
    """Events of generations by random models over ``vocab``, with room to ban every token at a position."""
    for seed in seeds:
        provider = random_provider(vocab, seed=seed, eos_bias=2.0)
        budget = RewindBudget(per_position=len(vocab), per_generation=100_000)
        sampler = BacktrackSampler(provider, JsonStrategy(provider, prefilter=prefilter), budget)
        yield run(sampler, provider.encode("Q:"), max_new_tokens=30, seed=seed)


@pytest.mark.parametrize("prefilter", [False, True])
def test_random_models_only_ever_produce_json(prefilter):
    vocab = [t for t in VOCAB if t != "Q:"] + ["l", "Q:"]
    for events in random_runs(vocab, prefilter):
        finish = check_stream(events)
        assert not of(events, RewindRefusedEvent)
        assert advance(initial_state(), finish.text)[1] == len(finish.text)
        loads_strict(finish.text)  # the limit (30 tokens) closes what is open
        assert finish.reason in ("stop", "eos", "length")
        if prefilter:
            assert not of(events, RewindEvent)


OPENERS = {"{": 3.0, "[": 3.0, '"Tom': 3.0, '"age": ': 2.0, ",": 2.0, "\\": 1.0, "-": 1.0}


def closed_runs(vocab, prefilter, limits, seeds):
    """``(limit, events)`` of random models over ``vocab`` asked for JSON within ``limit`` tokens."""
    for limit in limits:
        for seed in seeds:
            provider = random_provider(vocab, seed=seed, eos_bias=-3.0, bias=OPENERS)  # nests deep, rarely ends
            budget = RewindBudget(per_position=len(vocab), per_generation=100_000)
            sampler = BacktrackSampler(provider, JsonStrategy(provider, prefilter=prefilter), budget)
            yield limit, run(sampler, provider.encode("Q:"), max_new_tokens=limit, seed=seed)


@pytest.mark.parametrize("prefilter", [False, True])
def test_the_document_is_closed_before_the_token_limit(prefilter):
    vocab = [t for t in VOCAB if t != "Q:"] + ["l", "r", "a", "s", "Q:"]
    closed = 0
    for limit, events in closed_runs(vocab, prefilter, range(1, 41), range(6)):
        finish = check_stream(events)
        assert len(finish.tokens) <= limit
        loads_strict(finish.text)
        assert not of(events, RewindRefusedEvent)
        if finish.detail.startswith("the JSON document was closed to fit"):
            closed += 1
            assert finish.reason == "length" and f"max_new_tokens ({limit})" in finish.detail
        else:
            assert finish.reason in ("stop", "eos", "length")
        rewinds = of(events, RewindEvent)
        if prefilter:  # the mask keeps room to close: nothing to take back
            assert not rewinds
        else:  # a token that leaves too little room is replaced by the closing text
            closings = [e for e in rewinds if e.reason.startswith("closing the JSON document")]
            assert all(e.inserted for e in closings)
            assert len(closings) <= 1
    assert closed >= 100  # most of the 240 runs needed the reserve


def test_a_limit_too_small_for_the_shortest_object_ends_incomplete_and_says_length():
    vocab = [t for t in VOCAB if t not in ("Q:", "true", "null")] + ["Q:"]  # no token spells {} whole
    provider = random_provider(vocab, seed=0)
    sampler = BacktrackSampler(provider, JsonStrategy(provider, root="object"))
    finish = check_stream(run(sampler, provider.encode("Q:"), max_new_tokens=1, seed=0))
    assert finish.reason == "length" and not finish.detail  # nothing claims it was closed
    assert finish.text.strip() in ("", "{")  # a prefix of an object, not a whole one


def test_a_vocabulary_that_cannot_spell_null_ends_with_a_reason_never_silently():
    # No token starts with "l": after "nu" nothing fits (the look-ahead rewinds "u"), and then
    # nothing fits after "n" either; that deeper dead end exhausts its position.
    vocab = [t for t in VOCAB if t != "Q:"] + ["Q:"]
    dead_ends = 0
    for events in random_runs(vocab, prefilter=True):
        finish = check_stream(events)
        refusals = of(events, RewindRefusedEvent)
        if not refusals:
            assert advance(initial_state(), finish.text)[1] == len(finish.text)
            continue
        dead_ends += 1
        assert finish.text.lstrip() == "nu"  # leading whitespace is valid JSON too
        assert finish.detail == "the output can no longer be JSON: a rewind was refused"
        assert of(events, RewindEvent)[0].reason == (
            "no token of the vocabulary can continue the JSON after 'u' (expected 'l' (spelling a JSON literal))"
        )
    assert dead_ends > 0


# -- the embedded model -------------------------------------------------------------------------
CAT = [{"role": "user", "content": "Give me a JSON object describing a cat, with its name and age."}]


@pytest.mark.llamacpp
def test_mask_equals_brute_force_on_the_real_vocabulary(provider):
    strategy = JsonStrategy(provider)
    texts = strategy.token_mask.texts
    eos = sorted(provider.eos_token_ids)
    # Every character JSON writes outside strings is a token of its own: no JSON prefix is a dead end here.
    assert {chr(c) for c in range(32, 127)} | set("\t\n\r") <= set(texts)
    doc = '{"name": "Tom", "age": [1, -2.5e+3, true, null], "s": "a\\u00e9"}'
    for cut in (0, 1, 2, 4, 5, 8, 9, 10, 24, 27, 30, 32, 40, 47, 58, 62, len(doc)):
        state, _ = advance(initial_state(), doc[:cut])
        assert np.array_equal(strategy.token_mask.allowed(state), brute_force_mask(texts, eos, state)), doc[:cut]


@pytest.mark.llamacpp
def test_embedded_model_left_alone_does_not_answer_with_bare_json(provider):
    prompt = provider.apply_chat_template(CAT)
    plain = BacktrackSampler(provider).generate_text(prompt, max_new_tokens=60, temperature=0.7, seed=0)
    assert plain.text.startswith("```")  # a code fence (and prose after it)
    with pytest.raises(ValueError):
        loads_strict(plain.text)


@pytest.mark.llamacpp
@pytest.mark.parametrize(("prefilter", "seed"), [(True, 0), (True, 1), (True, 2), (False, 0), (False, 1)])
def test_embedded_model_asked_for_json_returns_json(provider, prefilter, seed):
    prompt = provider.apply_chat_template(CAT)
    sampler = BacktrackSampler(provider, JsonStrategy(provider, prefilter=prefilter))
    result = sampler.generate_text(prompt, max_new_tokens=200, temperature=0.7, seed=seed)
    print(f"prefilter={prefilter} seed={seed} rewinds={len(result.rewinds)}: {result.text!r}")
    value = loads_strict(result.text)  # complete, or closed to fit the 200 tokens
    assert isinstance(value, dict) and value and result.stats.rewinds_refused == 0
    assert result.finish_reason == "stop" or result.finish_detail.startswith("the JSON document was closed to fit")
    if prefilter:
        assert not result.rewinds
    else:
        reasons = ("not JSON", "end of text", "closing the JSON document")
        assert result.rewinds and all(e.reason.startswith(reasons) for e in result.rewinds)


@pytest.mark.llamacpp
@pytest.mark.parametrize("prefilter", [True, False])
def test_embedded_model_ends_in_json_at_every_limit_from_1_to_40_tokens(provider, prefilter):
    prompt = provider.apply_chat_template(CAT)
    sampler = BacktrackSampler(provider, JsonStrategy(provider, prefilter=prefilter))
    closed = 0
    for limit in range(1, 41):
        result = sampler.generate_text(prompt, max_new_tokens=limit, temperature=0.7, seed=limit)
        assert len(result.tokens) <= limit
        loads_strict(result.text)
        assert result.stats.rewinds_refused == 0
        if result.finish_detail.startswith("the JSON document was closed to fit"):
            closed += 1
            assert result.finish_reason == "length"
        if prefilter:
            assert not result.rewinds
    print(f"prefilter={prefilter}: {closed} of 40 limits closed the document early")
    assert closed >= 30  # the model's cat object needs more than 40 tokens: nearly every limit cuts it
