"""The playground reads a prompt as ``generate`` and ``batch`` do (issue 23, item 3).

Unticked, the prompt is a user message through the chat template; "raw prompt"
sends it as is, as ``generate --raw`` and a batch line's ``"raw": true``. Each
is checked against the API's answer to the same request (headless Chromium,
as in test_server_playground).
"""

from __future__ import annotations

import httpx
import pytest

from test_server_playground import browser  # noqa: F401 - the fixture

pytestmark = pytest.mark.llamacpp

OPENING = "Once upon a time, in a small village,"


def page_text(browser, url: str, raw: bool) -> tuple[str, dict]:  # noqa: F811 - the fixture's value
    """The text the page shows for ``OPENING`` (greedy, 16 tokens), and its sampling fields."""
    page = browser.new_page()
    page.goto(url + "/")
    page.wait_for_function("document.getElementById('model-name').dataset.id !== undefined")
    label = page.text_content("label:has(#raw)")
    assert "without the model's chat template" in label and "generate --raw" in label
    page.fill("#prompt", OPENING)
    page.fill("#temperature", "0")
    page.fill("#max-tokens", "16")
    if raw:
        page.check("#raw")
    page.click("#run")
    page.wait_for_selector('#summary[data-state="done"]', timeout=180_000)
    text = page.eval_on_selector_all("#output .token", "nodes => nodes.map(n => n.textContent).join('')")
    fields = {name: page.input_value(f"#{name.replace('_', '-')}") for name in ("top_p", "top_k", "min_p")}
    page.close()
    return text, {name: float(value) for name, value in fields.items() if value}


def test_the_raw_switch_means_what_generate_raw_means(browser, live_server):  # noqa: F811 - the fixture
    chat, fields = page_text(browser, live_server.url, raw=False)
    raw, _ = page_text(browser, live_server.url, raw=True)
    settings = {"max_tokens": 16, "temperature": 0, **fields}
    api = live_server.url + "/v1"
    reply = httpx.post(f"{api}/completions", json={"prompt": OPENING, **settings}, timeout=120).json()
    assert raw == reply["choices"][0]["text"]
    messages = [{"role": "user", "content": OPENING}]
    reply = httpx.post(f"{api}/chat/completions", json={"messages": messages, **settings}, timeout=120).json()
    assert chat == reply["choices"][0]["message"]["content"]
    assert chat != raw  # a continuation of the text, or an answer to it
