"""The documentation pages stay true to the code they show or list.

Moved from tests/test_readme.py when the README's sections became pages of docs/:
the plugin page shows examples/custom_strategy.py verbatim (and the example works),
the server page shows the server examples verbatim, and the page on other servers'
APIs names every field of server/ignored_fields.py. Each built-in strategy has a page.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
EXAMPLES = ROOT / "examples"


def page(name: str) -> str:
    return (DOCS / name).read_text()


def test_the_plugin_page_shows_the_custom_strategy_file_verbatim():
    code = (EXAMPLES / "custom_strategy.py").read_text()
    assert code in page("plugins.md")
    strategy = code.split("class NoDoubledWords")[1].split('if __name__ == "__main__"')[0]
    assert len(("class NoDoubledWords" + strategy).strip().splitlines()) <= 30


def _load_example():
    sys.path.insert(0, str(EXAMPLES))
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
        [sys.executable, str(EXAMPLES / "custom_strategy.py")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert len(out.stdout.split()) >= 10


def test_the_server_page_shows_the_examples_verbatim():
    # The tests of test_server_cli.py run these files against a real serve.
    for name in ("server_client.py", "server_curl.sh"):
        assert (EXAMPLES / name).read_text().strip() in page("server.md"), name


def test_the_dialects_page_lists_every_field_the_server_ignores_and_honours():
    # A test failing here means server/ignored_fields.py and docs/server-dialects.md disagree.
    from backtrack_sampler.server.ignored_fields import HONOURED, IGNORED

    text = page("server-dialects.md")
    missing = [name for name in (*IGNORED, *HONOURED) if f"`{name}`" not in text]
    assert not missing, f"docs/server-dialects.md does not name {missing}"
    assert not set(IGNORED) & set(HONOURED)


def test_every_registered_strategy_has_a_page_in_the_site():
    # The strategies this package registers: its entry points, which the registry loads
    # (read as text: tomllib is Python 3.11+).
    section = (ROOT / "pyproject.toml").read_text().split('[project.entry-points."backtrack_sampler.strategies"]')[1]
    section = section.split("\n[")[0]
    targets = dict(re.findall(r'^(\w+) = "([\w.:]+)"$', section, re.M))
    assert len(targets) >= 10, targets
    nav = (ROOT / "mkdocs.yml").read_text()
    for name, target in targets.items():
        cls = target.split(":")[-1]
        pages = [p for p in (DOCS / "strategies").glob("*.md") if p.name != "index.md" and f"`{cls}(" in p.read_text()]
        assert pages, f"no page of docs/strategies/ shows {cls}( (strategy {name!r})"
        assert f"strategies/{pages[0].name}" in nav, f"{pages[0].name} is not in mkdocs.yml's nav"
        assert f"`{cls}(" in page("strategies/index.md"), f"the strategies table lacks {cls}"
        assert f"::: backtrack_sampler.{cls}" in page("reference/strategies.md"), cls
