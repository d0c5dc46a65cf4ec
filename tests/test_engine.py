"""The engine: streaming, finish reasons, rewinds, bans, inserts, the logits cache and the budget."""

from __future__ import annotations

import numpy as np
import pytest

from backtrack_sampler import (
    AntiSlopStrategy,
    BacktrackSampler,
    BaseStrategy,
    ChainStrategy,
    Continue,
    CreativeWritingStrategy,
    FinishEvent,
    GenerationResult,
    ReplaceStrategy,
    Rewind,
    RewindBudget,
    RewindEvent,
    RewindRefusedEvent,
    SamplingParams,
    Stop,
    TextEvent,
)
from backtrack_sampler.provider.scripted_provider import ScriptedProvider
from scripted import (
    EOS,
    Scripted,
    ids,
    of,
    random_provider,
    run,
    text_provider,
)

VOCAB = [EOS, "a", "b", "c", "d"]
RICH = [EOS, "a", "b", "ab", "ba", " ", "c", "A", "B"]
RANKED = {"a": 90.0, "b": 60.0, "c": 30.0, "d": 0.0, EOS: -30.0}  # "a" forever, at any temperature


def ranked_provider(**kwargs) -> ScriptedProvider:
    return text_provider(VOCAB, lambda text: RANKED, **kwargs)


def uniform_until(n: int, prompt_chars: int = 1) -> ScriptedProvider:
    """Uniform over a-d for ``n`` generated tokens, then only EOS."""

    def rule(text):
        if len(text) - prompt_chars >= n:
            return {EOS: 0.0}
        return {"a": 0.0, "b": 0.0, "c": 0.0, "d": 0.0}

    return text_provider(VOCAB, rule, default=-np.inf)


# -- API and the stream -------------------------------------------------------------------


def test_generate_yields_the_final_tokens_of_generate_text():
    provider = random_provider(RICH, seed=1)
    sampler = BacktrackSampler(provider, AntiSlopStrategy(provider, ["ab"], whole_words=False))
    # The first seed whose run rewinds (the sampling pipeline decides which one that is).
    seed = next(s for s in range(100) if sampler.generate_text("a", max_new_tokens=20, seed=s).stats.rewinds)
    tokens = list(sampler.generate("a", max_new_tokens=20, seed=seed))
    result = sampler.generate_text("a", max_new_tokens=20, seed=seed)
    assert isinstance(result, GenerationResult)
    assert all(type(t) is int for t in tokens)
    assert tuple(tokens) == result.tokens
    assert result.text == provider.decode(tokens)
    assert "ab" not in result.text.lower()
    assert len(result.rewinds) == result.stats.rewinds > 0
    assert result.refusals == ()


@pytest.mark.parametrize("seed", range(10))
def test_stream_equals_final_sequence(seed):
    provider = random_provider(RICH, seed=seed)
    strategy = ChainStrategy(
        [AntiSlopStrategy(provider, ["aba", "b b"], whole_words=False), ReplaceStrategy(provider, "ba", "c")]
    )
    events = run(BacktrackSampler(provider, strategy), "a", max_new_tokens=30, seed=seed)
    finish = events[-1]
    assert finish.text == provider.decode(finish.tokens)
    if not of(events, RewindRefusedEvent):
        assert "aba" not in finish.text.lower()


def test_tokens_are_emitted_only_outside_the_holdback():
    provider = random_provider(RICH, seed=2, eos_bias=-100)
    seen = []
    strategy = Scripted(on_token=lambda ctx, tok: seen.append(ctx) or Continue(), holdback=2)
    emitted, when = 0, []  # (tokens emitted so far, tokens generated) at each TextEvent
    for event in BacktrackSampler(provider, strategy).stream("a", max_new_tokens=8, seed=0):
        if isinstance(event, TextEvent):
            emitted += len(event.tokens)
            when.append((emitted, len(seen[-1].tokens)))
    assert when[:-1] == [(n - 2, n) for n in range(3, 9)]
    assert when[-1] == (8, 8)


def test_temperature_zero_is_greedy():
    provider = random_provider(RICH, seed=5, eos_bias=-100)
    prompt = provider.encode("ab")
    expected = []
    for _ in range(12):
        expected.append(int(np.argmax(provider.next_logits(prompt + expected))))
    tokens = list(BacktrackSampler(provider).generate(prompt, max_new_tokens=12, temperature=0, seed=9))
    assert tokens == expected


