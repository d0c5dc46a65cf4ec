"""Sampling settings: tokens/s of ``generate`` against llama.cpp's own ``create_completion`` with the same settings.

Same prompt, same process, interleaved, for each setting (temperature 0.8); EOS is
banned on both sides (``logit_bias`` for llama.cpp, a one-line strategy for us) so
both generate exactly ``--tokens`` tokens:
top_p 0.9 with top_k off (what OpenAI clients send), top_k 50, min_p 0.05
with top_k off, and top_k 40 with top_p 0.95. Prints the median tokens/s of
each and their ratio (target: at least 0.97 for every setting).

    python bench/sampling_overhead.py [--tokens 256] [--repeats 3]
"""

from __future__ import annotations

import argparse

from backtrack_sampler import BacktrackSampler, BaseStrategy
from common import load_backend, machine, median, table, timed


class NoEos(BaseStrategy):
    """Bans the end of text, as ``logit_bias`` does on the raw side."""

    def __init__(self, eos: frozenset[int]) -> None:
        self.eos = list(eos)

    def adjust_logits(self, ctx, logits):
        logits[self.eos] = -float("inf")
        return logits


SETTINGS = [
    {"top_p": 0.9, "top_k": 0},
    {"top_k": 50},
    {"min_p": 0.05, "top_k": 0},
    {"top_k": 40, "top_p": 0.95},
]
HEADER = ["setting", "new tokens", "create_completion tok/s", "generate tok/s", "ratio"]


def measure(n_tokens: int, repeats: int, echo: bool = False) -> list[list]:
    backend = load_backend("llamacpp", n_ctx=n_tokens + 64)
    llm, provider = backend.provider.llm, backend.provider
    tokens = provider.encode("Once upon a time")
    sampler = BacktrackSampler(provider, NoEos(provider.eos_token_ids))
    no_eos = {token: -float("inf") for token in provider.eos_token_ids}
    rows = []
    for setting in SETTINGS:
        raw, ours, counts = [], [], []
        for seed in range(repeats):
            kwargs = {"temperature": 0.8, "top_k": 0, **setting}

            def run_raw(kwargs=kwargs, seed=seed, counts=counts):
                llm.reset()
                llama_kwargs = {"top_p": 1.0, "min_p": 0.0, "logit_bias": no_eos, **kwargs}
                out = llm.create_completion(tokens, max_tokens=n_tokens, seed=seed, **llama_kwargs)
                counts.append(out["usage"]["completion_tokens"])
                return counts[-1]

            def run_ours(kwargs=kwargs, seed=seed, counts=counts):
                llm.reset()
                count = sum(1 for _ in sampler.generate(tokens, max_new_tokens=n_tokens, seed=seed, **kwargs))
                counts.append(count)
                return count

            first, second = (run_raw, run_ours) if seed % 2 == 0 else (run_ours, run_raw)
            a, b = timed(first), timed(second)
            raw.append(a if first is run_raw else b)
            ours.append(b if first is run_raw else a)
        r, o = median(raw), median(ours)
        name = ", ".join(f"{k} {v}" for k, v in setting.items())
        rows.append([name, f"{min(counts)}-{max(counts)}", f"{r:.1f}", f"{o:.1f}", f"{o / r:.3f}"])
        if echo:  # a row as soon as it is measured
            print(table(HEADER, rows[-1:]).splitlines()[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(machine())
    print(table(HEADER, []))
    measure(args.tokens, args.repeats, echo=True)


if __name__ == "__main__":
    main()
