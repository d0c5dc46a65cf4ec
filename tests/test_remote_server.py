"""OpenAICompatibleProvider against our own server (``create_app`` under uvicorn on 127.0.0.1).

The server runs the embedded model through llama.cpp, so the remote provider
must give exactly what the local LlamacppProvider gives on the same model.
"""

from __future__ import annotations

import pytest

from near_tie import greedy_parting
from remote_checks import (
    banned_phrase_pattern,
    check_antislop_leaves_no_banned_phrase,
    check_full_logits_strategy_is_refused,
    generate,
    words_of,
)
from remote_servers import our_server

pytestmark = pytest.mark.llamacpp

MAX_NEW = 48


@pytest.fixture(scope="module")
def server_url(smollm_path):
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (extra: llamacpp)")
    pytest.importorskip("uvicorn", reason="the server needs the extra: server")
    from backtrack_sampler.models import load_llama
    from backtrack_sampler.provider.llamacpp_provider import LlamacppProvider

    # A model of its own: the tests' local provider must not share the server's KV cache.
    served = LlamacppProvider(load_llama(smollm_path, n_ctx=2048))
    served.keep_snapshots(16)  # as `backtrack-sampler serve` does by default
    with our_server(served, "smollm2") as url:
        yield url


@pytest.fixture()
def remote(server_url, smollm_path):
    pytest.importorskip("httpx", reason="the remote provider needs httpx (extra: remote)")
    from backtrack_sampler.provider.remote import OpenAICompatibleProvider

    with OpenAICompatibleProvider(server_url, "smollm2", tokenizer=smollm_path, chunk_size=16) as provider:
        yield provider


@pytest.mark.parametrize("mode", ["chunk", "step"])
def test_greedy_equals_the_local_provider(remote, provider, mode):
    remote.mode = mode
    expected = generate(provider, max_new_tokens=MAX_NEW)
    got = generate(remote, max_new_tokens=MAX_NEW)
    assert got.tokens == expected.tokens and got.text == expected.text and got.reason == expected.reason
    if mode == "step":
        assert remote.requests == len(got.tokens) + (got.reason == "eos")
    else:
        assert remote.requests <= -(-MAX_NEW // remote.chunk_size)


@pytest.mark.parametrize("mode", ["chunk", "step"])
def test_antislop_leaves_no_banned_phrase(remote, provider, mode):
    remote.mode = mode
    phrases = words_of(generate(provider, max_new_tokens=MAX_NEW).text, 3)
    check_antislop_leaves_no_banned_phrase(remote, phrases, max_new_tokens=MAX_NEW)
    sampled = {"temperature": 0.8, "seed": 3, "expect_rewinds": False}
    check_antislop_leaves_no_banned_phrase(remote, phrases, max_new_tokens=MAX_NEW, **sampled)


def test_antislop_in_chunk_mode_equals_the_local_provider_when_greedy(remote, provider):
    from backtrack_sampler import AntiSlopStrategy

    remote.mode = "chunk"
    phrases = words_of(generate(provider, max_new_tokens=MAX_NEW).text, 3)
    expected = generate(provider, AntiSlopStrategy(provider, phrases), max_new_tokens=MAX_NEW)
    got = generate(remote, AntiSlopStrategy(remote, phrases), max_new_tokens=MAX_NEW)
    # Banned positions are sampled by the server under logit_bias: the same argmax as the local ban.
    assert got.text == expected.text and got.stats.rewinds == expected.stats.rewinds > 0


def test_a_strategy_needing_full_logits_is_refused(remote):
    check_full_logits_strategy_is_refused(remote)


def test_concurrent_generations_in_flight(remote):
    from backtrack_sampler import AntiSlopStrategy, BacktrackSampler
    from backtrack_sampler.async_sampler import run_concurrently

    phrases = ["dragon", "library"]

    def make_sampler():
        spawned = remote.spawn()
        return BacktrackSampler(spawned, AntiSlopStrategy(spawned, phrases))

    topics = ["a dragon", "a library", "a cat", "the sea"]
    prompts = [remote.apply_chat_template([{"role": "user", "content": f"Write about {t}."}]) for t in topics]
    results = run_concurrently(make_sampler, prompts, concurrency=4, max_new_tokens=24, temperature=0.7, seed=1)
    for result in results:
        assert not isinstance(result, BaseException), result
        assert result.tokens and result.finish_reason in ("eos", "length")
        assert not banned_phrase_pattern(phrases).search(result.text), result.text


def test_sequences_taking_turns_on_the_server_each_equal_the_local_greedy(remote, provider):
    """Step mode with 4 sequences in flight: the server switches KV states at every request."""
    from backtrack_sampler import BacktrackSampler
    from backtrack_sampler.async_sampler import run_concurrently

    remote.mode = "step"
    topics = ["a lighthouse", "a lost key", "the first snow", "a night train"]
    prompts = [remote.apply_chat_template([{"role": "user", "content": f"Write about {t}."}]) for t in topics]
    results = run_concurrently(
        lambda: BacktrackSampler(remote.spawn()), prompts, concurrency=4, max_new_tokens=16, temperature=0
    )
    for prompt, result in zip(prompts, results, strict=True):
        assert not isinstance(result, BaseException), result
        expected = BacktrackSampler(provider).generate_text(prompt, max_new_tokens=16, temperature=0)
        # Re-evaluated after each switch, a position may round otherwise: equal up to a near-tie, if they part.
        greedy_parting(provider, provider.encode(prompt), expected.tokens, result.tokens, prompt[-40:])
