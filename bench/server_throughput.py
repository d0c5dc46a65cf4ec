"""Server throughput: the server against the library, against itself with many clients, and against llama-server.

Every set-up sends greedy streaming ``/v1/completions`` requests from httpx
clients and interleaves what it compares, so a slow spell of the machine hits
each side alike. Set-ups (``--setups``, default all but ``llama-server``):

- ``process``: ``serve --parallel 1`` as its own process (a free port of
  127.0.0.1, the embedded model, its own copy of the model) against
  ``BacktrackSampler.stream`` on this process's copy, same prompt, ``--tokens``
  tokens, ``--repeats`` interleaved pairs: the median tokens/s of each, the
  median ratio of the pairs (target >= 0.9), the server engine's own rate
  (``backtrack_stats``) and the aggregate of ``--clients`` concurrent streams.
  Time runs from sending the request to ``data: [DONE]`` (prompt included), and
  from calling ``stream`` to its ``FinishEvent``.
- ``thread``: the same, with the app on uvicorn in a thread of this process
  serving the very provider the library path uses (same model instance: only
  the server's own work differs).
- ``scaling``: ``serve --parallel N`` for each N of ``--parallel``, 1, 4 and 16
  clients at once (``--scaling-clients``), each a different prompt,
  ``--scaling-tokens`` tokens each, ``--scaling-repeats`` rounds: the aggregate
  tokens/s of each client count (median seconds) and its ratio to one client;
  and in each round the plain batched loop of ``batched_throughput`` (a) with
  as many sequences, on the clients' own prompt tokens and as many new tokens:
  the limit, and our ratio to it (targets: 16 clients >= 0.85x, one >= 0.9x).
- ``llama-server``: llama.cpp's own server (``scripts/build_llama_server.sh``
  builds it from the llama.cpp llama-cpp-python vendors, or ``--llama-server
  PATH``) and ``serve``, both up at once with ``--parallel N`` and the same
  context per sequence, threads and model (``servers.py`` says how each is
  started), for each N of ``--parallel``. Each round runs, for 1, 4 and 16
  clients: (i) llama-server's ``/v1/completions``, (ii) ours with no bans,
  (iii) ours with 1,000 ``banned_strings`` that fire (990 pairs of vocabulary
  words, ``ban_scaling.word_pairs``, and the 10 words a control run of ours
  used most, as ``batched_throughput`` builds its 1,000). Prompts as
  ``scaling``; EOS is biased away (``logit_bias`` -100) so every stream runs
  ``--scaling-tokens`` tokens; tokens/s counts the tokens each server says it
  generated (``usage``). Prints the median tokens/s of each over the rounds,
  the medians of the per-round ratios to llama-server and the rewinds of
  (iii). Goal: ours with bans >= 0.9x llama-server at 16 clients.

    python bench/server_throughput.py [--tokens 256] [--repeats 5] [--clients 8]
        [--setups process thread scaling llama-server] [--parallel 1 16] [--scaling-clients 1 4 16]
        [--scaling-tokens 64] [--scaling-repeats 5] [--threads N] [--n-ctx 2048] [--llama-server PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from dataclasses import dataclass, field

import httpx

from backtrack_sampler import BacktrackSampler, FinishEvent
from backtrack_sampler.models import default_model_path, load_llama, physical_cores
from backtrack_sampler.provider.llamacpp_provider import LlamacppProvider
from ban_scaling import word_pairs
from batched_throughput import frequent_words, raw_batched
from common import machine, median, table
from servers import free_port, llama_server_command, llama_server_path, process_tree, running, serve_command

PROMPT = "Once upon a time"
BANS = 1000  # phrases of the llama-server set-up's third path (the server's default --max-bans)
FREQUENT = 10  # of them, the words the control run used most (so rewinds fire)


@dataclass
class Streamed:
    """One streamed completion: tokens the server says it generated, seconds, text, and our engine's stats."""

    tokens: int
    seconds: float
    text: str
    engine: float = 0.0  # our engine's own tokens/s inside the server (backtrack_stats); 0 for llama-server
    rewinds: int = 0


@dataclass
class Round:
    """Streams sent at once: their total tokens, the seconds until the last ended, rewinds, and texts."""

    tokens: int
    seconds: float
    rewinds: int = 0
    texts: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.tokens / self.seconds


def body(prompt: str, n: int, bias: dict[str, float] | None = None, **extra) -> dict:
    """A greedy streaming ``/v1/completions`` body; ``extra`` fields as given."""
    return {
        "prompt": prompt,
        "max_tokens": n,
        "temperature": 0,
        "logit_bias": bias or {},
        "stream": True,
        "stream_options": {"include_usage": True},
        **extra,
    }


