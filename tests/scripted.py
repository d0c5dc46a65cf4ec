"""Shared builders for tests that run the engine on a ScriptedProvider with a tiny vocabulary."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

from backtrack_sampler import (
    BacktrackSampler,
    BaseStrategy,
    Continue,
    FinishEvent,
    GenerationContext,
    Rewind,
    RewindEvent,
    RewindRefusedEvent,
    TextEvent,
)
from backtrack_sampler.core.token_text import TokenText
from backtrack_sampler.provider.scripted_provider import ScriptedProvider

EOS = "<eos>"
LOW = -30.0  # logit of every token a rule does not mention


def logits_from(vocab: Sequence[str], prefs: Mapping[str, float], default: float = LOW) -> list[float]:
    """A logits list over ``vocab``: ``prefs`` maps token texts to logits, the rest get ``default``."""
    unknown = set(prefs) - set(vocab)
    assert not unknown, f"not in vocab: {unknown}"
    return [prefs.get(v, default) for v in vocab]


def text_provider(
    vocab: Sequence[str],
    rule: Callable[[str], Mapping[str, float]],
    default: float = LOW,
    context_length: int | None = 4096,
) -> ScriptedProvider:
    """Logits from ``rule(text)``, the decoded text of the whole sequence (prompt included)."""
    holder: list[ScriptedProvider] = []

    def next_logits(tokens: list[int]) -> list[float]:
        return logits_from(vocab, rule(holder[0].decode(tokens)), default)

    provider = ScriptedProvider(list(vocab), next_logits, vocab.index(EOS), context_length)
    holder.append(provider)
    return provider


def random_provider(
    vocab: Sequence[str],
    seed: int = 0,
    scale: float = 2.0,
    eos_bias: float = -1.0,
    context_length: int | None = 4096,
    bias: Mapping[str, float] | None = None,
) -> ScriptedProvider:
    """Logits drawn from a generator seeded by (seed, tokens): a deterministic function of the tokens.

    ``bias`` adds to the logits of the tokens it names (token text -> amount).
    """
    eos = vocab.index(EOS)
    shift = np.zeros(len(vocab))
    for text, amount in (bias or {}).items():
        shift[vocab.index(text)] += amount

    def next_logits(tokens: list[int]) -> np.ndarray:
        logits = np.random.default_rng([seed, *tokens]).normal(0.0, scale, len(vocab)) + shift
        logits[eos] += eos_bias
        return logits

    return ScriptedProvider(list(vocab), next_logits, eos, context_length)


class BytesProvider(ScriptedProvider):
    """A ScriptedProvider whose tokens are raw byte strings (possibly partial UTF-8 sequences)."""

    def __init__(self, pieces: Sequence[bytes], next_logits, eos_token_id: int = 0, **kwargs) -> None:
        super().__init__([p.hex() or "eos" for p in pieces], next_logits, eos_token_id, **kwargs)
        self.pieces = list(pieces)

    def token_bytes(self, token: int) -> bytes:
        return b"" if token in self.eos_token_ids else self.pieces[token]


class Scripted(BaseStrategy):
    """A strategy whose hooks are plain callables; ``holdback`` is an int or a callable of ctx."""

    def __init__(self, on_token=None, holdback=0, adjust=None, name: str = "Scripted") -> None:
        self._on_token = on_token
        self._holdback = holdback
        self._adjust = adjust
        self._name = name
        self.calls = 0
        self.resets = 0

    @property
    def name(self) -> str:
        return self._name

    def reset(self) -> None:
        self.resets += 1

    def adjust_logits(self, ctx, logits):
        return self._adjust(ctx, logits) if self._adjust else logits

    def on_token(self, ctx, token):
        self.calls += 1
        return self._on_token(ctx, token) if self._on_token else Continue()

    def holdback(self, ctx):
        return self._holdback(ctx) if callable(self._holdback) else self._holdback


class RewindOnce(BaseStrategy):
    """Once ``after`` tokens are generated, rewind to position ``to`` without bans; hold all text back until then.

    Replaying from ``to`` must then reproduce the same tokens (the equivalence tests of the real backends).
    """

    def __init__(self, after: int, to: int) -> None:
        self.after, self.to = after, to
        self.done = False

    def reset(self) -> None:
        self.done = False

    def holdback(self, ctx) -> int:
        return 0 if self.done else len(ctx.tokens)

    def on_token(self, ctx, token):
        if not self.done and len(ctx.tokens) == self.after:
            self.done = True
            return Rewind(self.to, reason="test")
        return Continue()


def run(sampler: BacktrackSampler, prompt, **kwargs) -> list:
    """All events of one generation, after checking the stream invariants."""
    events = list(sampler.stream(prompt, **kwargs))
    check_stream(events)
    return events


def check_stream(events: list) -> FinishEvent:
    """The stream ends with its only FinishEvent and its TextEvents add up to the final result."""
    finish = events[-1]
    assert isinstance(finish, FinishEvent)
    assert not any(isinstance(e, FinishEvent) for e in events[:-1])
    texts = [e for e in events if isinstance(e, TextEvent)]
    assert tuple(t for e in texts for t in e.tokens) == finish.tokens
    assert "".join(e.text for e in texts) == finish.text
    assert finish.stats.tokens_emitted == len(finish.tokens)
    assert finish.stats.rewinds == sum(isinstance(e, RewindEvent) for e in events)
    assert finish.stats.rewinds_refused == sum(isinstance(e, RewindRefusedEvent) for e in events)
    assert finish.stats.tokens_rewound == sum(len(e.suppressed_tokens) for e in events if isinstance(e, RewindEvent))
    return finish


def of(events: list, kind: type) -> list:
    return [e for e in events if isinstance(e, kind)]


def ids(provider: ScriptedProvider, *texts: str) -> list[int]:
    return [provider.vocab.index(t) for t in texts]


def make_ctx(provider: ScriptedProvider, tokens: Sequence[int] = (), prompt: Sequence[int] = (1,)):
    """A GenerationContext holding ``tokens``, for calling a strategy's hooks directly."""
    text = TokenText(provider.token_bytes)
    held = list(tokens)
    for token in held:
        text.append(token)
    return GenerationContext(provider, list(prompt), held, text, {})


def growing_ctx(provider: ScriptedProvider, prompt: Sequence[int] = (1,)):
    """An empty GenerationContext and a function that appends a token to it, as the engine does; (ctx, append)."""
    text = TokenText(provider.token_bytes)
    held: list[int] = []

    def append(token: int) -> None:
        held.append(token)
        text.append(token)

    return GenerationContext(provider, list(prompt), held, text, {}), append


def feed(strategy: BaseStrategy, provider: ScriptedProvider, tokens: Sequence[int]):
    """Append ``tokens`` one by one to a fresh context, calling ``on_token`` after each; (ctx, decisions)."""
    strategy.reset()
    ctx, append = growing_ctx(provider)
    decisions = []
    for token in tokens:
        append(token)
        decisions.append(strategy.on_token(ctx, token))
    return ctx, decisions
