"""Position-scoped bans for remote engines, without vLLM: the wire format, the logit edits, the probe, the provider.

The provider runs against the fake engine of test_openai_compatible_provider
(a scripted model behind httpx.MockTransport) which, with ``plugin=True``,
applies ``vllm_xargs`` as vLLM does with ``backtrack_sampler.vllm_plugin``.
The real vLLM runs in tests/test_remote_vllm_plugin.py.
"""

from __future__ import annotations

import json
import math
import re
import threading

import pytest

from backtrack_sampler import AntiSlopStrategy
from backtrack_sampler.core.base_provider import GenerationSetup
from backtrack_sampler.provider.remote import RemoteError
from backtrack_sampler.provider.remote.capability import PositionRulesSupport
from backtrack_sampler.provider.remote.position_rules import (
    BANS_KEY,
    MAX_ENTRIES,
    MAX_POSITION,
    PENALTIES_KEY,
    PositionRules,
    logit_edits,
)
from test_openai_compatible_provider import FakeEngine, generate, local_model, remote

# -- the wire format -----------------------------------------------------------------------------------------


def test_rules_round_trip_through_vllm_xargs():
    rules = PositionRules(bans={0: frozenset({5, 3}), 4: frozenset({1})}, penalties={2: {7: 0.25, 1: 1.0}})
    xargs = rules.to_xargs()
    assert xargs == {BANS_KEY: '{"0":[3,5],"4":[1]}', PENALTIES_KEY: '{"2":{"1":1.0,"7":0.25}}'}
    assert all(isinstance(v, str) for v in xargs.values())  # vLLM takes only strings and numbers
    assert PositionRules.from_xargs(xargs) == rules
    assert rules and rules.last_position == 4


def test_no_rules_send_nothing_and_other_keys_are_ignored():
    assert PositionRules().to_xargs() == {}
    assert PositionRules(bans={3: frozenset()}).to_xargs() == {}
    for extra in (None, {}, {"session_id": "x", "other": 3}):
        rules = PositionRules.from_xargs(extra)
        assert not rules and rules.last_position == -1


@pytest.mark.parametrize(
    ("xargs", "message"),
    [
        ({BANS_KEY: {"0": [1]}}, re.escape("backtrack_bans must be a JSON string, got {'0': [1]}")),
        ({BANS_KEY: "{0: [1]}"}, re.escape("backtrack_bans must be valid JSON, got '{0: [1]}'")),
        ({BANS_KEY: "[1, 2]"}, re.escape("backtrack_bans must be a JSON object of positions, got '[1, 2]'")),
        ({BANS_KEY: '{"-1": [1]}'}, r"backtrack_bans: positions must be integers in \[0, 1048576\], got '-1'"),
        ({BANS_KEY: '{"x": [1]}'}, "positions must be integers .*, got 'x'"),
        ({BANS_KEY: json.dumps({str(MAX_POSITION + 1): [1]})}, "positions must be integers"),
        ({BANS_KEY: '{"0": 1}'}, r"backtrack_bans\['0'\] must be a list of token ids, got 1"),
        ({BANS_KEY: '{"0": [-2]}'}, r"backtrack_bans\['0'\]: token ids must be integers >= 0, got -2"),
        ({BANS_KEY: '{"0": [true]}'}, "token ids must be integers >= 0, got True"),
        ({BANS_KEY: '{"0": [1.5]}'}, "token ids must be integers >= 0, got 1.5"),
        ({PENALTIES_KEY: '{"0": [1]}'}, r"backtrack_penalties\['0'\] must be an object \{token id: factor\}"),
        ({PENALTIES_KEY: '{"0": {"1": 0}}'}, r"factors must be numbers in \(0, 1\], got 0"),
        ({PENALTIES_KEY: '{"0": {"1": 1.5}}'}, "factors must be numbers in .*, got 1.5"),
        ({PENALTIES_KEY: '{"0": {"1": NaN}}'}, "factors must be numbers in .*, got nan"),
        ({PENALTIES_KEY: '{"0": {"a": 0.5}}'}, "token ids must be integers >= 0, got 'a'"),
        ({BANS_KEY: json.dumps({"0": list(range(MAX_ENTRIES + 1))})}, f"at most {MAX_ENTRIES} tokens together"),
    ],
)
def test_bad_rules_are_refused_naming_the_key_and_the_value(xargs, message):
    with pytest.raises(ValueError, match=message):
        PositionRules.from_xargs(xargs)


def test_logit_edits_apply_each_rows_rules_at_its_own_position():
    rules = PositionRules(bans={0: frozenset({3, 99}), 1: frozenset({4})}, penalties={1: {2: 0.5}, 2: {6: 0.1}})
    rows = {0: (rules, []), 3: (rules, [7]), 5: (rules, [7, 7]), 6: (rules, [7, 7, 7])}
    ban_rows, ban_tokens, penalty_rows, penalty_tokens, penalty_logs = logit_edits(rows, vocab_size=10)
    assert sorted(zip(ban_rows, ban_tokens, strict=True)) == [(0, 3), (3, 4)]  # 99 is outside the vocabulary
    assert list(zip(penalty_rows, penalty_tokens, strict=True)) == [(3, 2), (5, 6)]
    assert penalty_logs == pytest.approx([math.log(0.5), math.log(0.1)])
    assert logit_edits({}, 10) == ([], [], [], [], [])