def ours(prompt: str, n: int, bias: dict[str, float] | None = None, **extra) -> dict:
    """``body`` for our server, with ``backtrack_stats`` (the engine's own tokens/s, the rewinds)."""
    return body(prompt, n, bias, backtrack_events=True, **extra)


def stream(client: httpx.Client, request: dict) -> Streamed:
    """Send one streaming completion and read it to ``data: [DONE]``.

    Tokens: the final chunk's ``usage.completion_tokens`` (both servers send it
    with ``include_usage``), else llama-server's ``timings.predicted_n``.
    """
    text, tokens, engine, rewinds = [], 0, 0.0, 0
    start = time.perf_counter()
    with client.stream("POST", "/v1/completions", json=request) as response:
        if response.status_code != 200:
            raise RuntimeError(f"{client.base_url} answered {response.status_code}: {response.read()[:300]!r}")
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
            elif "predicted_n" in chunk.get("timings", {}):
                tokens = chunk["timings"]["predicted_n"]
            for choice in chunk.get("choices", []):
                text.append(choice.get("text") or "")
                if choice.get("backtrack_stats"):
                    engine = choice["backtrack_stats"]["tokens_per_second"]
                    rewinds = choice["backtrack_stats"]["rewinds"]
    return Streamed(tokens, time.perf_counter() - start, "".join(text), engine, rewinds)


def stream_from_server(client: httpx.Client, prompt: str, n: int) -> Streamed:
    return stream(client, ours(prompt, n))


def stream_from_library(sampler: BacktrackSampler, prompt: str, n: int) -> tuple[int, float, str]:
    start = time.perf_counter()
    for event in sampler.stream(prompt, max_new_tokens=n, temperature=0, top_k=0):
        if isinstance(event, FinishEvent):
            return len(event.tokens), time.perf_counter() - start, event.text
    raise RuntimeError("no FinishEvent")


def client_prompt(i: int) -> str:
    """The prompt of client ``i`` of a concurrent round (each client a different one)."""
    return f"{PROMPT} there was a place number {i}"


def concurrent(url: str, requests: list[dict]) -> Round:
    """``requests`` streamed at once, one client (thread, connection) each."""
    results: list[Streamed | BaseException | None] = [None] * len(requests)

    def one(i: int) -> None:
        try:
            with httpx.Client(base_url=url, timeout=600) as client:
                results[i] = stream(client, requests[i])
        except BaseException as exc:  # re-raised in the caller's thread
            results[i] = exc

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(requests))]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - start
    for result in results:
        if isinstance(result, BaseException):
            raise result
    done = [r for r in results if isinstance(r, Streamed)]
    return Round(sum(r.tokens for r in done), seconds, sum(r.rewinds for r in done), [r.text for r in done])


def clients_of(clients: int, n: int, bias: dict[str, float] | None = None, **extra) -> list[dict]:
    """Bodies for our server from ``clients`` clients, each its own prompt."""
    return [ours(client_prompt(i), n, bias, **extra) for i in range(clients)]


def compare(url: str, sampler: BacktrackSampler, tokens: int, repeats: int) -> tuple[int, float, float, float, float]:
    """Interleaved runs of both paths: tokens, the medians of library, server and server-engine tok/s, and the
    median of the ratios of consecutive runs (robust to the machine's load drifting)."""
    with httpx.Client(base_url=url, timeout=600) as client:
        stream_from_server(client, PROMPT, 8)  # warm up both paths
        stream_from_library(sampler, PROMPT, 8)
        direct, served, engine = [], [], []
        for _ in range(repeats):
            lib_tokens, lib_s, lib_text = stream_from_library(sampler, PROMPT, tokens)
            srv = stream_from_server(client, PROMPT, tokens)
            engine.append(srv.engine)
            if (lib_tokens, lib_text) != (srv.tokens, srv.text):
                print(f"warning: different outputs ({lib_tokens} vs {srv.tokens} tokens)")
            direct.append(lib_tokens / lib_s)
            served.append(srv.tokens / srv.seconds)
    pairs = [srv / lib for lib, srv in zip(direct, served, strict=True)]
    return lib_tokens, median(direct), median(served), median(engine), median(pairs)


def in_thread(provider):
    """The app on uvicorn in a thread, serving ``provider`` (the server tests' helper)."""
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
    from server_support import LiveServer, make_app

    return LiveServer(make_app(provider))


def eos_bias(provider: LlamacppProvider) -> dict[str, float]:
    """``logit_bias`` that keeps every end-of-sequence token out, so each stream runs to its ``max_tokens``."""
    return {str(t): -100.0 for t in sorted(provider.eos_token_ids)}


def serve(args: argparse.Namespace, parallel: int):
    """``serve --parallel parallel`` with this bench's context and threads, running (a context manager)."""
    port = free_port()
    return running("serve", serve_command(port, args.n_ctx, parallel, args.threads), port)


