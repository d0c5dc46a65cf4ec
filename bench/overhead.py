"""Engine overhead: tokens/s of ``generate`` (no strategy) against llama.cpp's ``create_completion``.

Both run greedy on the same prompt, in the same process, interleaved, several
times; the script prints the median tokens/s of each and their ratio.

    python bench/overhead.py [--lengths 100 1000] [--repeats 5] [--model PATH.gguf]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

from backtrack_sampler import BacktrackSampler
from backtrack_sampler.models import load_llama
from backtrack_sampler.provider.llamacpp_provider import LlamacppProvider

PROMPT = "Once upon a time"


def time_raw(llm, tokens: list[int], n: int) -> tuple[float, int]:
    llm.reset()
    start = time.perf_counter()
    out = llm.create_completion(tokens, max_tokens=n, temperature=0)
    return time.perf_counter() - start, out["usage"]["completion_tokens"]


def time_ours(llm, provider: LlamacppProvider, tokens: list[int], n: int) -> tuple[float, int]:
    llm.reset()
    start = time.perf_counter()
    count = sum(1 for _ in BacktrackSampler(provider).generate(tokens, max_new_tokens=n, temperature=0))
    return time.perf_counter() - start, count


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--lengths", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--model", default=None)
    args = parser.parse_args()
    llm = load_llama(args.model, n_ctx=max(args.lengths) + 64)
    provider = LlamacppProvider(llm)
    tokens = provider.encode(PROMPT)
    time_raw(llm, tokens, 16)  # warm up
    cpu = platform.processor() or "cpu"
    print(f"machine: {platform.machine()}, {cpu}, {os.cpu_count()} cores, python {platform.python_version()}")
    print("| new tokens | raw tok/s | generate tok/s | ratio |")
    print("|---:|---:|---:|---:|")
    for n in args.lengths:
        raw, ours = [], []
        for _ in range(args.repeats):
            dt, count = time_raw(llm, tokens, n)
            raw.append(count / dt)
            dt2, count2 = time_ours(llm, provider, tokens, n)
            ours.append(count2 / dt2)
            assert count == count2, f"raw generated {count} tokens, generate {count2}"
        r, o = statistics.median(raw), statistics.median(ours)
        print(f"| {count} | {r:.1f} | {o:.1f} | {o / r:.3f} |")


if __name__ == "__main__":
    main()
