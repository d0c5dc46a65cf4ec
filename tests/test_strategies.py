"""Each strategy on a ScriptedProvider: what it rewinds, bans, inserts, prints or asks."""

from __future__ import annotations

import dataclasses
import io
import math

import numpy as np
import pytest

from backtrack_sampler import (
    AdaptiveTemperatureStrategy,
    AntiSlopStrategy,
    BacktrackSampler,
    ChainStrategy,
    Continue,
    CreativeWritingStrategy,
    DebugStrategy,
    HumanGuidanceStrategy,
    ReplaceStrategy,
    Rewind,
    RewindBudget,
    RewindEvent,
    RewindRefusedEvent,
    Stop,
)
from backtrack_sampler.core.sampling import softmax
from scripted import (
    EOS,
    BytesProvider,
    Scripted,
    feed,
    ids,
    make_ctx,
    of,
    random_provider,
    run,
    text_provider,
)

# -- AntiSlop ---------------------------------------------------------------------------------

SLOP_VOCAB = [EOS, "test", "ament", " testament", "testament", " ", "t", "e", "s", "a", "m", "n"]
SLOP_VOCAB += [" the", ".", "Test", "TEST", "AMENT", "tes", "tament"]
PHRASE = " testament"


def slop_rule(text: str) -> dict[str, float]:
    """Strongly prefer going on spelling " testament" (any case, any split) from where the text is."""
    low = text.lower()
    done = max(j for j in range(len(PHRASE)) if low.endswith(PHRASE[:j]))
    prefs = {EOS: -3.0, " the": 0.0, ".": 0.0}
    for token in SLOP_VOCAB[1:]:
        if PHRASE[done:].startswith(token.lower()):
            prefs[token] = 3.0 + 0.3 * len(token)
    return prefs


def test_antislop_catches_every_tokenization():
    splits = set()
    for seed in range(20):
        provider = text_provider(SLOP_VOCAB, slop_rule)
        strategy = AntiSlopStrategy(provider, ["testament"])
        budget = RewindBudget(per_position=50, per_generation=500)
        events = run(BacktrackSampler(provider, strategy, budget), " the", max_new_tokens=25, seed=seed)
        assert "testament" not in events[-1].text.lower()
        assert not of(events, RewindRefusedEvent)
        rewinds = of(events, RewindEvent)
        assert rewinds and all("testament" in r.reason.lower() for r in rewinds)
        assert all("testament" in r.suppressed_text.lower() for r in rewinds)
        splits |= {tuple(provider.vocab[t] for t in r.suppressed_tokens) for r in rewinds}
    assert len(splits) >= 5
    assert any(len(s) >= 3 for s in splits) and any(s[0].isupper() for s in splits)


def spell(*pieces: str):
    """Greedy rule: the generated text (after a one-char prompt) spells ``pieces`` in order, then EOS."""

    def rule(text):
        done = text[1:]
        for i in range(len(pieces)):
            if done == "".join(pieces[:i]):
                return {pieces[i]: 9.0, EOS: 0.0}
        return {EOS: 9.0}

    return rule


@pytest.mark.parametrize(("ignore_case", "expected"), [(True, "."), (False, "TESTAMENT.")])
def test_antislop_case(ignore_case, expected):
    def rule(text):
        return {**spell("TEST", "AMENT", ".")(text), ".": 1.0}

    provider = text_provider(SLOP_VOCAB, rule)
    strategy = AntiSlopStrategy(provider, ["testament"], ignore_case=ignore_case, whole_words=False)
    events = run(BacktrackSampler(strategy=strategy, provider=provider), "t", max_new_tokens=5, temperature=0)
    assert events[-1].text == expected
    assert len(of(events, RewindEvent)) == int(ignore_case)


