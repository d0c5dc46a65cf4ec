"""A server and every process it starts, stopped together, even when whoever started it is killed.

vLLM's API server starts an EngineCore process: killing the server alone (or
the script that started it, whose ``finally`` never runs under SIGKILL, nor
under a SIGTERM it does not handle) leaves the engine running, 3 GB.
``start`` runs a command under this file as a supervisor, the leader of a new
session and process group (the command and its children join the group), which
ends the whole tree when any of these happens:

- it gets SIGTERM, SIGINT or SIGHUP (``stop`` sends SIGTERM);
- the server exits by itself;
- its parent process is gone, by any death. It watches ``getppid()``, not
  ``PR_SET_PDEATHSIG``: the latter fires when the parent *thread* that started
  it exits, and it would only reach the server, not the engine.

Ending the tree: SIGTERM to the group (vLLM then stops its engine itself), a
wait of up to ``grace`` seconds for every descendant to exit, then SIGKILL to
whatever is left. On Linux the supervisor is a child subreaper: a descendant
orphaned on the way is reparented to it, so it still finds and waits for it. It
exits only once nothing of the tree is left, with the server's exit status (128
plus the signal's number if a signal ended the server).

``exit_on_signals`` turns SIGTERM and SIGHUP into ``Stopped`` (a ``SystemExit``)
in a script's main thread, so its ``finally`` blocks stop what it started; the
supervisor is there for every case they cannot cover.

Used by tests/remote_servers.py (the vLLM fixtures) and
bench/remote_throughput.py. The supervisor's command line::

    python process_tree.py PARENT_PID GRACE_SECONDS COMMAND...
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

GRACE = 30.0  # seconds between SIGTERM and SIGKILL
POLL = 0.2  # seconds between the supervisor's looks at its server, its parent and the tree
ENDING = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
PR_SET_CHILD_SUBREAPER = 36


def start(command: Sequence[str], grace: float = GRACE, **popen) -> subprocess.Popen:
    """Start ``command`` under the supervisor (a session of its own); the supervisor's ``Popen``.

    ``popen``: ``Popen``'s other arguments (``stdout``, ``env``...); the command
    inherits them. The ``Popen`` ends when the whole tree has, with the
    command's status.
    """
    supervisor = [sys.executable, "-I", str(Path(__file__).resolve()), str(os.getpid()), str(grace), *command]
    return subprocess.Popen(supervisor, start_new_session=True, **popen)


def stop(process: subprocess.Popen, grace: float = GRACE) -> int | None:
    """End the tree ``start`` returned and wait until none of it is left; the supervisor's status.

    SIGKILL to the whole group if the supervisor itself is not done in time.
    """
    if process.poll() is None:
        process.terminate()
    try:
        return process.wait(2 * grace + 10)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        return process.wait()


class Stopped(SystemExit):
    """SIGTERM or SIGHUP inside ``exit_on_signals``; ``code`` is 128 plus the signal's number."""


@contextlib.contextmanager
def exit_on_signals(signals: Sequence[int] = (signal.SIGTERM, signal.SIGHUP)) -> Iterator[None]:
    """Within: ``signals`` raise ``Stopped`` in the main thread (SIGINT raises KeyboardInterrupt already)."""

    def raise_stopped(signum: int, _frame: object) -> None:
        raise Stopped(128 + signum)

    previous = {signum: signal.signal(signum, raise_stopped) for signum in signals}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def stat(pid: int | str) -> tuple[str, int, int, int] | None:
    """(state, parent pid, process group, start time in clock ticks) of a process, from /proc; ``None`` if gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()  # after "pid (comm) ", which may hold spaces
    return fields[0], int(fields[1]), int(fields[2]), int(fields[19])


def others_in_tree() -> list[int]:
    """The live processes of the supervisor's group and its children (orphans come to it), itself left out."""
    me, group = os.getpid(), os.getpgrp()
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != me:
            info = stat(entry)
            if info is not None and info[0] != "Z" and (info[2] == group or info[1] == me):
                found.append(int(entry))
    return found


class Supervisor:
    """The supervisor's side: runs the server, notes how its children end, ends the tree."""

    def __init__(self, parent: int, grace: float) -> None:
        self.parent, self.grace = parent, grace
        self.signalled = False
        self.statuses: dict[int, int] = {}

    def note_signal(self, _signum: int, _frame: object) -> None:
        self.signalled = True

    def reap(self) -> None:
        """Collect every child that has exited (the server's status is kept)."""
        with contextlib.suppress(ChildProcessError):
            while True:
                pid, status = os.waitpid(-1, os.WNOHANG)
                if pid == 0:
                    return
                self.statuses[pid] = status

    def run(self, command: list[str]) -> int:
        for signum in ENDING:
            signal.signal(signum, self.note_signal)
        if sys.platform == "linux":
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
        server = subprocess.Popen(command)  # waited for by reap, not by Popen
        while server.pid not in self.statuses and not self.signalled and os.getppid() == self.parent:
            time.sleep(POLL)
            self.reap()
        self.end_tree()
        status = self.statuses.get(server.pid)
        code = 1 if status is None else os.waitstatus_to_exitcode(status)  # -N: signal N ended it
        server.returncode = code
        return code if code >= 0 else 128 - code

    def end_tree(self) -> None:
        """SIGTERM to the group, ``grace`` seconds for it to go, then SIGKILL to each process left, until none is."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(0, signal.SIGTERM)  # this process too: its handler only takes note
        for sent in (signal.SIGTERM, signal.SIGKILL):
            deadline = time.monotonic() + self.grace
            while time.monotonic() < deadline:
                self.reap()
                left = others_in_tree()
                if not left:
                    return
                if sent == signal.SIGKILL:
                    for pid in left:
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(pid, signal.SIGKILL)
                time.sleep(POLL)


if __name__ == "__main__":
    sys.exit(Supervisor(int(sys.argv[1]), float(sys.argv[2])).run(sys.argv[3:]))
