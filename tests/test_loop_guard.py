"""LoopGuard: a repeat of ``min_length`` units is rewound to where it began, with the token that began it banned.

Exact cases on scripted providers (units, prompt, soft bans, holdback, truncation, termination), a property
on random models (no repeat survives unless a rewind was refused), the registry, the command line, a server
request and a batch line; then the embedded model (the quick start's story, a chain with AntiSlop).
"""

from __future__ import annotations

import functools
import json
import math
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backtrack_sampler import (
    AntiSlopStrategy,
    BacktrackSampler,
    ChainStrategy,
    GenerationContext,
    Rewind,
    RewindBudget,
    RewindEvent,
    RewindRefusedEvent,
    TextEvent,
    cli,
)
from backtrack_sampler.core.base_provider import BaseProvider
from backtrack_sampler.core.context import Progress
from backtrack_sampler.core.token_text import TokenText
from backtrack_sampler.metrics.diversity import loops, words
from backtrack_sampler.strategy import registry
from backtrack_sampler.strategy.loop_guard_strategy import LoopGuardStrategy
from backtrack_sampler.strategy.repeat_index import RepeatIndex
from scripted import EOS, check_stream, feed, ids, of, random_provider, run, text_provider

VOCAB = [EOS, " a", " b", " c", " d", " e", " A", ",", ".", "\n", "'", "s", " x"]


def flat():
    return text_provider(VOCAB, lambda text: {})


def decisions_of(strategy, provider, *texts: str, prompt=(1,)) -> list:
    strategy.reset()
    text = TokenText(provider.token_bytes)
    held: list[int] = []
    ctx = GenerationContext(provider, list(prompt), held, text, {})
    out = []
    for token in ids(provider, *texts):
        held.append(token)
        text.append(token)
        out.append(strategy.on_token(ctx, token))
    return out


def rewinds(decisions: list) -> list[tuple[int, Rewind]]:
    return [(i, d) for i, d in enumerate(decisions) if isinstance(d, Rewind)]


# -- the repeat index ------------------------------------------------------------------------------
def test_repeat_index_finds_the_longest_earlier_suffix_and_truncates():
    index = RepeatIndex()
    assert [index.append(u) for u in "abcabcx"] == [0, 0, 0, 1, 2, 3, 0]
    assert [index.append(u) for u in "aaa"] == [1, 1, 2]  # overlapping occurrences count
    index.truncate(6)  # "abcabc" again
    assert [index.append(u) for u in ("a", "b", None, "c")] == [4, 5, 0, 1]  # nothing runs across a break


@given(st.lists(st.sampled_from("abc"), max_size=40), st.data())
def test_repeat_index_agrees_with_a_brute_force_search(units, data):
    cut = data.draw(st.integers(0, len(units)))
    more = data.draw(st.lists(st.sampled_from("abc"), max_size=10))
    index = RepeatIndex()
    for unit in units:
        index.append(unit)
    index.truncate(cut)
    for unit in more:
        index.append(unit)
    sequence = units[:cut] + more
    for end in range(len(sequence)):
        expected = max(
            (
                n
                for n in range(1, end + 1)
                for e in range(n - 1, end)
                if sequence[e - n + 1 : e + 1] == sequence[end - n + 1 : end + 1]
            ),
            default=0,
        )
        assert index.longest[end] == expected


# -- when it rewinds -----------------------------------------------------------------------------------
def test_a_repeat_of_min_length_rewinds_to_where_it_began_and_bans_that_token():
    provider = flat()
    strategy = LoopGuardStrategy(provider, min_length=3, unit="tokens")
    decisions = decisions_of(strategy, provider, " a", " b", " c", " d", " a", " b", " c")
    ((at, rewind),) = rewinds(decisions)
    assert at == 6
    assert rewind.position == 4 and rewind.ban == tuple(ids(provider, " a")) and rewind.match_end == 6
    assert rewind.ban_phrase == "a b c" and "repeat of 3 tokens" in rewind.reason and not rewind.penalize