def test_antislop_bans_the_token_where_the_phrase_began():
    vocab = [EOS, " a", " tes", "tament", "x"]

    def rule(text):
        return {**spell(" a", " tes", "tament")(text), "x": 1.0}

    provider = text_provider(vocab, rule)
    strategy = AntiSlopStrategy(provider, ["Testament"])
    events = run(BacktrackSampler(provider, strategy), "x", max_new_tokens=5, temperature=0)
    (rewind,) = of(events, RewindEvent)
    assert (rewind.position, rewind.banned, rewind.suppressed_text) == (1, (2,), " testament")
    assert "'testament'" in rewind.reason.lower() and rewind.strategy == "AntiSlopStrategy"
    assert events[-1].text == " ax"


@pytest.mark.parametrize(
    ("pieces", "needed"),
    [
        (("c", "ab", "c"), 2),  # "abc" may become "abcd"
        (("c", "ab", "ab", "d"), 0),
        (("xa",), 1),  # "xa" may become "Xab"
        (("c", "ab", "ab"), 1),
        (("ab", "c", "c"), 0),
    ],
)
def test_antislop_holds_back_what_could_still_become_a_phrase(pieces, needed):
    provider = text_provider([EOS, "ab", "c", "d", "xa"], lambda text: {})
    strategy = AntiSlopStrategy(provider, ["abcd", "Xab"], whole_words=False)
    ctx, decisions = feed(strategy, provider, ids(provider, *pieces))
    assert all(isinstance(d, Continue) for d in decisions)
    assert strategy.holdback(ctx) >= needed
    assert AntiSlopStrategy(provider, []).holdback(ctx) == 0


def test_antislop_folds_case():
    provider = text_provider([EOS, "Stra", "ß", "e", "x"], lambda text: {})
    for ignore_case, expected in [(True, Rewind(0, ban=(1,))), (False, Continue())]:
        strategy = AntiSlopStrategy(provider, ["STRASSE"], ignore_case=ignore_case, whole_words=False)
        _, decisions = feed(strategy, provider, ids(provider, "Stra", "ß", "e"))
        assert decisions[:2] == [Continue(), Continue()]
        if ignore_case:
            expected = dataclasses.replace(expected, reason=decisions[2].reason, match_end=2, ban_phrase="STRASSE")
        assert decisions[2] == expected


def test_antislop_without_phrases_never_rewinds():
    provider = random_provider([EOS, "a", "b"], seed=1)
    result = BacktrackSampler(provider, AntiSlopStrategy(provider, [])).generate_text("a", max_new_tokens=10)
    assert not result.rewinds and len(result.tokens) <= 10


def test_antislop_validation():
    provider = random_provider([EOS, "a"])
    with pytest.raises(TypeError, match="'tapestry'"):
        AntiSlopStrategy(provider, "tapestry")
    with pytest.raises(ValueError, match="non-empty string.*''"):
        AntiSlopStrategy(provider, ["a", ""])


@pytest.mark.parametrize("order", [[1, 2, 3], [4, 1, 2, 3]], ids=["at-start", "after-x"])
def test_antislop_rewinds_a_phrase_that_starts_with_partial_bytes(order):
    pieces = [b"", b"\xe2", b"\x82\xac", b"!", b"x"]  # "€" split in two tokens

    def next_logits(tokens):
        n = len(tokens) - 1
        return [9.0 if n < len(order) and t == order[n] else 5.0 if t == 4 else 0.0 for t in range(5)]

    provider = BytesProvider(pieces, next_logits)
    events = run(BacktrackSampler(provider, AntiSlopStrategy(provider, ["€!"])), [4], max_new_tokens=5, temperature=0)
    assert not of(events, RewindRefusedEvent)
    assert of(events, RewindEvent)[0].position == len(order) - 3  # where "€" began
    assert "€!" not in events[-1].text


