"""Saved KV states: the store's bounds, and restores on the real model that skip the prefill."""

from __future__ import annotations

import numpy as np
import pytest

from backtrack_sampler.provider.base_provider import BaseProvider
from backtrack_sampler.provider.kv_snapshots import MIN_GAIN, KVSnapshots, common_prefix
from backtrack_sampler.provider.scripted_provider import ScriptedProvider


def test_common_prefix():
    assert common_prefix([1, 2, 3], [1, 2, 4, 5]) == 2
    assert common_prefix([], [1]) == 0
    assert common_prefix([1, 2], [1, 2]) == 2


def test_the_best_state_shares_the_longest_prefix_and_extensions_replace_their_prefix():
    store = KVSnapshots(4)
    store.add([1, 2, 3], "a", 10)
    store.add([1, 2, 3, 4, 5], "b", 10)  # extends "a": "a" goes
    store.add([7, 8], "c", 10)
    assert len(store) == 2
    snapshot, shared = store.best([1, 2, 3, 4, 9])
    assert snapshot.blob == "b" and shared == 4
    assert store.covers([1, 2, 3]) and not store.covers([1, 2, 3, 4, 5, 6])


def test_the_oldest_go_first_when_count_or_bytes_run_out():
    store = KVSnapshots(2, max_bytes=25)
    store.add([1], "a", 10)
    store.add([2], "b", 10)
    used = store.best([1])[0]
    store.discard(used)
    store.keep(used)  # "a" is now the most recent
    store.add([3], "c", 10)
    assert sorted(s.blob for s in store._items) == ["a", "c"]
    store.add([4], "d", 20)  # 30 bytes with "c": only "d" fits
    assert [s.blob for s in store._items] == ["d"]
    store.add([5], "e", 99)  # larger than the budget alone
    assert len(store) == 0


@pytest.mark.parametrize("bad", [{"max_count": 0}, {"max_count": 2, "max_bytes": 0}])
def test_bad_bounds_are_named(bad):
    with pytest.raises(ValueError, match=next(iter(k for k, v in bad.items() if v == 0))):
        KVSnapshots(**bad)


class _NoState(ScriptedProvider):
    _save_state = BaseProvider._save_state


def test_a_backend_that_cannot_save_its_state_says_so():
    with pytest.raises(NotImplementedError, match="_NoState cannot save"):
        _NoState(["a", "b", "<eos>"], lambda tokens: [0.0, 0.0, 0.0], eos_token_id=2).keep_snapshots(4)


def _provider(keep: int | None) -> ScriptedProvider:
    vocab = [*"abcdefghij", "<eos>"]
    provider = ScriptedProvider(vocab, lambda tokens: np.arange(len(vocab), dtype=float) * (len(tokens) % 3), 10)
    if keep:
        provider.keep_snapshots(keep)
    return provider


def test_sequences_taking_turns_are_evaluated_once_each():
    a, b, c = ([i % 10 for i in range(start, start + 40)] for start in (0, 3, 7))
    plain, saving = _provider(None), _provider(3)
    for p in (plain, saving):
        for prompt in (a, b, a + [1], b + [2], c, a + [1, 5]):
            expected = p.next_logits(prompt)
            np.testing.assert_array_equal(p.prefill(prompt), expected)
    assert saving.positions_evaluated == 3 * 40 + 1 + 1 + 1  # each prompt once, then only what is new
    assert plain.positions_evaluated > 5 * 40
    assert saving.snapshots.restores == 3
    assert len(saving.snapshots) == 3  # a+[1], b+[2], c: each extension replaced its prefix


@pytest.mark.llamacpp
def test_turns_between_two_sequences_restore_instead_of_prefilling(smollm_path):
    from backtrack_sampler.models import load_llama
    from backtrack_sampler.provider.llamacpp_provider import LlamacppProvider

    plain = LlamacppProvider(load_llama(smollm_path, n_ctx=512))
    saving = LlamacppProvider(load_llama(smollm_path, n_ctx=512))
    saving.keep_snapshots(4)
    a = saving.encode("The lighthouse keeper climbed the stairs every night, counting the steps as he went. " * 2)
    b = saving.encode("A recipe for bread: flour, water, salt and yeast, mixed and left to rise for hours. " * 2)
    assert len(a) > MIN_GAIN and len(b) > MIN_GAIN

    for p in (plain, saving):
        p.prefill(a)
        p.prefill(b)
    evaluated = saving.positions_evaluated
    a_more = [*a, *saving.encode(" He", add_bos=False)]
    logits = saving.prefill(a_more)
    assert saving.snapshots.restores == 1
    assert saving.positions_evaluated - evaluated == len(a_more) - len(a)  # only the new token
    expected = plain.prefill(a_more)  # a plain provider re-evaluates the whole prompt
    assert int(np.argmax(logits)) == int(np.argmax(expected))
    np.testing.assert_allclose(logits, expected, atol=0.05)

    # Generation goes on from the restored state exactly as from a fresh prefill.
    from backtrack_sampler import BacktrackSampler

    ours = BacktrackSampler(saving).generate_text(b, max_new_tokens=24, temperature=0)
    ref = BacktrackSampler(plain).generate_text(b, max_new_tokens=24, temperature=0)
    assert saving.snapshots.restores == 2
    assert ours.tokens == ref.tokens


def test_the_least_recently_used_sequence_is_prefilled_again():
    a, b, c = ([i % 10 for i in range(start, start + 40)] for start in (0, 3, 7))
    saving = _provider(2)
    for prompt in (a, b, c, a + [1]):  # leaving c saves it and drops a, the oldest
        saving.prefill(prompt)
    assert saving.positions_evaluated == 3 * 40 + 41 and saving.snapshots.restores == 0


class _RefusesStates(ScriptedProvider):
    def _load_state(self, blob: object, tokens) -> None:
        raise RuntimeError("refused")


def test_a_state_the_backend_refuses_is_dropped_and_the_prompt_evaluated_in_full():
    vocab = [*"abcdefghij", "<eos>"]
    provider = _RefusesStates(vocab, lambda tokens: np.arange(len(vocab), dtype=float) * (len(tokens) % 3), 10)
    provider.keep_snapshots(4)
    a, b = [i % 10 for i in range(40)], [(i + 5) % 10 for i in range(40)]
    provider.prefill(a)
    provider.prefill(b)
    np.testing.assert_array_equal(provider.prefill(a + [1]), provider.next_logits(a + [1]))
    assert provider.positions_evaluated == 40 + 40 + 41 and provider.snapshots.restores == 0
    assert not any(s.tokens == tuple(a) for s in provider.snapshots._items)
