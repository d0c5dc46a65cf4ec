"""Loops: LoopGuard (rewind a repeat) against DRY and llama.cpp's repeat penalty (penalize it), same prompts and seeds.

Each method writes one text per prompt (24 prompts: stories, essays,
explanations; the model's chat template; ``--tokens`` new tokens at most, EOS
may end a text earlier) with the same sampling settings (temperature 0.8,
top_p 0.95, top_k off) and the same seed per prompt:

- llama.cpp's own sampler chain (temperature, top_p, dist) with no penalty;
- the same chain behind ``repeat_penalty`` 1.1 over the last 64 tokens
  (``llama_sampler_init_penalties``);
- the same chain behind DRY (``llama_sampler_init_dry``: multiplier 0.8,
  base 1.75, allowed length 2, the whole context, breakers ``\\n : " *``);
- ours: ``BacktrackSampler`` with ``DryStrategy`` (the same DRY settings: it
  computes llama.cpp's penalty; the texts differ only by the random draws),
  with ``LoopGuardStrategy`` (``--min-length`` ``--unit`` ``--factor``), and
  (``--methods ... ours-plain``) with no strategy.

llama.cpp's chains see the prompt tokens first (as its CLI and server feed
them). Per method: texts that loop (``metrics.diversity.loops``: a run of 4
words 3 times or more), mean distinct-2 and distinct-3 of the words, the
longest run of words any text holds twice, the mean
log-probability per generated token under the unconstrained model
(temperature 1, raw logits, prompt + text evaluated in one pass), its drop
against the plain llama.cpp run (the fluency cost), mean tokens, tok/s, rewinds
(and rewinds refused), and LoopGuard's time per token outside the model.

    python bench/loop_guard.py [--tokens 512] [--prompts 24] [--min-length 4] [--unit words] [--factor 0]
        [--methods plain repeat dry dry-ours guard]   (a subset runs alone: several processes can share the work)
"""

from __future__ import annotations

import argparse
import ctypes
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from backtrack_sampler import BacktrackSampler
from backtrack_sampler.metrics.diversity import distinct_n, loops, words
from backtrack_sampler.strategy.dry_strategy import DryStrategy
from backtrack_sampler.strategy.loop_guard_strategy import LoopGuardStrategy
from backtrack_sampler.strategy.repeat_index import RepeatIndex
from common import load_backend, machine, table

PROMPTS = [
    "Write a short story about a dog.",
    "Write a story about a lighthouse keeper who finds a message in a bottle.",
    "Write a story about a robot that learns to paint.",
    "Write a fairy tale about a princess and a dragon.",
    "Write a story about two friends lost in a forest.",
    "Write a story about a little girl who wants to fly.",
    "Write a story about an old fisherman and the sea.",
    "Write a science fiction story about the first city on Mars.",
    "Write a bedtime story about a sleepy bear.",
    "Write a mystery story about a stolen painting.",
    "Write an essay about why reading books matters.",
    "Write an essay about the benefits and risks of social media.",
    "Write an essay about climate change and what people can do.",
    "Write an essay about the importance of friendship.",
    "Write an essay on whether homework should be banned.",
    "Write an essay about life in a big city compared with life in the countryside.",
    "Explain how photosynthesis works.",
    "Explain how a computer stores information.",
    "Explain why the sky is blue.",
    "Explain how vaccines protect people from disease.",
    "Explain the water cycle to a ten-year-old.",
    "Explain how the internet works.",
    "Describe a day in the life of a medieval farmer.",
    "Give advice to a student starting university.",
]
SAMPLING = {"temperature": 0.8, "top_p": 0.95, "top_k": 0}
DRY = {"multiplier": 0.8, "base": 1.75, "allowed_length": 2, "penalty_last_n": -1, "breakers": ["\n", ":", '"', "*"]}
REPEAT_PENALTY, REPEAT_LAST_N = 1.1, 64
METHODS = ("plain", "repeat", "dry", "dry-ours", "ours-plain", "guard")
DEFAULT_METHODS = ("plain", "repeat", "dry", "dry-ours", "guard")
HEADER = [
    "method",
    "texts",
    "looping texts",
    "distinct-2",
    "distinct-3",
    "longest repeat (words)",
    "mean log-prob / token",
    "drop vs plain",
    "mean tokens",
    "tok/s",
    "rewinds",
    "refused",
]


@dataclass
class Texts:
    """What one method wrote: the token ids of each text, its rewinds, and the time it took."""

    name: str
    tokens: list[list[int]] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    rewinds: int = 0
    refused: int = 0
    seconds: float = 0.0


