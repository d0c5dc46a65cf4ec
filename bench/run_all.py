"""Run every benchmark and print one markdown report (docs/benchmarks.md shows its latest output).

    python bench/run_all.py [--quick]

``--quick`` uses fewer repetitions and shorter generations (a smoke run, not figures to publish).
"""

from __future__ import annotations

import argparse
import time

import ban_scaling
import batched_throughput
import loop_guard
import memory
import overhead
import rewind_cost
import sampling_overhead
import slop_loop
from common import BACKENDS, load_backend, machine, table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--backends", nargs="+", choices=BACKENDS, default=list(BACKENDS))
    args = parser.parse_args()
    lengths, repeats, tokens = ([32, 128], 1, 64) if args.quick else ([128, 1024], 3, 256)
    started = time.perf_counter()
    print(f"Machine: {machine()}\n")
    print("### Overhead: `generate` with no strategy against the backend's own greedy generation\n")
    rows = []
    for name in args.backends:
        rows += overhead.measure(load_backend(name, n_ctx=max(lengths) + 64), lengths, repeats)
    print(table(overhead.HEADER, rows), "\n", flush=True)
    print("### Rewind cost: CreativeWriting, temperature 1, summed over 3 seeds\n")
    rows = []
    for name in args.backends:
        rows += rewind_cost.measure(name, tokens, 3)
    print(table(rewind_cost.HEADER, rows), "\n", flush=True)
    print("### Ban-list scaling: AntiSlop, greedy, llama.cpp\n")
    sizes = [10, 1000, 10000, 50000]
    print(table(ban_scaling.HEADER, ban_scaling.measure(sizes, tokens, repeats)), "\n", flush=True)
    print("### Sampling settings: `generate` against `create_completion` with the same settings, llama.cpp\n")
    print(table(sampling_overhead.HEADER, sampling_overhead.measure(tokens, repeats)), "\n", flush=True)
    print("### Many sequences at once: BatchedLlamacpp against a plain batched llama.cpp loop, greedy\n")
    sequences = [1, 4] if args.quick else [1, 4, 16, 32]
    batched_rows, step_rows = batched_throughput.measure(sequences, 64, repeats=1 if args.quick else 3)
    print(table(batched_throughput.HEADER, batched_rows), "\n", flush=True)
    print(table(batched_throughput.STEP_HEADER, step_rows), "\n", flush=True)
    print("### Loops: LoopGuard against llama.cpp's DRY and repeat penalty, same prompts and seeds\n")
    n_prompts, n_loop_tokens = (4, 128) if args.quick else (len(loop_guard.PROMPTS), 512)
    loop_rows, loop_cost = loop_guard.measure(n_loop_tokens, n_prompts)
    print(table(loop_guard.HEADER, loop_rows), "\n", loop_cost, "\n", flush=True)
    print("### Peak memory of a greedy generation (fresh process each)\n")
    n_memory = 128 if args.quick else 1024
    print(table(memory.HEADER, memory.measure(args.backends, n_memory, 1 if args.quick else 2)), "\n")
    print("### Closing the loop: generate, mine a ban list (wordfreq), ban it (AntiSlop), generate again, score\n")
    n_prompts, n_loop = (6, 64) if args.quick else (24, 256)
    terms, rows = slop_loop.run(n_prompts, n_loop, top=40, hard=10, min_count=2 if args.quick else 3)
    print("mined:", ", ".join(f"{t.term} ({t.factor:g})" for t in terms[:20]), "\n")
    print(table(slop_loop.HEADER, rows), "\n", flush=True)
    print(f"(all benchmarks: {time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