def test_shorter_repeats_do_not_rewind():
    provider = flat()
    strategy = LoopGuardStrategy(provider, min_length=3, unit="tokens")
    assert rewinds(decisions_of(strategy, provider, " a", " b", " c", " d", " a", " b", " e", " a", " b")) == []


def test_words_ignore_case_and_punctuation_where_tokens_do_not():
    provider = flat()
    texts = (" a", " b", " c", " d", " A", ",", " b", " c", " e")
    by_words = rewinds(decisions_of(LoopGuardStrategy(provider, min_length=3), provider, *texts))
    assert [(at, r.position, r.ban, r.match_end) for at, r in by_words] == [(8, 4, tuple(ids(provider, " A")), 7)]
    assert by_words[0][1].ban_phrase == "A, b c"  # seen once " e" finished the word "c"
    assert rewinds(decisions_of(LoopGuardStrategy(provider, min_length=3, unit="tokens"), provider, *texts)) == []


def test_a_word_counts_once_nothing_can_extend_it():
    provider = flat()
    strategy = LoopGuardStrategy(provider, min_length=2)
    # "b" then "'" then "s": the word is "b's", not "b": no repeat of "a b"
    assert rewinds(decisions_of(strategy, provider, " a", " b", " c", " a", " b", "'", "s", " e")) == []
    ((at, rewind),) = rewinds(decisions_of(strategy, provider, " a", " b", " c", " a", " b", "'", " e"))
    assert (at, rewind.position) == (6, 3)  # "b" followed by "' " is finished


def test_a_repeat_reaching_into_emitted_text_is_taken_back_from_what_is_held():
    provider = flat()
    strategy = LoopGuardStrategy(provider, min_length=3, unit="tokens")
    text = TokenText(provider.token_bytes)
    held: list[int] = []
    progress = Progress()
    ctx = GenerationContext(provider, [1], held, text, {}, progress)
    decisions = []
    for n, token in enumerate(ids(provider, " a", " b", " c", " d", " a", " b", " c")):
        progress.committed = 5 if n == 6 else 0  # as if " a b" at 4-5 had been emitted, then " c" came
        held.append(token)
        text.append(token)
        decisions.append(strategy.on_token(ctx, token))
    ((at, rewind),) = rewinds(decisions)
    assert (at, rewind.position, rewind.ban, rewind.match_end) == (6, 5, tuple(ids(provider, " b")), 6)


def test_include_prompt_counts_repeats_of_the_prompt_but_never_across_it():
    provider = flat()
    prompt = ids(provider, " a", " b", " c")
    out = (" a", " b", " c")
    assert rewinds(decisions_of(LoopGuardStrategy(provider, 3, "tokens"), provider, *out, prompt=prompt)) == []
    guard = LoopGuardStrategy(provider, 3, "tokens", include_prompt=True)
    ((at, rewind),) = rewinds(decisions_of(guard, provider, *out, prompt=prompt))
    assert (at, rewind.position) == (2, 0)
    # " c a b c": "a b c" occurred only across the prompt's end (" a b" + " c"): not a repeat
    prompt = ids(provider, " a", " b")
    assert rewinds(decisions_of(guard, provider, " c", " a", " b", " c", prompt=prompt)) == []
    words_guard = LoopGuardStrategy(provider, 3, include_prompt=True)
    assert rewinds(decisions_of(words_guard, provider, " A", " b", ",", " c", ".", prompt=ids(provider, *out)))


def test_breakers_stop_a_repeat():
    provider = flat()
    texts = (" a", " b", "\n", " c", " d", " a", " b", "\n", " c")
    assert rewinds(decisions_of(LoopGuardStrategy(provider, 3), provider, *texts, " e"))
    for unit in ("words", "tokens"):
        guard = LoopGuardStrategy(provider, 3, unit, breakers=["\n"])
        assert rewinds(decisions_of(guard, provider, *texts, " e")) == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"min_length": 1}, "min_length must be an integer >= 2, got 1"),
        ({"min_length": 2.5}, "min_length must be an integer >= 2, got 2.5"),
        ({"unit": "chars"}, "unit must be one of words, tokens, got 'chars'"),
        ({"factor": 1}, "factor must be in [0, 1), got 1"),
        ({"factor": -0.1}, "factor must be in [0, 1), got -0.1"),
        ({"include_prompt": "yes"}, "include_prompt must be True or False, got 'yes'"),
        ({"breakers": "\n:"}, "breakers must be a list of single characters"),
    ],
)
def test_arguments_are_checked(kwargs, message):
    with pytest.raises((ValueError, TypeError), match=re.escape(message)):
        LoopGuardStrategy(flat(), **kwargs)