def scaling(args: argparse.Namespace, provider: LlamacppProvider) -> None:
    """Aggregate streamed tokens/s of 1, 4, 16 clients against ``serve --parallel N``, for each N.

    In each round, after the clients, the plain batched loop of
    ``batched_throughput`` (one ``llama_decode`` per step for all sequences,
    argmax, nothing else; its own thread of this process, while the server
    idles) with as many sequences, on the very prompt tokens the clients sent
    and as many new tokens: the most a server on this machine could reach.
    """
    bias = eos_bias(provider)
    rows = []
    for parallel in args.parallel:
        with serve(args, parallel) as url:
            concurrent(url, clients_of(1, 8, bias))  # warm up
            runs: dict[int, list[Round]] = {clients: [] for clients in args.scaling_clients}
            plain: dict[int, list[float]] = {clients: [] for clients in args.scaling_clients}
            for _ in range(args.scaling_repeats):  # rounds interleaved, so a slow spell hits every count alike
                for clients in args.scaling_clients:
                    runs[clients].append(concurrent(url, clients_of(clients, args.scaling_tokens, bias)))
                for clients in args.scaling_clients:
                    tokens = [provider.encode(client_prompt(i)) for i in range(clients)]
                    plain[clients].append(raw_batched(provider.llm, tokens, args.scaling_tokens, args.n_ctx))
            one = None
            for clients, measured in runs.items():
                total, seconds = measured[0].tokens, median([r.seconds for r in measured])
                rate, limit = total / seconds, median(plain[clients])
                one = rate if one is None else one
                rows.append(
                    [parallel, clients, total, f"{seconds:.2f}", f"{rate:.1f}", f"{rate / one:.2f}"]
                    + [f"{limit:.1f}", f"{rate / limit:.3f}"]
                )
            batch = httpx.get(f"{url}/health", timeout=10).json().get("batch")
            if batch:
                print(f"--parallel {parallel}: {batch['decodes']} decodes, at most {batch['max_sequences']} sequences")
    header = ["--parallel", "clients", "tokens", "seconds", "aggregate tok/s", "vs 1 client"]
    print(table(header + ["plain loop tok/s", "ours / plain loop"], rows))
    print("vs 1 client: aggregate tok/s over that of one client on the same server (target for 16 clients: >= 3).")
    print("plain loop: bench/batched_throughput.py's (a) with as many sequences, the clients' prompt tokens, as many")
    print("new tokens, same round (targets: 16 clients >= 0.85x, one client >= 0.9x).")
    print(f"Medians of {args.scaling_repeats} rounds (seconds, tok/s), the client counts interleaved in each.")


class _Texts:
    """A control run's text in the shape ``batched_throughput.frequent_words`` reads (``.text``)."""

    def __init__(self, text: str) -> None:
        self.text = text


def ban_list(provider: LlamacppProvider, control_texts: list[str]) -> list[str]:
    """``BANS`` phrases: the ``FREQUENT`` words the control texts used most, then vocabulary word pairs."""
    frequent = frequent_words([_Texts(t) for t in control_texts], FREQUENT)
    pairs = [p for p in word_pairs(provider, BANS, avoid="") if p not in frequent]
    return frequent + pairs[: BANS - len(frequent)]


PATHS = ("llama-server", "ours", "ours + bans")


def path_requests(path: str, clients: int, n: int, bias: dict[str, float], phrases: list[str]) -> list[dict]:
    """The bodies of one of ``PATHS`` for ``clients`` clients (the same prompts on every path)."""
    if path == "llama-server":
        return [body(client_prompt(i), n, bias) for i in range(clients)]
    return clients_of(clients, n, bias, **({"banned_strings": phrases} if path == "ours + bans" else {}))


