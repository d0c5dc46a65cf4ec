"""A killed bench or an interrupted test run leaves no server process behind (tests/process_tree.py).

Each test starts a server the way bench/remote_throughput.py or the vLLM
fixtures do, notes every process below whoever started it (from /proc), ends
that starter with a signal, and checks that none of those processes is left.
The server is a stand-in, every run: a script that vLLM's python path can
point at, starting an "engine" child as vLLM starts its EngineCore (SIGTERM
stops both, SIGKILL only the server); and the real vLLM where its venv is
(scripts/setup_vllm.sh), as test_remote_vllm.py has it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import process_tree
from remote_servers import ROOT, vllm_python

TESTS = Path(__file__).resolve().parent
BENCH = ROOT / "bench" / "remote_throughput.py"
WAIT = 600  # seconds at most for a server to come up: a guard against hanging, not a measure
# Seconds after its starter has exited by which a tree counts as left running: its grace between SIGTERM and
# SIGKILL (process_tree.GRACE), twice over, and room for a loaded machine. A guard, not a measure.
LEFT = 2 * process_tree.GRACE + 60

STAND_IN = '''#!{python}
"""vLLM's python as far as processes go: `STAND_IN -m vllm.entrypoints.openai.api_server ... --port P`.

Starts an "engine" child, then writes "SERVER_PID ENGINE_PID" to $STAND_IN_PIDS. With
$STAND_IN_EXIT it then exits with that status, leaving the engine; with $STAND_IN_LISTEN
it answers 200 to every GET on the port; else it waits. SIGTERM stops the engine, then
the server, as vLLM does; with $STAND_IN_STUBBORN the engine ignores SIGTERM and the
server waits for it forever.
"""
import http.server
import os
import signal
import subprocess
import sys
import time

ignore = "signal.signal(signal.SIGTERM, signal.SIG_IGN); " if os.environ.get("STAND_IN_STUBBORN") else ""
engine_code = "import signal, time; " + ignore + "print('up', flush=True); time.sleep(3600)"
engine = subprocess.Popen([sys.executable, "-c", engine_code], stdout=subprocess.PIPE)
engine.stdout.readline()


def shut_down(signum, frame):
    engine.terminate()
    engine.wait()
    os._exit(0)


signal.signal(signal.SIGTERM, shut_down)
pids = os.environ["STAND_IN_PIDS"]
with open(pids + ".part", "w") as out:
    out.write(f"{{os.getpid()}} {{engine.pid}}")
os.rename(pids + ".part", pids)
if os.environ.get("STAND_IN_EXIT"):
    os._exit(int(os.environ["STAND_IN_EXIT"]))
if os.environ.get("STAND_IN_LISTEN"):

    class Ok(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"{{}}")

        def log_message(self, *args):
            pass

    port = int(sys.argv[sys.argv.index("--port") + 1])
    http.server.HTTPServer(("127.0.0.1", port), Ok).serve_forever()
time.sleep(3600)
'''

# What a test module does with the vLLM fixture: start it, use it, until interrupted.
FIXTURE_USER = f"""
import sys, time
from pathlib import Path
sys.path.insert(0, {str(TESTS)!r})
from remote_servers import vllm_server
with vllm_server(Path(sys.argv[1]), Path(sys.argv[2])) as url:
    print("serving", url, flush=True)
    time.sleep(3600)
"""

# A script that starts a tree with process_tree itself, and a short grace.
STARTER = f"""
import sys, time
sys.path.insert(0, {str(TESTS)!r})
import process_tree
process_tree.start(sys.argv[1:], grace=1)
time.sleep(3600)
"""

Process = tuple[int, int]  # pid and start time: a pid used again by another process is not the same one


def descendants(root: int) -> list[Process]:
    """The processes below ``root`` now, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        info = process_tree.stat(entry) if entry.isdigit() else None
        if info is not None:
            children.setdefault(info[1], []).append(int(entry))
    found, todo = [], [root]
    while todo:
        for pid in children.get(todo.pop(), []):
            info = process_tree.stat(pid)
            if info is not None:
                found.append((pid, info[3]))
                todo.append(pid)
    return found


def alive(process: Process) -> bool:
    info = process_tree.stat(process[0])
    return info is not None and info[3] == process[1] and info[0] != "Z"