# -- on the engine -----------------------------------------------------------------------------------
def cycling(after_c: dict[str, float]):
    """Writes " a b c" and then wants to start over (" a": 5) or go on with ``after_c``; " d" ends the text."""
    table = {" a": {" b": 5.0}, " b": {" c": 5.0}, " c": {" a": 5.0, **after_c}, " d": {EOS: 5.0}}

    def rule(text: str) -> dict[str, float]:
        last = next((t for t in table if text.endswith(t)), None)
        return table.get(last, {" a": 5.0})

    return text_provider(VOCAB, rule)


def test_hard_ban_writes_something_else_and_streams_only_what_stays():
    provider = cycling({" d": 3.0})
    events = run(
        BacktrackSampler(provider, LoopGuardStrategy(provider, 3, "tokens")), " x", max_new_tokens=12, temperature=0
    )
    finish = events[-1]
    assert finish.text == " a b c d" and finish.reason == "eos"
    (rewind,) = of(events, RewindEvent)
    assert (rewind.position, rewind.suppressed_text, rewind.banned) == (3, " a b c", tuple(ids(provider, " a")))


def test_soft_ban_keeps_the_repeat_when_the_same_token_comes_back():
    provider = cycling({" d": 3.0})
    strong = LoopGuardStrategy(provider, 3, "tokens", factor=0.5)  # 5 + ln 0.5 > 3: " a" stays the best
    events = run(BacktrackSampler(provider, strong), " x", max_new_tokens=12, temperature=0)
    assert events[-1].text == " a b c" * 4
    (rewind,) = of(events, RewindEvent)  # once; then the repeat is kept however long it grows
    assert rewind.position == 3 and rewind.penalized == ((ids(provider, " a")[0], 0.5),) and not rewind.banned
    weak = LoopGuardStrategy(provider, 3, "tokens", factor=0.1)  # 5 + ln 0.1 < 3: " d" instead
    assert run(BacktrackSampler(provider, weak), " x", max_new_tokens=12, temperature=0)[-1].text == " a b c d"


def emitted_before_each_rewind(events: list) -> list[tuple[int, int]]:
    """(tokens emitted so far, rewind position) at each rewind."""
    emitted, pairs = 0, []
    for event in events:
        if isinstance(event, TextEvent):
            emitted += len(event.tokens)
        elif isinstance(event, RewindEvent):
            pairs.append((emitted, event.position))
    return pairs


@pytest.mark.parametrize("unit", ["words", "tokens"])
def test_holdback_emits_nothing_that_is_later_rewound(unit):
    provider = random_provider([EOS, " a", " b", " c", ",", "."], seed=3, eos_bias=-6.0)
    sampler = BacktrackSampler(provider, LoopGuardStrategy(provider, 3, unit))
    for seed in range(8):
        events = run(sampler, " a", max_new_tokens=40, seed=seed)
        assert all(emitted <= position for emitted, position in emitted_before_each_rewind(events))
        assert not [e for e in of(events, RewindRefusedEvent) if e.cause == "already_emitted"]
        assert len(of(events, TextEvent)) > 1  # it streams as it goes, not all at the end


def test_holdback_is_the_growing_repeat_and_an_unfinished_word():
    provider = flat()
    tokens = LoopGuardStrategy(provider, 3, "tokens")
    ctx, _ = feed(tokens, provider, ids(provider, " a", " b", " c", " d", " a", " b"))
    assert tokens.holdback(ctx) == 2  # " a b" occurred before and may grow to 3
    ctx, _ = feed(tokens, provider, ids(provider, " a", " b", " c", " d", " a", " e"))
    assert tokens.holdback(ctx) == 0
    words = LoopGuardStrategy(provider, 3)
    steps = [(" a", 1), (" b", 1), (" c", 1), (" a", 1), (" b", 2), (",", 3), (" e", 4), (".", 0)]
    for n in range(1, len(steps) + 1):
        ctx, _ = feed(words, provider, ids(provider, *(t for t, _ in steps[:n])))
        assert words.holdback(ctx) == steps[n - 1][1], steps[:n]