def test_same_seed_same_output_and_seeds_matter():
    def sample(seed):
        provider = random_provider(RICH, seed=0, scale=0.5)
        return tuple(BacktrackSampler(provider).generate("a", max_new_tokens=30, seed=seed))

    assert sample(7) == sample(7)
    assert len({sample(s) for s in range(5)}) > 1


def test_one_sampling_params_object_equals_the_keyword_arguments():
    def run(**kwargs):
        provider = random_provider(RICH, seed=0, scale=0.5)
        return BacktrackSampler(provider).generate_text("a", **kwargs).tokens

    params = SamplingParams(temperature=0.8, top_k=5, top_p=0.9, seed=3, max_new_tokens=20)
    by_keywords = run(temperature=0.8, top_k=5, top_p=0.9, seed=3, max_new_tokens=20)
    assert run(params=params) == by_keywords
    assert len(by_keywords) == 20
    # keywords override the object's fields
    assert (
        run(
            params=SamplingParams(seed=99, max_new_tokens=5),
            seed=3,
            max_new_tokens=20,
            top_k=5,
            temperature=0.8,
            top_p=0.9,
        )
        == by_keywords
    )


def test_unknown_sampling_keywords_and_wrong_params_types_raise():
    sampler = BacktrackSampler(ranked_provider())
    with pytest.raises(TypeError, match="'temprature'"):
        sampler.stream("a", max_new_tokens=3, temprature=0.5)
    with pytest.raises(TypeError, match="params must be a SamplingParams, got dict"):
        sampler.stream("a", {"max_new_tokens": 3})


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"temperature": -1}, r"temperature.*-1"),
        ({"temperature": float("nan")}, r"temperature.*nan"),
        ({"top_k": -1}, r"top_k.*-1"),
        ({"top_p": 1.5}, r"top_p.*1\.5"),
        ({"top_p": 0}, r"top_p.*0"),
        ({"min_p": 1.0}, r"min_p.*1\.0"),
        ({"max_new_tokens": -1}, r"max_new_tokens.*-1"),
        ({"max_length": -2}, r"max_length.*-2"),
        ({"seed": -1}, r"seed.*-1"),
    ],
)
def test_bad_arguments_raise_before_the_first_event(kwargs, pattern):
    sampler = BacktrackSampler(ranked_provider())
    with pytest.raises(ValueError, match=pattern):
        sampler.generate("a", **{"max_new_tokens": 3, **kwargs})
    with pytest.raises(ValueError, match=pattern):
        sampler.stream("a", **{"max_new_tokens": 3, **kwargs})


@pytest.mark.parametrize(
    ("prompt", "pattern"),
    [("", "prompt must not be empty"), ([], "prompt must not be empty"), ([1, 99], r"\[0, 5\).*99")],
)
def test_bad_prompts_raise(prompt, pattern):
    with pytest.raises(ValueError, match=pattern):
        BacktrackSampler(ranked_provider()).generate_text(prompt, max_new_tokens=3)


def test_prompt_must_leave_room_in_the_context():
    sampler = BacktrackSampler(ranked_provider(context_length=4))
    with pytest.raises(ValueError, match=r"prompt has 5 tokens.*holds 4"):
        sampler.generate_text("abcab", max_new_tokens=1)
    with pytest.raises(ValueError, match=r"prompt has 4 tokens.*holds 4"):
        sampler.generate_text("abca", max_new_tokens=1)
    assert len(sampler.generate_text("abc", max_new_tokens=9).tokens) == 1


def test_a_limit_is_required_without_a_context_length():
    sampler = BacktrackSampler(ranked_provider(context_length=None))
    with pytest.raises(ValueError, match="max_new_tokens or max_length"):
        sampler.generate_text("a")
    assert len(sampler.generate_text("a", max_length=4).tokens) == 3