def llama_chain(llm, prompt: list[int], seed: int, penalty: str):
    """llama.cpp's sampler chain: [penalty] -> temperature -> top_p -> dist(seed), fed the prompt."""
    import llama_cpp

    chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
    if penalty == "repeat":
        sampler = llama_cpp.llama_sampler_init_penalties(llm.n_vocab(), REPEAT_LAST_N, REPEAT_PENALTY, 0.0, 0.0)
        llama_cpp.llama_sampler_chain_add(chain, sampler)
    elif penalty == "dry":
        breakers = (ctypes.c_char_p * len(DRY["breakers"]))(*(b.encode() for b in DRY["breakers"]))
        vocab = llama_cpp.llama_model_get_vocab(llm.model)
        # -1 ("the whole context") reaches this build's DRY as 0, which disables it: pass the context size itself.
        last_n = llm.n_ctx() if DRY["penalty_last_n"] < 0 else DRY["penalty_last_n"]
        sampler = llama_cpp.llama_sampler_init_dry(
            vocab, DRY["multiplier"], DRY["base"], DRY["allowed_length"], last_n, breakers, len(breakers)
        )
        llama_cpp.llama_sampler_chain_add(chain, sampler)
    llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_temp(SAMPLING["temperature"]))
    llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_top_p(SAMPLING["top_p"], 1))
    llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_dist(seed))
    for token in prompt:
        llama_cpp.llama_sampler_accept(chain, token)
    return chain


def llama_generate(provider, prompt: list[int], n_tokens: int, seed: int, penalty: str) -> list[int]:
    """One text from llama.cpp's own sampler chain, token by token (``llama_sampler_sample`` accepts each)."""
    import llama_cpp

    llm = provider.llm
    llm.reset()
    chain = llama_chain(llm, prompt, seed, penalty)
    out: list[int] = []
    try:
        llm.eval(prompt)
        while len(out) < n_tokens:
            token = llama_cpp.llama_sampler_sample(chain, llm.ctx, -1)
            if token in provider.eos_token_ids:
                break
            out.append(token)
            llm.eval([token])
    finally:
        llama_cpp.llama_sampler_free(chain)
    return out


Generate = Callable[[list[int], int], tuple[list[int], int, int]]  # (prompt, seed) -> (tokens, rewinds, refused)


def run_method(name: str, generate: Generate, prompts, provider) -> Texts:
    texts = Texts(name)
    for seed, prompt in enumerate(prompts):
        started = time.perf_counter()
        tokens, rewinds, refused = generate(prompt, seed)
        texts.seconds += time.perf_counter() - started
        texts.refused += refused
        print(f"{name}: text {seed + 1}/{len(prompts)}, {len(tokens)} tokens", file=sys.stderr, flush=True)
        texts.tokens.append(tokens)
        texts.texts.append(provider.decode(tokens))
        texts.rewinds += rewinds
    return texts


class Scorer:
    """Log-probabilities of generated tokens under the unconstrained model (one pass with every row's logits)."""

    def __init__(self, n_ctx: int) -> None:
        from llama_cpp import Llama

        from backtrack_sampler.models import default_model_path

        # logits_all keeps n_ctx x n_vocab floats (about 200 MB at 1,024): fine for a benchmark, not for the library.
        self.llm = Llama(model_path=str(default_model_path()), n_ctx=n_ctx, logits_all=True, verbose=False)

    def logprobs(self, prompt: list[int], tokens: list[int]) -> np.ndarray:
        if not tokens:
            return np.zeros(0)
        self.llm.reset()
        self.llm.eval(prompt + tokens)
        rows = np.asarray(self.llm.scores[len(prompt) - 1 : len(prompt) + len(tokens) - 1], dtype=np.float64)
        top = rows.max(axis=1, keepdims=True)
        norm = top[:, 0] + np.log(np.exp(rows - top).sum(axis=1))
        return rows[np.arange(len(tokens)), tokens] - norm


def longest_repeat(units: list[str]) -> int:
    """The longest run of units that occurs twice (overlaps allowed)."""
    index = RepeatIndex()
    return max((index.append(unit) for unit in units), default=0)


def summarize(texts: Texts, prompts, scorer: Scorer, plain_logprob: float | None) -> tuple[list, float]:
    """One row of the table (the drop is empty without a plain run), and the mean log-probability."""
    scores = [scorer.logprobs(p, t) for p, t in zip(prompts, texts.tokens, strict=True)]
    n_tokens = sum(len(t) for t in texts.tokens)
    logprob = float(sum(s.sum() for s in scores) / max(1, n_tokens))
    drop = "" if plain_logprob is None else f"{plain_logprob - logprob:.3f}"
    row = [
        texts.name,
        len(texts.texts),
        sum(loops(t) for t in texts.texts),
        f"{np.mean([distinct_n(words(t), 2) for t in texts.texts]):.3f}",
        f"{np.mean([distinct_n(words(t), 3) for t in texts.texts]):.3f}",
        max(longest_repeat(words(t)) for t in texts.texts),
        f"{logprob:.3f}",
        drop or ("0" if texts.name.startswith("llama.cpp, no") else ""),
        f"{n_tokens / len(texts.texts):.0f}",
        f"{n_tokens / texts.seconds:.1f}",
        texts.rewinds,
        texts.refused,
    ]
    return row, logprob


