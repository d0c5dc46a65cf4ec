"""Real servers on 127.0.0.1 for the remote provider's tests: vLLM (a subprocess) and our own (uvicorn in a thread)."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

import process_tree

ROOT = Path(__file__).resolve().parent.parent
VLLM_ENV = "BACKTRACK_VLLM_PYTHON"
VLLM_MODEL_NAME = "smollm2"
VLLM_PLUGIN = "backtrack_sampler.vllm_plugin:PositionBans"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def vllm_python() -> Path | None:
    """The python of the vLLM venv: $BACKTRACK_VLLM_PYTHON, else .vllm-venv/ (scripts/setup_vllm.sh)."""
    configured = os.environ.get(VLLM_ENV)
    path = Path(configured) if configured else ROOT / ".vllm-venv" / "bin" / "python"
    return path if path.is_file() else None


def wait_ready(url: str, timeout: float, process: subprocess.Popen | None = None, log: Path | None = None) -> None:
    """Poll ``url`` until it answers 200; fail early if ``process`` exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            tail = log.read_text(errors="replace")[-3000:] if log else ""
            raise RuntimeError(f"the server exited with status {process.returncode} before it was ready:\n{tail}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(1)
    tail = log.read_text(errors="replace")[-3000:] if log else ""
    raise RuntimeError(f"{url} was not ready after {timeout:.0f} s:\n{tail}")


@contextlib.contextmanager
def vllm_server(
    python: Path, model_dir: Path, dtype: str = "float32", timeout: float = 600, plugin: bool = False
) -> Iterator[str]:
    """Start vLLM's OpenAI server on a free port; yield its base URL; stop it.

    float32 (not bfloat16) so that a position computed in a prefill and the
    same position computed in a decode step pick the same argmax: the greedy
    comparisons are then exact. With ``plugin``, vLLM loads our logits
    processor (``VLLM_PLUGIN``) from this checkout's ``src/``. vLLM's processes
    end when this ends, or when this process does, by any signal
    (``process_tree``).
    """
    port = free_port()
    log = Path(tempfile.mkstemp(prefix="vllm-", suffix=".log")[1])
    env = dict(os.environ, VLLM_CPU_KVCACHE_SPACE=os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1"))
    command = [
        str(python), "-m", "vllm.entrypoints.openai.api_server",
        "--model", str(model_dir), "--served-model-name", VLLM_MODEL_NAME,
        "--max-model-len", "2048", "--enforce-eager", "--dtype", dtype, "--max-logprobs", "20",
        "--host", "127.0.0.1", "--port", str(port),
    ]  # fmt: skip
    if plugin:
        command += ["--logits-processors", VLLM_PLUGIN]
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), env.get("PYTHONPATH")]))
    with log.open("wb") as out:  # vLLM and its engine, ended with this process whatever ends it (process_tree)
        process = process_tree.start(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        wait_ready(f"http://127.0.0.1:{port}/v1/models", timeout, process, log)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        process_tree.stop(process)
        log.unlink(missing_ok=True)


@contextlib.contextmanager
def our_server(provider, model_name: str = "smollm2", api_key: str | None = None) -> Iterator[str]:
    """``backtrack_sampler.server.create_app(provider)`` under uvicorn in a thread; yield its base URL.

    With ``api_key`` the server requires it (``/v1/models`` included: wait on ``/health``).
    """
    import uvicorn

    from backtrack_sampler.server import create_app

    port = free_port()
    app = create_app(provider, model_name, api_key=api_key)
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_ready(f"http://127.0.0.1:{port}" + ("/health" if api_key else "/v1/models"), 60)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        server.should_exit = True
        thread.join(30)


@contextlib.contextmanager
def vllm_for_module(plugin: bool = False) -> Iterator[str]:
    """A test module's vLLM server on the embedded model (``vllm_server``); skips without the venv or transformers."""
    import pytest

    python = vllm_python()
    if python is None:
        pytest.skip(f"no vLLM venv: run scripts/setup_vllm.sh (or set {VLLM_ENV} to its python)")
    pytest.importorskip("transformers", reason="exporting the embedded model for vLLM needs transformers")
    from backtrack_sampler.models import embedded_hf_dir

    with vllm_server(python, embedded_hf_dir(), plugin=plugin) as url:
        yield url


@contextlib.contextmanager
def vllm_provider(url: str, tokenizer, chunk_size: int) -> Iterator:
    """``OpenAICompatibleProvider`` on that server (the GGUF tokenizer: skips without llama-cpp-python)."""
    import pytest

    pytest.importorskip("llama_cpp", reason="the GGUF tokenizer needs llama-cpp-python")
    from backtrack_sampler.provider.remote import OpenAICompatibleProvider

    with OpenAICompatibleProvider(url, VLLM_MODEL_NAME, tokenizer=tokenizer, chunk_size=chunk_size) as provider:
        yield provider


def vllm_completion(url: str, prompt: list[int], max_tokens: int, xargs: dict | None = None, **fields) -> dict:
    """vLLM's own greedy completion of ``prompt`` (token ids) in one request: its first choice.

    ``xargs`` go as ``vllm_xargs``; ``fields`` replace fields of the body.
    """
    body = {
        "model": VLLM_MODEL_NAME,
        "prompt": prompt,
        "max_tokens": max_tokens,
        "temperature": 0,
        "logprobs": 1,
        "return_tokens_as_token_ids": True,
    } | fields
    if xargs is not None:
        body["vllm_xargs"] = xargs
    response = httpx.post(url + "/completions", json=body, timeout=300)
    assert response.status_code == 200, response.text
    return response.json()["choices"][0]


def token_ids(choice: dict) -> list[int]:
    """The ids of a choice's tokens (``return_tokens_as_token_ids``)."""
    return [int(t.split(":")[1]) for t in choice["logprobs"]["tokens"]]


@contextlib.contextmanager
def serve_remote(remote_url: str, tokenizer: Path, *args: str, timeout: float = 120) -> Iterator[str]:
    """``backtrack-sampler serve --remote-url`` (the CLI, as a user runs it) on a free port; yield its base URL.

    ``args`` are added to the command line (``--parallel 4``...). The server
    and whatever it starts end with this (``process_tree``).
    """
    import sys

    port = free_port()
    command = [
        sys.executable, "-m", "backtrack_sampler", "serve", "--port", str(port), "--log-level", "warning",
        "--remote-url", remote_url, "--remote-model", VLLM_MODEL_NAME, "--tokenizer", str(tokenizer), *args,
    ]  # fmt: skip
    log = Path(tempfile.mkstemp(prefix="serve-remote-", suffix=".log")[1])
    env = {key: value for key, value in os.environ.items() if not key.startswith("BACKTRACK_SAMPLER_")}
    with log.open("wb") as out:
        process = process_tree.start(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        wait_ready(f"http://127.0.0.1:{port}/health", timeout, process, log)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        process_tree.stop(process)
        log.unlink(missing_ok=True)
