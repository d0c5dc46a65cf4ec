"""Engine overhead: tokens/s of ``generate`` with no strategy against the backend's own generation.

Greedy, same prompt, same process, interleaved: llama.cpp's
``create_completion``, transformers' ``model.generate`` and mlx-lm's
``stream_generate`` against ``BacktrackSampler(provider).generate``. Prints the
median tokens/s of each and their ratio (target: at least 0.97), and the median
of each round's ratio (a round runs each once, back to back: a machine whose
speed drifts moves both alike). With
``--antislop N`` a second row per backend runs AntiSlop with N phrases that
never occur in the text (target: at least 0.95).

The mlx backend runs the embedded model's safetensors export (``models.embedded_hf_dir``):
Metal on a Mac, the CPU on Linux (``pip install "mlx[cpu]" mlx-lm``). ``MlxProvider``
builds each next step ahead on the most likely token; ``--mlx-build-ahead both``
adds a row for a provider that does not (``MlxProvider(build_ahead=False)``).

    python bench/overhead.py [--backends llamacpp transformers mlx] [--lengths 128 1024] [--repeats 3]
        [--antislop 1000] [--mlx-build-ahead {on,off,both}]
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence

from backtrack_sampler import AntiSlopStrategy, BacktrackSampler
from common import BACKENDS as COMMON_BACKENDS
from common import Backend, load_backend, machine, median, table, timed

HEADER = ["backend", "new tokens", "raw tok/s", "generate tok/s", "ratio", "ratio per round"]
BACKENDS = (*COMMON_BACKENDS, "mlx")


def load_mlx_backend(build_ahead: bool = True) -> Backend:
    """The embedded model on mlx-lm; its own generation is ``mlx_lm.stream_generate`` (greedy by default)."""
    import mlx_lm

    from backtrack_sampler.models import embedded_hf_dir, load_mlx
    from backtrack_sampler.provider.mlx_provider import MlxProvider

    model, tokenizer = load_mlx(embedded_hf_dir())
    provider = MlxProvider(model, tokenizer, build_ahead=build_ahead)

    def mlx_greedy(tokens: list[int], n: int) -> list[int]:
        return [r.token for r in mlx_lm.stream_generate(model, tokenizer, prompt=tokens, max_tokens=n)]

    return Backend("mlx", provider, mlx_greedy, lambda: provider.rewind(0))


Run = tuple[str, BacktrackSampler, Callable[[], None]]  # label, sampler, what empties its cache


def samplers(backend: Backend, antislop: int, n_tokens: int, more: Sequence[Run] = ()) -> list[Run]:
    """No strategy, ``more``, and with ``antislop`` > 0 AntiSlop with that many phrases absent from a control run."""
    provider = backend.provider
    plain = BacktrackSampler(provider)
    if not antislop:
        return [(backend.name, plain, backend.reset), *more]
    from ban_scaling import word_pairs

    backend.reset()
    control = plain.generate_text(provider.encode("Once upon a time"), max_new_tokens=n_tokens, temperature=0).text
    strategy = AntiSlopStrategy(provider, word_pairs(provider, antislop, avoid=control))
    antislop_run = (f"{backend.name} + AntiSlop {antislop}", BacktrackSampler(provider, strategy), backend.reset)
    return [(backend.name, plain, backend.reset), *more, antislop_run]


def measure(
    backend: Backend, lengths: list[int], repeats: int, antislop: int = 0, more: Sequence[Run] = ()
) -> list[list]:
    tokens = backend.provider.encode("Once upon a time")
    ours = samplers(backend, antislop, max(lengths), more)
    backend.raw_greedy(tokens, 8)  # warm up every path
    for _, sampler, _ in ours:
        sum(1 for _ in sampler.generate(tokens, max_new_tokens=8, temperature=0))
    rows = []
    for n in lengths:
        counts: dict[str, set[int]] = {"raw": set(), **{label: set() for label, _, _ in ours}}
        speeds: dict[str, list[float]] = {label: [] for label in counts}

        def run_raw(n=n, counts=counts):
            backend.reset()
            count = len(backend.raw_greedy(tokens, n))
            counts["raw"].add(count)
            return count

        def run_ours(label, sampler, reset, n=n, counts=counts):
            reset()
            count = sum(1 for _ in sampler.generate(tokens, max_new_tokens=n, temperature=0))
            counts[label].add(count)
            return count

        runs = [("raw", run_raw), *((label, lambda s=s, lb=label, r=r: run_ours(lb, s, r)) for label, s, r in ours)]
        for i in range(repeats):  # rotate which one goes first
            for label, fn in runs[i % len(runs) :] + runs[: i % len(runs)]:
                speeds[label].append(timed(fn))
        raw = median(speeds["raw"])
        for label, _, _ in ours:
            mine = median(speeds[label])
            shown = "/".join(map(str, sorted(counts["raw"] | counts[label])))
            per_round = median([a / b for a, b in zip(speeds[label], speeds["raw"], strict=True)])
            rows.append([label, shown, f"{raw:.1f}", f"{mine:.1f}", f"{mine / raw:.3f}", f"{per_round:.3f}"])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", nargs="+", choices=BACKENDS, default=list(COMMON_BACKENDS))
    parser.add_argument("--lengths", type=int, nargs="+", default=[128, 1024])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--antislop", type=int, default=0, metavar="N", help="also AntiSlop with N phrases")
    parser.add_argument(
        "--mlx-build-ahead",
        choices=["on", "off", "both"],
        default="on",
        help="MlxProvider's build_ahead; both: a second row without it (default: on)",
    )
    args = parser.parse_args()
    print(machine() + _mlx_version(args.backends))
    rows = []
    for name in args.backends:
        more: list[Run] = []
        if name == "mlx":
            backend = load_mlx_backend(build_ahead=args.mlx_build_ahead != "off")
            if args.mlx_build_ahead == "both":
                more.append(_without_build_ahead(backend))
        else:
            backend = load_backend(name, n_ctx=max(args.lengths) + 64)
        rows += measure(backend, args.lengths, args.repeats, args.antislop, more)
    print(table(HEADER, rows))


def _without_build_ahead(backend: Backend) -> Run:
    """A second ``MlxProvider`` on the same model and tokenizer, building no step ahead."""
    from backtrack_sampler.provider.mlx_provider import MlxProvider

    provider = MlxProvider(backend.provider.model, backend.provider.tokenizer, build_ahead=False)
    return (f"{backend.name}, no build-ahead", BacktrackSampler(provider), lambda: provider.rewind(0))


def _mlx_version(backends: list[str]) -> str:
    if "mlx" not in backends:
        return ""
    import importlib.metadata

    import mlx.core as mx

    version = importlib.metadata.version
    return f"; mlx {version('mlx')} ({mx.default_device()}), mlx-lm {version('mlx-lm')}"


if __name__ == "__main__":
    main()
