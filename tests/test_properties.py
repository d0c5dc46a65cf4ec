"""Property tests: random vocabularies, logits tables, phrases, bans, budgets, seeds and temperatures."""

from __future__ import annotations

import codecs

from hypothesis import given, settings
from hypothesis import strategies as st

from backtrack_sampler import (
    AntiSlopStrategy,
    BacktrackSampler,
    ChainStrategy,
    Continue,
    ReplaceStrategy,
    Rewind,
    RewindEvent,
    RewindRefusedEvent,
    TextEvent,
)
from hypothesis_strategies import budgets, phrases, sampling, vocabs
from scripted import EOS, BytesProvider, Scripted, check_stream, of, random_provider

ALPHABET = "abA "
SETTINGS = settings(max_examples=150, deadline=None)

VOCABS = vocabs(ALPHABET, max_extra=6)
PHRASES = phrases("ab ")
SAMPLING = sampling(temperatures=[0, 0.3, 1.0, 2.5], top_ks=[0, 3, 50])


def counted(strategy):
    """Chain ``strategy`` with a counter of on_token calls (one per token appended)."""
    counter = Scripted()
    return ChainStrategy([strategy, counter]), counter


def check_accounting(events, counter, provider, budget, max_new_tokens, longest):
    finish = check_stream(events)
    stats = finish.stats
    assert finish.text == provider.decode(finish.tokens)
    assert len(finish.tokens) <= max_new_tokens
    assert stats.rewinds <= budget.per_generation
    # every token appended is kept, rewound, or the EOS
    appended = counter.calls
    assert appended == len(finish.tokens) + stats.tokens_rewound + (finish.reason == "eos")
    assert appended <= max_new_tokens + 1 + budget.per_generation * longest
    # a token is fed to the model unless it is the latest one when a rewind or the end comes
    assert stats.positions_evaluated == appended - stats.rewinds - (appended > 0)
    assert provider.eval_count - stats.prompt_tokens == stats.positions_evaluated
    return finish


@SETTINGS
@given(VOCABS, PHRASES, budgets, SAMPLING, st.integers(0, 2**16), st.floats(0.5, 4.0))
def test_antislop_runs(vocab, slops, budget, kwargs, table, scale):
    provider = random_provider(vocab, seed=table, scale=scale, eos_bias=-3)
    strategy, counter = counted(AntiSlopStrategy(provider, slops, whole_words=False))
    sampler = BacktrackSampler(provider, strategy, budget)
    events = list(sampler.stream([1], **kwargs))
    finish = check_accounting(events, counter, provider, budget, kwargs["max_new_tokens"], max(map(len, slops)))
    refusals = of(events, RewindRefusedEvent)
    assert "already_emitted" not in {r.cause for r in refusals}  # holdback() covers every possible match
    if not refusals:
        assert not any(s.lower() in finish.text.lower() for s in slops)
    again = sampler.generate_text([1], **kwargs)  # same seed, same sampler: same generation
    assert (again.tokens, again.rewinds, again.refusals) == (
        finish.tokens,
        tuple(of(events, RewindEvent)),
        tuple(refusals),
    )


@SETTINGS
@given(VOCABS, PHRASES, st.text(ALPHABET, max_size=4), budgets, SAMPLING, st.integers(0, 2**16))
def test_antislop_and_replace_runs(vocab, slops, replacement, budget, kwargs, table):
    provider = random_provider(vocab, seed=table, eos_bias=-3)
    find = slops[0]
    chain = ChainStrategy(
        [
            AntiSlopStrategy(provider, slops[1:], whole_words=False),
            ReplaceStrategy(provider, find, replacement, max_replacements=3),
        ]
    )
    strategy, counter = counted(chain)
    events = list(BacktrackSampler(provider, strategy, budget).stream([1], **kwargs))
    longest = max(len(s) for s in slops) + len(replacement)
    finish = check_stream(events)
    assert len(finish.tokens) <= kwargs["max_new_tokens"]
    assert counter.calls == len(finish.tokens) + finish.stats.tokens_rewound + (finish.reason == "eos")
    assert counter.calls <= kwargs["max_new_tokens"] + 1 + budget.per_generation * (longest + 4)


class BanPlan(Scripted):
    """Rewinds by a random plan and checks that the bans in force are honoured."""

    def __init__(self, plan, n_vocab):
        super().__init__(holdback=max((p[0] for p in plan if p), default=0))
        self.plan, self.n_vocab = plan, n_vocab

    def reset(self):
        self.step, self.bans, self.asked = 0, {}, None

    def on_token(self, ctx, token):
        self.calls += 1
        position = len(ctx.tokens) - 1
        in_force = self.bans.get(position, set())
        if not ctx.forced and len(in_force) < self.n_vocab:
            assert token not in in_force
        item = self.plan[self.step] if self.step < len(self.plan) else None
        self.step += 1
        if item is None:
            return Continue()
        depth, ban = item
        self.asked = Rewind(max(ctx.committed, len(ctx.tokens) - depth), ban=ban)
        return self.asked

    def on_rewind(self, ctx, position):
        self.bans = {p: b for p, b in self.bans.items() if p <= position}
        self.bans.setdefault(position, set()).update(self.asked.ban)


@SETTINGS
@given(
    st.integers(2, 6).flatmap(
        lambda n: st.tuples(
            st.just(n),
            st.lists(st.none() | st.tuples(st.integers(1, 3), st.sets(st.integers(0, n - 1)).map(tuple)), max_size=40),
        )
    ),
    budgets,
    SAMPLING,
    st.integers(0, 2**16),
)
def test_bans_hold_while_the_prefix_is_unchanged(plan_and_n, budget, kwargs, table):
    n, plan = plan_and_n
    vocab = [EOS, *"abcdef"[: n - 1]]
    provider = random_provider(vocab, seed=table, eos_bias=-3)
    strategy = BanPlan(plan, n)
    events = list(BacktrackSampler(provider, strategy, budget).stream([1], **kwargs))
    finish = check_stream(events)
    assert strategy.calls == len(finish.tokens) + finish.stats.tokens_rewound + (finish.reason == "eos")
    assert "already_emitted" not in {r.cause for r in of(events, RewindRefusedEvent)}


UTF8_PIECES = [b"", b"a", b" ", b"\xc3", b"\xa9", b"\xe2\x82", b"\xac", b"\xe2", b"\x82\xac", b"\xf0\x9f\x98", b"\x80"]


@SETTINGS
@given(PHRASES, budgets, SAMPLING, st.integers(0, 2**16))
def test_streamed_text_is_the_incremental_decoding(slops, budget, kwargs, table):
    base = random_provider([EOS, *map(bytes.hex, UTF8_PIECES[1:])], seed=table)
    provider = BytesProvider(UTF8_PIECES, base.next_logits)
    slops = [s.replace("b", "é").replace(" ", "€") for s in slops]
    events = list(
        BacktrackSampler(provider, AntiSlopStrategy(provider, slops, whole_words=False), budget).stream([1], **kwargs)
    )
    finish = check_stream(events)
    raw = b"".join(UTF8_PIECES[t] for t in finish.tokens)
    # up to the last complete character: the bytes of one the last token leaves unfinished are dropped
    assert finish.text == codecs.getincrementaldecoder("utf-8")("replace").decode(raw)
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    for event in of(events, TextEvent):
        assert event.text == decoder.decode(b"".join(UTF8_PIECES[t] for t in event.tokens))
    refusals = of(events, RewindRefusedEvent)
    assert "already_emitted" not in {r.cause for r in refusals}
    if not refusals:
        assert not any(s.lower() in finish.text.lower() for s in slops)
