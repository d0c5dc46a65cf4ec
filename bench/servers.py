"""The servers the throughput benches start: ours (``serve``) and llama.cpp's own ``llama-server``.

Each runs under ``tests/process_tree.py`` (its own session, ended with this
script whatever happens: an exception, Ctrl-C, SIGTERM, or this process
killed) on a free port of 127.0.0.1, its output in a temporary log file that
is named when it fails to start.

``llama-server`` is the binary ``scripts/build_llama_server.sh`` builds from
the llama.cpp that llama-cpp-python vendors (same version and instruction
sets as our package), started to match ``serve --parallel N --n-ctx C``:

- ``-c N*C --parallel N``, the KV cache not unified: llama.cpp gives each of
  the N sequences ``-c / N`` positions (``llama_context``: ``n_ctx_seq =
  n_ctx / n_seq_max`` when ``kv_unified`` is off), and the server keeps
  ``kv_unified`` off when ``--parallel`` is given (it turns it on only with
  the automatic slot count). ``BatchedLlamacpp`` does the same: ``n_ctx =
  C * N``, ``n_seq_max = N``, ``kv_unified = False``. ``--no-kv-unified`` says
  so explicitly.
- ``-t`` / ``-tb``: the threads our ``Llama`` gets for one token and for a
  batch (``physical_cores()`` and llama-cpp-python's default, all CPUs, unless
  ``--threads``).
- flash attention, batch sizes, prompt cache, continuous batching: llama.cpp's
  defaults (flash attention ``auto``; ``-b 2048 -ub 512``, against our 512 /
  512, which only matters for prompts over 512 tokens).
- ``--log-verbosity 2``: warnings and errors only, as ``serve --log-level
  warning``.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
import process_tree  # noqa: E402  (the tests' supervisor: the server's tree ends with this script)

BUILD_SCRIPT = ROOT / "scripts" / "build_llama_server.sh"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def running(name: str, command: Sequence[str], port: int, timeout: float = 300) -> Iterator[str]:
    """Run ``command`` (a server listening on 127.0.0.1:``port``) until ``/health`` answers 200; yield its URL.

    The server is stopped when the block ends, however it ends; its log is
    deleted when nothing failed. Raises
    ``RuntimeError`` (naming the log file) if it exits or is not ready in
    ``timeout`` seconds.
    """
    log = tempfile.NamedTemporaryFile(prefix=f"{name}-", suffix=".log", delete=False)  # noqa: SIM115
    process = process_tree.start(list(command), stdout=log, stderr=subprocess.STDOUT)
    log.close()
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited with status {process.returncode}; see {log.name}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} was not ready in {timeout:g} s; see {log.name}")
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        yield url
    finally:
        process_tree.stop(process)
    os.unlink(log.name)  # kept where anything failed


def serve_command(port: int, n_ctx: int, parallel: int, threads: int | None) -> list[str]:
    """``python -m backtrack_sampler serve`` on ``port``: ``parallel`` sequences of ``n_ctx`` positions."""
    command = [sys.executable, "-m", "backtrack_sampler", "serve", "--port", str(port), "--n-ctx", str(n_ctx)]
    command += ["--parallel", str(parallel), "--log-level", "warning"]
    return command + ([] if threads is None else ["--threads", str(threads)])


def llama_server_path(given: str | None = None) -> str:
    """``given``, or the binary ``scripts/build_llama_server.sh`` prints (it builds it the first time)."""
    if given is not None:
        if not os.access(given, os.X_OK):
            raise SystemExit(f"argument --llama-server: not an executable file: {given!r}")
        return given
    print("llama-server: scripts/build_llama_server.sh (builds it once, about 10 minutes)...", file=sys.stderr)
    done = subprocess.run(["bash", str(BUILD_SCRIPT)], stdout=subprocess.PIPE, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"scripts/build_llama_server.sh failed (status {done.returncode}); pass --llama-server PATH")
    return done.stdout.strip().splitlines()[-1]


def llama_server_command(
    binary: str, port: int, n_ctx: int, parallel: int, threads: int, threads_batch: int, model: str | Path
) -> list[str]:
    """``llama-server`` on ``port`` with the context of ``serve --parallel parallel --n-ctx n_ctx`` (module doc)."""
    command = [binary, "--model", str(model), "--host", "127.0.0.1", "--port", str(port)]
    command += ["--ctx-size", str(n_ctx * parallel), "--parallel", str(parallel), "--no-kv-unified"]
    command += ["--threads", str(threads), "--threads-batch", str(threads_batch)]
    return command + ["--log-verbosity", "2"]
