"""DRY: the penalty equals llama.cpp's own DRY sampler's, on the real SmolLM2 vocabulary, bit for bit.

llama.cpp's ``llama_sampler_init_dry`` (through llama-cpp-python) is fed the same token history
(``llama_sampler_accept``) and applied to the same float32 logits as ``DryStrategy.adjust_logits``:
named histories (a repeat, breakers, a repeat across a breaker, a breaker of several tokens, a
repeat long enough to reach the exponent cap, ``penalty_last_n`` windows), then random histories over
a small set of SmolLM2 tokens. Then, with no weights, an exact case and a greedy loop on a scripted
vocabulary, the arguments, the registry and the command line; and on the embedded model, DRY shortens
the repeats of prompts that loop without it.
"""

from __future__ import annotations

import ctypes
import re

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from backtrack_sampler import BacktrackSampler, DryStrategy, GenerationContext, cli
from backtrack_sampler.core.token_text import TokenText
from backtrack_sampler.strategy import registry
from backtrack_sampler.strategy.dry_strategy import DEFAULT_SEQUENCE_BREAKERS, restart_sequences
from backtrack_sampler.strategy.repeat_index import RepeatIndex
from scripted import EOS, ids, make_ctx, text_provider

WHOLE = 4096  # what -1 ("the whole context") is handed to llama.cpp as: this build reads -1 as off
TOKEN_DATA = np.dtype([("id", np.int32), ("logit", np.float32), ("p", np.float32)])  # llama_token_data


@pytest.fixture(scope="module")
def smol(llm):
    """A provider on the embedded SmolLM2 (llama.cpp's DRY below is built on the same vocabulary)."""
    from backtrack_sampler.provider.llamacpp_provider import LlamacppProvider

    return LlamacppProvider(llm)


def llama_dry(provider, history, logits, multiplier, base=1.75, allowed_length=2, breakers=None, last_n=-1):
    """llama.cpp's DRY applied to ``logits`` (float32, the whole vocabulary) after accepting ``history``."""
    import llama_cpp

    breakers = DEFAULT_SEQUENCE_BREAKERS if breakers is None else breakers
    strings = (ctypes.c_char_p * len(breakers))(*(b.encode() for b in breakers))
    vocab = llama_cpp.llama_model_get_vocab(provider.llm.model)
    last_n = WHOLE if last_n == -1 else last_n
    args = (multiplier, base, allowed_length, last_n, strings, len(breakers))
    # llama.cpp added n_ctx_train after the vocabulary; llama-cpp-python 0.3.36's binding predates it.
    if len(llama_cpp.llama_sampler_init_dry.argtypes) == 8:
        args = (WHOLE, *args)
    sampler = llama_cpp.llama_sampler_init_dry(vocab, *args)
    try:
        for token in history:
            llama_cpp.llama_sampler_accept(sampler, int(token))
        data = np.zeros(len(logits), dtype=TOKEN_DATA)
        data["id"] = np.arange(len(logits))
        data["logit"] = logits
        array = llama_cpp.llama_token_data_array(
            data=data.ctypes.data_as(llama_cpp.llama_token_data_p), size=len(data), selected=-1, sorted=False
        )
        llama_cpp.llama_sampler_apply(sampler, ctypes.byref(array))
        assert array.size == len(logits) and (data["id"] == np.arange(len(logits))).all()
        return data["logit"].copy()
    finally:
        llama_cpp.llama_sampler_free(sampler)


def our_dry(provider, history, logits, multiplier, base=1.75, allowed_length=2, breakers=None, last_n=-1):
    """``DryStrategy.adjust_logits`` on a copy of ``logits``, ``history[:1]`` as the prompt and the rest generated."""
    breakers = DEFAULT_SEQUENCE_BREAKERS if breakers is None else breakers
    strategy = DryStrategy(multiplier, base, allowed_length, breakers, last_n)
    text = TokenText(provider.token_bytes)
    generated = [int(t) for t in history[1:]]
    for token in generated:
        text.append(token)
    ctx = GenerationContext(provider, [int(t) for t in history[:1]], generated, text, {})
    given = logits.copy()
    out = strategy.adjust_logits(ctx, given)
    assert out.dtype == np.float32 and out.shape == logits.shape
    return out