def command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")[:200]
    except OSError:
        return "?"


def wait_until(done: Callable[[], bool], what: str, starter: subprocess.Popen | None = None, log: Path | None = None):
    deadline = time.monotonic() + WAIT
    while not done():
        tail = log.read_text(errors="replace")[-3000:] if log is not None and log.exists() else ""
        if starter is not None and starter.poll() is not None:
            pytest.fail(f"the starter exited ({starter.returncode}) before {what}:\n{tail}")
        if time.monotonic() > deadline:
            pytest.fail(f"no {what} after {WAIT} s:\n{tail}")
        time.sleep(0.2)


@pytest.fixture
def tree() -> Iterator[list[Process]]:
    """The processes a test tracks; whatever of them is still alive at the end is killed (a failed test leaks none)."""
    tracked: list[Process] = []
    yield tracked
    for process in tracked:
        if alive(process):
            os.kill(process[0], signal.SIGKILL)


def assert_all_end(tracked: list[Process]) -> None:
    """None of ``tracked`` is left once the tree has had its time to go (its grace, then SIGKILL)."""
    deadline = time.monotonic() + LEFT
    while any(map(alive, tracked)) and time.monotonic() < deadline:
        time.sleep(0.2)
    left = [f"{pid}: {command_line(pid)}" for pid, start in tracked if alive((pid, start))]
    assert not left, "left running:\n" + "\n".join(left)


@pytest.fixture
def stand_in(tmp_path) -> Path:
    path = tmp_path / "python"
    path.write_text(STAND_IN.format(python=sys.executable))
    path.chmod(0o755)
    return path


def stand_in_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return dict(os.environ, STAND_IN_PIDS=str(tmp_path / "pids"), **extra)


def stand_in_pids(tmp_path: Path) -> list[int]:
    return [int(pid) for pid in (tmp_path / "pids").read_text().split()]


def start_and_end(
    command: list[str], env: dict[str, str], ready: Callable[[], bool], signum: int, tracked: list, log: Path
) -> list[int]:
    """Run ``command``; once ``ready``, track every process below it, send it ``signum``, wait for it to exit.

    Returns the pids tracked.
    """
    with log.open("wb") as out:
        starter = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    tracked.append((starter.pid, process_tree.stat(starter.pid)[3]))
    try:
        wait_until(ready, "server", starter, log)
        tracked += descendants(starter.pid)
        starter.send_signal(signum)
        starter.wait(WAIT)
    finally:
        if starter.poll() is None:
            starter.kill()
            starter.wait()
    return [pid for pid, _ in tracked]


ENDINGS = [signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGKILL]


def signal_name(signum: int) -> str:
    return signal.Signals(signum).name


@pytest.mark.parametrize("signum", ENDINGS, ids=signal_name)
def test_a_killed_bench_leaves_no_server_process(signum, stand_in, tmp_path, tree):
    """bench/remote_throughput.py --server vllm, ended while its (stand-in) vLLM starts: `timeout` sends SIGTERM."""
    cache = tmp_path / "cache" / "SmolLM2-135M-Instruct-hf"  # embedded_hf_dir() finds it made: no transformers
    cache.mkdir(parents=True)
    (cache / "config.json").write_text("{}")
    env = stand_in_env(tmp_path, BACKTRACK_VLLM_PYTHON=str(stand_in), BACKTRACK_SAMPLER_CACHE=str(cache.parent))
    command = [sys.executable, str(BENCH), "--server", "vllm", "--concurrency", "1", "--tokens", "4"]
    pids = start_and_end(command, env, (tmp_path / "pids").exists, signum, tree, tmp_path / "bench.log")
    assert set(stand_in_pids(tmp_path)) <= set(pids)  # the server and its engine are among those tracked
    assert_all_end(tree)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL], ids=signal_name)
def test_an_interrupted_test_run_leaves_no_vllm_fixture_process(signum, stand_in, tmp_path, tree):
    """A test process using ``vllm_server`` (the fixtures' server), interrupted (Ctrl-C) or killed while it serves."""
    log = tmp_path / "user.log"
    env = stand_in_env(tmp_path, STAND_IN_LISTEN="1")
    command = [sys.executable, "-c", FIXTURE_USER, str(stand_in), str(tmp_path)]
    pids = start_and_end(command, env, lambda: "serving" in log.read_text(), signum, tree, log)
    assert set(stand_in_pids(tmp_path)) <= set(pids)
    assert_all_end(tree)