def test_antislop_after_a_rewind_bans_a_phrase_that_begins_in_emitted_text():
    table = {"": {"x ": 9.0}, "x ": {"  ": 9.0, "a": 5.0, "b": 0.0}, "x   ": {"a": 9.0}}
    provider = text_provider([EOS, "a", "x ", "  ", "b"], lambda text: table.get(text[1:], {EOS: 9.0}))
    # "  a" is rewound; then "a" makes " a" with the space of "x ": that token must not be emitted yet
    events = run(BacktrackSampler(provider, AntiSlopStrategy(provider, [" a"])), [4], max_new_tokens=5, temperature=0)
    assert not of(events, RewindRefusedEvent)
    assert " a" not in events[-1].text


def test_antislop_catches_a_phrase_overlapping_a_refused_one():
    def rule(text):
        return {"": {"a": 9.0}, "a": {"b": 9.0, "c": 5.0}, "ab": {"c": 9.0}}.get(text[1:], {EOS: 9.0})

    provider = text_provider([EOS, "a", "b", "c"], rule, default=-np.inf)
    strategy = AntiSlopStrategy(provider, ["ab", "bc", "zzz"], whole_words=False)
    # "a" is the only token at position 0, so "ab" cannot be rewound there: the retry ladder keeps "a"
    # and bans "b" after it; then "c" comes, and "bc" cannot form
    budget = RewindBudget(per_position=1)
    events = run(BacktrackSampler(provider, strategy, budget), "c", max_new_tokens=5, temperature=0)
    assert not of(events, RewindRefusedEvent)
    assert [(r.position, r.escalation) for r in of(events, RewindEvent)] == [(1, "more_of_match")]
    assert events[-1].text == "ac"


# -- CreativeWriting -------------------------------------------------------------------------

LETTERS = [EOS, *"abcdefghijklmnopqrs"]


@pytest.mark.parametrize("seed", range(15))
def test_creative_writing_never_samples_the_argmax(seed):
    provider = random_provider(LETTERS, seed=seed, scale=1.5)
    strategy = CreativeWritingStrategy(provider, top_k_threshold_flat=3)
    result = BacktrackSampler(provider, strategy).generate_text("a", max_new_tokens=15, seed=seed)
    prompt = provider.encode("a")
    for i, token in enumerate(result.tokens):
        raw = np.asarray(provider.next_logits(prompt + list(result.tokens[:i])))
        assert token != int(np.argmax(raw))
    for rewind in result.rewinds:  # flat: the best remaining token replaces the sampled one
        raw = np.asarray(provider.next_logits(prompt + list(result.tokens[: rewind.position])))
        if np.argmax(raw) != 0:
            raw[np.argmax(raw)] = -np.inf
        raw[0] += math.log(0.8)
        assert rewind.inserted == (int(np.argmax(raw)),)
        assert (result.tokens + (0,))[rewind.position] == rewind.inserted[0]  # EOS when it ended there


def flat_rule(text):
    return {"a": 5.0, "b": 0.2, EOS: -2.0, **{c: 0.0 for c in "cdefghijklmnopqrs"}}


@pytest.mark.parametrize("seed", range(5))
def test_creative_writing_takes_the_best_remaining_token_when_flat(seed):
    provider = text_provider(LETTERS, flat_rule)
    events = run(BacktrackSampler(provider, CreativeWritingStrategy(provider)), "a", max_new_tokens=8, seed=seed)
    assert events[-1].text == "b" * 8
    rewinds = of(events, RewindEvent)
    assert rewinds and all(r.inserted == (2,) and not r.banned for r in rewinds)
    assert all(len(r.suppressed_tokens) == 1 and r.suppressed_tokens != (2,) for r in rewinds)


def test_creative_writing_samples_freely_when_peaked():
    provider = text_provider(LETTERS, lambda text: {"a": 5.0, "b": 4.0, "c": 3.5, EOS: -5.0})
    strategy = CreativeWritingStrategy(provider)
    result = BacktrackSampler(provider, strategy).generate_text("a", max_new_tokens=40, seed=0)
    assert not result.rewinds
    assert set(result.text) == {"b", "c"}