def measure(
    n_tokens: int,
    n_prompts: int,
    min_length: int = 4,
    unit: str = "words",
    factor: float = 0.0,
    echo: bool = False,
    methods: tuple[str, ...] = DEFAULT_METHODS,
) -> tuple[list[list], str]:
    """The table's rows, and a line on LoopGuard's own cost per token.

    ``methods`` picks some of ``METHODS`` (to run them in separate processes);
    the drop in log-probability is against ``plain`` when it runs, else left out.
    """
    backend = load_backend("llamacpp", n_ctx=2048)
    provider = backend.provider
    chat = [provider.apply_chat_template([{"role": "user", "content": p}]) for p in PROMPTS[:n_prompts]]
    prompts = [provider.encode(text) for text in chat]
    params = {**SAMPLING, "max_new_tokens": n_tokens}
    guard = LoopGuardStrategy(provider, min_length=min_length, unit=unit, factor=factor)
    timed_guard = _Timed(guard)
    guarded = BacktrackSampler(provider, timed_guard)
    dry = DryStrategy(DRY["multiplier"], DRY["base"], DRY["allowed_length"], DRY["breakers"], DRY["penalty_last_n"])
    dried = BacktrackSampler(provider, dry)
    plain = BacktrackSampler(provider)

    def ours(sampler: BacktrackSampler) -> Generate:
        def generate(prompt: list[int], seed: int) -> tuple[list[int], int, int]:
            result = sampler.generate_text(prompt, seed=seed, **params)
            return list(result.tokens), result.stats.rewinds, result.stats.rewinds_refused

        return generate

    def llama(penalty: str) -> Generate:
        return lambda prompt, seed: (llama_generate(provider, prompt, n_tokens, seed, penalty), 0, 0)

    soft = f", factor {factor:g}" if factor else ""
    chosen = {
        "plain": ("llama.cpp, no penalty", llama("none")),
        "repeat": (f"llama.cpp repeat_penalty {REPEAT_PENALTY} (last {REPEAT_LAST_N})", llama("repeat")),
        "dry": ("llama.cpp DRY 0.8/1.75/2", llama("dry")),
        "dry-ours": ("DRY (ours, this strategy) 0.8/1.75/2", ours(dried)),
        "ours-plain": ("ours, no strategy", ours(plain)),
        "guard": (f"ours + LoopGuard ({min_length} {unit}{soft})", ours(guarded)),
    }
    scorer = Scorer(n_ctx=max(len(p) for p in prompts) + n_tokens + 8)
    rows, plain_logprob = [], None
    for key, (name, generate) in chosen.items():
        if key not in methods:
            continue
        texts = run_method(name, generate, prompts, provider)
        row, logprob = summarize(texts, prompts, scorer, plain_logprob)
        if key == "plain":
            plain_logprob = logprob
        rows.append(row)
        if echo:
            print(table(HEADER, rows[-1:]).splitlines()[-1], flush=True)
    if not timed_guard.calls:
        return rows, ""
    cost = timed_guard.seconds / timed_guard.calls * 1e6
    return rows, f"LoopGuard's hooks: {cost:.1f} µs per token ({timed_guard.calls} calls)"


class _Timed(LoopGuardStrategy):
    """LoopGuard whose hooks add their time up (on_token, on_rewind, holdback)."""

    def __init__(self, inner: LoopGuardStrategy) -> None:
        self.__dict__.update(inner.__dict__)
        self.seconds, self.calls = 0.0, 0

    def on_token(self, ctx, token):
        started = time.perf_counter()
        decision = super().on_token(ctx, token)
        self.seconds += time.perf_counter() - started
        self.calls += 1
        return decision

    def on_rewind(self, ctx, position):
        started = time.perf_counter()
        super().on_rewind(ctx, position)
        self.seconds += time.perf_counter() - started

    def holdback(self, ctx):
        started = time.perf_counter()
        held = super().holdback(ctx)
        self.seconds += time.perf_counter() - started
        return held


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=512)
    parser.add_argument("--prompts", type=int, default=len(PROMPTS), choices=range(1, len(PROMPTS) + 1))
    parser.add_argument("--min-length", type=int, default=4)
    parser.add_argument("--unit", choices=("words", "tokens"), default="words")
    parser.add_argument("--factor", type=float, default=0.0)
    parser.add_argument(
        "--methods",
        nargs="+",
        choices=METHODS,
        default=list(DEFAULT_METHODS),
        help=f"which to run (default: {' '.join(DEFAULT_METHODS)}; ours-plain is our sampler with no strategy)",
    )
    args = parser.parse_args()
    print(machine())
    print(f"sampling: {SAMPLING}, up to {args.tokens} new tokens, seed i for prompt i, chat template\n")
    print(table(HEADER, []), flush=True)
    options = (args.min_length, args.unit, args.factor)
    _, cost = measure(args.tokens, args.prompts, *options, echo=True, methods=tuple(args.methods))
    if cost:
        print(f"\n{cost}")


if __name__ == "__main__":
    main()
