"""The playground page in headless Chromium (Debian's chromium, driven by Playwright).

A prompt whose greedy answer holds a banned phrase is run from the page; the
page must show the final text (the same the API returns) and the erased
phrase struck through. A screenshot is kept in tests/artifacts/.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.llamacpp

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (extra: dev)")
    if not Path(CHROMIUM).exists():
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True)
        yield browser
        browser.close()


def test_the_playground_shows_the_final_text_and_the_rewinds(browser, live_server):
    page = browser.new_page(viewport={"width": 1200, "height": 800})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(live_server.url + "/")
    page.wait_for_function("document.getElementById('model-name').dataset.id !== undefined")
    page.fill("#prompt", "Tell me about the ocean.")
    page.fill("#banned", "vast\nmysterious")
    page.fill("#temperature", "0")
    page.fill("#max-tokens", "24")
    page.click("#run")
    page.wait_for_selector('#summary[data-state="done"]', timeout=180_000)

    kept = page.eval_on_selector_all("#output .token", "nodes => nodes.map(n => n.textContent).join('')")
    struck = page.eval_on_selector_all("#output del.rewound", "nodes => nodes.map(n => n.textContent)")
    reasons = page.eval_on_selector_all("#output del.rewound", "nodes => nodes.map(n => n.title)")
    summary = page.text_content("#summary")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "playground.png"), full_page=True)

    # The final text is what the API answers to the same request, and holds no banned phrase.
    body = {
        "messages": [{"role": "user", "content": "Tell me about the ocean."}],
        "max_tokens": 24,
        "temperature": 0,
        "top_k": 0,
        "banned_strings": ["vast", "mysterious"],
    }
    reply = httpx.post(f"{live_server.url}/v1/chat/completions", json=body, timeout=120).json()
    assert kept == reply["choices"][0]["message"]["content"]
    assert "vast" not in kept.lower() and "mysterious" not in kept.lower()
    # The erased phrases are on the page, struck through where they were written, with the reason on hover.
    assert any("vast" in s.lower() for s in struck), struck
    assert any("banned phrase" in r for r in reasons), reasons
    assert page.evaluate("getComputedStyle(document.querySelector('del.rewound')).textDecorationLine") == "line-through"
    assert "finished" in summary and "rewinds: " in summary and "tokens/s" in summary
    assert "rewinds: 0" not in summary
    # Hovering a token shows its top alternatives.
    page.hover("#output .token >> nth=2")
    page.wait_for_selector("#alternatives:not([hidden]) tr")
    assert page.eval_on_selector_all("#alternatives tr", "rows => rows.length") >= 2
    assert not errors, errors


def test_the_stop_button_cancels_the_generation(browser, live_server):
    page = browser.new_page()
    page.goto(live_server.url + "/")
    page.fill("#prompt", "Write a very long story about a dragon.")
    page.fill("#temperature", "0")
    page.fill("#max-tokens", "1500")
    page.click("#run")
    page.wait_for_selector("#output .token")
    page.click("#stop")
    page.wait_for_selector('#summary[data-state="done"]', timeout=60_000)
    assert "stopped" in page.text_content("#summary")
    worker = live_server.worker
    assert worker.wait_idle(timeout=60)
    record = worker.history[-1]
    assert record.status == "cancelled" and record.tokens_sampled < 1500