def random_logits(provider, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 3, provider.vocab_size).astype(np.float32)


def both(provider, history, **params):
    """(llama.cpp's logits, ours, the logits before) for the same history and random logits."""
    logits = random_logits(provider, len(history))
    return llama_dry(provider, history, logits, **params), our_dry(provider, history, logits, **params), logits


def one(provider, text: str) -> int:
    tokens = provider.encode(text, add_bos=False)
    assert len(tokens) == 1, f"{text!r} is {len(tokens)} tokens in SmolLM2"
    return tokens[0]


# -- named histories ------------------------------------------------------------------------------
@pytest.mark.llamacpp
def test_a_repeat_penalizes_the_token_that_would_continue_it(smol):
    history = smol.encode("The cat sat on the mat and the dog sat on the", add_bos=False)
    theirs, ours, before = both(smol, history, multiplier=0.8)
    np.testing.assert_array_equal(ours, theirs)
    # " sat on the" (3 tokens) was followed by " mat": the repeat would grow to 4, one over allowed_length 2.
    mat = one(smol, " mat")
    assert np.flatnonzero(ours != before).tolist() == [mat]
    assert before[mat] - ours[mat] == pytest.approx(0.8 * 1.75 ** (3 - 2))


@pytest.mark.llamacpp
def test_a_breaker_token_is_never_penalized_and_a_repeat_stops_at_the_last_breaker(smol):
    history = smol.encode("one two three four:\none two three four:\none two three", add_bos=False)
    theirs, ours, before = both(smol, history, multiplier=1.0)
    np.testing.assert_array_equal(ours, theirs)
    # The repeat " one two three" is cut at the last "\n": 3 tokens, so " four" loses 1.0 * 1.75 ** 1.
    four = one(smol, " four")
    assert np.flatnonzero(ours != before).tolist() == [four]
    assert before[four] - ours[four] == pytest.approx(1.75)
    # Right after a breaker, nothing is penalized (the run after it is shorter than allowed_length).
    theirs, ours, before = both(smol, history[:-2], multiplier=1.0)
    np.testing.assert_array_equal(ours, theirs)
    np.testing.assert_array_equal(ours, before)


@pytest.mark.llamacpp
def test_a_repeat_across_a_breaker_counts_only_after_it(smol):
    history = smol.encode('He said "one two three four" and "one two three', add_bos=False)
    for breakers in (None, ["\n"]):  # with '"' as a breaker, and without
        theirs, ours, before = both(smol, history, multiplier=0.8, breakers=breakers)
        np.testing.assert_array_equal(ours, theirs)
        assert ours[one(smol, " four")] < before[one(smol, " four")]


@pytest.mark.llamacpp
def test_a_breaker_of_several_tokens_restarts_through_its_head_and_tail(smol):
    # "cat sat" is " cat" + " sat" in SmolLM2: " cat" heads a breaker whose tail is " sat".
    restarts = restart_sequences(smol, ["cat sat"])
    assert (one(smol, " sat"),) in restarts.tails[one(smol, " cat")]
    history = smol.encode("the black cat sat on a red mat and the black cat sat on a red", add_bos=False)
    penalized = {}
    for breakers in (["cat sat"], ["\n"]):
        theirs, ours, before = both(smol, history, multiplier=0.8, allowed_length=1, breakers=breakers)
        np.testing.assert_array_equal(ours, theirs)
        penalized[breakers[0]] = before - ours
    mat = one(smol, " mat")
    assert 0 < penalized["cat sat"][mat] < penalized["\n"][mat]  # the breaker shortened the repeat


@pytest.mark.llamacpp
def test_a_long_loop_reaches_the_exponent_cap_and_stays_finite(smol):
    history = smol.encode(" a b c" * 120, add_bos=False)
    for base in (1.75, 3.0, 1.0):
        theirs, ours, before = both(smol, history, multiplier=0.8, base=base)
        np.testing.assert_array_equal(ours, theirs)
        a = one(smol, " a")
        assert np.isfinite(ours).all() and ours[a] < before[a]
    assert DryStrategy(0.8, base=1.75).max_exponent == 158 and DryStrategy(0.8, base=1.0).max_exponent == 0


