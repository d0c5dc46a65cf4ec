"""Many sequences at once on llama.cpp: aggregate tokens/s of the batched path against a raw batched loop.

    python bench/batched_throughput.py [--sequences 1 4 16 32] [--tokens 64]

For each number of sequences N, in the same process:

(a) raw: a plain loop over llama-cpp-python's low-level API, one ``llama_decode``
    per step with the next token of every sequence, greedy argmax in numpy, no
    strategy (the limit a batched backtracking engine can approach);
(b) ours: ``BatchedLlamacpp`` with N slots, N threads each running
    ``BacktrackSampler(...).generate_text`` with no strategy, greedy;
(c) ours with AntiSlop: 1,000 phrases (990 pairs of vocabulary words and the
    10 words the model used most in (b), so rewinds fire), greedy.

Both (a) and (b) stop a sequence at EOS or after ``--tokens`` tokens, and
count the tokens they generated (prompts included in the time). Also
printed: the time per token that (b) spends outside ``llama_decode``
(sampling, strategy, scheduling), and the peak RSS of the process.
"""

from __future__ import annotations

import argparse
import collections
import re
import resource
import time

import numpy as np

from backtrack_sampler import AntiSlopStrategy, BacktrackSampler
from backtrack_sampler.async_sampler import run_concurrently
from backtrack_sampler.models import load_llama
from backtrack_sampler.provider.llamacpp_batched import BatchedLlamacpp
from backtrack_sampler.provider.llamacpp_provider import LlamacppProvider
from ban_scaling import word_pairs
from common import machine, table

TOPICS = ["a dog", "a lighthouse", "a robot", "the sea", "a baker", "a dragon", "a train", "a garden"]
HEADER = [
    "sequences",
    "raw batched tok/s",
    "ours tok/s",
    "ours / raw",
    "ours + AntiSlop 1k tok/s",
    "AntiSlop / ours",
    "rewinds",
    "µs/token outside decode",
]


def prompts(vocab: LlamacppProvider, n: int) -> list[list[int]]:
    texts = [f"Write a story about {TOPICS[i % len(TOPICS)]} (number {i})." for i in range(n)]
    return [vocab.encode(vocab.apply_chat_template([{"role": "user", "content": t}])) for t in texts]


def raw_batched(llm, batch_prompts: list[list[int]], n_new: int, n_ctx: int) -> float:
    """(a): tokens/s of a plain batched greedy loop over the low-level API."""
    import llama_cpp

    n = len(batch_prompts)
    params = llama_cpp.llama_context_params.from_buffer_copy(llm.context_params)
    params.n_ctx, params.n_seq_max, params.kv_unified = n_ctx * n, n, False
    params.n_batch = params.n_ubatch = 512
    ctx = llama_cpp.llama_init_from_model(llm.model, params)
    batch = llama_cpp.llama_batch_init(512, 0, 1)
    n_vocab, eos = llm.n_vocab(), llm.token_eos()
    try:
        started = time.perf_counter()
        last: dict[int, np.ndarray] = {}
        for seq, tokens in enumerate(batch_prompts):  # prefill, one sequence per decode
            _fill(batch, [(seq, pos, t, pos == len(tokens) - 1) for pos, t in enumerate(tokens)])
            llama_cpp.llama_decode(ctx, batch)
            last[seq] = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(ctx, len(tokens) - 1), shape=(n_vocab,))
            last[seq] = last[seq].copy()
        positions = {seq: len(tokens) for seq, tokens in enumerate(batch_prompts)}
        generated = 0
        for _ in range(n_new):
            step = [(seq, int(np.argmax(logits))) for seq, logits in last.items()]
            step = [(seq, token) for seq, token in step if token != eos]
            if not step:
                break
            _fill(batch, [(seq, positions[seq], token, True) for seq, token in step])
            llama_cpp.llama_decode(ctx, batch)
            last = {}
            for row, (seq, _) in enumerate(step):
                positions[seq] += 1
                last[seq] = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(ctx, row), shape=(n_vocab,)).copy()
            generated += len(step)
        return generated / (time.perf_counter() - started)
    finally:
        llama_cpp.llama_batch_free(batch)
        llama_cpp.llama_free(ctx)


def _fill(batch, entries: list[tuple[int, int, int, bool]]) -> None:
    for i, (seq, pos, token, logits) in enumerate(entries):
        batch.token[i], batch.pos[i], batch.n_seq_id[i] = token, pos, 1
        batch.seq_id[i][0], batch.logits[i] = seq, logits
    batch.n_tokens = len(entries)


def ours(batched: BatchedLlamacpp, batch_prompts, n_new: int, phrases=None) -> tuple[float, list, float]:
    """(b)/(c): tokens/s with N threads on the batched backend; the results; µs per token outside decode."""

    def make_sampler():
        provider = batched.provider()
        return BacktrackSampler(provider, AntiSlopStrategy(provider, phrases) if phrases else None)

    decode_before = batched.stats.decode_s
    started = time.perf_counter()
    results = run_concurrently(make_sampler, batch_prompts, len(batch_prompts), max_new_tokens=n_new, temperature=0)
    elapsed = time.perf_counter() - started
    errors = [r for r in results if isinstance(r, BaseException)]
    if errors:
        raise errors[0]
    tokens = sum(len(r.tokens) for r in results)
    outside = (elapsed - (batched.stats.decode_s - decode_before)) / max(1, tokens) * 1e6
    return tokens / elapsed, results, outside


def frequent_words(results, n: int = 10) -> list[str]:
    counts = collections.Counter(w.lower() for r in results for w in re.findall(r"[A-Za-z]{4,}", r.text))
    return [w for w, _ in counts.most_common(n)]


def measure(sequences: list[int], n_new: int, n_ctx: int = 512, echo: bool = False) -> list[list]:
    llm = load_llama(n_ctx=256)
    vocab = LlamacppProvider(llm)
    rows = []
    for n in sequences:
        batch_prompts = prompts(vocab, n)
        raw = raw_batched(llm, batch_prompts, n_new, n_ctx)
        with BatchedLlamacpp(llm, n_slots=n, n_ctx=n_ctx) as batched:  # a fresh one each: no cached prompts
            plain, results, outside = ours(batched, batch_prompts, n_new)
        phrases = sorted(set(word_pairs(vocab, 990, avoid="")) | set(frequent_words(results)))[:1000]
        with BatchedLlamacpp(llm, n_slots=n, n_ctx=n_ctx) as batched:
            banned, banned_results, _ = ours(batched, batch_prompts, n_new, phrases)
        rewinds = sum(len(r.rewinds) for r in banned_results)
        rows.append(
            [n, f"{raw:.1f}", f"{plain:.1f}", f"{plain / raw:.3f}", f"{banned:.1f}", f"{banned / plain:.3f}"]
            + [rewinds, f"{outside:.0f}"]
        )
        if echo:  # a row as soon as it is measured
            print(table(HEADER, rows[-1:]).splitlines()[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sequences", type=int, nargs="+", default=[1, 4, 16, 32])
    parser.add_argument("--tokens", type=int, default=64, help="new tokens per sequence")
    parser.add_argument("--n-ctx", type=int, default=512, help="positions per sequence")
    args = parser.parse_args()
    print(f"Machine: {machine()}\n")
    print(table(HEADER, []))
    measure(args.sequences, args.tokens, args.n_ctx, echo=True)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\npeak RSS of this process: {peak:.0f} MiB")


if __name__ == "__main__":
    main()
