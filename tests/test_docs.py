"""The documentation site builds as CI builds it: ``mkdocs build --strict`` (a warning fails).

Strict mode with the validation settings of mkdocs.yml fails on a link to a page or an
anchor that does not exist, on a page left out of the navigation, on an API reference
(``::: backtrack_sampler.X``) that names nothing, and on a docstring griffe cannot read.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_the_site_builds_with_warnings_as_errors(tmp_path):
    pytest.importorskip("mkdocs", reason="mkdocs is not installed (extra: docs)")
    pytest.importorskip("mkdocstrings_handlers.python", reason="mkdocstrings[python] is not installed (extra: docs)")
    pytest.importorskip("material", reason="mkdocs-material is not installed (extra: docs)")
    site = tmp_path / "site"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", "mkdocs.yml", "--site-dir", str(site)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-4000:]
    assert "WARNING" not in log, log[-4000:]
    # The API reference was generated from the docstrings, not left as a bare ":::" line.
    reference = (site / "reference" / "sampler" / "index.html").read_text()
    assert "Yield the typed events of one generation" in reference  # BacktrackSampler.stream
    assert ":::" not in reference
    # Every page of docs/ is in the site (none left out of the navigation).
    for page in (ROOT / "docs").rglob("*.md"):
        name = page.relative_to(ROOT / "docs").with_suffix("")
        built = site / name / "index.html" if name.name != "index" else site / name.parent / "index.html"
        assert built.is_file(), f"{page} was not built"


def test_the_architecture_page_is_the_architecture_file():
    # docs/architecture.md includes ARCHITECTURE.md (pymdownx.snippets), so the two never disagree.
    assert (ROOT / "docs" / "architecture.md").read_text().strip() == '--8<-- "ARCHITECTURE.md"'
