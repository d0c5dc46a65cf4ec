"""Engine overhead: tokens/s of ``generate`` with no strategy against the backend's own generation.

Greedy, same prompt, same process, interleaved: llama.cpp's
``create_completion`` and transformers' ``model.generate`` against
``BacktrackSampler(provider).generate``. Prints the median tokens/s of each and
their ratio (target: at least 0.97).

    python bench/overhead.py [--backends llamacpp transformers] [--lengths 128 1024] [--repeats 3]
"""

from __future__ import annotations

import argparse

from backtrack_sampler import BacktrackSampler
from common import BACKENDS, Backend, load_backend, machine, median, table, timed

HEADER = ["backend", "new tokens", "raw tok/s", "generate tok/s", "ratio"]


def measure(backend: Backend, lengths: list[int], repeats: int) -> list[list]:
    provider = backend.provider
    tokens = provider.encode("Once upon a time")
    sampler = BacktrackSampler(provider)
    backend.raw_greedy(tokens, 8)  # warm up both paths
    sum(1 for _ in sampler.generate(tokens, max_new_tokens=8, temperature=0))
    rows = []
    for n in lengths:
        raw, ours, counts = [], [], set()

        def run_raw(n=n, counts=counts):
            backend.reset()
            out = backend.raw_greedy(tokens, n)
            counts.add(len(out))
            return len(out)

        def run_ours(n=n, counts=counts):
            backend.reset()
            count = sum(1 for _ in sampler.generate(tokens, max_new_tokens=n, temperature=0))
            counts.add(count)
            return count

        for i in range(repeats):  # alternate which one goes first
            first, second = (run_raw, run_ours) if i % 2 == 0 else (run_ours, run_raw)
            a, b = timed(first), timed(second)
            raw.append(a if first is run_raw else b)
            ours.append(b if first is run_raw else a)
        r, o = median(raw), median(ours)
        rows.append([backend.name, "/".join(map(str, sorted(counts))), f"{r:.1f}", f"{o:.1f}", f"{o / r:.3f}"])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", nargs="+", choices=BACKENDS, default=list(BACKENDS))
    parser.add_argument("--lengths", type=int, nargs="+", default=[128, 1024])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(machine())
    rows = []
    for name in args.backends:
        rows += measure(load_backend(name, n_ctx=max(args.lengths) + 64), args.lengths, args.repeats)
    print(table(HEADER, rows))


if __name__ == "__main__":
    main()
