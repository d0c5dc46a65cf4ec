"""Many sequences at once on llama.cpp: the batched path against the limit, a plain batched loop.

    python bench/batched_throughput.py [--sequences 1 4 16 32] [--tokens 64] [--repeats 3]

For each number of sequences N, in the same process, rounds interleaved
(median of ``--repeats``):

(a) the plain loop: llama-cpp-python's low-level API at its best, the limit.
    One context with the very parameters ``BatchedLlamacpp`` uses
    (``provider.llamacpp_context.batched_context_params``: N KV streams of
    ``--n-ctx`` positions, ``n_batch`` 512), every prompt prefilled in one
    batched decode, then one ``llama_decode`` per step with the next token of
    every sequence, greedy argmax in numpy with EOS masked, so every sequence
    is ``--tokens`` long; measured with flash attention off and at llama.cpp's
    default (auto);
(b) ours: ``BatchedLlamacpp`` with N slots (flash attention: the ``Llama``'s,
    auto from ``load_llama``), N threads each running
    ``BacktrackSampler(...).generate_text`` with no strategy, greedy;
(c) ours with AntiSlop: 1,000 phrases (990 pairs of vocabulary words and the
    10 words the model used most in (b), so rewinds fire), greedy.

Each clock runs from the first prompt token to the last generated token
(prompts included, batched in both). The ratios compare (b) and (c) with (a)
at the same flash attention setting. A second table splits the time per step
(one ``llama_decode``): inside ``llama_decode``; for (a) the argmax and batch
filling; for (b) the scheduler's wait for the slowest sequence to ask again
(the engines sampling, in their threads) and the rest (recording logits,
waking threads); and the share of the machine's cores each kind of thread
used (from ``/proc/self/task``: the engines' Python threads, the scheduler,
and the others: llama.cpp's compute threads and the main thread).
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import resource
import statistics
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from backtrack_sampler import AntiSlopStrategy, BacktrackSampler
from backtrack_sampler.async_sampler import run_concurrently
from backtrack_sampler.models import load_llama
from backtrack_sampler.provider.llamacpp_batched import BatchedLlamacpp
from backtrack_sampler.provider.llamacpp_context import batched_context_params, flash_attn_name
from backtrack_sampler.provider.llamacpp_provider import LlamacppProvider
from ban_scaling import word_pairs
from common import machine, table

TOPICS = ["a dog", "a lighthouse", "a robot", "the sea", "a baker", "a dragon", "a train", "a garden"]
HEADER = [
    "sequences",
    "plain loop tok/s, flash attn off",
    "plain loop tok/s, auto",
    "ours tok/s",
    "ours / plain",
    "ours + AntiSlop 1k tok/s",
    "AntiSlop / plain",
    "rewinds",
]
STEP_HEADER = [
    "sequences",
    "path",
    "ms/step",
    "in llama_decode",
    "waiting for the slowest sequence",
    "other",
    "CPU share: engine threads",
    "scheduler (runs llama_decode)",
    "other threads (llama.cpp's)",
]


@dataclass
class Run:
    """One measured run: tokens/s, the time per step and how it splits, CPU seconds per kind of thread."""

    tokens: int
    elapsed: float
    steps: int
    decode_s: float
    wait_s: float = 0.0
    cpu: dict[str, float] = field(default_factory=dict)
    results: list = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.tokens / self.elapsed


def prompts(vocab: LlamacppProvider, n: int) -> list[list[int]]:
    texts = [f"Write a story about {TOPICS[i % len(TOPICS)]} (number {i})." for i in range(n)]
    return [vocab.encode(vocab.apply_chat_template([{"role": "user", "content": t}])) for t in texts]


def process_cpu() -> float:
    """CPU seconds (user + system) of every thread of this process so far, ended ones included."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def thread_cpu(native_id: int) -> float:
    """CPU seconds (user + system) of one living thread of this process."""
    with open(f"/proc/self/task/{native_id}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class TimedSampler(BacktrackSampler):
    """A sampler that adds the CPU time of its thread during ``generate_text`` to ``spent["engine"]``."""

    def __init__(self, spent: dict[str, float], *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.spent = spent

    def generate_text(self, *args, **kwargs):
        started = time.thread_time()
        try:
            return super().generate_text(*args, **kwargs)
        finally:
            self.spent["engine"] += time.thread_time() - started


def plain_loop(llm, batch_prompts: list[list[int]], n_new: int, n_ctx: int, flash_attn: str | None = None) -> Run:
    """(a): a plain batched greedy loop over the low-level API, every sequence ``n_new`` tokens long.

    It runs in a thread of its own that ends with it, as ``BatchedLlamacpp``'s
    scheduler runs ours: llama.cpp's OpenMP build halves the speed of small
    decodes when two living threads have started OpenMP work (libgomp counts
    more threads than CPUs and stops spinning at its barriers), so a loop on
    the main thread would slow every later run of ours in this process.
    """
    out: list[Run | BaseException] = []

    def run() -> None:
        try:
            out.append(_plain_loop(llm, batch_prompts, n_new, n_ctx, flash_attn))
        except BaseException as exc:  # re-raised in the caller's thread
            out.append(exc)

    thread = threading.Thread(target=run, name="plain-loop")
    thread.start()
    thread.join()
    if isinstance(out[0], BaseException):
        raise out[0]
    return out[0]


def _plain_loop(llm, batch_prompts: list[list[int]], n_new: int, n_ctx: int, flash_attn: str | None) -> Run:
    import llama_cpp

    n = len(batch_prompts)
    params = batched_context_params(llm, n, n_ctx, 512, flash_attn)
    ctx = llama_cpp.llama_init_from_model(llm.model, params)
    batch = llama_cpp.llama_batch_init(params.n_batch, 0, 1)
    n_vocab = llm.n_vocab()
    eos = sorted(LlamacppProvider(llm).eos_token_ids) if n_new else []
    decode_s, steps = 0.0, 0
    try:
        cpu_before = process_cpu()
        started = time.perf_counter()
        # Prefill: whole prompts, as many per decode as n_batch holds, logits at each prompt's last position.
        logits: dict[int, np.ndarray] = {}
        groups: list[list[int]] = [[]]
        for seq, tokens in enumerate(batch_prompts):
            if groups[-1] and sum(len(batch_prompts[s]) for s in groups[-1]) + len(tokens) > params.n_batch:
                groups.append([])
            groups[-1].append(seq)
        for group in groups:
            entries = [(s, p, t, p == len(batch_prompts[s]) - 1) for s in group for p, t in enumerate(batch_prompts[s])]
            _fill(batch, entries)
            t = time.perf_counter()
            llama_cpp.llama_decode(ctx, batch)
            decode_s, steps = decode_s + time.perf_counter() - t, steps + 1
            rows = [i for i, entry in enumerate(entries) if entry[3]]
            logits |= {s: _row(ctx, row, n_vocab) for s, row in zip(group, rows, strict=True)}
        positions = [len(tokens) for tokens in batch_prompts]
        for i in range(n_new):
            step = []
            for seq in range(n):
                row = logits[seq]
                row[eos] = -np.inf
                step.append((seq, positions[seq], int(np.argmax(row)), True))
            if i == n_new - 1:  # the last token is chosen; its position is never evaluated (nor is ours)
                break
            _fill(batch, step)
            t = time.perf_counter()
            llama_cpp.llama_decode(ctx, batch)
            decode_s, steps = decode_s + time.perf_counter() - t, steps + 1
            logits = {seq: _row(ctx, seq, n_vocab) for seq in range(n)}
            positions = [p + 1 for p in positions]
        elapsed = time.perf_counter() - started
        return Run(n * n_new, elapsed, steps, decode_s, cpu={"other": process_cpu() - cpu_before})
    finally:
        llama_cpp.llama_batch_free(batch)
        llama_cpp.llama_free(ctx)


def raw_batched(llm, batch_prompts: list[list[int]], n_new: int, n_ctx: int, flash_attn: str | None = None) -> float:
    """Tokens/s of the plain loop (a) (the ceiling the other benchmarks print)."""
    return plain_loop(llm, batch_prompts, n_new, n_ctx, flash_attn).rate


def _row(ctx, row: int, n_vocab: int) -> np.ndarray:
    import llama_cpp

    return np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(ctx, row), shape=(n_vocab,)).copy()


def _fill(batch, entries: list[tuple[int, int, int, bool]]) -> None:
    for i, (seq, pos, token, logits) in enumerate(entries):
        batch.token[i], batch.pos[i], batch.n_seq_id[i] = token, pos, 1
        batch.seq_id[i][0], batch.logits[i] = seq, logits
    batch.n_tokens = len(entries)


def ours(batched: BatchedLlamacpp, batch_prompts, n_new: int, phrases=None) -> Run:
    """(b)/(c): N threads on the batched backend, greedy; the results and where the time went."""
    spent = {"engine": 0.0}

    def make_sampler():
        provider = batched.provider()
        return TimedSampler(spent, provider, AntiSlopStrategy(provider, phrases) if phrases else None)

    stats = batched.stats
    decode_before, wait_before, steps_before = stats.decode_s, stats.wait_s, stats.decodes
    cpu_before, scheduler_before = process_cpu(), thread_cpu(batched._thread.native_id)
    started = time.perf_counter()
    results = run_concurrently(make_sampler, batch_prompts, len(batch_prompts), max_new_tokens=n_new, temperature=0)
    elapsed = time.perf_counter() - started
    spent["scheduler"] = thread_cpu(batched._thread.native_id) - scheduler_before
    spent["other"] = process_cpu() - cpu_before - spent["engine"] - spent["scheduler"]
    errors = [r for r in results if isinstance(r, BaseException)]
    if errors:
        raise errors[0]
    tokens = sum(len(r.tokens) for r in results)
    steps = stats.decodes - steps_before
    return Run(tokens, elapsed, steps, stats.decode_s - decode_before, stats.wait_s - wait_before, spent, results)


def frequent_words(results, n: int = 10) -> list[str]:
    counts = collections.Counter(w.lower() for r in results for w in re.findall(r"[A-Za-z]{4,}", r.text))
    return [w for w, _ in counts.most_common(n)]


def step_row(n: int, path: str, run: Run, cores: int) -> list:
    per = 1e3 / max(1, run.steps)
    other = run.elapsed - run.decode_s - run.wait_s
    share = {kind: seconds / (run.elapsed * cores) for kind, seconds in run.cpu.items()}
    return [n, path, f"{run.elapsed * per:.1f}", f"{run.decode_s * per:.1f}", f"{run.wait_s * per:.1f}"] + [
        f"{other * per:.1f}",
        f"{share.get('engine', 0):.0%}" if "engine" in share else "-",
        f"{share.get('scheduler', 0):.0%}" if "scheduler" in share else "-",
        f"{share.get('other', 0):.0%}",
    ]


def median_run(runs: list[Run]) -> Run:
    return sorted(runs, key=lambda r: r.rate)[len(runs) // 2]


def measure(sequences: list[int], n_new: int, n_ctx: int = 512, repeats: int = 3, echo: bool = False):
    llm = load_llama(n_ctx=256)  # flash attention at llama.cpp's default, auto
    vocab = LlamacppProvider(llm)
    cores = len(os.sched_getaffinity(0))
    rows, step_rows = [], []
    for n in sequences:
        batch_prompts = prompts(vocab, n)
        with BatchedLlamacpp(llm, n_slots=n, n_ctx=n_ctx) as batched:  # an unmeasured round: the control run
            control = ours(batched, batch_prompts, n_new)
        phrases = sorted(set(word_pairs(vocab, 990, avoid="")) | set(frequent_words(control.results)))[:1000]
        off, auto, plain, banned = [], [], [], []
        for _ in range(repeats):
            off.append(plain_loop(llm, batch_prompts, n_new, n_ctx, "off"))
            auto.append(plain_loop(llm, batch_prompts, n_new, n_ctx, "auto"))
            with BatchedLlamacpp(llm, n_slots=n, n_ctx=n_ctx) as batched:  # a fresh one each: no cached prompts
                plain.append(ours(batched, batch_prompts, n_new))
            with BatchedLlamacpp(llm, n_slots=n, n_ctx=n_ctx) as batched:
                banned.append(ours(batched, batch_prompts, n_new, phrases))
        same = {"off": off, "auto": auto}.get(flash_attn_name(llm), auto)
        ref = statistics.median(r.rate for r in same)
        rate = statistics.median(r.rate for r in plain)
        banned_rate = statistics.median(r.rate for r in banned)
        rewinds = sum(len(r.rewinds) for run in banned for r in run.results) // repeats
        rows.append(
            [n, f"{statistics.median(r.rate for r in off):.1f}", f"{statistics.median(r.rate for r in auto):.1f}"]
            + [f"{rate:.1f}", f"{rate / ref:.3f}", f"{banned_rate:.1f}", f"{banned_rate / ref:.3f}", rewinds]
        )
        step_rows += [
            step_row(n, "plain loop, auto", median_run(auto), cores),
            step_row(n, "ours", median_run(plain), cores),
            step_row(n, "ours + AntiSlop 1k", median_run(banned), cores),
        ]
        if echo:  # a row as soon as it is measured
            print(table(HEADER, rows[-1:]).splitlines()[-1], flush=True)
    return rows, step_rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sequences", type=int, nargs="+", default=[1, 4, 16, 32])
    parser.add_argument("--tokens", type=int, default=64, help="new tokens per sequence")
    parser.add_argument("--n-ctx", type=int, default=512, help="positions per sequence")
    parser.add_argument("--repeats", type=int, default=3, help="rounds, interleaved; medians")
    args = parser.parse_args()
    print(f"Machine: {machine()}\n")
    print(table(HEADER, []))
    _, step_rows = measure(args.sequences, args.tokens, args.n_ctx, args.repeats, echo=True)
    print("\nTime per step (one llama_decode), median run; the share of the cores each kind of thread used:\n")
    print(table(STEP_HEADER, step_rows))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\npeak RSS of this process: {peak:.0f} MiB")


if __name__ == "__main__":
    main()