@pytest.mark.llamacpp
@pytest.mark.parametrize("last_n", [1, 2, 3, 5, 8, 13, 40, -1, 0])
def test_penalty_last_n_windows(smol, last_n):
    history = smol.encode("the red fox ran far away and then the red fox ran", add_bos=False)
    theirs, ours, before = both(smol, history, multiplier=0.8, allowed_length=1, last_n=last_n)
    np.testing.assert_array_equal(ours, theirs)
    far = one(smol, " far")
    # The first " red fox ran" ends 7 tokens before the end: a window that reaches back past it penalizes " far".
    assert (ours[far] < before[far]) == (last_n == -1 or last_n >= 10)


@pytest.mark.llamacpp
def test_multiplier_zero_turns_it_off(smol):
    history = smol.encode(" a b c a b c a b", add_bos=False)
    _, ours, before = both(smol, history, multiplier=0.0)
    np.testing.assert_array_equal(ours, before)


# -- random histories -----------------------------------------------------------------------------
SUBSET = [" the", " cat", " sat", " on", " mat", ".", "\n", ":", '"', "*", " a", " red", "cat", " sat"]
BREAKER_LISTS = [list(DEFAULT_SEQUENCE_BREAKERS), ["\n"], ["cat sat", ":"], [" the mat", "*", "\n\n"]]


def histories() -> st.SearchStrategy[list[str]]:
    """Words of ``SUBSET``: a few phrases, strung together with repeats (so that runs repeat, long and short)."""
    phrase = st.lists(st.sampled_from(SUBSET), min_size=1, max_size=8)
    return st.lists(phrase, min_size=1, max_size=4).flatmap(
        lambda phrases: st.lists(st.sampled_from(phrases), min_size=1, max_size=25).map(
            lambda chosen: [word for p in chosen for word in p]
        )
    )


@pytest.mark.llamacpp
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    words=histories(),
    multiplier=st.sampled_from([0.8, 1.0, 2.5, 0.05]),
    base=st.floats(1.0, 4.0, width=32),
    allowed_length=st.integers(0, 4),
    breakers=st.sampled_from(BREAKER_LISTS),
    last_n=st.sampled_from([-1, 1, 3, 7, 16, 50]),
    seed=st.integers(0, 3),
)
def test_random_histories_equal_llama_cpp(smol, words, multiplier, base, allowed_length, breakers, last_n, seed):
    history = [token for word in words for token in smol.encode(word, add_bos=False)]
    logits = random_logits(smol, seed)
    params = {"multiplier": multiplier, "base": base, "allowed_length": allowed_length}
    theirs = llama_dry(smol, history, logits, breakers=breakers, last_n=last_n, **params)
    ours = our_dry(smol, history, logits, breakers=breakers, last_n=last_n, **params)
    np.testing.assert_array_equal(ours, theirs)
    event("penalized" if (ours != logits).any() else "unchanged")


# -- a scripted vocabulary (no weights) -----------------------------------------------------------
VOCAB = [EOS, " a", " b", " c", "\n", ":x"]


def scripted():
    return text_provider(VOCAB, lambda text: {" a": 1.0, " b": 0.9, " c": 0.8})


def test_an_exact_penalty_on_a_scripted_vocabulary_and_the_input_is_the_only_array_changed():
    provider = scripted()
    strategy = DryStrategy(0.8, allowed_length=1)
    ctx = make_ctx(provider, ids(provider, " a", " b", " c", " a", " b"), prompt=ids(provider, " a"))
    logits = np.zeros(len(VOCAB), dtype=np.float32)
    out = strategy.adjust_logits(ctx, logits)
    # " a b" (2 tokens, one over allowed_length 1) was followed by " c": 0.8 * 1.75 ** 1 off " c".
    assert out is logits and out.tolist() == pytest.approx([0, 0, 0, -1.4, 0, 0])
    # Right after a breaker token (":x" holds ":"), nothing; and ":x" itself is never penalized.
    ctx = make_ctx(provider, ids(provider, " a", ":x", " a", ":x"), prompt=ids(provider, " a"))
    assert (strategy.adjust_logits(ctx, np.zeros(len(VOCAB), dtype=np.float32)) == 0).all()