def test_creative_writing_adjusts_the_distribution():
    provider = text_provider(LETTERS[:4], lambda text: {})
    ctx = make_ctx(provider)
    raw = np.array([1.0, 2.0, 0.5, -1.0])
    logits = CreativeWritingStrategy(provider, eos_penalty=0.8).adjust_logits(ctx, raw.copy())
    probs = softmax(logits)
    assert probs[1] == 0.0  # the argmax is banned
    assert probs[0] / probs[2] == pytest.approx(0.8 * math.exp(1.0 - 0.5))
    assert probs[3] / probs[2] == pytest.approx(math.exp(-1.5))
    eos_first = CreativeWritingStrategy(provider, eos_penalty=0.5).adjust_logits(ctx, np.array([3.0, 1.0, 0.0, 0.0]))
    assert softmax(eos_first)[0] / softmax(eos_first)[1] == pytest.approx(0.5 * math.exp(2.0))
    no_eos = CreativeWritingStrategy(provider, eos_penalty=0).adjust_logits(ctx, np.array([3.0, 1.0, 0.0, 0.0]))
    assert no_eos[0] == -np.inf and no_eos[1] == 1.0


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"top_p_flat": 0}, "top_p_flat"),
        ({"top_p_flat": 1.5}, "top_p_flat"),
        ({"top_k_threshold_flat": 0}, "top_k_threshold_flat"),
        ({"eos_penalty": 1.2}, "eos_penalty"),
    ],
)
def test_creative_writing_validation(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        CreativeWritingStrategy(random_provider(LETTERS), **kwargs)


# -- Debug ----------------------------------------------------------------------------------


def test_debug_prints_the_top_choices_and_the_pick():
    vocab = [EOS, "a", "b", "c"]
    provider = text_provider(vocab, lambda text: {"a": 2.0, "b": 1.0, "c": 0.0, EOS: -1.0})
    out = io.StringIO()
    result = BacktrackSampler(provider, DebugStrategy(provider, top_k=2, out=out)).generate_text(
        "a", max_new_tokens=2, temperature=0
    )
    probs = softmax(np.array([-1.0, 2.0, 1.0, 0.0]))
    line = f"'a' {probs[1]:.3f} | 'b' {probs[2]:.3f}"
    assert out.getvalue().splitlines() == [f"[0] {line}", "[0] -> 'a'", f"[1] {line}", "[1] -> 'a'"]
    assert result.text == "aa"


def test_debug_defaults_to_stdout(capsys):
    provider = text_provider([EOS, "a"], lambda text: {"a": 1.0})
    BacktrackSampler(provider, DebugStrategy(provider, top_k=5)).generate_text("a", max_new_tokens=1)
    assert capsys.readouterr().out.splitlines() == ["[0] 'a' 1.000 | '' 0.000", "[0] -> 'a'"]
    with pytest.raises(ValueError, match="top_k.*0"):
        DebugStrategy(provider, top_k=0)


# -- HumanGuidance --------------------------------------------------------------------------

GUIDE_VOCAB = [EOS, "a", "b", "c", "d"]
GUIDE_RULE = {"a": 3.0, "b": 2.0, "c": 1.0, "d": 0.0, EOS: -9.0}


def guided(answers, max_back=8, min_autopass=1.0, n=3, seed=0):
    provider = text_provider(GUIDE_VOCAB, lambda text: GUIDE_RULE)
    prompts, out = [], io.StringIO()
    queue = list(answers)

    def ask(prompt):
        prompts.append(prompt)
        return queue.pop(0)

    strategy = HumanGuidanceStrategy(provider, max_back=max_back, min_autopass=min_autopass, ask=ask, out=out)
    events = run(BacktrackSampler(provider, strategy), "a", max_new_tokens=n, seed=seed)
    assert not queue, "every scripted answer was used"
    return events, prompts, out.getvalue()


@pytest.mark.parametrize("seed", range(3))
def test_human_guidance_enforces_the_pick(seed):
    events, prompts, out = guided(["2", "3", "1"], seed=seed)
    assert events[-1].text == "bca"
    assert prompts == ["choose 1-3: ", "choose 1-3 or b: ", "choose 1-3 or b: "]
    assert "1) 'a'" in out and "3) 'c'" in out and "'d'" not in out


def test_human_guidance_asks_again_after_a_bad_answer():
    events, prompts, out = guided(["9", "x", " 3 ", "1", "1"])
    assert events[-1].text == "caa"
    assert "not a choice: '9'" in out and "not a choice: 'x'" in out
    assert len(prompts) == 5


def test_human_guidance_goes_back_one_token():
    events, prompts, out = guided(["1", "2", "b", "3", "1"])
    assert events[-1].text == "aca"
    (rewind,) = of(events, RewindEvent)
    assert rewind.position == 1 and rewind.reason == "the user went back one token"
    assert "b) go back one token" in out


def test_human_guidance_never_retracts_emitted_text():
    events, prompts, out = guided(["1", "2", "b", "b", "3", "1"], max_back=1)
    assert events[-1].text == "aca"
    assert prompts[3] == "choose 1-3: "  # "a" was already emitted: no going back past it
    assert "not a choice: 'b'" in out
    assert of(events, RewindEvent)[0].position == 1


def test_human_guidance_min_autopass():
    events, prompts, _ = guided([], min_autopass=0.6, n=4)
    assert prompts == [] and events[-1].text == "aaaa"  # p("a") is 0.64
    events, prompts, _ = guided(["1"] * 4, min_autopass=0.7, n=4)
    assert len(prompts) == 4


def test_human_guidance_validation():
    provider = random_provider(GUIDE_VOCAB)
    for kwargs, pattern in [
        ({"top_k": 0}, "top_k"),
        ({"min_autopass": 0}, "min_autopass"),
        ({"max_back": -1}, "max_back"),
    ]:
        with pytest.raises(ValueError, match=pattern):
            HumanGuidanceStrategy(provider, **kwargs)


# -- AdaptiveTemperature ------------------------------------------------------------------------


def poly(x):
    return -0.037 * x**4 + 0.481 * x**3 - 2.3 * x**2 + 4.917 * x - 1.791


@pytest.mark.parametrize("entropy", [0.0, 0.3, 0.5, 0.51, 0.6, 1.0, 1.5, 2.0, 3.0])
def test_adaptive_beta(entropy):
    expected = 1.0 if entropy <= 0.5 else max(poly(entropy), 1.0)
    assert AdaptiveTemperatureStrategy().beta(entropy) == pytest.approx(expected)


def test_adaptive_beta_values():
    strategy = AdaptiveTemperatureStrategy()
    assert strategy.poly_coeffs == (-0.037, 0.481, -2.3, 4.917, -1.791)
    assert strategy.beta(0.6) == 1.0  # the polynomial is below 1 there
    assert strategy.beta(2.0) == pytest.approx(2.099)
    assert AdaptiveTemperatureStrategy([0.0, 3.0]).beta(0.7) == 3.0
    with pytest.raises(ValueError, match="poly_coeffs"):
        AdaptiveTemperatureStrategy([])


@pytest.mark.parametrize("n", [1, 2, 4, 8])
def test_adaptive_multiplies_uniform_logits(n):
    logits = np.concatenate([np.full(n, 0.5), [-np.inf]])
    strategy = AdaptiveTemperatureStrategy()
    out = strategy.adjust_logits(None, logits.copy())
    beta = strategy.beta(math.log(n))
    assert strategy.last_beta == pytest.approx(beta)
    np.testing.assert_allclose(out, logits * beta)
    assert (beta > 1) == (n >= 4)


def test_adaptive_in_the_engine_sees_and_sharpens_the_raw_logits():
    provider = random_provider(LETTERS, seed=2, scale=0.7)
    seen = []
    recorder = Scripted(adjust=lambda ctx, logits: seen.append(logits.copy()) or logits)
    adaptive = AdaptiveTemperatureStrategy()
    result = BacktrackSampler(provider, ChainStrategy([adaptive, recorder])).generate_text(
        "a", max_new_tokens=5, seed=0
    )
    prompt = provider.encode("a")
    assert len(seen) == len(result.tokens) + (result.finish_reason == "eos")
    for i, logits in enumerate(seen):
        raw = np.asarray(provider.next_logits(prompt + list(result.tokens[:i])), dtype=np.float32)
        probs = softmax(raw.astype(np.float64))
        beta = adaptive.beta(float(-(probs * np.log(probs)).sum()))
        assert beta > 1
        np.testing.assert_allclose(logits, raw * beta, rtol=1e-5)


# -- Replace ------------------------------------------------------------------------------------

THINK_VOCAB = [EOS, "a", "b", "</think>", "</", "think>", "Wait", " ", "x</", "x", "X"]


def think_rule(find_logit=5.0, stop_after=15, after_wait=None):
    """After "a" or "b": "</think>"; after "</think>" or "Wait": "b" (or ``after_wait``); EOS past ``stop_after``."""

    def rule(text):
        done = text[1:]
        if done == "":
            return {"a": 5.0}
        if done.endswith(("</think>", "Wait")):
            return after_wait or {"b": 5.0}
        if len(done) >= stop_after:
            return {EOS: 5.0}
        return {"</think>": find_logit, "b": 0.0}

    return rule


def replaced(strategy_kwargs, rule=None, **kwargs):
    provider = text_provider(THINK_VOCAB, rule or think_rule())
    strategy = ReplaceStrategy(provider, **{"find": "</think>", "replace": "Wait", **strategy_kwargs})
    events = run(BacktrackSampler(provider, strategy), "a", **{"max_new_tokens": 30, "temperature": 0, **kwargs})
    return events[-1].text, of(events, RewindEvent)


def test_replace_replaces_the_find_text():
    text, (rewind,) = replaced({})
    assert text == "aWaitb</think>b"
    assert (rewind.position, rewind.suppressed_text, rewind.reason) == (1, "</think>", "replaced '</think>'")
    assert rewind.inserted == (6,)


@pytest.mark.parametrize(
    ("pieces", "text", "inserted"),
    [(("a", "</", "think>"), "aWait", ("Wait",)), (("a", "x</", "think>"), "axWait", ("x", "Wait"))],
)
def test_replace_matches_text_across_tokens(pieces, text, inserted):
    provider = text_provider(THINK_VOCAB, spell(*pieces))
    strategy = ReplaceStrategy(provider, ["</think>"], "Wait")
    events = run(BacktrackSampler(provider, strategy), "a", max_new_tokens=9, temperature=0)
    (rewind,) = of(events, RewindEvent)
    assert events[-1].text == text and rewind.position == 1
    assert rewind.inserted == tuple(ids(provider, *inserted))


@pytest.mark.parametrize(
    ("kwargs", "text"),
    [
        ({"max_replacements": 0}, "a</think>b</think>b"),
        ({"max_replacements": 2}, "aWaitbWaitb</think>b"),
        ({"skip_tokens": 2, "max_replacements": 9}, "a</think>bWaitb"),
        ({"max_new_tokens_for_replace": 2, "max_replacements": 9}, "aWaitb</think>b"),
        ({"max_new_tokens_for_replace": 1}, "a</think>b</think>b"),
        ({"max_prob": 0.7}, "a</think>b</think>b"),  # p("</think>") is 0.73
        ({"max_prob": 0.75}, "aWaitb</think>b"),
    ],
)
def test_replace_gates(kwargs, text):
    assert replaced(kwargs, think_rule(find_logit=1.0))[0] == text


def test_replace_never_rematches_its_own_replacement():
    rule = think_rule(after_wait={EOS: 5.0})
    text, rewinds = replaced({"replace": "</think> Wait", "max_replacements": 5}, rule)
    assert text == "a</think> Wait" and len(rewinds) == 1


@pytest.mark.parametrize(("kwargs", "n_rewinds"), [({"max_prob": 0.5}, 0), ({"max_replacements": 3}, 3)])
def test_replace_terminates_when_the_model_insists(kwargs, n_rewinds):
    rule = think_rule(stop_after=10**6, after_wait={"</think>": 5.0})
    provider = text_provider(THINK_VOCAB, rule)
    strategy = ReplaceStrategy(provider, "</think>", "Wait", **kwargs)
    events = run(BacktrackSampler(provider, strategy), "a", max_new_tokens=12, temperature=0)
    assert events[-1].reason == "length" and len(of(events, RewindEvent)) == n_rewinds
    assert events[-1].text.count("Wait") == n_rewinds


def test_replace_state_is_reset_between_generations():
    provider = text_provider(THINK_VOCAB, think_rule())
    sampler = BacktrackSampler(provider, ReplaceStrategy(provider, "</think>", "Wait"))
    texts = [sampler.generate_text("a", max_new_tokens=30, temperature=0).text for _ in range(2)]
    assert texts == ["aWaitb</think>b"] * 2


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"find": []}, ValueError),
        ({"find": [""]}, ValueError),
        ({"replace": 3}, TypeError),
        ({"max_replacements": -1}, ValueError),
        ({"skip_tokens": -1}, ValueError),
        ({"max_new_tokens_for_replace": -1}, ValueError),
        ({"max_prob": 0}, ValueError),
    ],
)
def test_replace_validation(kwargs, error):
    provider = random_provider(THINK_VOCAB)
    arg = next(iter(kwargs))
    with pytest.raises(error, match=arg if arg not in ("find", "replace") else "find|replace"):
        ReplaceStrategy(provider, **{"find": "x", "replace": "y", **kwargs})


