"""sample_token and SamplingParams: greedy, temperature, top_k, top_p, min_p."""

from __future__ import annotations

import numpy as np
import pytest

from backtrack_sampler import SamplingParams
from backtrack_sampler.core.sampling import sample_token, softmax

LOGITS = np.log(np.array([0.1, 0.5, 0.05, 0.3, 0.05], dtype=np.float32))  # ranks: 1, 3, 0, then 2 and 4


def frequencies(logits, n=5000, seed=0, **params) -> np.ndarray:
    rng = np.random.default_rng(seed)
    settings = SamplingParams(**{"top_k": 0, **params})
    counts = np.bincount([sample_token(logits, settings, rng) for _ in range(n)], minlength=len(logits))
    return counts / n


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"temperature": -0.5}, r"temperature.*-0\.5"),
        ({"temperature": float("inf")}, r"temperature.*inf"),
        ({"temperature": True}, "temperature"),
        ({"top_k": -1}, r"top_k.*-1"),
        ({"top_k": 2.0}, r"top_k.*2\.0"),
        ({"top_p": 0.0}, r"top_p.*0\.0"),
        ({"top_p": 1.01}, r"top_p.*1\.01"),
        ({"min_p": -0.1}, r"min_p.*-0\.1"),
        ({"min_p": 1}, r"min_p.*1"),
    ],
)
def test_params_validation(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        SamplingParams(**kwargs)


def test_params_boundaries_are_accepted():
    SamplingParams(temperature=0, top_k=0, top_p=1.0, min_p=0.0)
    SamplingParams(top_k=np.int64(3), top_p=1e-9, min_p=0.999)


def test_softmax_gives_zero_to_minus_inf():
    probs = softmax(np.array([0.0, -np.inf, np.log(3.0)]))
    np.testing.assert_allclose(probs, [0.25, 0.0, 0.75])


def test_greedy_is_the_argmax_and_ignores_the_rng():
    rng = np.random.default_rng(0)
    state = rng.bit_generator.state
    assert sample_token(LOGITS, SamplingParams(temperature=0, top_k=0), rng) == 1
    assert sample_token(np.array([-np.inf, 2.0, 7.0, -np.inf]), SamplingParams(temperature=0), rng) == 2
    assert rng.bit_generator.state == state


def test_the_input_is_not_modified():
    logits = LOGITS.copy()
    sample_token(logits, SamplingParams(temperature=0.7, top_k=2, top_p=0.9, min_p=0.1), np.random.default_rng(0))
    np.testing.assert_array_equal(logits, LOGITS)


def test_frequencies_follow_the_softmax():
    np.testing.assert_allclose(frequencies(LOGITS), [0.1, 0.5, 0.05, 0.3, 0.05], atol=0.02)


def test_temperature_divides_the_logits():
    expected = softmax(LOGITS.astype(np.float64) / 0.5)
    np.testing.assert_allclose(frequencies(LOGITS, temperature=0.5), expected, atol=0.02)
    flat = frequencies(LOGITS, temperature=50.0)
    assert flat.min() > 0.15


def test_top_k_keeps_the_k_best():
    np.testing.assert_allclose(frequencies(LOGITS, top_k=2), [0, 0.5 / 0.8, 0, 0.3 / 0.8, 0], atol=0.02)
    assert set(np.flatnonzero(frequencies(LOGITS, n=500, top_k=1))) == {1}
    assert np.count_nonzero(frequencies(LOGITS, top_k=0)) == 5


@pytest.mark.parametrize(("top_p", "kept"), [(0.4, {1}), (0.6, {1, 3}), (0.79, {1, 3}), (0.85, {1, 3, 0})])
def test_top_p_keeps_the_smallest_set_reaching_the_mass(top_p, kept):
    freq = frequencies(LOGITS, top_p=top_p)
    assert set(np.flatnonzero(freq)) == kept
    probs = np.array([0.1, 0.5, 0.05, 0.3, 0.05])
    expected = np.where([i in kept for i in range(5)], probs, 0) / sum(probs[i] for i in kept)
    np.testing.assert_allclose(freq, expected, atol=0.02)


@pytest.mark.parametrize(("min_p", "kept"), [(0.5, {1, 3}), (0.15, {1, 3, 0}), (0.61, {1}), (0.0, {0, 1, 2, 3, 4})])
def test_min_p_drops_tokens_below_a_fraction_of_the_best(min_p, kept):
    assert set(np.flatnonzero(frequencies(LOGITS, min_p=min_p))) == kept


def test_filters_apply_in_order():
    # top_k=3 keeps {1, 3, 0}; renormalized 0.5/0.9, 0.3/0.9, 0.1/0.9; top_p=0.8 then needs {1, 3}
    assert set(np.flatnonzero(frequencies(LOGITS, top_k=3, top_p=0.8))) == {1, 3}
    assert set(np.flatnonzero(frequencies(LOGITS, top_k=3, min_p=0.19))) == {1, 3, 0}


def test_minus_inf_is_never_sampled():
    logits = np.array([-np.inf, 0.0, -np.inf, 0.0, -np.inf], dtype=np.float32)
    assert set(np.flatnonzero(frequencies(logits, n=2000))) == {1, 3}
    assert set(np.flatnonzero(frequencies(logits, n=2000, top_k=4, temperature=3.0))) == {1, 3}
    assert set(np.flatnonzero(frequencies(np.array([-np.inf, 1.0]), n=50, top_k=1))) == {1}


def test_the_same_rng_seed_gives_the_same_draws():
    draws = [frequencies(LOGITS, n=200, seed=s, temperature=1.3) for s in (4, 4, 5)]
    np.testing.assert_array_equal(draws[0], draws[1])
    assert not np.array_equal(draws[0], draws[2])


@pytest.mark.filterwarnings("ignore:overflow encountered")
def test_a_tiny_temperature_behaves_like_greedy():  # logits / 1e-307 overflow to inf
    logits = np.array([0.0, 1.0, 100.0], dtype=np.float32)
    rng = np.random.default_rng(0)
    assert sample_token(logits, SamplingParams(temperature=1e-3), rng) == 2
    assert sample_token(logits, SamplingParams(temperature=1e-307), rng) == 2


def reference_top_p(logits, params, rng):
    """The full-sort sampling that sample_token replaced (stable sort and softmax of every candidate)."""
    candidates = np.arange(logits.shape[0])
    scores = logits.astype(np.float64)
    finite = np.isfinite(scores)
    candidates, scores = candidates[finite], scores[finite]
    if params.top_p is not None:  # only the nucleus needs the candidates in order
        order = np.argsort(-scores, kind="stable")
        candidates, scores = candidates[order], scores[order]
    probs = np.exp((scores - np.max(scores)) / params.temperature)
    probs /= probs.sum()
    if params.top_p is not None:
        keep = min(probs.shape[0], int(np.searchsorted(np.cumsum(probs), params.top_p)) + 1)
        candidates, probs = candidates[:keep], probs[:keep]
    if params.min_p:
        kept = probs >= params.min_p * np.max(probs)
        candidates, probs = candidates[kept], probs[kept]
    by_id = np.argsort(candidates)  # the draw walks the kept candidates in token-id order
    candidates, probs = candidates[by_id], probs[by_id]
    cumulative = np.cumsum(probs)
    draw = rng.random() * cumulative[-1]
    return int(candidates[min(int(np.searchsorted(cumulative, draw, side="right")), probs.shape[0] - 1)])


@pytest.mark.parametrize(
    "params",
    [
        SamplingParams(temperature=0.8, top_k=0, top_p=0.9),
        SamplingParams(temperature=0.8, top_k=3),
        SamplingParams(temperature=1.0, top_k=0, top_p=0.95, min_p=0.05),
    ],
    ids=["top_p", "top_k", "top_p+min_p"],
)
def test_rounding_that_reorders_near_tied_logits_changes_no_draw(params):
    # Two tokens tied at the top; another CPU's kernels (or a batched decode) may round one of them up.
    logits = np.array([0.5, 2.0, -1.0, 2.0, 1.0, -3.0], dtype=np.float32)
    rounded = logits.copy()
    rounded[3] += 1e-5
    for seed in range(300):
        draws = [sample_token(x, params, np.random.default_rng(seed)) for x in (logits, rounded)]
        assert draws[0] == draws[1], (seed, draws)


@pytest.mark.parametrize("vocab", [7, 300, 49152])
def test_top_p_without_a_full_sort_draws_what_the_full_sort_draws(vocab):
    rng = np.random.default_rng(vocab)
    for trial in range(150):
        logits = (rng.standard_normal(vocab) * rng.choice([0.3, 2.0, 6.0])).astype(np.float32)
        if trial % 3 == 0:
            logits = np.round(logits)  # ties at the nucleus boundary
        if trial % 4 == 0:
            logits[rng.integers(0, vocab, size=vocab // 3)] = -np.inf
        params = SamplingParams(
            temperature=float(rng.choice([0.2, 0.8, 1.3])),
            top_k=0,
            top_p=float(rng.choice([0.05, 0.5, 0.9, 0.999])),
            min_p=[None, 0.05][trial % 2],
        )
        seed = int(rng.integers(1 << 30))
        expected = reference_top_p(logits, params, np.random.default_rng(seed))
        assert sample_token(logits, params, np.random.default_rng(seed)) == expected


@pytest.mark.parametrize("vocab", [7, 49152])
def test_min_p_filtered_before_the_softmax_draws_what_the_full_softmax_draws(vocab):
    rng = np.random.default_rng(vocab + 1)
    for trial in range(150):
        logits = (rng.standard_normal(vocab) * rng.choice([0.3, 2.0, 6.0])).astype(np.float32)
        if trial % 3 == 0:
            logits = np.round(logits)
        params = SamplingParams(
            temperature=float(rng.choice([0.2, 0.8, 1.3])), top_k=0, min_p=float(rng.choice([0.01, 0.1, 0.6]))
        )
        seed = int(rng.integers(1 << 30))
        expected = reference_top_p(logits, params, np.random.default_rng(seed))
        assert sample_token(logits, params, np.random.default_rng(seed)) == expected