def test_constructor_checks_its_arguments():
    provider = ranked_provider()
    with pytest.raises(TypeError, match="BaseProvider"):
        BacktrackSampler(object())
    with pytest.raises(TypeError, match="BaseStrategy"):
        BacktrackSampler(provider, object())

    class TopLogprobsOnly(ScriptedProvider):
        gives_full_logits = False

    partial = TopLogprobsOnly(VOCAB, lambda t: [0.0] * 5, 0)
    with pytest.raises(ValueError, match="CreativeWritingStrategy"):
        BacktrackSampler(partial, CreativeWritingStrategy(partial))
    assert BacktrackSampler(partial, AntiSlopStrategy(partial, ["x"])).strategy.name == "AntiSlopStrategy"


def test_bad_decisions_raise():
    provider = ranked_provider()
    with pytest.raises(ValueError, match=r"position 5.*\[0, 0\]"):
        BacktrackSampler(provider, Scripted(lambda ctx, tok: Rewind(5))).generate_text("a", max_new_tokens=3)
    with pytest.raises(TypeError, match="Continue, Rewind or Stop"):
        BacktrackSampler(provider, Scripted(lambda ctx, tok: None)).generate_text("a", max_new_tokens=3)


# -- finish reasons ---------------------------------------------------------------------------


def test_finish_eos_drops_the_eos_token():
    provider = text_provider(VOCAB, lambda text: {EOS: 5.0} if len(text) == 4 else {"b": 5.0})
    events = run(BacktrackSampler(provider), "a", max_new_tokens=10)
    finish = events[-1]
    assert (finish.reason, finish.text, finish.tokens) == ("eos", "bbb", tuple(ids(provider, "b", "b", "b")))
    assert provider.eos_token_id not in [t for e in of(events, TextEvent) for t in e.tokens]


@pytest.mark.parametrize(
    ("kwargs", "context_length", "n_tokens"),
    [
        ({"max_new_tokens": 4}, 4096, 4),
        ({"max_new_tokens": 0}, 4096, 0),
        ({"max_length": 5}, 4096, 2),  # the prompt's 3 tokens count
        ({"max_length": 2}, 4096, 0),
        ({"max_length": 9, "max_new_tokens": 4}, 4096, 4),
        ({"max_new_tokens": 100}, 7, 4),  # the context holds 7 positions
    ],
)
def test_finish_length(kwargs, context_length, n_tokens):
    provider = ranked_provider(context_length=context_length)
    finish = run(BacktrackSampler(provider), "abc", **kwargs)[-1]
    assert finish.reason == "length"
    assert finish.tokens == (1,) * n_tokens
    assert finish.stats.prompt_tokens == 3


@pytest.mark.parametrize(("keep", "n_tokens"), [(True, 2), (False, 1)])
def test_finish_stop(keep, n_tokens):
    def on_token(ctx, token):
        return Stop("enough", keep_token=keep) if len(ctx.tokens) == 2 else Continue()

    finish = run(BacktrackSampler(ranked_provider(), Scripted(on_token)), "a", max_new_tokens=9)[-1]
    assert (finish.reason, finish.detail, finish.text) == ("stop", "enough", "a" * n_tokens)


def test_finish_budget_caps_evaluated_positions():
    provider = ranked_provider()
    finish = run(BacktrackSampler(provider, budget=RewindBudget(max_positions_evaluated=3)), "a", max_new_tokens=9)[-1]
    assert finish.reason == "budget"
    assert finish.stats.positions_evaluated == 3 == provider.eval_count - 1
    assert "3" in finish.detail


# -- rewinds, bans, inserts -----------------------------------------------------------------


def test_rewind_truncates_and_reports():
    provider = ranked_provider()
    done = []

    def on_token(ctx, token):
        if len(ctx.tokens) == 3 and not done:
            done.append(1)
            return Rewind(1, ban=(1,), reason="no a")
        return Continue()

    events = run(BacktrackSampler(provider, Scripted(on_token, holdback=3)), "a", max_new_tokens=3, temperature=0)
    (rewind,) = of(events, RewindEvent)
    assert rewind == RewindEvent(1, "aa", (1, 1), (1,), (), "no a", "Scripted")
    assert events[-1].text == "aba"  # "a" banned at 1 only


def test_bans_accumulate_at_one_position_and_survive_shallower_rewinds():
    script = {2: [Rewind(1, ban=(1,))], 3: [Rewind(2), Rewind(1, ban=(2,))]}

    def on_token(ctx, token):
        queue = script.get(len(ctx.tokens))
        return queue.pop(0) if queue else Continue()

    events = run(
        BacktrackSampler(ranked_provider(), Scripted(on_token, holdback=9)), "a", max_new_tokens=3, temperature=0
    )
    rewinds = of(events, RewindEvent)
    assert [r.suppressed_text for r in rewinds] == ["a", "a", "ba"]
    assert events[-1].text == "aca"  # "a" and "b" banned at 1, nothing banned at 2