def test_replace_in_a_chain_counts_only_replacements_carried_out():
    vocab = [EOS, "a", "b", "c", "X"]
    rule = {"": {"a": 9.0, "c": 5.0}, "a": {"b": 9.0}, "c": {"b": 9.0}}
    provider = text_provider(vocab, lambda text: rule.get(text[1:], {EOS: 9.0}))
    # on "ab", AntiSlop's deeper rewind to 0 wins over the replacement at 1; then "cb" comes
    strategy = ChainStrategy(
        [AntiSlopStrategy(provider, ["ab"], whole_words=False), ReplaceStrategy(provider, "b", "X")]
    )
    result = BacktrackSampler(provider, strategy).generate_text("c", max_new_tokens=5, temperature=0)
    assert result.text == "cX"  # the discarded replacement did not count


def test_replace_in_a_chain_holds_back_enough_after_another_rewind():
    table = {"": {"a": 9.0}, "a": {"z": 9.0, "b": 5.0}, "az": {"q": 9.0}}
    provider = text_provider([EOS, "a", "b", "z", "q", "X"], lambda text: table.get(text[1:], {EOS: 9.0}))
    # "a" is emitted once "z" follows; AntiSlop rewinds "zq"; then "b" makes "ab" with the emitted "a"
    strategy = ChainStrategy(
        [AntiSlopStrategy(provider, ["zq"], whole_words=False), ReplaceStrategy(provider, "ab", "X")]
    )
    events = run(BacktrackSampler(provider, strategy), [2], max_new_tokens=6, temperature=0)
    assert not of(events, RewindRefusedEvent)
    assert events[-1].text == "X"