def test_greedy_decoding_loops_without_it_and_not_with_it():
    provider = scripted()
    plain = BacktrackSampler(provider).generate_text(ids(provider, " a"), max_new_tokens=24, temperature=0)
    dry = BacktrackSampler(provider, DryStrategy(0.8)).generate_text(
        ids(provider, " a"), max_new_tokens=24, temperature=0
    )
    assert longest_repeat(plain.tokens) == 23 and len(dry.tokens) == 24
    assert longest_repeat(dry.tokens) < 12, provider.decode(list(dry.tokens))


# -- arguments, the registry ----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"multiplier": -0.5}, "multiplier must be a finite number >= 0, got -0.5"),
        ({"multiplier": float("nan")}, "multiplier must be a finite number >= 0, got nan"),
        ({"multiplier": "0.8"}, "multiplier must be a finite number >= 0, got '0.8'"),
        ({"multiplier": 0.8, "base": 0.9}, "base must be a finite number >= 1, got 0.9"),
        ({"multiplier": 0.8, "allowed_length": -1}, "allowed_length must be an integer >= 0, got -1"),
        ({"multiplier": 0.8, "allowed_length": 2.5}, "allowed_length must be an integer >= 0, got 2.5"),
        ({"multiplier": 0.8, "penalty_last_n": -2}, "penalty_last_n must be an integer >= -1"),
        ({"multiplier": 0.8, "sequence_breakers": "\n"}, "sequence_breakers must be a list of non-empty strings"),
        ({"multiplier": 0.8, "sequence_breakers": ["\n", ""]}, "sequence_breakers must be a list of non-empty strings"),
        (
            {"multiplier": 0.8, "sequence_breakers": [1]},
            "sequence_breakers must be a list of non-empty strings, got [1]",
        ),
    ],
)
def test_arguments_are_checked(kwargs, message):
    with pytest.raises(ValueError) as caught:
        DryStrategy(**kwargs)
    assert message in str(caught.value)


def test_the_registry_builds_it_and_names_a_bad_value():
    smol = scripted()
    spec = {"name": "dry", "params": {"multiplier": 0.8, "sequence_breakers": ["\n"], "penalty_last_n": 64}}
    strategy = registry.build_strategy(spec, smol)
    assert isinstance(strategy, DryStrategy) and strategy.penalty_last_n == 64
    with pytest.raises(registry.StrategySpecError) as caught:
        registry.build_strategy({"name": "dry", "params": {"multiplier": 0.8, "base": 0.5}}, smol)
    assert caught.value.param == "strategy.params.base" and "0.5" in str(caught.value)


def parse(*args: str):
    return cli.build_parser().parse_args(["generate", "prompt", *args])


def test_the_command_line_builds_it_from_its_flags():
    smol = scripted()
    args = parse("--strategy", "dry")
    strategy = cli.build_strategy(cli.strategy_names(args), args, smol)
    assert isinstance(strategy, DryStrategy) and strategy.multiplier == np.float32(0.8)
    assert (strategy.base, strategy.allowed_length, strategy.penalty_last_n) == (np.float32(1.75), 2, -1)
    args = parse(
        "--strategy",
        "dry",
        "--dry-multiplier",
        "1.5",
        "--dry-base",
        "2",
        "--dry-allowed-length",
        "3",
        "--dry-sequence-breakers",
        '["\\n", "User:"]',
        "--dry-penalty-last-n",
        "64",
    )
    strategy = cli.build_strategy(cli.strategy_names(args), args, smol)
    assert (strategy.multiplier, strategy.base, strategy.allowed_length) == (1.5, 2.0, 3)
    assert strategy.sequence_breakers == ("\n", "User:") and strategy.penalty_last_n == 64


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--dry-base", "2"], "argument --dry-base: only applies to --strategy dry"),
        (["--strategy", "dry", "--dry-base", "0.5"], "must be >= 1, got '0.5'"),
        (["--strategy", "dry", "--dry-multiplier", "-1"], "must be >= 0, got '-1'"),
        (["--strategy", "dry", "--dry-penalty-last-n", "-2"], "must be an integer >= -1, got '-2'"),
        (["--strategy", "dry", "--dry-sequence-breakers", "\\n"], "must be a JSON list of non-empty strings"),
        (["--strategy", "dry", "--dry-sequence-breakers", '[""]'], "must be a JSON list of non-empty strings"),
    ],
)
def test_command_line_flags_are_checked(args, message):
    with pytest.raises(cli.CliError, match=re.escape(message)):
        cli.strategy_names(parse(*args))