@given(
    st.lists(st.sampled_from(VOCAB[1:]), max_size=30),
    st.data(),
    st.sampled_from(["words", "tokens"]),
    st.booleans(),
)
@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow])
def test_on_rewind_leaves_the_state_a_fresh_reading_would_have(texts, data, unit, include_prompt):
    provider = flat()
    cut = data.draw(st.integers(0, len(texts)))
    more = data.draw(st.lists(st.sampled_from(VOCAB[1:]), min_size=1, max_size=10))
    prompt = ids(provider, " a", " b", ",")

    def read(strategy, sequence, rewind_at=None, then=()):
        strategy.reset()
        text = TokenText(provider.token_bytes)
        held: list[int] = []
        ctx = GenerationContext(provider, prompt, held, text, {})
        for token in ids(provider, *sequence):
            held.append(token)
            text.append(token)
            strategy.on_token(ctx, token)
        if rewind_at is not None:
            del held[rewind_at:]
            text.truncate(rewind_at)
            strategy.on_rewind(ctx, rewind_at)
            for token in ids(provider, *then):
                held.append(token)
                text.append(token)
                strategy.on_token(ctx, token)
        return strategy, ctx

    # min_length too long to fire: this compares the bookkeeping alone
    rewound, ctx = read(LoopGuardStrategy(provider, 50, unit, include_prompt), texts, cut, more)
    fresh, fresh_ctx = read(LoopGuardStrategy(provider, 50, unit, include_prompt), texts[:cut] + more)
    assert rewound.index.longest == fresh.index.longest and rewound.index.units == fresh.index.units
    assert (rewound._starts, rewound._ends, rewound._after) == (fresh._starts, fresh._ends, fresh._after)
    assert rewound.holdback(ctx) == fresh.holdback(fresh_ctx)


def test_it_ends_when_every_continuation_repeats():
    provider = random_provider([EOS, " a", " b"], seed=1, eos_bias=-math.inf)  # EOS cannot end it
    sampler = BacktrackSampler(provider, LoopGuardStrategy(provider, 2, "tokens"))
    for seed in range(3):
        events = run(sampler, " a", max_new_tokens=40, seed=seed)
        finish = events[-1]
        assert finish.reason == "length" and len(finish.tokens) == 40  # two tokens cannot avoid repeating
        assert finish.stats.rewinds_refused > 0 and finish.stats.rewinds <= RewindBudget().generation_limit(40)


def unit_list(text: str, unit: str, tokens: tuple[int, ...]) -> list:
    return words(text) if unit == "words" else list(tokens)


def repeated(units: list, n: int) -> bool:
    grams = [tuple(units[i : i + n]) for i in range(len(units) - n + 1)]
    return len(set(grams)) < len(grams)


@given(st.integers(0, 10_000), st.integers(2, 4), st.sampled_from(["words", "tokens"]))
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_no_repeat_survives_unless_a_rewind_was_refused(seed, min_length, unit):
    vocab = [EOS, " a", " b", " c", " d", " e", " f", ",", ".", "A", "b"]
    provider = random_provider(vocab, seed=seed, scale=2.5, eos_bias=-3.0)
    sampler = BacktrackSampler(provider, LoopGuardStrategy(provider, min_length, unit))
    finish = run(sampler, " a", max_new_tokens=30, seed=seed)[-1]
    if not finish.stats.rewinds_refused:
        assert not repeated(unit_list(finish.text, unit, finish.tokens), min_length), finish.text


