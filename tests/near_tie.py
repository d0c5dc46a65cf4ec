"""Where two runs of one generation part, and whether they part at a near-tie.

llama.cpp's kernels round differently by instruction set (AVX-512 or AVX2
only) and by how tokens are grouped into a decode (a sequence alone or among
sixteen in one batch, a prefix evaluated in one piece or re-evaluated after a
KV switch), so two evaluations of one position give logits that differ in
their last bits. Where two tokens are nearly tied, that rounding picks one or
the other. A test comparing two runs (batched against alone, one server slot
against another) may therefore not ask for equal tokens; it asks that they be
equal up to a point where the two runs saw the same context and logits equal
within rounding (``NOISE``), and, for greedy runs, where the two tokens' logits
are within that rounding of each other.

Two ways to find the point:

- ``Tracer`` records, in this process, every sampled step of every generation
  (its context, the model's raw logits, the token), keyed by
  ``(phase, prompt, seed)``; ``parting`` walks two traces in step order, so a
  rewind that one run made and the other did not is found where it began.
- ``greedy_parting`` needs only the two final token lists of two greedy runs
  and a provider that evaluates the context where they part (for runs in
  another process, or on a server).
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

NOISE = 1.5
"""The most two evaluations of one position may differ by, in logits, among the tokens that matter.

"Tokens that matter": within ``WINDOW`` of the best logit in either run (more than e^-10 times
less likely than the best at temperature 1). Measured with SmolLM2 Q4_1 on a 2-core AVX2-only
EPYC, the same positions decoded 8 sequences at a time and alone: at most 0.65 among those tokens
(1.76 over the whole vocabulary: llama.cpp quantizes a decode's activations per block, and a batched
decode takes another matrix kernel); where test_batched's sixteen sequences parted from their runs
alone, at most 0.81. Against it, a wrong context is far off: two prompts that differ in one word
("dog", "cat") differ by 3.7 there, two adjacent positions of one text by 12 to 23."""

WINDOW = 10.0


@dataclass(frozen=True)
class Step:
    context: tuple[int, ...]  # the generated tokens before this step
    raw: np.ndarray  # the model's logits for this position (before the strategy and bans)
    token: int  # the token sampled


@dataclass(frozen=True)
class Parting:
    """Where two runs part: the step, the tokens each took, and what was measured there."""

    step: int
    position: int  # the generated-token position of that step
    tokens: tuple[int | None, int | None]  # what each run took (None: it stopped or rewound instead)
    noise: float  # max |logit difference| between the two runs' raw logits at that step
    gap: float  # for a token difference: run a's logit of its token minus that of run b's token

    def __str__(self) -> str:
        measured = "" if self.noise != self.noise else f", logits differ by at most {self.noise:.4f}"  # nan: unknown
        return (
            f"parted at step {self.step} (position {self.position}): tokens {self.tokens}{measured}, gap {self.gap:.4f}"
        )


def noise(a: np.ndarray, b: np.ndarray) -> float:
    """Max |a - b| over the tokens within ``WINDOW`` of the best in either run (finite in both: a -inf is a mask)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    both = np.isfinite(a) & np.isfinite(b)
    if not both.any():
        return 0.0
    near = both & ((a >= np.max(a[both]) - WINDOW) | (b >= np.max(b[both]) - WINDOW))
    return float(np.max(np.abs(a[near] - b[near])))


def parting(a: Sequence[Step], b: Sequence[Step]) -> Parting | None:
    """The first step where two traces differ (``None``: identical)."""
    for i in range(max(len(a), len(b))):
        sa = a[i] if i < len(a) else None
        sb = b[i] if i < len(b) else None
        if sa is not None and sb is not None and sa.context == sb.context and sa.token == sb.token:
            continue
        if sa is not None and sb is not None and sa.context == sb.context:  # same context, another token
            gap = float(sa.raw[sa.token] - sa.raw[sb.token])
            return Parting(i, len(sa.context), (sa.token, sb.token), noise(sa.raw, sb.raw), gap)
        # A decision parted (one rewound or stopped after the same token): it read the logits of the step before.
        if i == 0:
            raise AssertionError("the two runs differ before their first sampled step")
        before_a, before_b = a[i - 1], b[i - 1]
        return Parting(
            i - 1,
            len(before_a.context),
            (sa.token if sa else None, sb.token if sb else None),
            noise(before_a.raw, before_b.raw),
            0.0,
        )
    return None


