"""The vLLM logits processor ``backtrack_sampler.vllm_plugin:PositionBans`` in a real vLLM (CPU build).

One vLLM server, started by this module with ``--logits-processors`` and
this checkout's ``src/`` on its PYTHONPATH, serves every test here (the venv of
``scripts/setup_vllm.sh``; skipped without it). Greedy runs in float32, so
vLLM's own greedy completion is the reference token for token.
"""

from __future__ import annotations

import json
import threading

import httpx
import pytest

from remote_checks import (
    banned_phrase_pattern,
    chat_prompt,
    check_antislop_leaves_no_banned_phrase,
    generate,
    words_of,
)
from remote_servers import VLLM_MODEL_NAME, token_ids, vllm_completion, vllm_for_module, vllm_provider

pytestmark = pytest.mark.vllm

MAX_NEW = 48


@pytest.fixture(scope="module")
def plugin_url(smollm_path):
    with vllm_for_module(plugin=True) as url:
        yield url


@pytest.fixture(scope="module")
def remote(plugin_url, smollm_path):
    with vllm_provider(plugin_url, smollm_path, chunk_size=64) as provider:
        yield provider


@pytest.fixture(scope="module")
def prompt(remote) -> list[int]:
    return remote.encode(chat_prompt(remote))


def complete(url: str, prompt: list[int], max_tokens: int, xargs: dict | None = None, **fields) -> list[int]:
    """vLLM's greedy completion in one request (EOS kept), with ``vllm_xargs`` when given."""
    return token_ids(vllm_completion(url, prompt, max_tokens, xargs, **fields))


def bans(rules: dict[int, list[int]]) -> dict[str, str]:
    return {"backtrack_bans": json.dumps({str(p): t for p, t in rules.items()})}


@pytest.fixture(scope="module")
def greedy(plugin_url, prompt) -> list[int]:
    return complete(plugin_url, prompt, MAX_NEW)


def test_the_probe_finds_the_plugin(remote, prompt):
    assert remote.position_rules.known is None
    assert remote.uses_position_bans(prompt) is True
    assert remote.position_rules.probe_requests == 2


def test_greedy_with_the_plugin_and_nothing_banned_is_vllms_own(remote, plugin_url, prompt, greedy):
    remote.mode = "chunk"
    finish = generate(remote, max_new_tokens=MAX_NEW)
    expected = greedy[:-1] if greedy[-1] in remote.eos_token_ids else greedy
    assert list(finish.tokens) == expected[:MAX_NEW]
    # Rules at positions the request never reaches change nothing either.
    assert complete(plugin_url, prompt, MAX_NEW, bans({MAX_NEW + 5: [greedy[0]]})) == greedy


def test_a_ban_holds_at_its_position_only(plugin_url, prompt, greedy):
    p = next(i for i in range(4, MAX_NEW - 2) if greedy[i] != greedy[i + 1])
    # The greedy token at p, banned at p: another token there, the same tokens before.
    changed = complete(plugin_url, prompt, p + 2, bans({p: [greedy[p]]}))
    assert changed[:p] == greedy[:p] and changed[p] != greedy[p]
    # The greedy token of p + 1, banned at p (where it is not chosen anyway): still chosen at p + 1.
    assert complete(plugin_url, prompt, p + 2, bans({p: [greedy[p + 1]]})) == greedy[: p + 2]
    # logit_bias, by contrast, bans it at every position: p + 1 changes.
    biased = complete(plugin_url, prompt, p + 2, logit_bias={str(greedy[p + 1]): -100})
    assert biased[p + 1] != greedy[p + 1]


def test_rules_at_several_positions_in_one_request(plugin_url, prompt, greedy):
    first = complete(plugin_url, prompt, 6, bans({1: [greedy[1]]}))
    assert first[0] == greedy[0] and first[1] != greedy[1]
    both = complete(plugin_url, prompt, 6, bans({1: [greedy[1]], 3: [first[3]]}))
    assert both[:3] == first[:3] and both[3] != first[3]