# -- Chain ------------------------------------------------------------------------------------


def decide(decision, holdback=0, name="S"):
    return Scripted(lambda ctx, token: decision, holdback=holdback, name=name)


def test_chain_deeper_rewind_wins():
    chain = ChainStrategy([decide(Rewind(4, ban=(1,)), name="A"), decide(Rewind(2, ban=(2,)), name="B")])
    assert chain.on_token(None, 0) == Rewind(2, ban=(2,), strategy="B")


def test_chain_merges_equally_deep_rewinds():
    chain = ChainStrategy(
        [
            decide(Rewind(3, ban=(1, 2), reason="r1"), name="A"),
            decide(Continue(), name="C"),
            decide(Rewind(3, ban=(2, 5), insert=(7,), reason="r2", strategy="custom"), name="B"),
        ]
    )
    assert chain.on_token(None, 0) == Rewind(3, ban=(1, 2, 5), insert=(7,), reason="r1; r2", strategy="A+custom")


def test_chain_stops_only_when_nobody_rewinds():
    assert ChainStrategy([decide(Stop("x"), name="A"), decide(Rewind(1))]).on_token(None, 0) == Rewind(1, strategy="S")
    assert ChainStrategy([decide(Continue()), decide(Stop("y"), name="B")]).on_token(None, 0) == Stop("y", strategy="B")
    assert ChainStrategy([decide(Continue()), decide(Continue())]).on_token(None, 0) == Continue()