@pytest.mark.parametrize("ending", ["stop", "starter killed"])
def test_an_engine_that_ignores_sigterm_is_killed_after_the_grace(ending, stand_in, tmp_path, tree):
    env = stand_in_env(tmp_path, STAND_IN_STUBBORN="1")
    ready = (tmp_path / "pids").exists
    if ending == "stop":
        process = process_tree.start([str(stand_in)], grace=1, env=env)
        tree.append((process.pid, process_tree.stat(process.pid)[3]))
        wait_until(ready, "server", process)
        tree.extend(descendants(process.pid))
        process_tree.stop(process, grace=1)
    else:
        command = [sys.executable, "-c", STARTER, str(stand_in)]
        start_and_end(command, env, ready, signal.SIGKILL, tree, tmp_path / "starter.log")
    assert set(stand_in_pids(tmp_path)) <= {pid for pid, _ in tree}
    assert_all_end(tree)


def test_a_server_that_exits_takes_its_engine_along_and_its_status_is_kept(stand_in, tmp_path, tree):
    process = process_tree.start([str(stand_in)], grace=1, env=stand_in_env(tmp_path, STAND_IN_EXIT="3"))
    tree.append((process.pid, process_tree.stat(process.pid)[3]))
    assert process.wait(WAIT) == 3  # the supervisor ends when the whole tree has, with the server's status
    engine = stand_in_pids(tmp_path)[1]
    assert process_tree.stat(engine) is None or process_tree.stat(engine)[0] == "Z"


def test_exit_on_signals_raises_stopped_with_the_signals_code():
    before = signal.getsignal(signal.SIGHUP)
    with pytest.raises(process_tree.Stopped) as stopped, process_tree.exit_on_signals():
        os.kill(os.getpid(), signal.SIGHUP)
        time.sleep(5)  # the handler raises before this ends
    assert stopped.value.code == 128 + signal.SIGHUP
    assert signal.getsignal(signal.SIGHUP) is before  # put back


def real_vllm() -> tuple[Path, Path]:
    """vLLM's python and the embedded model's HF directory; skips without them, as test_remote_vllm.py does."""
    python = vllm_python()
    if python is None:
        pytest.skip("no vLLM venv: run scripts/setup_vllm.sh (or set BACKTRACK_VLLM_PYTHON to its python)")
    pytest.importorskip("transformers", reason="exporting the embedded model for vLLM needs transformers")
    from backtrack_sampler.models import embedded_hf_dir

    return python, embedded_hf_dir()


@pytest.mark.vllm
def test_a_bench_killed_by_timeout_leaves_no_vllm_process(tmp_path, tree):
    """bench/remote_throughput.py --server vllm gets SIGTERM (what `timeout` sends) while it measures."""
    real_vllm()
    pytest.importorskip("llama_cpp", reason="the bench's tokenizer is the GGUF's (llama-cpp-python)")
    log = tmp_path / "bench.log"
    command = [sys.executable, str(BENCH), "--server", "vllm", "--concurrency", "1", "--tokens", "8"]
    command += ["--repeat", "1000", "--no-step"]
    start_and_end(command, dict(os.environ), lambda: " raw: " in log.read_text(), signal.SIGTERM, tree, log)
    assert len(tree) >= 3  # the bench, vLLM's API server, its engine
    assert_all_end(tree)


@pytest.mark.vllm
def test_a_test_run_killed_by_timeout_leaves_no_vllm_fixture_process(tmp_path, tree):
    """A test process serving with the real vLLM through ``vllm_server`` gets SIGTERM, which pytest does not handle."""
    python, model = real_vllm()
    log = tmp_path / "user.log"
    command = [sys.executable, "-c", FIXTURE_USER, str(python), str(model)]
    start_and_end(command, dict(os.environ), lambda: "serving" in log.read_text(), signal.SIGTERM, tree, log)
    assert len(tree) >= 3
    assert_all_end(tree)