def test_a_deeper_rewind_forgets_the_bans():
    script = {2: [Rewind(1, ban=(1,))], 4: [Rewind(0)]}

    def on_token(ctx, token):
        queue = script.get(len(ctx.tokens))
        return queue.pop(0) if queue else Continue()

    events = run(
        BacktrackSampler(ranked_provider(), Scripted(on_token, holdback=9)), "a", max_new_tokens=4, temperature=0
    )
    first, second = of(events, RewindEvent)
    assert second.suppressed_text == "abaa"
    assert events[-1].text == "aaaa"


def test_insert_forces_tokens():
    provider = ranked_provider()
    forced, done = [], []

    def on_token(ctx, token):
        forced.append(ctx.forced)
        if len(ctx.tokens) == 2 and not done:
            done.append(1)
            return Rewind(1, insert=(3, 4, 3))
        return Continue()

    events = run(BacktrackSampler(provider, Scripted(on_token, holdback=1)), "a", max_new_tokens=5)
    assert events[-1].text == "acdca"
    assert forced == [False, False, True, True, True, False]
    assert of(events, RewindEvent)[0].inserted == (3, 4, 3)


def test_all_banned_is_refused_and_sampling_goes_on():
    done = []

    def on_token(ctx, token):
        if not done:
            done.append(1)
            return Rewind(0, ban=tuple(range(5)))
        return Continue()

    events = run(
        BacktrackSampler(ranked_provider(), Scripted(on_token, holdback=1)), "a", max_new_tokens=2, temperature=0
    )
    assert [type(e) for e in events[:2]] == [RewindEvent, RewindRefusedEvent]
    assert (events[1].position, events[1].cause) == (0, "all_banned")
    assert events[-1].text == "aa"
    assert events[-1].stats.rewinds_refused == 1


# -- the logits cache -------------------------------------------------------------------------


def test_rejecting_the_latest_token_costs_no_evaluation():
    provider = uniform_until(6, prompt_chars=3)
    rejected = []

    def on_token(ctx, token):
        if len(ctx.tokens) == 3 and len(rejected) < 3:
            rejected.append(token)
            return Rewind(2, ban=(token,))
        return Continue()

    result = BacktrackSampler(provider, Scripted(on_token)).generate_text("abc", max_new_tokens=20, seed=4)
    assert result.finish_reason == "eos"
    assert len(result.rewinds) == 3 and result.tokens[2] not in rejected
    assert result.stats.positions_evaluated == result.stats.tokens_emitted == 6
    assert provider.eval_count - 3 == result.stats.positions_evaluated


def test_deep_rewinds_cost_only_the_regenerated_tokens():
    provider = uniform_until(6, prompt_chars=3)
    script = {4: [Rewind(1)], 5: [Rewind(3)]}

    def on_token(ctx, token):
        queue = script.get(len(ctx.tokens))
        return queue.pop(0) if queue else Continue()

    result = BacktrackSampler(provider, Scripted(on_token, holdback=9)).generate_text("abc", max_new_tokens=20, seed=1)
    stats = result.stats
    assert (stats.rewinds, stats.tokens_rewound, stats.tokens_emitted) == (2, 5, 6)
    # a rewind of depth d threw away d - 1 evaluated positions; the rest is the final sequence
    assert stats.positions_evaluated == stats.tokens_emitted + stats.tokens_rewound - stats.rewinds == 9
    assert provider.eval_count - 3 == stats.positions_evaluated


def test_rewinds_keep_the_model_state_consistent():
    provider = random_provider(RICH, seed=8, eos_bias=-100)
    greedy = BacktrackSampler(provider).generate_text("ab", max_new_tokens=12, temperature=0)

    class Deep(Scripted):  # rewinds 3 tokens at lengths 4, 8, 12; greedy re-samples the same tokens
        def reset(self):
            self.seen = {}

        def on_token(self, ctx, token):
            n = len(ctx.tokens)
            if n % 4 == 0 and n not in self.seen:
                self.seen[n] = 1
                return Rewind(n - 3)
            return Continue()

    result = BacktrackSampler(provider, Deep(holdback=3)).generate_text("ab", max_new_tokens=12, temperature=0)
    assert result.stats.rewinds == 3
    assert result.tokens == greedy.tokens
    assert result.stats.positions_evaluated == 11 + 3 * 2