# -- the registry, the command line, a server request, a batch line -------------------------------------
@pytest.mark.parametrize("name", ["loop_guard", "loop-guard", "Loop-Guard", "loopguard"])
def test_the_registry_builds_it_by_name(name):
    strategy = registry.build_strategy({"name": name, "params": {"min_length": 5, "unit": "tokens"}}, flat())
    assert isinstance(strategy, LoopGuardStrategy) and (strategy.min_length, strategy.unit) == (5, "tokens")


def test_it_chains_with_antislop_from_a_spec():
    chain = registry.build_strategy(
        [{"name": "antislop", "params": {"slops": ["d"]}}, {"name": "loop_guard", "params": {"min_length": 3}}], flat()
    )
    assert isinstance(chain, ChainStrategy)
    assert [type(s) for s in chain.strategies] == [AntiSlopStrategy, LoopGuardStrategy]
    with pytest.raises(
        registry.StrategySpecError, match=r"strategy\.params\.min_length: LoopGuardStrategy: min_length"
    ):
        registry.build_strategy({"name": "loop_guard", "params": {"min_length": 1}}, flat())


def test_antislop_and_loop_guard_together_on_the_engine():
    provider = cycling({" d": 3.0, " e": 2.0})
    chain = ChainStrategy([AntiSlopStrategy(provider, ["d"]), LoopGuardStrategy(provider, 3, "tokens")])
    events = run(BacktrackSampler(provider, chain), " x", max_new_tokens=12, temperature=0)
    text = events[-1].text
    assert not re.search(r"\bd\b", text) and not repeated(text.split(), 3)
    assert {e.strategy for e in of(events, RewindEvent)} == {"AntiSlopStrategy", "LoopGuardStrategy"}


def parse(*args: str):
    return cli.build_parser().parse_args(["generate", "prompt", *args])


def test_the_command_line_builds_it_with_its_flags_and_chains_bans():
    args = parse("--strategy", "loop-guard", "--loop-min-length", "6", "--loop-unit", "tokens", "--loop-factor", "0.5")
    strategy = cli.build_strategy(cli.strategy_names(args), args, flat())
    assert isinstance(strategy, LoopGuardStrategy)
    assert (strategy.min_length, strategy.unit, strategy.factor, strategy.include_prompt) == (6, "tokens", 0.5, False)
    args = parse("--strategy", "loop_guard", "--loop-include-prompt", "--ban", "x")
    chain = cli.build_strategy(cli.strategy_names(args), args, flat())
    assert isinstance(chain, ChainStrategy)
    guard, antislop = chain.strategies
    assert isinstance(guard, LoopGuardStrategy) and guard.include_prompt and guard.min_length == 4
    assert isinstance(antislop, AntiSlopStrategy) and antislop.slops == ["x"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--loop-min-length", "5"], "argument --loop-min-length: only applies to --strategy loop_guard"),
        (["--strategy", "creative", "--loop-factor", "0.5"], "argument --loop-factor: only applies"),
    ],
)
def test_loop_flags_need_the_strategy(args, message):
    with pytest.raises(cli.CliError, match=re.escape(message)):
        cli.strategy_names(parse(*args))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--loop-min-length", "1"], "must be an integer >= 2"),
        (["--loop-factor", "1"], "must be in [0, 1)"),
        (["--loop-unit", "chars"], "invalid choice"),
    ],
)
def test_loop_flag_values_are_checked(args, message):
    with pytest.raises(cli.CliError, match=re.escape(message)):
        parse("--strategy", "loop-guard", *args)