def test_chain_holdback_is_the_max_and_adjust_runs_in_order():
    provider = random_provider(LETTERS)
    first = Scripted(adjust=lambda ctx, logits: logits + 1, holdback=2)
    second = Scripted(adjust=lambda ctx, logits: logits * 2, holdback=5)
    chain = ChainStrategy([first, second, Scripted(holdback=1)])
    assert chain.holdback(make_ctx(provider, [1] * 8)) == 5
    np.testing.assert_array_equal(chain.adjust_logits(None, np.array([0.0, 1.0])), [2.0, 4.0])


def test_chain_emits_only_at_a_boundary_every_member_accepts():
    provider = text_provider([EOS, "a", "z", "b"], lambda text: {})
    antislop = AntiSlopStrategy(provider, ["zq"], whole_words=False)
    replace = ReplaceStrategy(provider, "ab", "X")
    chain = ChainStrategy([antislop, replace])
    ctx, _ = feed(chain, provider, ids(provider, "a", "z"))
    # Alone, each would emit more: Replace everything ("az" closes "ab"), AntiSlop the "a".
    assert replace.commit_boundary(ctx, 2) == 2 and antislop.commit_boundary(ctx, 2) == 1
    # Boundary 1 leaves Replace's "a" open (a rewind of "z" could make "ab"): nothing is emitted.
    assert chain.commit_boundary(ctx, 2) == 0 and chain.holdback(ctx) == 2


