"""Server throughput: the server against the library, and the aggregate of many clients with ``--parallel``.

Two set-ups interleave the two paths with the same settings (greedy, same
prompt, same length):

- ``process``: ``python -m backtrack_sampler serve --parallel 1`` as its own
  process (a free port of 127.0.0.1, the embedded model, its own copy of the
  model); this process streams from it with httpx and runs
  ``BacktrackSampler.stream`` on its own copy.
- ``thread``: the app on uvicorn in a thread of this process, serving the very
  provider the library path uses (same model instance: only the server's own
  work differs).

Time runs from sending the request to ``data: [DONE]`` (prompt included), and
from calling ``stream`` to its ``FinishEvent``. Prints the median tokens/s of
each path and their ratio (target: at least 0.9), then the aggregate tokens/s
of 8 concurrent streams.

A third set-up, ``scaling``, starts ``serve --parallel N`` for each N of
``--parallel`` and streams from 1, 4 and 16 clients at once (``--scaling-clients``),
each a different prompt, ``--scaling-repeats`` rounds interleaved: it prints
the aggregate tokens/s of each (median seconds) and its ratio to one client
(target with N >= 16: 16 clients at least 3x one client), then the raw batched
loop of ``batched_throughput`` with as many sequences, same run: the ceiling.

    python bench/server_throughput.py [--tokens 256] [--repeats 5] [--clients 8] [--setups process thread scaling]
        [--parallel 1 16] [--scaling-clients 1 4 16] [--scaling-tokens 64] [--scaling-repeats 5] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time

import httpx

from backtrack_sampler import BacktrackSampler, FinishEvent
from backtrack_sampler.models import load_llama
from backtrack_sampler.provider.llamacpp_provider import LlamacppProvider
from batched_throughput import prompts as raw_prompts
from batched_throughput import raw_batched
from common import machine, median, table

PROMPT = "Once upon a time"


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(n_ctx: int, parallel: int = 1, threads: int | None = None) -> tuple[subprocess.Popen, str]:
    port = free_port()
    command = [sys.executable, "-m", "backtrack_sampler", "serve", "--port", str(port), "--n-ctx", str(n_ctx)]
    command += ["--parallel", str(parallel), "--log-level", "warning"]
    command += [] if threads is None else ["--threads", str(threads)]
    process = subprocess.Popen(command, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return process, url
        except httpx.TransportError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError("the server did not start")


def stream_from_server(
    client: httpx.Client, prompt: str, n: int, bias: dict[str, float] | None = None
) -> tuple[int, float, str, float]:
    """Tokens, seconds and text of one streamed completion, and the server engine's own tokens/s."""
    body = {
        "prompt": prompt,
        "max_tokens": n,
        "temperature": 0,
        "logit_bias": bias or {},
        "stream": True,
        "stream_options": {"include_usage": True},
        "backtrack_events": True,  # for backtrack_stats: the engine's own tokens/s on the server
    }
    text, tokens, engine = [], 0, 0.0
    start = time.perf_counter()
    with client.stream("POST", "/v1/completions", json=body) as response:
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
            for choice in chunk["choices"]:
                text.append(choice["text"])
                if "backtrack_stats" in choice:
                    engine = choice["backtrack_stats"]["tokens_per_second"]
    return tokens, time.perf_counter() - start, "".join(text), engine


def stream_from_library(sampler: BacktrackSampler, prompt: str, n: int) -> tuple[int, float, str]:
    start = time.perf_counter()
    for event in sampler.stream(prompt, max_new_tokens=n, temperature=0, top_k=0):
        if isinstance(event, FinishEvent):
            return len(event.tokens), time.perf_counter() - start, event.text
    raise RuntimeError("no FinishEvent")