def test_the_prompt_is_never_evaluated_again():
    provider = random_provider(RICH, seed=3)
    sampler = BacktrackSampler(provider, AntiSlopStrategy(provider, ["ab"]))
    first = sampler.generate_text("abba", max_new_tokens=10, seed=0)
    assert first.stats.prompt_tokens == len(provider.encode("abba")) == 2  # "ab" + "ba"
    assert provider.eval_count - 2 == first.stats.positions_evaluated
    before = provider.eval_count
    second = sampler.generate_text("abba", max_new_tokens=10, seed=0)
    assert provider.eval_count - before == second.stats.positions_evaluated
    assert second.tokens == first.tokens


def test_adjust_logits_may_write_in_place_without_corrupting_the_cache():
    provider = random_provider(VOCAB, seed=4)
    seen = []

    def adjust(ctx, logits):
        seen.append(logits.copy())
        logits[:] = -np.inf
        logits[4] = 0.0
        return logits

    rejected = []

    def on_token(ctx, token):
        if not rejected:
            rejected.append(token)
            return Rewind(0)
        return Continue()

    result = BacktrackSampler(provider, Scripted(on_token, adjust=adjust)).generate_text("a", max_new_tokens=1)
    raw = np.asarray(provider.next_logits([1]), dtype=np.float32)
    assert result.tokens == (4,) and rejected == [4]
    assert len(seen) == 2
    np.testing.assert_array_equal(seen[0], raw)
    np.testing.assert_array_equal(seen[1], raw)


# -- the budget -----------------------------------------------------------------------------


def always_reject(ctx, token):
    return Rewind(len(ctx.tokens) - 1, reason="again")


def test_position_budget():
    budget = RewindBudget(per_position=3)
    events = run(BacktrackSampler(ranked_provider(), Scripted(always_reject), budget), "a", max_new_tokens=4)
    refusals = of(events, RewindRefusedEvent)
    assert len(of(events, RewindEvent)) == 12
    assert [(r.position, r.cause) for r in refusals] == [(i, "position_budget") for i in range(4)]
    assert refusals[0].reason == "again" and refusals[0].strategy == "Scripted"
    assert (events[-1].reason, events[-1].text) == ("length", "aaaa")


def test_generation_budget():
    budget = RewindBudget(per_position=100, per_generation=5)
    events = run(BacktrackSampler(ranked_provider(), Scripted(always_reject), budget), "a", max_new_tokens=4)
    assert len(of(events, RewindEvent)) == 5
    assert [r.cause for r in of(events, RewindRefusedEvent)] == ["generation_budget"] * 4
    assert events[-1].reason == "length"


@pytest.mark.parametrize(
    ("decide", "rewinds"),
    [(always_reject, 64), (lambda ctx, token: Rewind(0), 16)],  # default: 16 per position, 64 in all
)
def test_a_strategy_that_always_rewinds_terminates(decide, rewinds):
    provider = random_provider(VOCAB, seed=0, eos_bias=-100)
    strategy = Scripted(decide, holdback=100)
    events = run(BacktrackSampler(provider, strategy), "a", max_new_tokens=10, seed=0)
    assert events[-1].reason == "length" and len(events[-1].tokens) == 10
    assert events[-1].stats.rewinds == rewinds
    assert strategy.calls == 10 + events[-1].stats.tokens_rewound


def test_rewinding_emitted_text_is_refused():
    def on_token(ctx, token):
        return Rewind(0, reason="too late") if len(ctx.tokens) == 3 else Continue()

    events = run(BacktrackSampler(ranked_provider(), Scripted(on_token, holdback=1)), "a", max_new_tokens=5)
    (refusal,) = of(events, RewindRefusedEvent)
    assert (refusal.position, refusal.cause, refusal.reason) == (0, "already_emitted", "too late")
    assert not of(events, RewindEvent)
    assert events[-1].text == "aaaaa"


