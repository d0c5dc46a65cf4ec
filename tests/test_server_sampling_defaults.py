"""The playground starts from the model's recommended sampling; the API keeps OpenAI's defaults (issue 23, item 2).

``/v1/models`` lists the served model's ``sampling_defaults`` (its own, read
from a GGUF header written in tmp_path, else llama.cpp's); the page fills its
sampling fields from them. A request that omits a field is not changed.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

from server_support import MODEL, LiveServer, in_process_client, make_app, scripted_provider
from test_sampling_defaults import _gguf

pytest.importorskip("fastapi", reason="the server needs the extra: server")

LLAMA_CPP = {"temperature": 0.8, "top_k": 40, "top_p": 0.95, "min_p": 0.05}


def provider_recommending(tmp_path: Path):
    """A scripted provider whose model file (as ``Llama.model_path``) recommends temperature 0.3, top_k 7."""
    provider = scripted_provider()
    gguf = _gguf(tmp_path / "m.gguf", {"general.sampling.temp": 0.3, "general.sampling.top_k": 7})
    provider.llm = SimpleNamespace(model_path=str(gguf))
    return provider


def test_the_model_card_lists_llama_cpps_defaults_for_a_model_that_carries_none():
    card = in_process_client(make_app(scripted_provider())).get(f"/v1/models/{MODEL}").json()
    assert card["sampling_defaults"] == {**LLAMA_CPP, "source": "llama.cpp's defaults; the model carries none"}


def test_the_model_card_lists_the_models_own(tmp_path):
    client = in_process_client(make_app(provider_recommending(tmp_path)))
    card = client.get("/v1/models").json()["data"][0]
    assert card["sampling_defaults"] == {
        **LLAMA_CPP,
        "temperature": 0.3,
        "top_k": 7,
        "source": "the GGUF's general.sampling.*: temperature, top_k; llama.cpp's defaults for the rest",
    }
    # The API itself is unchanged: a request without sampling fields is valid and answered as before.
    reply = client.post("/v1/completions", json={"model": MODEL, "prompt": "Hi", "max_tokens": 2, "seed": 1})
    assert reply.status_code == 200, reply.text


CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.mark.llamacpp  # runs with the other browser test (chromium); the model is scripted
def test_the_playground_starts_from_the_models_sampling(tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (extra: dev)")
    if not Path(CHROMIUM).exists():
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    with LiveServer(make_app(provider_recommending(tmp_path))) as server, sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--headless", "--no-sandbox"])
        try:
            page = browser.new_page()
            page.goto(server.url + "/")
            page.wait_for_function("document.getElementById('sampling-source').textContent.includes('GGUF')")
            values = {name: page.input_value(f"#{name}") for name in ("temperature", "top-k", "top-p", "min-p")}
            assert values == {"temperature": "0.3", "top-k": "7", "top-p": "0.95", "min-p": "0.05"}
            assert "llama.cpp's defaults for the rest" in page.text_content("#sampling-source")
        finally:
            browser.close()
