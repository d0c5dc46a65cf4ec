"""Only regular files are read or written: a device, a FIFO or a directory is one ``error:`` line naming the argument.

``batch good.jsonl -o /dev/full`` used to read the "existing output" forever
(22.9 GB resident before the kernel killed it); ``/dev/zero`` the same, and a
FIFO blocks. Every file argument of every command is checked before any model
is loaded, and the library refuses them too. The commands run in a subprocess
with its address space capped, so a check that regressed fails fast instead of
eating the machine's memory. No model is loaded.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import threading
from pathlib import Path

import pytest

from backtrack_sampler.batch import BatchError, run_batch
from backtrack_sampler.core.text_files import NotRegularFileError, read_lines, read_text
from backtrack_sampler.strategy.ban_rules import load_ban_list
from cli_support import one_error_line, run_cli


def run(*args: str) -> subprocess.CompletedProcess:
    return run_cli(*args, memory=4 << 30)  # far less than reading a device forever takes


@pytest.fixture
def files(tmp_path) -> dict[str, Path]:
    """A good batch input, a text to score, a directory and a FIFO."""
    good = tmp_path / "good.jsonl"
    good.write_text(json.dumps({"id": 1, "prompt": "hi", "max_tokens": 2}) + "\n")
    text = tmp_path / "text.txt"
    text.write_text("Some words to measure, and some more words to measure.\n")
    folder = tmp_path / "folder"
    folder.mkdir()
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    return {"good": good, "text": text, "folder": folder, "fifo": fifo, "out": tmp_path / "out.jsonl"}


DEVICE = "not a regular file (a character device)"


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["batch", "{good}", "-o", "/dev/full"], ["argument --output", DEVICE, "'/dev/full'"]),
        (["batch", "{good}", "-o", "/dev/zero"], ["argument --output", DEVICE, "'/dev/zero'"]),
        (["batch", "{good}", "-o", "{fifo}"], ["argument --output", "not a regular file (a FIFO)"]),
        (["batch", "{good}", "-o", "{out}", "--events-out", "/dev/zero"], ["argument --events-out", DEVICE]),
        (["batch", "/dev/null", "-o", "{out}"], ["argument INPUT", DEVICE, "'/dev/null'"]),
        (["batch", "/dev/zero", "-o", "{out}"], ["argument INPUT", DEVICE, "'/dev/zero'"]),
        (["batch", "{fifo}", "-o", "{out}"], ["argument INPUT", "not a regular file (a FIFO)"]),
        (["batch", "{folder}", "-o", "{out}"], ["argument INPUT", "is a directory", "folder'"]),
        (["batch", "{good}", "-o", "{out}", "--ban-file", "/dev/zero"], ["argument --ban-file", DEVICE]),
        (["generate", "hi", "--ban-file", "/dev/zero"], ["argument --ban-file", DEVICE, "'/dev/zero'"]),
        (["generate", "hi", "--ban-file", "{fifo}"], ["argument --ban-file", "not a regular file (a FIFO)"]),
        (["generate", "hi", "--ban-file", "{folder}"], ["argument --ban-file", "is a directory"]),
        (["generate", "hi", "--model", "/dev/zero"], ["argument --model", DEVICE, "'/dev/zero'"]),
        (["serve", "--model", "{fifo}"], ["argument --model", "not a regular file (a FIFO)"]),
        (["score", "/dev/zero"], ["argument FIRST", DEVICE, "'/dev/zero'"]),
        (["score", "{text}", "{fifo}"], ["argument SECOND", "not a regular file (a FIFO)"]),
        (["score", "{text}", "--ban-file", "/dev/zero"], ["argument --ban-file", DEVICE]),
        (["score", "{text}", "--logprob", "--prompts", "/dev/zero"], ["argument --prompts", DEVICE]),
        (["score", "{text}", "--plot", "{fifo}.png"], ["argument --plot", "not a regular file (a FIFO)"]),
        (["mine", "/dev/zero"], ["argument INPUT", DEVICE, "'/dev/zero'"]),
        (["mine", "{text}", "-o", "{fifo}.json"], ["argument --output", "not a regular file (a FIFO)"]),
        (["mine", "{text}", "--prompts", "{fifo}"], ["argument --prompts", "not a regular file (a FIFO)"]),
    ],
)
def test_a_file_argument_that_is_not_a_regular_file_is_one_error_line(files, args, named):
    for name in ("fifo.png", "fifo.json"):  # FIFOs with the suffixes --plot and mine -o ask for
        os.mkfifo(files["fifo"].parent / name)
    args = [a.format(**files) for a in args]
    one_error_line(run(*args), *[n.format(**files) for n in named])
    assert not files["out"].exists()


def test_a_missing_input_is_still_not_found(files):
    one_error_line(run("batch", str(files["folder"] / "nope.jsonl"), "-o", str(files["out"])), "file not found")


# -- the library refuses them too -------------------------------------------------------------------
@pytest.mark.parametrize("output", ["/dev/full", "/dev/zero"])
def test_run_batch_refuses_a_device_as_output_without_reading_it(files, output):
    with pytest.raises(BatchError, match=re.escape(f"cannot read '{output}': {DEVICE}")) as caught:
        run_batch(files["good"], output, [object()], progress=None)  # the provider is never used
    assert str(caught.value.path) == output


def test_run_batch_refuses_a_device_as_events_file(files):
    with pytest.raises(BatchError, match="'/dev/zero': not a regular file"):
        run_batch(files["good"], files["out"], [object()], events_path="/dev/zero", progress=None)
    with pytest.raises(BatchError, match="is a directory"):
        run_batch(files["good"], files["out"], [object()], events_path=files["folder"], progress=None)


@pytest.fixture
def unblocked(files):
    """A thread that opens the FIFO for writing once a reader has it open, then closes it.

    A reader that opened it (as the readers did) gets an empty file a moment
    later and the test fails, rather than the suite hanging.
    """

    done = threading.Event()

    def writer() -> None:
        while not done.wait(0.5):
            try:
                os.close(os.open(files["fifo"], os.O_WRONLY | os.O_NONBLOCK))  # ENXIO while no reader has it
            except OSError:
                pass

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    yield
    done.set()
    thread.join()


def test_run_batch_refuses_a_fifo_or_a_device_as_input(files, unblocked):
    for source in (files["fifo"], "/dev/zero", files["folder"]):
        with pytest.raises(BatchError, match="not a regular file|is a directory"):
            run_batch(source, files["out"], [object()], progress=None)
    assert not files["out"].exists()


def test_the_readers_refuse_what_is_not_a_regular_file(files, unblocked):
    for path in ("/dev/zero", files["fifo"]):
        with pytest.raises(NotRegularFileError, match="not a regular file"):
            read_text(path)
        with pytest.raises(NotRegularFileError, match="not a regular file"):
            next(read_lines(path))
        with pytest.raises(ValueError, match="cannot read the ban list .*: not a regular file"):
            load_ban_list(path)
    with pytest.raises(NotRegularFileError, match="is a directory"):
        read_text(files["folder"])
