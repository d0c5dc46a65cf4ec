"""Running ``backtrack-sampler`` in a subprocess with its memory capped, and reading its one error line.

A command that must refuse before it allocates (an absurd context, a device read
forever) runs with its address space capped, so a check that regressed fails fast
instead of eating the machine's memory.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from typing import IO


def capped(memory: int):
    """A ``preexec_fn`` capping the child's address space at ``memory`` bytes."""

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))

    return cap


def run_cli(
    *args: str | bytes, stdin: bytes | IO[bytes] | None = None, memory: int = 8 << 30, timeout: float = 120
) -> subprocess.CompletedProcess:
    """``python -m backtrack_sampler ARGS``; ``stdin`` is bytes to send, a file to read from, or nothing."""
    feed = {"input": stdin} if isinstance(stdin, bytes) else {"stdin": stdin or subprocess.DEVNULL}
    return subprocess.run(
        [sys.executable, "-m", "backtrack_sampler", *args],
        **feed,
        capture_output=True,
        env=dict(os.environ, PYTHONIOENCODING="utf-8", OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1"),
        preexec_fn=capped(memory),
        timeout=timeout,
    )


def one_error_line(done: subprocess.CompletedProcess, *named: str) -> str:
    """The command failed with status 2 and one ``error:`` line on stderr holding each of ``named``."""
    err = done.stderr.decode("utf-8", errors="replace")
    assert done.returncode == 2, err[-2000:]
    assert done.stdout == b""
    assert "Traceback" not in err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    for part in named:
        assert part in err, err
    return err
