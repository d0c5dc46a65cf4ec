"""Throughput of OpenAICompatibleProvider with 1, 4 and 16 sequences in flight, step mode against chunk mode.

Starts the server itself (our ``backtrack-sampler serve`` on the embedded
model, or vLLM from the venv of scripts/setup_vllm.sh, with our logits
processor ``backtrack_sampler.vllm_plugin:PositionBans`` loaded unless
``--no-plugin``), or uses ``--url``. For each concurrency it measures, in the
same run:

- raw: the engine alone, one plain ``/v1/completions`` request per sequence;
- chunk and step: ``BacktrackSampler`` with AntiSlop over the remote provider,
  one thread and one spawned provider per sequence, every thread started
  before the clock and released at once (``all_at_once``). Against a server with the plugin, "chunk + plugin" sends the
  bans of a rewound position in the next chunk request, and "chunk, logit_bias"
  is the same server used without it (a one-token request per rewind).

With ``--serve-remote``, one more path: ``backtrack-sampler serve --remote-url``
started in front of the engine (``--parallel`` the highest concurrency), the
clients sending it plain ``/v1/completions`` requests with the bans (what a
deployment's clients do); its row's CPU column is the serve process's CPU per
token, not the client's. The engine and ``serve`` share this machine's cores.

It prints tokens/s per sequence (median) and aggregate, the aggregate as a
ratio of the raw engine's at the same concurrency, and per rewind: the tokens
the engine erased (accepted, then rewound), the tokens thrown away in all
(what the server generated, from vLLM's ``/metrics``, less what was emitted;
"-" for a server without that counter) and the wall time lost (the path's
time less the raw engine's for as many tokens, over the rewinds: this cost
does not depend on how often the sampled text happens to need a rewind);
the prompt positions the server computed (vLLM's prefix-cache counters:
looked up and missed), then the client's CPU time per emitted token.
``--repeat N`` runs every path N times, interleaved, and reports medians.
``--per-thread N`` keeps the sequences in flight: each thread runs N of them
back to back (raw engine too), so the one with the most rewinds sets less of
the time than when all start and end together. ``--block-size`` sets vLLM's KV
block (its CPU build's default of 128 positions leaves these short prompts out
of its prefix cache).

The server and every process it starts (vLLM's engine) end with this script,
whatever ends it: SIGTERM (``timeout``), SIGHUP, Ctrl-C or SIGKILL
(``tests/process_tree.py``).

    python bench/remote_throughput.py --server ours
    python bench/remote_throughput.py --server vllm
    python bench/remote_throughput.py --server vllm --no-plugin --serve-remote --concurrency 1 16 --no-step
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from backtrack_sampler import AntiSlopStrategy, BacktrackSampler
from backtrack_sampler.models import default_model_path
from backtrack_sampler.provider.remote import OpenAICompatibleProvider
from backtrack_sampler.provider.remote.capability import PositionRulesSupport
from common import machine, median, table

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import process_tree  # the servers' whole process trees end with this script, as the tests' vLLM does

ROOT = Path(__file__).resolve().parent.parent
TOPICS = ["a lighthouse", "a lost key", "the first snow", "a night train", "an old violin", "a desert well"]
# Slop-ish words this model writes often enough that every run rewinds.
BANS = ["little", "old", "ancient", "suddenly", "whispered", "mysterious", "magical", "journey", "once upon a time"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(kind: str, plugin: bool = True, block_size: int | None = None) -> tuple[subprocess.Popen, str, str]:
    """Start ``kind`` on a free port (vLLM with our logits processor when ``plugin``); (process, base URL, model).

    ``block_size``: vLLM's KV block size (its prefix cache reuses whole blocks;
    the CPU build's default is 128 positions).
    """
    port = free_port()
    if kind == "ours":
        command = [sys.executable, "-m", "backtrack_sampler", "serve", "--port", str(port), "--model-name", "smollm2"]
        command += ["--log-level", "warning"]
        env = dict(os.environ)
    else:
        python = os.environ.get("BACKTRACK_VLLM_PYTHON") or str(ROOT / ".vllm-venv" / "bin" / "python")
        if not Path(python).is_file():
            sys.exit("no vLLM venv: run scripts/setup_vllm.sh (or set BACKTRACK_VLLM_PYTHON)")
        from backtrack_sampler.models import embedded_hf_dir

        command = [python, "-m", "vllm.entrypoints.openai.api_server", "--model", str(embedded_hf_dir())]
        command += ["--served-model-name", "smollm2", "--max-model-len", "2048", "--enforce-eager"]
        command += ["--dtype", "bfloat16", "--max-logprobs", "20", "--host", "127.0.0.1", "--port", str(port)]
        if block_size is not None:
            command += ["--block-size", str(block_size)]
        env = dict(os.environ, VLLM_CPU_KVCACHE_SPACE=os.environ.get("VLLM_CPU_KVCACHE_SPACE", "2"))
        if plugin:  # this checkout's package, as `pip install backtrack_sampler` would give vLLM
            command += ["--logits-processors", "backtrack_sampler.vllm_plugin:PositionBans"]
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), env.get("PYTHONPATH")]))
    log = open(tempfile.mkstemp(prefix=f"{kind}-server-", suffix=".log")[1], "wb")  # noqa: SIM115
    process = process_tree.start(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 600
    try:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                sys.exit(f"the server exited ({process.returncode}); see {log.name}")
            try:
                if httpx.get(url + "/models", timeout=2).status_code == 200:
                    return process, url, "smollm2"
            except httpx.TransportError:
                pass
            time.sleep(1)
    except BaseException:  # a signal (process_tree.Stopped), Ctrl-C
        process_tree.stop(process)
        raise
    process_tree.stop(process)
    sys.exit(f"the server was not ready in 600 s; see {log.name}")


SERVE_LABEL = "serve --remote-url"


def start_serve_remote(engine_url: str, model: str, parallel: int, chunk_size: int) -> tuple[subprocess.Popen, str]:
    """``serve --remote-url ENGINE`` on a free port, ``parallel`` generations at once; (process, base URL)."""
    port = free_port()
    command = [sys.executable, "-m", "backtrack_sampler", "serve", "--port", str(port), "--log-level", "warning"]
    command += ["--remote-url", engine_url, "--remote-model", model, "--tokenizer", str(default_model_path())]
    command += ["--parallel", str(parallel), "--chunk-size", str(chunk_size)]
    log = open(tempfile.mkstemp(prefix="serve-remote-", suffix=".log")[1], "wb")  # noqa: SIM115
    process = process_tree.start(command, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                sys.exit(f"serve --remote-url exited ({process.returncode}); see {log.name}")
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    return process, url + "/v1"
            except httpx.TransportError:
                pass
            time.sleep(0.5)
    except BaseException:
        process_tree.stop(process)
        raise
    process_tree.stop(process)
    sys.exit(f"serve --remote-url was not ready in 300 s; see {log.name}")


def group_cpu(group: int) -> float:
    """CPU seconds (user + system) used so far by the live processes of process group ``group``."""
    ticks = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            text = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2 :].split()  # fields from the third (state) on
        if int(fields[2]) == group:
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def served(
    url: str, model: str, batch: list[list[int]], tokens: int, seed: int = 7, threads: int | None = None
) -> tuple[list[float], float, list[dict]]:
    """Clients of ``serve --remote-url``: one ``/v1/completions`` request with the bans per sequence (as ``raw``).

    Returns (tok/s each, aggregate, each request's ``backtrack_stats``).
    """
    threads = threads or len(batch)
    rates, stats = [0.0] * len(batch), [{}] * len(batch)
    clients = [httpx.Client(timeout=600) for _ in range(threads)]

    def one(t: int) -> None:
        for i in range(t, len(batch), threads):
            body = {"model": model, "prompt": batch[i], "max_tokens": tokens, "temperature": 0.8, "seed": seed + i}
            body |= {"banned_strings": BANS, "backtrack_events": True}
            started = time.perf_counter()
            response = clients[t].post(url + "/completions", json=body)
            if response.status_code != 200:
                raise RuntimeError(f"serve --remote-url answered {response.status_code}: {response.text[:300]}")
            stats[i] = response.json()["choices"][0]["backtrack_stats"]
            rates[i] = stats[i]["tokens"] / (time.perf_counter() - started)

    errors: list[BaseException] = []

    def guarded(t: int) -> None:
        try:
            one(t)
        except BaseException as exc:  # noqa: BLE001 - raised below, in the main thread
            errors.append(exc)

    try:
        elapsed = all_at_once([lambda t=t: guarded(t) for t in range(threads)])
    finally:
        for client in clients:
            client.close()
    if errors:
        raise errors[0]
    return rates, sum(s["tokens"] for s in stats) / elapsed, stats


def prompts(base: OpenAICompatibleProvider, n: int) -> list[list[int]]:
    texts = [f"Write a short story about {TOPICS[i % len(TOPICS)]} (number {i})." for i in range(n)]
    return [base.encode(base.apply_chat_template([{"role": "user", "content": t}])) for t in texts]


def raw(
    url: str, model: str, batch: list[list[int]], tokens: int, seed: int = 0, threads: int | None = None
) -> tuple[list[float], float, int]:
    """The engine alone: one plain completion per sequence, ``threads`` at once (default: all).

    Returns (tok/s each, aggregate, tokens). Thread ``t`` sends the sequences ``t``, ``t + threads``, ...
    one after the other.
    """
    threads = threads or len(batch)
    rates, counts = [0.0] * len(batch), [0] * len(batch)
    clients = [httpx.Client(timeout=600) for _ in range(threads)]  # made before the clock, as the providers' are

    def one(t: int) -> None:
        for i in range(t, len(batch), threads):
            body = {"model": model, "prompt": batch[i], "max_tokens": tokens, "temperature": 0.8, "seed": seed + i}
            started = time.perf_counter()
            usage = clients[t].post(url + "/completions", json=body).json()["usage"]
            counts[i] = usage["completion_tokens"]
            rates[i] = counts[i] / (time.perf_counter() - started)

    try:
        elapsed = all_at_once([lambda t=t: one(t) for t in range(threads)])
    finally:
        for client in clients:
            client.close()
    return rates, sum(counts) / elapsed, sum(counts)


def all_at_once(jobs: list) -> float:
    """Run each job in a thread of its own, all released together once every thread runs; the seconds taken.

    The threads are started before the clock: on a loaded machine a new thread
    can wait seconds for its first turn, which would make late starters look
    like slow sequences.
    """
    barrier = threading.Barrier(len(jobs) + 1)

    def run(job) -> None:
        barrier.wait()
        job()

    threads = [threading.Thread(target=run, args=(job,)) for job in jobs]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started


COUNTERS = {
    "generated": "vllm:generation_tokens_total",
    "queried": "vllm:prefix_cache_queries_total",  # prompt positions looked up in the prefix cache
    "hit": "vllm:prefix_cache_hits_total",
}


def counters(url: str) -> dict[str, float] | None:
    """vLLM's token counters since it started (``/metrics``, keys of ``COUNTERS``), or ``None`` without them."""
    try:
        response = httpx.get(url.removesuffix("/v1") + "/metrics", timeout=10)
    except httpx.TransportError:
        return None
    if response.status_code != 200:
        return None
    found: dict[str, float] = {}
    for line in response.text.splitlines():
        for key, name in COUNTERS.items():
            if line.startswith(name):
                found[key] = found.get(key, 0.0) + float(line.rsplit(" ", 1)[1])
    return found if set(found) == set(COUNTERS) else None


def delta(before: dict[str, float] | None, after: dict[str, float] | None, key: str) -> float | None:
    return None if before is None or after is None else after[key] - before[key]


@dataclass(frozen=True)
class Route:
    """One way to drive the server: a mode and whether the plugin carries the bans."""

    label: str
    mode: str
    position_bans: bool


def sampled(
    base: OpenAICompatibleProvider,
    path: Route,
    batch: list[list[int]],
    tokens: int,
    seed: int = 7,
    threads: int | None = None,
):
    """BacktrackSampler + AntiSlop over the remote provider, ``threads`` sequences at once (as ``raw``).

    Returns (tok/s each, aggregate, results, requests).
    """
    spawned: list[OpenAICompatibleProvider] = []
    support = PositionRulesSupport(path.position_bans)

    def make_sampler() -> BacktrackSampler:
        provider = base.spawn()
        provider.mode = path.mode
        provider.position_rules = support
        spawned.append(provider)
        return BacktrackSampler(provider, AntiSlopStrategy(provider, BANS))

    threads = threads or len(batch)
    samplers = [make_sampler() for _ in range(threads)]  # providers, HTTP clients and strategies before the clock
    results: list = [None] * len(batch)

    def one(t: int) -> None:
        for i in range(t, len(batch), threads):
            try:
                results[i] = samplers[t].generate_text(batch[i], max_new_tokens=tokens, temperature=0.8, seed=seed)
            except BaseException as exc:  # noqa: BLE001 - raised below, in the main thread
                results[i] = exc
                return

    elapsed = all_at_once([lambda t=t: one(t) for t in range(threads)])
    for result in results:
        if isinstance(result, BaseException):
            raise result
    emitted = sum(len(r.tokens) for r in results)
    requests = sum(p.requests for p in spawned)
    return [r.stats.tokens_per_second for r in results], emitted / elapsed, results, requests


def per_rewind(count: float | None, rewinds: int) -> str:
    return "-" if count is None or not rewinds else f"{count / rewinds:.1f}"


def measure(url: str, model: str, base, paths: list[Route], k: int, args: argparse.Namespace) -> list[list]:
    """The table rows of ``k`` sequences in flight: the raw engine, then each path, ``args.repeat`` rounds interleaved.

    Each of the ``k`` threads runs ``args.per_thread`` sequences back to back.
    """
    tokens, repeat = args.tokens, args.repeat
    batch = prompts(base, k * args.per_thread)
    seen: dict[str, list[dict]] = {"raw engine": []} | {path.label: [] for path in paths}
    for round_ in range(repeat):  # each round samples other texts (its own seeds), the same for every path
        before = counters(url)
        raw_each, raw_all, raw_n = raw(url, model, batch, tokens, seed=100 * round_, threads=k)
        after = counters(url)
        seen["raw engine"].append(
            {"each": median(raw_each), "all": raw_all, "ratio": 1.0, "tokens": raw_n, "prefill": prefill(before, after)}
        )
        print(f"  {k} raw: {raw_all:.1f} tok/s", file=sys.stderr, flush=True)
        for path in paths:
            before, cpu = counters(url), time.process_time()
            each, total, results, requests = sampled(base, path, batch, tokens, seed=7 + round_, threads=k)
            cpu, after = time.process_time() - cpu, counters(url)
            emitted = sum(len(r.tokens) for r in results)
            generated = delta(before, after, "generated")
            seen[path.label].append(
                {
                    "each": median(each),
                    "all": total,
                    "ratio": total / raw_all,
                    "tokens": emitted,
                    "rewinds": sum(r.stats.rewinds for r in results),
                    "requests": requests,
                    "erased": sum(r.stats.tokens_rewound for r in results),
                    "thrown": None if generated is None else generated - emitted,
                    "prefill": prefill(before, after),
                    "cpu": cpu,
                    # wall time beyond what the raw engine took for as many tokens, per rewind
                    "lost": (emitted / total - emitted / raw_all) / max(1, sum(r.stats.rewinds for r in results)),
                }
            )
            print(f"  {k} {path.label}: {total:.1f} tok/s", file=sys.stderr, flush=True)
        if args.serve is not None:
            seen.setdefault(SERVE_LABEL, []).append(measure_served(url, model, batch, k, round_, raw_all, args))
            print(f"  {k} {SERVE_LABEL}: {seen[SERVE_LABEL][-1]['all']:.1f} tok/s", file=sys.stderr, flush=True)
    return [row(k, label, rounds, len(batch) * repeat) for label, rounds in seen.items()]


def measure_served(
    url: str, model: str, batch: list[list[int]], k: int, round_: int, raw_all: float, args: argparse.Namespace
) -> dict:
    """One round of the ``serve --remote-url`` path (``args.serve``: its process and URL), as ``measure``'s rows."""
    process, serve_url = args.serve
    before, cpu = counters(url), group_cpu(process.pid)
    each, total, stats = served(serve_url, model, batch, args.tokens, seed=7 + round_, threads=k)
    cpu, after = group_cpu(process.pid) - cpu, counters(url)
    emitted, rewinds = sum(s["tokens"] for s in stats), sum(s["rewinds"] for s in stats)
    generated = delta(before, after, "generated")
    return {
        "each": median(each),
        "all": total,
        "ratio": total / raw_all,
        "tokens": emitted,
        "rewinds": rewinds,
        "requests": None,  # sent by the serve process: not seen from here
        "erased": sum(s["tokens_rewound"] for s in stats),
        "thrown": None if generated is None else generated - emitted,
        "prefill": prefill(before, after),
        "cpu": cpu,
        "lost": (emitted / total - emitted / raw_all) / max(1, rewinds),
    }


def prefill(before: dict[str, float] | None, after: dict[str, float] | None) -> float | None:
    """Prompt positions the server computed (looked up in its prefix cache and missed)."""
    queried, hit = delta(before, after, "queried"), delta(before, after, "hit")
    return None if queried is None or hit is None else queried - hit


def row(k: int, label: str, rounds: list[dict], raw_requests: int) -> list:
    """One table row from the rounds of one path."""
    cells = [k, label] + [
        f"{median([r[key] for r in rounds]):.{d}f}" for key, d in (("each", 1), ("all", 1), ("ratio", 2))
    ]
    emitted = sum(r["tokens"] for r in rounds)
    computed = None if any(r["prefill"] is None for r in rounds) else sum(r["prefill"] for r in rounds)
    computed_cell = "-" if computed is None else f"{computed:.0f}"
    if label == "raw engine":
        return cells + [emitted, "-", raw_requests, "-", "-", computed_cell, "-", "-"]
    rewinds = sum(r["rewinds"] for r in rounds)
    thrown = None if any(r["thrown"] is None for r in rounds) else sum(r["thrown"] for r in rounds)
    requests = "-" if any(r["requests"] is None for r in rounds) else sum(r["requests"] for r in rounds)
    cells += [emitted, rewinds, requests]
    cells += [per_rewind(sum(r["erased"] for r in rounds), rewinds), per_rewind(thrown, rewinds), computed_cell]
    lost = median([r["lost"] for r in rounds]) if rewinds else None
    cells.append("-" if lost is None else f"{1000 * lost:.0f}")
    return cells + [f"{1000 * sum(r['cpu'] for r in rounds) / emitted:.2f}"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--server", choices=("ours", "vllm"), default="ours")
    parser.add_argument("--url", help="use this running server instead (with --model)")
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--tokens", type=int, default=64, help="new tokens per sequence")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--chunk-size", type=int, default=64)
    parser.add_argument("--no-plugin", action="store_true", help="start vLLM without our logits processor")
    parser.add_argument("--repeat", type=int, default=1, help="rounds of every path, interleaved (medians)")
    parser.add_argument("--top-logprobs", type=int, default=20, help="the provider's top_logprobs")
    parser.add_argument(
        "--per-thread",
        type=int,
        default=1,
        help="sequences each of the N threads runs back to back (1: all N start and end together)",
    )
    parser.add_argument("--block-size", type=int, help="vLLM's --block-size (default: vLLM's own)")
    parser.add_argument("--no-step", action="store_true", help="leave step mode out (the slowest path)")
    parser.add_argument(
        "--serve-remote",
        action="store_true",
        help="also measure `backtrack-sampler serve --remote-url` in front of the engine (clients send it the bans)",
    )
    args = parser.parse_args()
    args.serve = None

    process = None
    if args.url:
        url, model, label = args.url, args.model, args.url
    else:
        process, url, model = start_server(args.server, plugin=not args.no_plugin, block_size=args.block_size)
        label = {"ours": "backtrack-sampler serve (llama.cpp)", "vllm": "vLLM CPU (bfloat16)"}[args.server]
    try:
        base = OpenAICompatibleProvider(
            url,
            model,
            tokenizer=default_model_path(),
            chunk_size=args.chunk_size,
            top_logprobs=args.top_logprobs,
        )
        plugin = base.uses_position_bans(prompts(base, 1)[0])
        if plugin:
            label += ", with backtrack_sampler.vllm_plugin:PositionBans"
            paths = [Route("chunk + plugin", "chunk", True), Route("chunk, logit_bias", "chunk", False)]
            paths.append(Route("step + plugin", "step", True))
        else:
            paths = [Route("chunk", "chunk", False), Route("step", "step", False)]
        if args.no_step:
            paths = [path for path in paths if path.mode != "step"]
        warm = prompts(base, 2)  # warm up every path the measurements take
        raw(url, model, warm, 8)
        for path in paths:
            sampled(base, path, warm, 8)
        if args.serve_remote:
            args.serve = start_serve_remote(url, model, max(args.concurrency), args.chunk_size)
            served(args.serve[1], model, warm, 8)
        rows = []
        for k in args.concurrency:
            rows += measure(url, model, base, paths, k, args)
        print(f"# Remote throughput: {label}, {args.tokens} new tokens per sequence\n")
        print(machine() + "\n")
        header = ["sequences", "path", "tok/s each (median)", "tok/s aggregate", "x raw"]
        header += ["tokens", "rewinds", "requests", "erased per rewind", "thrown away per rewind"]
        header += ["prompt positions computed", "ms lost per rewind", "client CPU ms/token"]
        if args.repeat > 1:
            print(
                f"Medians of {args.repeat} rounds (each path once per round with the round's seeds, interleaved; x raw"
            )
            print("against the same round's raw engine); tokens, rewinds and requests summed over the rounds.\n")
        print(table(header, rows))
    finally:
        if args.serve is not None:
            process_tree.stop(args.serve[0])
        if process is not None:
            process_tree.stop(process)


if __name__ == "__main__":
    try:
        with process_tree.exit_on_signals():  # SIGTERM (timeout) and SIGHUP: main's finally stops the server
            main()
    except (process_tree.Stopped, KeyboardInterrupt) as stopped:
        # The server is stopped; the worker threads may still wait on it: exit without waiting for them.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(stopped.code if isinstance(stopped, process_tree.Stopped) else 130)