def assert_same_or_near_tie(a: Sequence[Step], b: Sequence[Step], what: object, greedy: bool) -> Parting | None:
    """Two traces of one generation are identical, or part where the logits agree within ``NOISE``.

    For a greedy run that parts on a token, the two tokens are also within ``NOISE`` of each other in
    run a's logits (each run took its own argmax). Returns the parting (``None``: identical).
    """
    where = parting(a, b)
    if where is None:
        return None
    print(f"{what}: {where}")
    assert where.noise <= NOISE, f"{what}: not rounding: {where}"
    if greedy and where.gap:
        assert 0 <= where.gap <= NOISE, f"{what}: not a near-tie: {where}"
    return where


class Tracer:
    """Records the sampled steps of every generation in this process, by ``(phase, prompt, seed)``.

    Install with ``tracer.install(monkeypatch)`` (it wraps the engine's sampling step); set
    ``tracer.phase`` before each run of a comparison ("alone", "batched", ...). Generations of one
    phase must differ in prompt or seed.
    """

    def __init__(self) -> None:
        self.phase = ""
        self.traces: dict[tuple, list[Step]] = defaultdict(list)
        self.prompts: dict[tuple[int, ...], str] = {}  # prompt tokens -> their text
        self._lock = threading.Lock()

    def install(self, monkeypatch) -> Tracer:
        from backtrack_sampler.core import engine

        choose = engine._Generation._choose
        tracer = self

        def traced(generation, position, raw, with_bans=True):
            token = choose(generation, position, raw, with_bans)
            if token is not None:
                key = (tracer.phase, tuple(generation.prompt), generation.params.seed)
                step = Step(tuple(generation.tokens), np.array(raw, dtype=np.float32), token)
                with tracer._lock:
                    tracer.traces[key].append(step)
                    if key[1] not in tracer.prompts:
                        text = b"".join(generation.provider.token_bytes(t) for t in key[1])
                        tracer.prompts[key[1]] = text.decode("utf-8", errors="replace")
            return token

        monkeypatch.setattr(engine._Generation, "_choose", traced)
        return self

    def trace(self, phase: str, prompt: Sequence[int], seed: int | None) -> list[Step]:
        key = (phase, tuple(prompt), seed)
        assert key in self.traces, f"no generation traced for phase {phase!r} with this prompt and seed {seed}"
        return self.traces[key]

    def key_of(self, phase: str, prompt_end: str) -> tuple:
        """The key of the one generation of ``phase`` whose prompt text ends with ``prompt_end``."""
        keys = [k for k in self.traces if k[0] == phase and self.prompts[k[1]].endswith(prompt_end)]
        assert len(keys) == 1, f"{len(keys)} generations of phase {phase!r} end their prompt with {prompt_end!r}"
        return keys[0]

    def compare(self, phase_a: str, phase_b: str, greedy_of=lambda key: False) -> list[Parting]:
        """Every generation traced in both phases, compared; returns the partings (each asserted a near-tie)."""
        partings = []
        keys = sorted((k for k in self.traces if k[0] == phase_a), key=lambda k: (k[1], k[2] is not None, k[2] or 0))
        for phase, prompt, seed in keys:  # (a greedy run's seed is None)
            other = (phase_b, prompt, seed)
            assert other in self.traces, f"phase {phase_b!r} has no generation of a prompt that {phase_a!r} has"
            where = assert_same_or_near_tie(
                self.traces[(phase, prompt, seed)], self.traces[other], f"seed {seed}", greedy_of((prompt, seed))
            )
            if where is not None:
                partings.append(where)
        return partings


def greedy_parting(
    provider, prompt: Sequence[int], a: Sequence[int], b: Sequence[int], what: object = ""
) -> Parting | None:
    """Two greedy token lists of one prompt are equal, or part at a near-tie of ``provider``'s logits there.

    ``a`` must be ``provider``'s own greedy run. At the first position where they differ the provider
    evaluates the common context; ``b``'s token must be within ``NOISE`` of the argmax there.
    """
    n = min(len(a), len(b))
    position = next((i for i in range(n) if a[i] != b[i]), n)
    if position == n:
        if len(a) != len(b):  # one ended (EOS) where the other went on: EOS was the near-tie
            eos = next(iter(provider.eos_token_ids))
            a = [*a, eos] if len(a) == n else a
            b = [*b, eos] if len(b) == n else b
        else:
            return None
    logits = np.asarray(provider.prefill([*prompt, *a[:position]]), dtype=np.float64)
    gap = float(logits[a[position]] - logits[b[position]])
    where = Parting(position, position, (a[position], b[position]), float("nan"), gap)
    print(f"{what}: {where}")
    assert int(np.argmax(logits)) == a[position], f"{what}: run a is not this provider's greedy run"
    assert 0 <= gap <= NOISE, f"{what}: not a near-tie: {where}"
    return where
