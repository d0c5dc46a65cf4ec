"""Exact tests of the engine's hook for providers that sample by themselves (remote engines)."""

from __future__ import annotations

import numpy as np

from backtrack_sampler import BacktrackSampler, BaseStrategy, ChainStrategy, Continue, Rewind
from backtrack_sampler.provider.base_provider import GenerationSetup
from scripted import EOS, Scripted, check_stream, ids, text_provider

VOCAB = [EOS, "a", "b", "c", "."]


class ProposingProvider:
    """Wraps a scripted provider: logits favour "a", but the "remote" engine proposes from a script."""

    def __new__(cls, proposals):
        provider = text_provider(VOCAB, lambda text: {"a": 5.0, "b": 1.0, "c": 0.0})
        provider.proposes_tokens = True
        provider.setups, provider.calls = [], []
        script = iter(proposals)

        def begin_generation(setup: GenerationSetup) -> None:
            provider.setups.append(setup)

        def propose(prefix, banned, penalties=None):
            provider.calls.append((list(prefix), set(banned)))
            if penalties:
                return None  # like a remote engine that cannot apply them
            token = next(script, None)
            return None if token is None else provider.vocab.index(token)

        provider.begin_generation, provider.propose = begin_generation, propose
        return provider


class RejectFirstAt(BaseStrategy):
    """Rewinds once to position ``at``, banning the token there; leaves the logits alone."""

    def __init__(self, at: int) -> None:
        self.at, self.done = at, False

    def on_token(self, ctx, token):
        if not self.done and len(ctx.tokens) == self.at + 1:
            self.done = True
            return Rewind(self.at, ban=(token,), reason="test")
        return Continue()


def test_the_engine_takes_the_proposed_tokens():
    provider = ProposingProvider(["b", "c", "b"])
    finish = check_stream(list(BacktrackSampler(provider).stream("a", max_new_tokens=3, temperature=0)))
    assert finish.text == "bcb"  # greedy would give "aaa": the proposals won
    prompt = provider.encode("a")
    assert [prefix for prefix, _ in provider.calls] == [
        prompt,
        prompt + ids(provider, "b"),
        prompt + ids(provider, "b", "c"),
    ]
    assert all(not banned for _, banned in provider.calls)
    (setup,) = provider.setups
    assert setup.remote_sampling and setup.max_length == len(prompt) + 3 and setup.params.temperature == 0


def test_bans_at_the_position_are_passed_to_propose():
    provider = ProposingProvider(["b", "b", "c"])
    sampler = BacktrackSampler(provider, RejectFirstAt(1))
    finish = check_stream(list(sampler.stream("a", max_new_tokens=2, temperature=0)))
    assert finish.text == "bc"
    assert [banned for _, banned in provider.calls] == [set(), set(), set(ids(provider, "b"))]
    assert provider.setups[0].remote_sampling


def test_a_strategy_that_adjusts_logits_keeps_sampling_local():
    provider = ProposingProvider(["b", "b", "b"])
    strategy = Scripted(adjust=lambda ctx, logits: logits)
    for chosen in (strategy, ChainStrategy([RejectFirstAt(5), strategy])):
        provider.setups.clear()
        finish = check_stream(list(BacktrackSampler(provider, chosen).stream("a", max_new_tokens=3, temperature=0)))
        assert finish.text == "aaa" and not provider.calls
        assert not provider.setups[0].remote_sampling


def test_no_proposal_falls_back_to_local_sampling():
    provider = ProposingProvider(["c"])  # then None: sample locally
    finish = check_stream(list(BacktrackSampler(provider).stream("a", max_new_tokens=3, temperature=0)))
    assert finish.text == "caa"


def test_local_providers_are_never_asked():
    provider = text_provider(VOCAB, lambda text: {"a": 5.0})
    assert provider.propose([1], frozenset()) is None and not provider.proposes_tokens
    setup = GenerationSetup()
    assert setup.params.temperature == 0 and not setup.remote_sampling and isinstance(setup.rng, np.random.Generator)
    assert BaseStrategy().adjusts_logits is False and RejectFirstAt(0).adjusts_logits is False
    assert Scripted().adjusts_logits is True