@pytest.mark.parametrize("field", ["per_position", "per_generation", "max_positions_evaluated"])
def test_budget_validation(field):
    with pytest.raises(ValueError, match=f"{field}.*-1"):
        RewindBudget(**{field: -1})


def test_default_generation_budget():
    assert RewindBudget().generation_limit(10) == 64
    assert RewindBudget().generation_limit(100) == 200
    assert RewindBudget(per_generation=3).generation_limit(100) == 3


# -- state between generations ------------------------------------------------------------------


def test_an_abandoned_stream_does_not_leak_into_the_next_generation():
    def make():
        provider = random_provider(RICH, seed=11)
        strategy = ChainStrategy(
            [
                AntiSlopStrategy(provider, ["ab"], whole_words=False),
                ReplaceStrategy(provider, "ba", "c", max_replacements=1),
            ]
        )
        return BacktrackSampler(provider, strategy)

    sampler = make()
    partial = sampler.stream("aa", max_new_tokens=25, seed=2)
    for _, _event in zip(range(2), partial, strict=False):
        pass
    again = sampler.generate_text("aa", max_new_tokens=25, seed=2)
    fresh = make().generate_text("aa", max_new_tokens=25, seed=2)
    assert (again.tokens, again.rewinds, again.refusals) == (fresh.tokens, fresh.rewinds, fresh.refusals)
    assert again.stats.positions_evaluated == fresh.stats.positions_evaluated


def test_reset_is_called_before_each_generation():
    strategy = Scripted()
    sampler = BacktrackSampler(ranked_provider(), strategy)
    sampler.generate_text("a", max_new_tokens=2)
    sampler.generate_text("a", max_new_tokens=2)
    assert strategy.resets == 2


# -- what strategies see ----------------------------------------------------------------------


def test_context_view():
    provider = random_provider(RICH, seed=6, eos_bias=-100)
    checks = []

    def on_token(ctx, token):
        n = len(ctx.tokens)
        assert ctx.tokens[-1] == token and ctx.position == n
        assert ctx.text == provider.decode(list(ctx.tokens)) and ctx.n_chars == len(ctx.text)
        assert ctx.text_from(n - 1) == provider.decode([token])
        assert ctx.char_start(n - 1) == len(provider.decode(list(ctx.tokens[:-1])))
        raw = np.asarray(provider.next_logits(list(ctx.prompt_tokens) + list(ctx.tokens[:-1])), np.float32)
        raw = raw.astype(np.float64)
        logprobs = raw - raw.max() - np.log(np.exp(raw - raw.max()).sum())
        assert ctx.logprob(n - 1) == pytest.approx(logprobs[token], abs=1e-5)
        assert ctx.logprob(n - 1, 0) == pytest.approx(logprobs[0], abs=1e-4)
        if n > 2:
            assert ctx.logprob(n - 3) is None and ctx.committed == n - 2  # emitted: logits dropped
        checks.append(n)
        return Continue()

    run(BacktrackSampler(provider, Scripted(on_token, holdback=1)), "ab", max_new_tokens=6, seed=1)
    assert checks == [1, 2, 3, 4, 5, 6]


def test_base_strategy_changes_nothing():
    provider = random_provider(RICH, seed=2)
    plain = BacktrackSampler(provider).generate_text("a", max_new_tokens=15, seed=5)
    based = BacktrackSampler(provider, BaseStrategy()).generate_text("a", max_new_tokens=15, seed=5)
    assert plain.tokens == based.tokens and not based.rewinds


def test_the_provider_hears_when_each_generation_ends():
    provider = ranked_provider()
    ended = []
    provider.end_generation = lambda: ended.append(len(ended))
    sampler = BacktrackSampler(provider)
    events = sampler.stream("a", max_new_tokens=5)
    for event in events:  # told before the FinishEvent: a caller may stop reading there
        if isinstance(event, FinishEvent):
            assert ended == [0]
    assert ended == [0]
    sampler.generate_text("a", max_new_tokens=5)
    assert ended == [0, 1]
    stream = sampler.stream("a", max_new_tokens=50)
    next(stream)
    stream.close()  # a caller that leaves early
    assert ended == [0, 1, 2]
    sampler.stream("a", max_new_tokens=5)  # never started: nothing began, nothing ends
    assert ended == [0, 1, 2]
