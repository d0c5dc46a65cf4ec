"""Engine overhead: tokens/s of ``generate`` with no strategy against the backend's own generation.

Greedy, same prompt, same process, interleaved: llama.cpp's
``create_completion``, transformers' ``model.generate`` and mlx-lm's
``stream_generate`` against ``BacktrackSampler(provider).generate``. Prints the
median tokens/s of each and their ratio (target: at least 0.97). With
``--antislop N`` a second row per backend runs AntiSlop with N phrases that
never occur in the text (target: at least 0.95).

The mlx backend runs the embedded model's safetensors export (``models.embedded_hf_dir``):
Metal on a Mac, the CPU on Linux (``pip install "mlx[cpu]" mlx-lm``).

    python bench/overhead.py [--backends llamacpp transformers mlx] [--lengths 128 1024] [--repeats 3]
        [--antislop 1000]
"""

from __future__ import annotations

import argparse

from backtrack_sampler import AntiSlopStrategy, BacktrackSampler
from common import BACKENDS as COMMON_BACKENDS
from common import Backend, load_backend, machine, median, table, timed

HEADER = ["backend", "new tokens", "raw tok/s", "generate tok/s", "ratio"]
BACKENDS = (*COMMON_BACKENDS, "mlx")


def load_mlx_backend() -> Backend:
    """The embedded model on mlx-lm; its own generation is ``mlx_lm.stream_generate`` (greedy by default)."""
    import mlx_lm

    from backtrack_sampler.models import embedded_hf_dir, load_mlx
    from backtrack_sampler.provider.mlx_provider import MlxProvider

    model, tokenizer = load_mlx(embedded_hf_dir())
    provider = MlxProvider(model, tokenizer)

    def mlx_greedy(tokens: list[int], n: int) -> list[int]:
        return [r.token for r in mlx_lm.stream_generate(model, tokenizer, prompt=tokens, max_tokens=n)]

    return Backend("mlx", provider, mlx_greedy, lambda: provider.rewind(0))


def samplers(backend: Backend, antislop: int, n_tokens: int) -> list[tuple[str, BacktrackSampler]]:
    """No strategy, and with ``antislop`` > 0 AntiSlop with that many phrases absent from a greedy control run."""
    provider = backend.provider
    plain = BacktrackSampler(provider)
    if not antislop:
        return [(backend.name, plain)]
    from ban_scaling import word_pairs

    backend.reset()
    control = plain.generate_text(provider.encode("Once upon a time"), max_new_tokens=n_tokens, temperature=0).text
    strategy = AntiSlopStrategy(provider, word_pairs(provider, antislop, avoid=control))
    return [(backend.name, plain), (f"{backend.name} + AntiSlop {antislop}", BacktrackSampler(provider, strategy))]


def measure(backend: Backend, lengths: list[int], repeats: int, antislop: int = 0) -> list[list]:
    tokens = backend.provider.encode("Once upon a time")
    ours = samplers(backend, antislop, max(lengths))
    backend.raw_greedy(tokens, 8)  # warm up every path
    for _, sampler in ours:
        sum(1 for _ in sampler.generate(tokens, max_new_tokens=8, temperature=0))
    rows = []
    for n in lengths:
        counts: dict[str, set[int]] = {"raw": set(), **{label: set() for label, _ in ours}}
        speeds: dict[str, list[float]] = {label: [] for label in counts}

        def run_raw(n=n, counts=counts):
            backend.reset()
            count = len(backend.raw_greedy(tokens, n))
            counts["raw"].add(count)
            return count

        def run_ours(label, sampler, n=n, counts=counts):
            backend.reset()
            count = sum(1 for _ in sampler.generate(tokens, max_new_tokens=n, temperature=0))
            counts[label].add(count)
            return count

        runs = [("raw", run_raw), *((label, lambda s=s, lb=label: run_ours(lb, s)) for label, s in ours)]
        for i in range(repeats):  # rotate which one goes first
            for label, fn in runs[i % len(runs) :] + runs[: i % len(runs)]:
                speeds[label].append(timed(fn))
        raw = median(speeds["raw"])
        for label, _ in ours:
            mine = median(speeds[label])
            shown = "/".join(map(str, sorted(counts["raw"] | counts[label])))
            rows.append([label, shown, f"{raw:.1f}", f"{mine:.1f}", f"{mine / raw:.3f}"])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", nargs="+", choices=BACKENDS, default=list(COMMON_BACKENDS))
    parser.add_argument("--lengths", type=int, nargs="+", default=[128, 1024])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--antislop", type=int, default=0, metavar="N", help="also AntiSlop with N phrases")
    args = parser.parse_args()
    print(machine() + _mlx_version(args.backends))
    rows = []
    for name in args.backends:
        backend = load_mlx_backend() if name == "mlx" else load_backend(name, n_ctx=max(args.lengths) + 64)
        rows += measure(backend, args.lengths, args.repeats, args.antislop)
    print(table(HEADER, rows))


def _mlx_version(backends: list[str]) -> str:
    if "mlx" not in backends:
        return ""
    import importlib.metadata

    import mlx.core as mx

    version = importlib.metadata.version
    return f"; mlx {version('mlx')} ({mx.default_device()}), mlx-lm {version('mlx-lm')}"


if __name__ == "__main__":
    main()
