"""Closed or full standard streams: one line on whatever stream is left (or none), a meaningful exit status.

``generate - <&-`` and ``generate Hi >&-`` raised AttributeError, ``generate Hi >
/dev/full`` OSError 28, and ``generate Hi 2>&-`` wrote the text but exited 1.
Now: stdout that cannot be written is ``error: cannot write to stdout: ...`` on
stderr and exit status 1; a closed stdin that is read is a usage error (2);
stderr that is closed or full drops the diagnostics, and the command succeeds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable

import pytest

from cli_support import one_error_line, run_cli

Setup = Callable[[], None]


def closing(*fds: int) -> Setup:
    """A ``preexec_fn`` closing ``fds`` in the child: ``<&-``, ``>&-``, ``2>&-``."""

    def close() -> None:
        for fd in fds:
            os.close(fd)

    return close


def run(*args: str, stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec: Setup | None = None):
    return subprocess.run(
        [sys.executable, "-m", "backtrack_sampler", *args],
        stdin=subprocess.DEVNULL,
        stdout=stdout,
        stderr=stderr,
        env=dict(os.environ, PYTHONIOENCODING="utf-8", OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1"),
        preexec_fn=preexec,
        timeout=300,
    )


def only_line(err: bytes) -> str:
    text = err.decode("utf-8", errors="replace")
    assert "Traceback" not in text and "Exception ignored" not in text, text
    assert text.startswith("error: ") and text.count("\n") == 1, text
    return text


@pytest.fixture
def text_file(tmp_path):
    path = tmp_path / "text.txt"
    path.write_text("Some words to measure, and some more words to measure again.\n")
    return str(path)


@pytest.fixture
def results_file(tmp_path):
    """Batch results with an error record: ``score`` notes on stderr that it skipped it."""
    path = tmp_path / "results.jsonl"
    records = [
        {"id": 1, "line": 1, "text": "Some words to measure, and some more words to measure again."},
        {"id": 2, "line": 2, "error": {"type": "invalid_params", "message": "bad"}},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


GENERATE = ["generate", "Name a color.", "--max-new-tokens", "3", "--temperature", "0"]


# -- without a model -----------------------------------------------------------------------------------
def test_a_prompt_from_an_endless_stdin_is_refused_after_a_bounded_read():
    with open("/dev/zero", "rb") as zeros:
        done = run_cli("generate", "-", stdin=zeros, memory=4 << 30)  # reading forever fails here, not the machine
    assert "argument PROMPT (from stdin): more than 64 MiB" in one_error_line(done)


def test_a_prompt_from_a_closed_stdin_is_a_usage_error():
    done = run("generate", "-", preexec=closing(0))
    assert done.returncode == 2 and done.stdout == b""
    assert "argument PROMPT: '-' reads the prompt from stdin, but stdin is closed" in only_line(done.stderr)


@pytest.mark.parametrize("args", [["score", "{text}"], ["generate", "--help"], ["--version"]])
def test_stdout_full_or_closed_is_one_error_line_and_status_1(text_file, args):
    args = [a.format(text=text_file) for a in args]
    with open("/dev/full", "wb") as full:
        done = run(*args, stdout=full)
    assert done.returncode == 1
    assert only_line(done.stderr) == "error: cannot write to stdout: No space left on device\n"
    done = run(*args, preexec=closing(1))
    assert done.returncode == 1
    assert only_line(done.stderr) == "error: cannot write to stdout: it is closed\n"


def test_mine_with_stdout_full_or_closed(text_file, tmp_path):
    pytest.importorskip("wordfreq", reason="mine needs the extra: score")
    args = ["mine", text_file, "-o", str(tmp_path / "bans.json"), "--min-count", "1", "--min-texts", "1"]
    assert run(*args).returncode == 0
    with open("/dev/full", "wb") as full:
        done = run(*args, stdout=full)  # the table goes to stdout when the list goes to -o
    assert done.returncode == 1
    assert only_line(done.stderr) == "error: cannot write to stdout: No space left on device\n"
    done = run(*args, preexec=closing(1))
    assert done.returncode == 1
    assert only_line(done.stderr) == "error: cannot write to stdout: it is closed\n"


def test_a_reader_gone_ends_the_command_quietly(text_file):
    read, write = os.pipe()
    os.close(read)
    try:
        done = run("score", text_file, stdout=write)
    finally:
        os.close(write)
    assert done.returncode == 1 and done.stderr == b""


def test_stderr_closed_or_full_drops_the_diagnostics_and_the_command_succeeds(results_file):
    expected = run("score", results_file)
    assert expected.returncode == 0 and expected.stdout
    assert expected.stderr == b"results.jsonl: skipped 1 error record(s)\n"
    done = run("score", results_file, preexec=closing(2))
    assert done.returncode == 0 and done.stdout == expected.stdout
    with open("/dev/full", "wb") as full:
        done = run("score", results_file, stderr=full)
    assert done.returncode == 0 and done.stdout == expected.stdout


# -- with the model ------------------------------------------------------------------------------------
@pytest.mark.llamacpp
def test_generate_with_stdout_closed_or_full(smollm_path):
    done = run(*GENERATE, preexec=closing(1))
    assert done.returncode == 1
    assert only_line(done.stderr) == "error: cannot write to stdout: it is closed\n"
    with open("/dev/full", "wb") as full:
        done = run(*GENERATE, stdout=full)
    assert done.returncode == 1
    assert only_line(done.stderr) == "error: cannot write to stdout: No space left on device\n"


@pytest.mark.llamacpp
def test_generate_with_stderr_closed_or_full_writes_the_text_and_succeeds(smollm_path):
    expected = run(*GENERATE)
    assert expected.returncode == 0 and expected.stdout.strip(), expected.stderr
    done = run(*GENERATE, preexec=closing(2))
    assert done.returncode == 0 and done.stdout == expected.stdout
    with open("/dev/full", "wb") as full:
        done = run(*GENERATE, stderr=full)
    assert done.returncode == 0 and done.stdout == expected.stdout


@pytest.mark.llamacpp
@pytest.mark.parametrize("closed", [1, 2])
def test_batch_with_a_standard_stream_closed_writes_its_records_and_nothing_else(tmp_path, smollm_path, closed):
    source, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    source.write_text("".join(json.dumps({"id": i, "prompt": "Hi", "max_tokens": 3}) + "\n" for i in range(2)))
    # With descriptor 2 closed, the output file would take its number: what goes to stderr would land in it.
    done = run(
        "batch", str(source), "-o", str(out), "--concurrency", "1", "--temperature", "0", preexec=closing(closed)
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == b""
    records = [json.loads(line) for line in out.read_text().split("\n") if line]
    assert sorted(r["id"] for r in records) == [0, 1] and all("text" in r for r in records)


def test_mine_writing_its_list_on_a_full_disk_is_one_error_line_and_status_1(text_file, tmp_path, capsys, monkeypatch):
    import errno
    from pathlib import Path

    from backtrack_sampler.cli import main

    pytest.importorskip("wordfreq", reason="mine needs the extra: score")

    def full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(Path, "write_text", full)
    out = tmp_path / "bans.json"
    assert main(["mine", text_file, "-o", str(out), "--min-count", "1", "--min-texts", "1"]) == 1
    err = capsys.readouterr().err
    assert err == f"error: argument --output: cannot write {str(out)!r}: No space left on device\n"