def against_llama_server(args: argparse.Namespace, provider: LlamacppProvider, binary: str) -> None:
    """llama-server (``binary``), ours and ours with 1,000 firing bans: 1, 4, 16 streaming clients, interleaved."""
    bias, n = eos_bias(provider), args.scaling_tokens
    # Ours loads its Llama as this process did (load_llama): threads for one token and for a batch.
    threads = args.threads or physical_cores()
    threads_batch = args.threads or provider.llm.context_params.n_threads_batch
    print(f"llama-server: {binary}; -t {threads} -tb {threads_batch}, flash attention llama.cpp's default (auto)")
    header = ["--parallel", "clients", "llama-server tok/s", "ours tok/s", "ours / llama-server"]
    header += ["ours + bans tok/s", "ours + bans / llama-server", "rewinds"]
    rows, short = [], []
    for parallel in args.parallel:
        port = free_port()
        command = llama_server_command(binary, port, args.n_ctx, parallel, threads, threads_batch, default_model_path())
        with running("llama-server", command, port) as llama_url, serve(args, parallel) as our_url:
            concurrent(llama_url, [body(PROMPT, 8, bias)])  # warm up
            concurrent(our_url, clients_of(1, 8, bias))
            control = concurrent(our_url, clients_of(max(args.scaling_clients), n, bias))
            phrases = ban_list(provider, control.texts)

            runs: dict[tuple[int, str], list[Round]] = {}
            for repeat in range(args.scaling_repeats):  # rounds interleaved, so a slow spell hits every path alike
                for clients in args.scaling_clients:
                    for path in PATHS[repeat % 3 :] + PATHS[: repeat % 3]:  # each path first in turn
                        url = llama_url if path == "llama-server" else our_url
                        measured = concurrent(url, path_requests(path, clients, n, bias, phrases))
                        runs.setdefault((clients, path), []).append(measured)
                        if measured.tokens != clients * n:
                            short.append(f"{path}, {clients} clients: {measured.tokens} of {clients * n} tokens")
        for clients in args.scaling_clients:
            llama, plain, banned = (runs[clients, path] for path in PATHS)
            rate = {path: median([r.rate for r in runs[clients, path]]) for path in PATHS}
            ratio = median([o.rate / ls.rate for o, ls in zip(plain, llama, strict=True)])
            banned_ratio = median([b.rate / ls.rate for b, ls in zip(banned, llama, strict=True)])
            row = [parallel, clients, f"{rate['llama-server']:.1f}", f"{rate['ours']:.1f}", f"{ratio:.3f}"]
            rows.append(
                [*row, f"{rate['ours + bans']:.1f}", f"{banned_ratio:.3f}", median([r.rewinds for r in banned])]
            )
    print(table(header, rows))
    print(f"Medians of {args.scaling_repeats} rounds (each path and client count once per round, interleaved);")
    print("ratios: the median of the per-round ratios. rewinds: of all the clients of a round (median).")
    print(f"ours + bans: {BANS} banned_strings, {FREQUENT} of them the words our control run used most.")
    print("Goal: ours + bans / llama-server >= 0.9 at 16 clients.")
    for line in short:
        print(f"note: {line} (EOS or a limit ended a stream early)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--n-ctx", type=int, default=2048, help="positions per sequence (serve --n-ctx)")
    parser.add_argument(
        "--setups",
        nargs="+",
        choices=("process", "thread", "scaling", "llama-server"),
        default=["process", "thread", "scaling"],
    )
    parser.add_argument(
        "--parallel", type=int, nargs="+", default=[1, 16], help="scaling, llama-server: serve --parallel N"
    )
    parser.add_argument("--scaling-clients", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--scaling-tokens", type=int, default=64, help="scaling, llama-server: tokens per stream")
    parser.add_argument("--scaling-repeats", type=int, default=5, help="scaling, llama-server: rounds (medians)")
    parser.add_argument(
        "--threads",
        type=int,
        help="scaling, llama-server: serve --threads N, llama-server -t N -tb N "
        "(default: the physical cores; llama-cpp-python's all CPUs for batches)",
    )
    parser.add_argument(
        "--llama-server", metavar="PATH", help="llama-server binary (default: scripts/build_llama_server.sh's)"
    )
    args = parser.parse_args()

    print(machine())
    binary = llama_server_path(args.llama_server) if "llama-server" in args.setups else ""  # before any measuring
    provider = LlamacppProvider(load_llama(n_ctx=args.n_ctx))
    if "scaling" in args.setups:
        scaling(args, provider)
    if "llama-server" in args.setups:
        against_llama_server(args, provider, binary)
    sampler = BacktrackSampler(provider)
    rows = []
    for setup in [s for s in args.setups if s in ("process", "thread")]:
        if setup == "process":
            with serve(args, 1) as url:
                n, lib, srv, engine, ratio = compare(url, sampler, args.tokens, args.repeats)
                measured = concurrent(url, clients_of(args.clients, args.tokens // 4))
        else:
            with in_thread(provider) as server:
                n, lib, srv, engine, ratio = compare(server.url, sampler, args.tokens, args.repeats)
                measured = concurrent(server.url, clients_of(args.clients, args.tokens // 4))
        row = [setup, n, f"{lib:.1f}", f"{srv:.1f}", f"{ratio:.3f}", f"{engine:.1f}", f"{srv / engine:.3f}"]
        rows.append([*row, f"{measured.rate:.1f}"])
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
    try:
        with process_tree.exit_on_signals():  # SIGTERM and SIGHUP: the finally blocks stop the servers
            main()
    except (process_tree.Stopped, KeyboardInterrupt) as stopped:
        # The servers are stopped; client threads may still wait on them: exit without waiting for them.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(stopped.code if isinstance(stopped, process_tree.Stopped) else 130)