# -- the embedded model ---------------------------------------------------------------------------
def longest_repeat(tokens) -> int:
    index = RepeatIndex()
    return max((index.append(token) for token in tokens), default=0)


def llama_greedy_with_dry(provider, prompt: list[int], n_tokens: int) -> list[int]:
    """Greedy decoding by llama.cpp's own sampler chain, DRY 0.8/1.75/2 then greedy, fed the prompt first."""
    import llama_cpp

    llm = provider.llm
    llm.reset()
    strings = (ctypes.c_char_p * len(DEFAULT_SEQUENCE_BREAKERS))(*(b.encode() for b in DEFAULT_SEQUENCE_BREAKERS))
    args = (0.8, 1.75, 2, WHOLE, strings, len(DEFAULT_SEQUENCE_BREAKERS))
    if len(llama_cpp.llama_sampler_init_dry.argtypes) == 8:
        args = (WHOLE, *args)
    chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
    llama_cpp.llama_sampler_chain_add(
        chain, llama_cpp.llama_sampler_init_dry(llama_cpp.llama_model_get_vocab(llm.model), *args)
    )
    llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_greedy())
    out: list[int] = []
    try:
        for token in prompt:
            llama_cpp.llama_sampler_accept(chain, token)
        llm.eval(prompt)
        while len(out) < n_tokens:
            token = llama_cpp.llama_sampler_sample(chain, llm.ctx, -1)
            if token in provider.eos_token_ids:
                break
            out.append(token)
            llm.eval([token])
    finally:
        llama_cpp.llama_sampler_free(chain)
    return out


@pytest.mark.llamacpp
def test_greedy_with_dry_is_llama_cpps_greedy_with_dry_and_shortens_the_repeats_of_prompts_that_loop(provider):
    # Which prompts loop greedily depends on the CPU's kernels (llama.cpp's rounding): the control run picks,
    # among prompts of which several loop on every kernel set seen (AVX2: 4 of 4, AVX only: 3 of 4), the first
    # two whose plain greedy run repeats a run of 20 tokens or more.
    candidates = [
        "Write a story about a lighthouse keeper who finds a message in a bottle.",
        "Write a poem about the sea.",
        "List the days of the week, again and again.",
        "Write a long story about a cat.",
    ]
    off, on = [], []
    for prompt in candidates:
        chat = provider.encode(provider.apply_chat_template([{"role": "user", "content": prompt}]))
        plain = BacktrackSampler(provider).generate_text(chat, max_new_tokens=160, temperature=0)
        if longest_repeat(plain.tokens) < 20:
            continue
        dry = BacktrackSampler(provider, DryStrategy(0.8)).generate_text(chat, max_new_tokens=160, temperature=0)
        assert dry.stats.rewinds == 0
        assert list(dry.tokens) == llama_greedy_with_dry(provider, chat, 160)  # token for token
        off.append(longest_repeat(plain.tokens))
        on.append(longest_repeat(dry.tokens))
        if len(off) == 2:
            break
    assert len(off) == 2, f"fewer than 2 of {len(candidates)} prompts looped in the control run: {off}"
    assert sum(on) < sum(off), (on, off)
