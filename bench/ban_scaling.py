"""Ban-list scaling: the per-token cost of AntiSlop with 10 to 50,000 phrases, relative to no strategy.

Two measurements, both interleaved in one process, for phrase lists and for regex patterns:

- end to end: tokens/s of a real generation (llama.cpp, embedded model) with
  AntiSlop and N phrases, against the same generation with no strategy;
- strategy only: the engine replays a recorded generation from precomputed
  logits (no model), so the difference to the no-strategy replay is what
  the strategy itself costs per token, in microseconds.

The phrases are pairs of real words from the model's vocabulary (so the
automaton walks partial matches all the time, as with a real slop list);
a pair that occurs in the text is dropped so no rewind changes the work.

    python bench/ban_scaling.py [--sizes 10 1000 10000 50000] [--regex 50] [--tokens 256] [--repeats 3]
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Sequence

import numpy as np

from backtrack_sampler import AntiSlopStrategy, BacktrackSampler, BaseStrategy, ChainStrategy
from backtrack_sampler.core.decisions import CONTINUE
from backtrack_sampler.provider.base_provider import BaseProvider
from common import load_backend, machine, median, table, timed

HEADER = [
    "bans",
    "build s",
    "end-to-end tok/s",
    "vs no strategy",
    "strategy µs/token",
    "time per token vs smallest list",
    "mean chars held back",
]


class ReplayProvider(BaseProvider):
    """Replays a recorded generation: the logits favour the recorded next token (no model)."""

    def __init__(self, source: BaseProvider, prompt: Sequence[int], tokens: Sequence[int]) -> None:
        super().__init__()
        self.source, self.n_prompt, self.tokens = source, len(prompt), list(tokens)
        self.eos_token_ids = source.eos_token_ids
        self._logits = np.zeros(source.vocab_size, dtype=np.float32)

    @property
    def vocab_size(self) -> int:
        return self.source.vocab_size

    def encode(self, text: str, add_bos: bool = True) -> list[int]:
        return self.source.encode(text, add_bos)

    def token_bytes(self, token: int) -> bytes:
        return self.source.token_bytes(token)

    def _forward(self, tokens: Sequence[int]) -> np.ndarray:
        logits = self._logits.copy()
        position = len(self._kv_tokens) + len(tokens) - self.n_prompt
        logits[self.tokens[min(position, len(self.tokens) - 1)]] = 100.0
        return logits

    def _rewind(self, n_tokens: int) -> None:
        pass


def word_pairs(provider: BaseProvider, n: int, avoid: str, seed: int = 0) -> list[str]:
    words = []
    for token in range(provider.vocab_size):
        piece = provider.token_bytes(token).decode("utf-8", errors="ignore")
        if piece.startswith(" ") and piece[1:].isalpha() and len(piece) >= 5:
            words.append(piece[1:].lower())
    rng = random.Random(seed)
    avoid = avoid.casefold()
    phrases: set[str] = set()
    while len(phrases) < n:
        phrase = f"{rng.choice(words)} {rng.choice(words)}"
        if phrase not in avoid:
            phrases.add(phrase)
    return sorted(phrases)


class HoldbackMeter(BaseStrategy):
    """Records, at each token, how many characters the engine was holding back after the previous step."""

    def __init__(self) -> None:
        self.held: list[int] = []

    def on_token(self, ctx, token):
        self.held.append(ctx.char_start(len(ctx.tokens) - 1) - ctx.char_start(ctx.committed))
        return CONTINUE


def regex_patterns(provider: BaseProvider, n: int, avoid: str) -> list[str]:
    """``n`` patterns shaped like real slop regexes: two words with up to two words between them."""
    pairs = word_pairs(provider, n, avoid, seed=1)
    return [rf"(?i)\b{a}(?: \w+){{0,2}} {b}\b" for a, b in (pair.split() for pair in pairs)]


def measure(sizes: list[int], n_tokens: int, repeats: int, n_regex: int = 50) -> list[list]:
    backend = load_backend("llamacpp")
    provider = backend.provider
    prompt = provider.encode(
        provider.apply_chat_template([{"role": "user", "content": "Write a short story about a lighthouse."}])
    )
    recorded = BacktrackSampler(provider).generate_text(prompt, max_new_tokens=n_tokens, temperature=0)
    replay = ReplayProvider(provider, prompt, recorded.tokens)
    text = recorded.text
    phrases = word_pairs(provider, max(sizes), text)

    def end_to_end(strategy: BaseStrategy | None) -> float:
        sampler = BacktrackSampler(provider, strategy)
        return timed(lambda: len(sampler.generate_text(prompt, max_new_tokens=n_tokens, temperature=0).tokens))

    def replay_seconds_per_token(strategy: BaseStrategy | None) -> float:
        sampler = BacktrackSampler(replay, strategy)
        start = time.perf_counter()
        result = sampler.generate_text(prompt, max_new_tokens=len(recorded.tokens), temperature=0)
        assert result.tokens == recorded.tokens, "the replay must not rewind: a phrase occurs in the text"
        return (time.perf_counter() - start) / len(result.tokens)

    def mean_held_back(strategy: BaseStrategy) -> float:
        meter = HoldbackMeter()
        BacktrackSampler(replay, ChainStrategy([strategy, meter])).generate_text(
            prompt, max_new_tokens=len(recorded.tokens), temperature=0
        )
        return sum(meter.held) / len(meter.held)

    configs: dict[str, tuple[float, AntiSlopStrategy]] = {}
    for size in sizes:
        start = time.perf_counter()
        strategy = AntiSlopStrategy(provider, phrases[:size])
        configs[f"{size:,} phrases"] = (time.perf_counter() - start, strategy)
    if n_regex:
        start = time.perf_counter()
        strategy = AntiSlopStrategy(provider, [], regex=regex_patterns(provider, n_regex, text))
        configs[f"{n_regex} regex"] = (time.perf_counter() - start, strategy)
    end_to_end(None), replay_seconds_per_token(None)  # warm up
    base_e2e, base_replay = [], []
    e2e: dict[str, list[float]] = {c: [] for c in configs}
    cost: dict[str, list[float]] = {c: [] for c in configs}
    for _ in range(repeats):
        base_e2e.append(end_to_end(None))
        for name, (_, strategy) in configs.items():
            e2e[name].append(end_to_end(strategy))
        for _ in range(3):
            base = replay_seconds_per_token(None)
            base_replay.append(base)
            for name, (_, strategy) in configs.items():
                cost[name].append(replay_seconds_per_token(strategy) - base)
    b = median(base_e2e)
    rows = [["none", "", f"{b:.1f}", "1.000", "0", "", "0"]]
    smallest = f"{min(sizes):,} phrases"
    for name, (build, strategy) in configs.items():
        relative = median(e2e[smallest]) / median(e2e[name])  # time per token, relative to the smallest list
        rows.append(
            [
                name,
                f"{build:.2f}",
                f"{median(e2e[name]):.1f}",
                f"{median(e2e[name]) / b:.3f}",
                f"{median(cost[name]) * 1e6:.0f}",
                f"{relative:.3f}",
                f"{mean_held_back(strategy):.1f}",
            ]
        )
    rows.append(["(engine, no strategy, replay)", "", "", "", f"{median(base_replay) * 1e6:.0f} per token", "", ""])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 1000, 10000, 50000])
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--regex", type=int, default=50, help="number of regex patterns (0: none)")
    args = parser.parse_args()
    print(machine())
    print(table(HEADER, measure(args.sizes, args.tokens, args.repeats, args.regex)))


if __name__ == "__main__":
    main()