# -- the probe -----------------------------------------------------------------------------------------------


class FakeServer:
    """Answers the probe's greedy requests: tokens [1, 2] after the prompt, under the rules if ``applies``."""

    def __init__(self, applies: bool = True, status: int | None = None, first: tuple[int, ...] = (1, 2)) -> None:
        self.applies, self.status, self.first = applies, status, first
        self.asked: list[tuple[list[int], int, PositionRules | None]] = []

    def ask(self, prompt, max_tokens, rules):
        self.asked.append((list(prompt), max_tokens, rules))
        if self.status is not None and rules is not None:
            raise RemoteError("refused", self.status)
        tokens = list(self.first[:max_tokens])
        if self.applies and rules is not None:
            tokens = [t + 10 if t in rules.bans.get(i, ()) else t for i, t in enumerate(tokens)]
        return tokens


@pytest.mark.parametrize(
    ("server", "expected"),
    [
        (FakeServer(applies=True), True),
        (FakeServer(applies=False), False),  # vLLM without the plugin ignores vllm_xargs
        (FakeServer(status=400), False),  # a server that refuses the field
        (FakeServer(first=(1,)), False),  # the model ended at once: nothing to ban at position 1
    ],
)
def test_the_probe_bans_the_second_greedy_token_and_looks(server, expected):
    support = PositionRulesSupport("auto")
    assert support.known is None
    assert support.check([9, 9], server.ask) is expected
    assert support.check([9, 9], server.ask) is expected and support.known is expected  # asked once
    assert len(server.asked) == support.probe_requests <= 2
    assert server.asked[0] == ([9, 9], 2, None)
    if len(server.asked) == 2:
        assert server.asked[1][2] == PositionRules(bans={1: frozenset({server.first[1]})})


def test_the_probe_is_not_fooled_by_a_ban_on_every_position():
    class LogitBias(FakeServer):  # what logit_bias does: the banned token is gone everywhere
        def ask(self, prompt, max_tokens, rules):
            self.asked.append((list(prompt), max_tokens, rules))
            banned = set().union(*rules.bans.values()) if rules else set()
            return [t + 10 if t in banned else t for t in self.first[:max_tokens]]

    assert PositionRulesSupport("auto").check([9], LogitBias(first=(2, 2)).ask) is False


def test_a_server_error_during_the_probe_is_raised_and_asked_again_later():
    support = PositionRulesSupport("auto")
    with pytest.raises(RemoteError):
        support.check([9], FakeServer(status=503).ask)
    assert support.known is None and support.check([9], FakeServer().ask) is True


def test_a_setting_skips_the_probe():
    server = FakeServer()
    assert PositionRulesSupport(True).check([9], server.ask) is True
    assert PositionRulesSupport(False).check([9], server.ask) is False
    assert not server.asked


@pytest.mark.parametrize("setting", [1, 0, "yes", None])
def test_a_bad_setting_is_named(setting):
    with pytest.raises(ValueError, match=re.escape(f"position_bans must be True, False or 'auto', got {setting!r}")):
        PositionRulesSupport(setting)