def test_chain_properties():
    provider = random_provider(LETTERS)
    chain = ChainStrategy([AntiSlopStrategy(provider, ["x"]), AdaptiveTemperatureStrategy()])
    assert chain.name == "Chain(AntiSlopStrategy, AdaptiveTemperatureStrategy)" and chain.needs_full_logits
    assert not ChainStrategy([AntiSlopStrategy(provider, ["x"])]).needs_full_logits
    with pytest.raises(ValueError, match="non-empty"):
        ChainStrategy([])
    with pytest.raises(ValueError, match="non-empty"):
        ChainStrategy([object()])


def test_chain_in_the_engine():
    rewound = []

    class Watcher(Scripted):
        def on_rewind(self, ctx, position):
            rewound.append((self.name, position, len(ctx.tokens)))

    def deep(ctx, token):
        return Rewind(0, reason="deep") if len(ctx.tokens) == 3 and not rewound else Continue()

    def shallow(ctx, token):
        return Rewind(2, ban=(token,), reason="shallow") if len(ctx.tokens) == 3 and not rewound else Continue()

    a, b = Watcher(deep, holdback=3, name="A"), Watcher(shallow, name="B")
    provider = random_provider(LETTERS, eos_bias=-100)
    events = run(BacktrackSampler(provider, ChainStrategy([b, a])), "a", max_new_tokens=4, seed=0)
    (rewind,) = of(events, RewindEvent)
    assert (rewind.position, rewind.strategy, rewind.reason, rewind.banned) == (0, "A", "deep", ())
    assert rewound == [("B", 0, 0), ("A", 0, 0)]
    assert a.resets == b.resets == 1