def concurrent(url: str, clients: int, n: int, bias: dict[str, float] | None = None) -> tuple[int, float]:
    """Total tokens and seconds of ``clients`` streams sent at once (different prompts)."""
    counts = [0] * clients

    def one(i: int) -> None:
        with httpx.Client(base_url=url, timeout=600) as client:
            counts[i] = stream_from_server(client, f"{PROMPT} there was a place number {i}", n, bias)[0]

    threads = [threading.Thread(target=one, args=(i,)) for i in range(clients)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(counts), time.perf_counter() - start


def compare(url: str, sampler: BacktrackSampler, tokens: int, repeats: int) -> tuple[int, float, float, float, float]:
    """Interleaved runs of both paths: tokens, the medians of library, server and server-engine tok/s, and the
    median of the ratios of consecutive runs (robust to the machine's load drifting)."""
    with httpx.Client(base_url=url, timeout=600) as client:
        stream_from_server(client, PROMPT, 8)  # warm up both paths
        stream_from_library(sampler, PROMPT, 8)
        direct, served, engine = [], [], []
        for _ in range(repeats):
            lib_tokens, lib_s, lib_text = stream_from_library(sampler, PROMPT, tokens)
            srv_tokens, srv_s, srv_text, srv_engine = stream_from_server(client, PROMPT, tokens)
            engine.append(srv_engine)
            if (lib_tokens, lib_text) != (srv_tokens, srv_text):
                print(f"warning: different outputs ({lib_tokens} vs {srv_tokens} tokens)")
            direct.append(lib_tokens / lib_s)
            served.append(srv_tokens / srv_s)
    pairs = [srv / lib for lib, srv in zip(direct, served, strict=True)]
    return lib_tokens, median(direct), median(served), median(engine), median(pairs)


def in_thread(provider):
    """The app on uvicorn in a thread, serving ``provider`` (the server tests' helper)."""
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
    from server_support import LiveServer, make_app

    return LiveServer(make_app(provider))


def scaling(args: argparse.Namespace, provider: LlamacppProvider) -> None:
    """Aggregate streamed tokens/s of 1, 4, 16 clients against ``serve --parallel N``, for each N.

    Then, same run, the raw batched loop of ``batched_throughput`` (one
    ``llama_decode`` per step for all sequences, argmax, nothing else) with as
    many sequences: the most a server on this machine could reach.
    """
    eos = sorted(provider.eos_token_ids)
    bias = {str(t): -100.0 for t in eos}  # every stream runs to --scaling-tokens
    rows = []
    for parallel in args.parallel:
        process, url = start_server(args.n_ctx, parallel, args.threads)
        try:
            concurrent(url, 1, 8, bias)  # warm up
            runs: dict[int, list[tuple[int, float]]] = {clients: [] for clients in args.scaling_clients}
            for _ in range(args.scaling_repeats):  # rounds interleaved, so a slow spell hits every count alike
                for clients in args.scaling_clients:
                    runs[clients].append(concurrent(url, clients, args.scaling_tokens, bias))
            one = None
            for clients, measured in runs.items():
                total, seconds = measured[0][0], median([s for _, s in measured])
                rate = total / seconds
                one = rate if one is None else one
                rows.append([parallel, clients, total, f"{seconds:.2f}", f"{rate:.1f}", f"{rate / one:.2f}"])
            batch = httpx.get(f"{url}/health", timeout=10).json().get("batch")
            if batch:
                print(f"--parallel {parallel}: {batch['decodes']} decodes, at most {batch['max_sequences']} sequences")
        finally:
            process.terminate()
            process.wait(30)
    print(table(["--parallel", "clients", "tokens", "seconds", "aggregate tok/s", "vs 1 client"], rows))
    print("vs 1 client: aggregate tok/s over that of one client on the same server (target for 16 clients: >= 3).")
    print(f"Medians of {args.scaling_repeats} rounds (seconds), the client counts interleaved in each.")
    ceiling, one = [], None
    for clients in args.scaling_clients:
        rate = median(
            [
                raw_batched(provider.llm, raw_prompts(provider, clients), args.scaling_tokens, args.n_ctx)
                for _ in range(args.scaling_repeats)
            ]
        )
        one = rate if one is None else one
        ceiling.append([clients, f"{rate:.1f}", f"{rate / one:.2f}"])
    print("\nThe raw batched loop (bench/batched_throughput.py's (a)), same run, as many sequences as clients:\n")
    print(table(["sequences", "aggregate tok/s", "vs 1 sequence"], ceiling))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--n-ctx", type=int, default=2048)
    parser.add_argument(
        "--setups", nargs="+", choices=("process", "thread", "scaling"), default=["process", "thread", "scaling"]
    )
    parser.add_argument("--parallel", type=int, nargs="+", default=[1, 16], help="scaling: serve --parallel N")
    parser.add_argument("--scaling-clients", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--scaling-tokens", type=int, default=64, help="scaling: tokens per stream")
    parser.add_argument("--scaling-repeats", type=int, default=5, help="scaling: rounds (median seconds)")
    parser.add_argument("--threads", type=int, help="scaling: serve --threads N (default: the physical cores)")
    args = parser.parse_args()

    print(machine())
    provider = LlamacppProvider(load_llama(n_ctx=args.n_ctx))
    if "scaling" in args.setups:
        scaling(args, provider)
    sampler = BacktrackSampler(provider)
    rows = []
    for setup in [s for s in args.setups if s != "scaling"]:
        if setup == "process":
            process, url = start_server(args.n_ctx)
            try:
                n, lib, srv, engine, ratio = compare(url, sampler, args.tokens, args.repeats)
                total, seconds = concurrent(url, args.clients, args.tokens // 4)
            finally:
                process.terminate()
                process.wait(30)
        else:
            with in_thread(provider) as server:
                n, lib, srv, engine, ratio = compare(server.url, sampler, args.tokens, args.repeats)
                total, seconds = concurrent(server.url, args.clients, args.tokens // 4)
        row = [setup, n, f"{lib:.1f}", f"{srv:.1f}", f"{ratio:.3f}", f"{engine:.1f}", f"{srv / engine:.3f}"]
        rows.append([*row, f"{total / seconds:.1f}"])
    header = ["server in", "new tokens", "library tok/s", "server tok/s", "ratio", "server engine tok/s"]
    header += ["delivered/engine", f"{args.clients} streams tok/s"]
    if not rows:
        return
    print(table(header, rows))
    print("ratio: server / library, the median over interleaved pairs (target >= 0.9).")
    print("server engine tok/s: the engine's own rate inside the server (backtrack_stats);")
    print("delivered/engine: the share of it that HTTP, SSE and the event loop keep.")
    print(f"{args.clients} streams tok/s: the aggregate of concurrent streams, queued on the one model.")


if __name__ == "__main__":
    main()