def test_concurrent_checks_probe_once():
    server, support = FakeServer(), PositionRulesSupport("auto")
    answers = []
    threads = [threading.Thread(target=lambda: answers.append(support.check([9], server.ask))) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert answers == [True] * 8 and len(server.asked) == 2


# -- the provider ------------------------------------------------------------------------------------------

BANS = ["ab ab"]


def antislop(provider):
    return generate(provider, AntiSlopStrategy(provider, BANS))


def split(bodies):
    """The probe's requests (greedy, two tokens, not streamed) and the others."""
    probe = [b for b in bodies if not b.get("stream") and b["max_tokens"] == 2 and b["temperature"] == 0]
    return probe, [b for b in bodies if b not in probe]


def test_with_the_plugin_the_bans_ride_in_the_next_chunk_one_request_per_rewind():
    expected = antislop(local_model())
    engine = FakeEngine(plugin=True)
    provider = remote(engine, mode="chunk", chunk_size=50)  # one chunk holds the whole text
    got = antislop(provider)
    assert got.text == expected.text and got.stats.rewinds == expected.stats.rewinds > 0
    assert not re.search(r"\bab ab\b", got.text)
    assert provider.position_rules.known is True and provider.position_rules.probe_requests == 2
    assert provider.requests == 1 + got.stats.rewinds
    probe, chunks = split(engine.bodies)
    assert len(probe) == 2 and len(chunks) == 1 + got.stats.rewinds
    assert not any("logit_bias" in b for b in engine.bodies)
    carrying = [b for b in chunks if "vllm_xargs" in b]
    assert len(carrying) == got.stats.rewinds and all(b["max_tokens"] > 1 for b in carrying)
    assert all(set(json.loads(b["vllm_xargs"][BANS_KEY])) == {"0"} for b in carrying)  # the first position only


def test_without_the_plugin_a_rewind_costs_a_one_token_request_too():
    engine = FakeEngine(plugin=False)
    provider = remote(engine, mode="chunk", chunk_size=50)
    got = antislop(provider)
    assert got.stats.rewinds > 0 and not re.search(r"\bab ab\b", got.text)
    assert provider.position_rules.known is False and provider.position_rules.probe_requests == 2
    assert provider.requests == 1 + 2 * got.stats.rewinds
    probe, sent = split(engine.bodies)
    assert len(probe) == 2 and not any("vllm_xargs" in b for b in sent)
    assert sum(b["max_tokens"] == 1 and "logit_bias" in b for b in sent) == got.stats.rewinds


def test_position_bans_false_never_probes():
    engine = FakeEngine(plugin=True)
    provider = remote(engine, mode="chunk", chunk_size=50, position_bans=False)
    got = antislop(provider)
    assert got.stats.rewinds > 0 and provider.position_rules.probe_requests == 0
    assert not any("vllm_xargs" in b for b in engine.bodies)


def test_a_server_that_ignores_the_bans_cannot_leak_them():
    engine = FakeEngine(plugin=False)
    provider = remote(engine, mode="chunk", chunk_size=50, position_bans=True)  # wrongly told it has the plugin
    got = antislop(provider)
    assert got.text == antislop(local_model()).text and not re.search(r"\bab ab\b", got.text)


def test_step_mode_sends_the_bans_as_rules_too():
    engine = FakeEngine(plugin=True)
    provider = remote(engine, mode="step", position_bans=True)
    got = antislop(provider)
    assert got.text == antislop(local_model()).text and got.stats.rewinds > 0
    # One request per position: the prompt's, each evaluated one, and each rewound one (under its bans).
    assert provider.requests == 1 + got.stats.positions_evaluated + got.stats.rewinds
    assert all(b["max_tokens"] == 1 for b in engine.bodies) and not any("logit_bias" in b for b in engine.bodies)


def test_spawned_providers_share_the_probe():
    engine = FakeEngine(plugin=True)
    provider = remote(engine, mode="chunk", chunk_size=50)
    other = provider.spawn()
    antislop(other)
    antislop(provider)
    assert provider.position_rules is other.position_rules and other.position_rules.probe_requests == 2


def test_the_fake_engine_refuses_bad_rules_like_vllm():
    engine = FakeEngine(plugin=True)
    provider = remote(engine, mode="step")
    body = {"model": "fake", "prompt": [1], "max_tokens": 1, "logprobs": 1, "vllm_xargs": {BANS_KEY: "{"}}
    with pytest.raises(RemoteError, match="backtrack_bans must be valid JSON") as caught:
        provider._post(body, stream=False)
    assert caught.value.status == 400


def test_penalties_go_to_a_server_with_the_plugin_and_stay_local_without_it():
    engine = FakeEngine(plugin=True)
    provider = remote(engine, mode="chunk", chunk_size=8, position_bans=True)
    prompt = provider.encode("ab")
    provider.begin_generation(GenerationSetup(remote_sampling=True, max_length=len(prompt) + 8))
    provider.prefill(prompt)
    best = provider.propose(prompt, frozenset())
    assert best == provider.encode(" ", add_bos=False)[0]  # after "b": " " 3.0, "b" 2.5, "d" 1.0
    # A factor of 1e-6 on the best token: the second best wins there.
    second = provider.propose(prompt, frozenset(), {best: math.log(1e-6)})
    assert second == provider.encode("b", add_bos=False)[0]
    body = engine.bodies[-1]
    assert json.loads(body["vllm_xargs"][PENALTIES_KEY]) == {"0": {str(best): pytest.approx(1e-6)}}
    # A mild factor (0.9: a logit 0.1 lower, still above 2.5) leaves it the best.
    assert provider.propose(prompt, frozenset(), {best: math.log(0.9)}) == best
    # Without the plugin: no request, the engine samples that position locally.
    provider.position_rules = PositionRulesSupport(False)
    sent = len(engine.bodies)
    assert provider.propose(prompt, frozenset(), {best: math.log(1e-6)}) is None and len(engine.bodies) == sent


def test_soft_bans_are_sampled_remotely_with_the_plugin():
    soft = [("ab ab", 1e-6)]
    expected = generate(local_model(), AntiSlopStrategy(local_model(), soft))
    engine = FakeEngine(plugin=True)
    provider = remote(engine, mode="chunk", chunk_size=50, position_bans=True)
    got = generate(provider, AntiSlopStrategy(provider, soft))
    assert got.text == expected.text and got.stats.rewinds > 0
    carrying = [b for b in engine.bodies if "vllm_xargs" in b]
    assert len(carrying) == got.stats.rewinds and all(PENALTIES_KEY in b["vllm_xargs"] for b in carrying)
    assert provider.requests == 1 + got.stats.rewinds