def test_a_server_request_and_a_batch_line_build_it_through_the_registry(tmp_path):
    pytest.importorskip("fastapi", reason="FastAPI is not installed (extra: server)")
    from backtrack_sampler.batch import BatchDefaults, run_batch
    from server_support import MODEL, scripted_client, scripted_provider

    body = {"model": MODEL, "prompt": "Hi", "max_tokens": 24, "temperature": 0}
    http = scripted_client()
    plain = http.post("/v1/completions", json=body).json()["choices"][0]["text"]
    spec = {"name": "loop-guard", "params": {"min_length": 3}}
    answer = http.post("/v1/completions", json={**body, "strategy": spec})
    assert answer.status_code == 200, answer.text
    guarded = answer.json()["choices"][0]["text"]
    provider = scripted_provider()
    expected = BacktrackSampler(provider, LoopGuardStrategy(provider, 3)).generate_text(
        "Hi", max_new_tokens=24, temperature=0
    )
    assert repeated(words(plain), 3) and guarded == expected.text and not repeated(words(guarded), 3)
    bad = http.post("/v1/completions", json={**body, "strategy": {"name": "loop_guard", "params": {"unit": "x"}}})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "strategy.params.unit"

    batch_provider = text_provider([EOS, " a", " b", " c", "."], lambda text: {" a": 3.0, " b": 2.0, " c": 1.0})
    batch_provider.apply_chat_template = functools.partial(BaseProvider.apply_chat_template, batch_provider)
    lines = [
        {"id": "plain", "prompt": " a", "temperature": 0},
        {"id": "guarded", "prompt": " a", "temperature": 0, "strategy": "loop-guard"},
        {
            "id": "chained",
            "prompt": " a",
            "temperature": 0,
            "strategy": {"name": "loop_guard"},
            "banned_strings": ["b"],
        },
    ]
    source, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    source.write_text("".join(json.dumps(line) + "\n" for line in lines))
    run_batch(source, out, [batch_provider], BatchDefaults(max_tokens=12, raw=True), progress=None)
    records = {r["id"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert all("error" not in r for r in records.values()), records
    texts = {name: r["text"] for name, r in records.items()}
    assert texts["plain"] == " a" * 12
    assert not repeated(words(texts["guarded"]), 4) and not repeated(words(texts["chained"]), 4)
    assert "b" not in words(texts["chained"])


# -- the embedded model ------------------------------------------------------------------------------
STORY = "Write a short story about a dog."  # the quick start's prompt


def story_prompt(provider) -> str:
    return provider.apply_chat_template([{"role": "user", "content": STORY}])


@pytest.mark.llamacpp
def test_the_quick_start_story_does_not_loop(provider):
    sampler = BacktrackSampler(provider, LoopGuardStrategy(provider))
    events = run(sampler, story_prompt(provider), max_new_tokens=400, temperature=1.0, top_k=50, seed=7)
    finish = check_stream(events)
    streamed = "".join(e.text for e in of(events, TextEvent))
    assert streamed == finish.text and not loops(finish.text)
    if not finish.stats.rewinds_refused:
        assert not repeated(words(finish.text), 4)
    assert all(emitted <= position for emitted, position in emitted_before_each_rewind(events))


@pytest.mark.llamacpp
def test_chained_with_antislop_no_banned_word_and_no_loop(provider):
    banned = ["dog", "Max", "wagged", "tail"]
    chain = ChainStrategy([AntiSlopStrategy(provider, banned), LoopGuardStrategy(provider)])
    events = run(BacktrackSampler(provider, chain), story_prompt(provider), max_new_tokens=300, temperature=0.8, seed=3)
    finish = check_stream(events)
    assert not {w.lower() for w in banned} & set(words(finish.text)), finish.text
    assert not loops(finish.text)
    assert any(e.strategy == "AntiSlopStrategy" for e in of(events, RewindEvent))


@pytest.mark.llamacpp
def test_the_command_line_runs_loop_guard(capsys):
    code = cli.main(
        ["generate", STORY, "--strategy", "loop-guard", "--loop-min-length", "3", "--max-new-tokens", "96"]
        + ["--seed", "2", "--show-rewinds", "--ban", "Max"]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    text = captured.out.rstrip("\n")
    assert text.strip() and "max" not in words(text)
    assert "finished (" in captured.err
    if "[rewind refused]" not in captured.err:
        assert not repeated(words(text), 3)


def test_batch_takes_the_hyphenated_name_too(tmp_path):
    from backtrack_sampler.cli.main import build_parser

    args = build_parser().parse_args(
        ["batch", str(tmp_path / "in.jsonl"), "-o", str(tmp_path / "out.jsonl"), "--strategy", "loop-guard"]
    )
    assert args.strategy == "loop_guard"


def test_the_package_exports_it():
    import backtrack_sampler

    assert backtrack_sampler.LoopGuardStrategy is LoopGuardStrategy
