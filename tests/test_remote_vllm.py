"""OpenAICompatibleProvider against a real vLLM (CPU build) serving the embedded model.

Needs the venv of ``scripts/setup_vllm.sh`` (``.vllm-venv/`` at the repository
root, or ``$BACKTRACK_VLLM_PYTHON``); skipped without it. vLLM serves the HF
export of the embedded GGUF in float32; the tests compare with vLLM's own
completions, never with our Q4 model.
"""

from __future__ import annotations

import pytest

from remote_checks import (
    banned_phrase_pattern,
    chat_prompt,
    check_antislop_leaves_no_banned_phrase,
    check_full_logits_strategy_is_refused,
    generate,
    words_of,
)
from remote_servers import VLLM_MODEL_NAME, token_ids, vllm_completion, vllm_for_module, vllm_provider

pytestmark = pytest.mark.vllm

MAX_NEW = 48


@pytest.fixture(scope="module")
def vllm_url(smollm_path):
    with vllm_for_module() as url:
        yield url


@pytest.fixture(scope="module")
def remote(vllm_url, smollm_path):
    with vllm_provider(vllm_url, smollm_path, chunk_size=16) as provider:
        yield provider


def vllm_greedy(url: str, prompt: list[int], max_tokens: int) -> list[int]:
    """vLLM's own greedy completion, in one request; EOS dropped as the sampler drops it."""
    choice = vllm_completion(url, prompt, max_tokens)
    tokens = token_ids(choice)
    return tokens[:-1] if choice["finish_reason"] == "stop" else tokens


def test_the_served_context_length_is_read(remote):
    assert remote.context_length == 2048 and remote.vocab_size == 49152


@pytest.mark.parametrize("mode", ["chunk", "step"])
def test_greedy_equals_vllms_own_greedy(remote, vllm_url, mode):
    remote.mode = mode
    expected = vllm_greedy(vllm_url, remote.encode(chat_prompt(remote)), MAX_NEW)
    requests = remote.requests
    finish = generate(remote, max_new_tokens=MAX_NEW)
    assert list(finish.tokens) == expected
    assert finish.text == remote.decode(expected)
    sent = remote.requests - requests
    assert sent == len(finish.tokens) if mode == "step" else sent <= -(-MAX_NEW // remote.chunk_size)


@pytest.mark.parametrize("mode", ["chunk", "step"])
def test_antislop_leaves_no_banned_phrase(remote, mode):
    remote.mode = mode
    greedy = generate(remote, max_new_tokens=MAX_NEW)
    phrases = words_of(greedy.text, 3)
    check_antislop_leaves_no_banned_phrase(remote, phrases, max_new_tokens=MAX_NEW)
    sampled = {"temperature": 0.8, "seed": 5, "expect_rewinds": False}
    check_antislop_leaves_no_banned_phrase(remote, phrases, max_new_tokens=MAX_NEW, **sampled)


def test_a_banned_token_is_skipped_by_logit_bias(remote):
    from backtrack_sampler.core.base_provider import GenerationSetup

    prompt = remote.encode(chat_prompt(remote))
    remote.begin_generation(GenerationSetup(remote_sampling=True, max_length=len(prompt) + 4))
    logits = remote.prefill(prompt)
    ranked = [int(t) for t in logits.argsort()[::-1][:3]]
    assert remote.propose(prompt, frozenset()) == ranked[0]
    # Greedy under a bias of -100 on the best token: the second best (its logprob is the raw one).
    assert remote.propose(prompt, frozenset(ranked[:1])) == ranked[1]
    assert remote.propose(prompt, frozenset(ranked[:2])) == ranked[2]


def test_the_probe_finds_no_plugin_and_bans_go_through_logit_bias(remote, vllm_url, smollm_path):
    """This server has no logits processor of ours: vLLM ignores vllm_xargs, the probe says so."""
    from backtrack_sampler.provider.remote import OpenAICompatibleProvider

    with OpenAICompatibleProvider(vllm_url, VLLM_MODEL_NAME, tokenizer=remote.tokenizer) as provider:
        assert provider.uses_position_bans(remote.encode(chat_prompt(remote))) is False
        assert provider.position_rules.probe_requests == 2 and provider.requests == 0


def test_a_strategy_needing_full_logits_is_refused(remote):
    check_full_logits_strategy_is_refused(remote)


def test_concurrent_generations(remote):
    from backtrack_sampler import AntiSlopStrategy, BacktrackSampler
    from backtrack_sampler.async_sampler import run_concurrently

    remote.mode = "auto"
    phrases = ["dragon", "library"]

    def make_sampler():
        provider = remote.spawn()
        return BacktrackSampler(provider, AntiSlopStrategy(provider, phrases))

    prompts = [chat_prompt(remote)] * 4
    results = run_concurrently(make_sampler, prompts, concurrency=4, max_new_tokens=32, temperature=0.8, seed=1)
    for result in results:
        assert not isinstance(result, BaseException), result
        assert result.tokens and not banned_phrase_pattern(phrases).search(result.text), result.text