def test_a_penalty_scales_one_position(plugin_url, prompt, greedy):
    penalties = {"backtrack_penalties": json.dumps({"2": {str(greedy[2]): 1e-9}})}
    scaled = complete(plugin_url, prompt, 4, penalties)
    assert scaled[:2] == greedy[:2] and scaled[2] != greedy[2]
    mild = {"backtrack_penalties": json.dumps({"2": {str(greedy[2]): 1.0}})}
    assert complete(plugin_url, prompt, 4, mild) == greedy[:4]


def test_bad_rules_are_a_400_naming_the_key_and_the_engine_goes_on(plugin_url, prompt, greedy):
    body = {"model": VLLM_MODEL_NAME, "prompt": prompt, "max_tokens": 2, "vllm_xargs": {"backtrack_bans": "{"}}
    response = httpx.post(plugin_url + "/completions", json=body, timeout=120)
    assert response.status_code == 400 and "backtrack_bans must be valid JSON" in response.text
    assert complete(plugin_url, prompt, 4) == greedy[:4]


def test_concurrent_requests_keep_their_own_rules(plugin_url, prompt, greedy):
    """Rows join, leave and move in vLLM's batch: each request's bans stay with it."""
    jobs = [(f"ban at {i}", bans({i: [greedy[i]]}), 8 + i) for i in range(6)]
    jobs += [("plain", None, 7), ("plain, longer", None, 12)]
    results: dict = {}

    def run(name, xargs, length):
        results[name] = complete(plugin_url, prompt, length, xargs)

    threads = [threading.Thread(target=run, args=job) for job in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for i in range(6):
        got = results[f"ban at {i}"]
        assert got[:i] == greedy[:i] and got[i] != greedy[i], (i, got, greedy)
    assert results["plain"] == greedy[:7] and results["plain, longer"] == greedy[:12]


@pytest.mark.parametrize("mode", ["chunk", "step"])
def test_antislop_leaves_no_banned_phrase(remote, mode):
    remote.mode = mode
    greedy_text = generate(remote, max_new_tokens=MAX_NEW).text
    phrases = words_of(greedy_text, 3)
    check_antislop_leaves_no_banned_phrase(remote, phrases, max_new_tokens=MAX_NEW)
    sampled = {"temperature": 0.8, "seed": 5, "expect_rewinds": False}
    check_antislop_leaves_no_banned_phrase(remote, phrases, max_new_tokens=MAX_NEW, **sampled)


def test_one_request_per_rewind(remote, smollm_path, plugin_url):
    """With the plugin: the first chunk and one per rewind. Without (logit_bias): one more per rewind."""
    from backtrack_sampler import AntiSlopStrategy, BacktrackSampler
    from backtrack_sampler.provider.remote import OpenAICompatibleProvider

    remote.mode = "chunk"
    phrases = words_of(generate(remote, max_new_tokens=MAX_NEW).text, 3)
    counts = {}
    for setting in (True, False):
        with OpenAICompatibleProvider(
            plugin_url, VLLM_MODEL_NAME, tokenizer=remote.tokenizer, mode="chunk", position_bans=setting
        ) as provider:
            sampler = BacktrackSampler(provider, AntiSlopStrategy(provider, phrases))
            result = sampler.generate_text(chat_prompt(provider), max_new_tokens=MAX_NEW, temperature=0)
            assert result.stats.rewinds > 0 and not banned_phrase_pattern(phrases).search(result.text)
            assert provider.position_rules.probe_requests == 0
            counts[setting] = (provider.requests, result.stats.rewinds, result.text)
    requests, rewinds, text = counts[True]
    assert requests == 1 + rewinds
    assert counts[False] == (1 + 2 * rewinds, rewinds, text)  # the same text, one request more per rewind


def test_soft_bans_run_in_chunk_mode(remote):
    from backtrack_sampler import AntiSlopStrategy

    remote.mode = "auto"
    phrases = words_of(generate(remote, max_new_tokens=MAX_NEW).text, 2)
    strategy = AntiSlopStrategy(remote, [(p, 0.01) for p in phrases])
    requests = remote.requests
    finish = generate(remote, strategy, max_new_tokens=MAX_NEW)
    # Each soft-banned position is sampled by the engine from the top-k it already has; the chunk after it
    # is the rewind's one request.
    assert finish.stats.rewinds > 0 and remote.chunked
    assert remote.requests - requests == 1 + finish.stats.rewinds
