"""Peak memory: resident set size of a 1024-token generation against the raw backend's own generation.

Peak RSS only grows within a process, so each measurement runs in a fresh
child process: load the model, generate greedily, report its VmHWM. The
script prints the medians and the ratio (target: within 10%).

    python bench/memory.py [--backends llamacpp transformers] [--tokens 1024] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
from pathlib import Path

from backtrack_sampler import BacktrackSampler
from common import BACKENDS, load_backend, machine, median, table

HEADER = ["backend", "new tokens", "raw peak RSS MiB", "generate peak RSS MiB", "ratio"]


def child(backend_name: str, mode: str, n_tokens: int) -> None:
    backend = load_backend(backend_name, n_ctx=n_tokens + 64)
    tokens = backend.provider.encode("Once upon a time")
    if mode == "raw":
        count = len(backend.raw_greedy(tokens, n_tokens))
    else:
        count = len(
            BacktrackSampler(backend.provider).generate_text(tokens, max_new_tokens=n_tokens, temperature=0).tokens
        )
    print(json.dumps({"peak_mib": peak_rss_kib() / 1024, "tokens": count}))


def peak_rss_kib() -> int:
    """This process's peak RSS: VmHWM (ru_maxrss would carry the parent's peak over fork and exec)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def run_child(backend_name: str, mode: str, n_tokens: int) -> dict:
    out = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--child", backend_name, mode, "--tokens", str(n_tokens)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure(backends: list[str], n_tokens: int, repeats: int) -> list[list]:
    rows = []
    for name in backends:
        raw, ours, counts = [], [], set()
        for _ in range(repeats):
            for mode, into in (("raw", raw), ("ours", ours)):
                result = run_child(name, mode, n_tokens)
                into.append(result["peak_mib"])
                counts.add(result["tokens"])
        r, o = median(raw), median(ours)
        rows.append([name, "/".join(map(str, sorted(counts))), f"{r:.0f}", f"{o:.0f}", f"{o / r:.3f}"])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", nargs="+", choices=BACKENDS, default=list(BACKENDS))
    parser.add_argument("--tokens", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--child", nargs=2, metavar=("BACKEND", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], args.child[1], args.tokens)
        return
    print(machine())
    print(table(HEADER, measure(args.backends, args.tokens, args.repeats)))


if __name__ == "__main__":
    main()
