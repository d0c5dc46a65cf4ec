"""``backtrack-sampler serve`` as a process, and the server examples (docs/server.md) run against it as written."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

httpx = pytest.importorskip("httpx", reason="httpx is not installed (extra: dev)")
pytest.importorskip("fastapi", reason="FastAPI is not installed (extra: server)")
pytestmark = pytest.mark.llamacpp

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
DEFAULT_ADDRESS = "127.0.0.1:8000"  # what the examples are written for
BANNED = ("vast", "mysterious")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve(*args: str):
    """``python -m backtrack_sampler serve ARGS`` on a free port of 127.0.0.1; yields (url, output so far)."""
    port = free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("BACKTRACK_SAMPLER_API_KEY", None)
    command = [sys.executable, "-m", "backtrack_sampler", "serve", "--port", str(port), "--log-level", "warning"]
    process = subprocess.Popen([*command, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"the server did not start:\n{process.stdout.read()}")
        time.sleep(0.2)
    try:
        yield url, process
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:  # pragma: no cover
            process.kill()


@pytest.fixture(scope="module")
def served(smollm_path):
    """``serve`` with its defaults: the embedded model, 8 sequences decoded together."""
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (extra: llamacpp)")
    with serve() as (url, _):
        yield url


def as_written(text: str, url: str) -> str:
    """An example's text, pointed at the test server instead of 127.0.0.1:8000 (nothing else changes)."""
    assert DEFAULT_ADDRESS in text
    return text.replace(DEFAULT_ADDRESS, url.removeprefix("http://"))


def test_serve_lists_the_embedded_model_and_serves_the_playground(served):
    models = httpx.get(f"{served}/v1/models", timeout=10).json()
    assert [m["id"] for m in models["data"]] == ["SmolLM2-135M-Instruct"]
    page = httpx.get(f"{served}/", timeout=10)
    assert page.status_code == 200 and "playground" in page.text
    assert httpx.get(f"{served}/static/playground.js", timeout=10).status_code == 200
    health = httpx.get(f"{served}/health", timeout=10).json()
    assert health["generation"]["parallel"] == 8 and health["batch"]["slots"] == 8  # --parallel's default


def test_serve_parallel_1_serves_one_sequence_at_a_time_and_parallel_n_notes_saved_prefixes(smollm_path):
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (extra: llamacpp)")
    with serve("--parallel", "1") as (url, _):
        health = httpx.get(f"{url}/health", timeout=10).json()
        assert health["generation"]["parallel"] == 1 and "batch" not in health
    with serve("--parallel", "2", "--saved-prefixes", "4", "--n-ctx", "256") as (url, process):
        health = httpx.get(f"{url}/health", timeout=10).json()
        assert health["generation"]["parallel"] == 2 and health["batch"]["slots"] == 2
        assert httpx.get(f"{url}/v1/models", timeout=10).json()["data"][0]["max_model_len"] == 256
        reply = httpx.post(f"{url}/v1/completions", json={"prompt": "Hi", "max_tokens": 3, "n": 2}, timeout=60)
        assert reply.status_code == 200 and len(reply.json()["choices"]) == 2
        process.terminate()
        output = process.communicate(timeout=30)[0]
    assert "note: --saved-prefixes applies only with --parallel 1" in output
    assert "2 sequences at once, 256 positions each" in output


def test_the_python_example_runs_as_written(served, tmp_path):
    script = tmp_path / "server_client.py"
    script.write_text(as_written((EXAMPLES / "server_client.py").read_text(), served))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    text = done.stdout.strip()
    assert text.startswith("The ocean is") and not any(word in text.lower() for word in BANNED)


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_the_curl_example_runs_as_written(served):
    command = as_written((EXAMPLES / "server_curl.sh").read_text(), served)
    done = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    reply = json.loads(done.stdout)
    text = reply["choices"][0]["message"]["content"]
    assert text.startswith("The ocean is") and not any(word in text.lower() for word in BANNED)
    assert reply["choices"][0]["finish_reason"] in ("stop", "length")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--port", "70000"], "argument --port: must be in [0, 65535]"),
        (["--model", "/nonexistent/model.gguf"], "argument --model: file not found"),
        (["--max-tokens-limit", "0"], "argument --max-tokens-limit: must be an integer >= 1"),
        (["--parallel", "0"], "argument --parallel: must be an integer >= 1"),
        (["--max-body-bytes", "10"], "argument --max-body-bytes: must be an integer >= 1024"),
        (["--max-choices", "0"], "argument --max-choices: must be an integer >= 1"),
        (["--max-rewinds-limit", "-1"], "argument --max-rewinds-limit: must be an integer >= 0"),
        (["--parallel", "257"], "argument --parallel: must be in [1, 256], got 257"),
        (
            ["--backend", "transformers", "--parallel", "4"],
            "argument --parallel: --backend transformers serves one sequence at a time",
        ),
    ],
)
def test_bad_serve_arguments_are_one_line_errors(args, message):
    done = subprocess.run(
        [sys.executable, "-m", "backtrack_sampler", "serve", *args], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr


def test_serve_offers_the_request_bounds_and_allowed_hosts():
    done = subprocess.run(
        [sys.executable, "-m", "backtrack_sampler", "serve", "--help"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    for flag in ("--allowed-host", "--max-body-bytes", "--max-choices", "--max-rewinds-limit"):
        assert flag in done.stdout, flag
    assert "--rewinds-per-position-limit" in done.stdout
