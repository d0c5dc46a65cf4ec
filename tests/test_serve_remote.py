"""``backtrack-sampler serve --remote-url``: the server's engine over a remote OpenAI-compatible engine.

The CLI runs as a user runs it (a subprocess on 127.0.0.1, ``remote_servers.serve_remote``)
in front of:

- our own server on the embedded model (uvicorn in a thread, cheap): the CLI's
  error lines, the engine's context length feeding the prompt checks, bans
  streamed, and two replicas answering a conversation alike whichever served
  its previous turn (no state kept between requests);
- the real vLLM CPU build (marked ``vllm``; skipped without its venv), without our
  logits processor (bans through logit_bias) and with it: streamed requests with
  bans through both endpoints, several clients at once. Kept short: vLLM on two
  cores is slow.

Bans are words of a control run without them (never words written here), so the
tests hold on every CPU.
"""

from __future__ import annotations

import json
import threading

import pytest

from cli_support import one_error_line, run_cli
from remote_checks import STORY, banned_phrase_pattern, words_of
from remote_servers import VLLM_MODEL_NAME, free_port, our_server, serve_remote, vllm_for_module

httpx = pytest.importorskip("httpx", reason="httpx is not installed (extra: remote)")
pytest.importorskip("fastapi", reason="FastAPI is not installed (extra: server)")

ENGINE_CONTEXT = 512  # our engine's context: what serve --remote-url must check prompts against
MAX_TOKENS = 24
PROMPT = "Once upon a time, in a small village by the sea, there lived"
ENDPOINTS = ("completions", "chat/completions")


# -- requests and their streams -----------------------------------------------------------------------
def request_body(endpoint: str, **fields) -> dict:
    """A greedy request of ``MAX_TOKENS`` on ``endpoint`` (the story prompt, or the story chat)."""
    body = {"model": VLLM_MODEL_NAME, "max_tokens": MAX_TOKENS, "temperature": 0}
    body |= {"prompt": PROMPT} if endpoint == "completions" else {"messages": STORY}
    return body | fields


def answer_text(endpoint: str, payload: dict) -> str:
    choice = payload["choices"][0]
    return choice["text"] if endpoint == "completions" else choice["message"]["content"]


def post(url: str, endpoint: str, body: dict) -> dict:
    response = httpx.post(f"{url}/{endpoint}", json=body, timeout=600)
    assert response.status_code == 200, response.text
    return response.json()


def stream(url: str, endpoint: str, body: dict) -> tuple[str, list[dict], dict]:
    """A streamed request: (the text streamed, the backtrack events, the finish chunk's choice), ``[DONE]`` checked."""
    with httpx.stream("POST", f"{url}/{endpoint}", json={**body, "stream": True}, timeout=600) as response:
        assert response.status_code == 200, response.read()
        raw = response.read().decode()
    blocks = [block for block in raw.split("\n\n") if block.strip()]
    assert blocks and blocks[-1] == "data: [DONE]", raw[-500:]
    text, events, finish = [], [], None
    for block in blocks[:-1]:
        assert block.startswith("data: "), block
        chunk = json.loads(block.removeprefix("data: "))
        assert "error" not in chunk, chunk
        choice = chunk["choices"][0]
        text.append(choice["text"] if endpoint == "completions" else choice["delta"].get("content") or "")
        if "backtrack_event" in choice:
            events.append(choice["backtrack_event"])
        if choice["finish_reason"] is not None:
            finish = choice
    assert finish is not None and finish["finish_reason"] in ("stop", "length"), raw[-500:]
    return "".join(text), events, finish


def banned_run_is_clean(url: str, endpoint: str, bans: list[str]) -> tuple[str, int]:
    """Stream with ``bans`` and backtrack events; no banned text streamed; (the text, the rewinds)."""
    text, events, finish = stream(url, endpoint, request_body(endpoint, banned_strings=bans, backtrack_events=True))
    assert not banned_phrase_pattern(bans).search(text), (bans, text)
    rewinds = finish["backtrack_stats"]["rewinds"]
    assert len([e for e in events if e["type"] == "rewind"]) == rewinds, (events, finish)
    return text, rewinds


def bans_from_control(url: str, endpoint: str) -> list[str]:
    """Two words the unbanned greedy answer writes: bans that must rewind."""
    control = answer_text(endpoint, post(url, endpoint, request_body(endpoint)))
    bans = words_of(control, 2)
    assert bans, control
    return bans


# -- the CLI's errors, before any engine answers ------------------------------------------------------
@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--remote-url", "127.0.0.1:8000/v1"], ["argument --remote-url: must be an http:// or https:// URL"]),
        (["--remote-url", "http://127.0.0.1:70000/v1"], ["argument --remote-url:", "70000"]),
        (
            ["--remote-url", "http://127.0.0.1:9/v1", "--remote-model", "m"],
            ["argument --tokenizer: --remote-url needs"],
        ),
        (["--remote-url", "http://127.0.0.1:9/v1", "--tokenizer", "{gguf}"], ["argument --remote-model: --remote-url"]),
        (["--tokenizer", "{gguf}"], ["argument --tokenizer: only applies with --remote-url"]),
        (["--chunk-size", "8"], ["argument --chunk-size: only applies with --remote-url"]),
        (
            ["--remote-url", "http://x/v1", "--remote-model", "m", "--tokenizer", "{gguf}", "--n-ctx", "512"],
            ["--n-ctx"],
        ),
        (
            ["--remote-url", "http://x/v1", "--remote-model", "m", "--tokenizer", "{gguf}", "--model", "{gguf}"],
            ["--model"],
        ),
        (["--remote-url", "http://x/v1", "--remote-model", "m", "--tokenizer", "{gguf}", "--saved-prefixes", "4"], []),
        (
            [
                "--remote-url",
                "http://x/v1",
                "--remote-model",
                "m",
                "--tokenizer",
                "{gguf}",
                "--backend",
                "transformers",
            ],
            [],
        ),
        (["--remote-url", "http://127.0.0.1:9/v1", "--remote-model", "m", "--tokenizer", "/etc/hostname"], []),
    ],
)
def test_bad_remote_arguments_are_one_line_errors(args, named, smollm_path):
    args = [a.replace("{gguf}", str(smollm_path)) for a in args]
    err = one_error_line(run_cli("serve", *args, timeout=60), *named)
    if "--saved-prefixes" in args or "--backend" in args:
        assert "applies to a local model" in err, err
    if "/etc/hostname" in args:
        assert "argument --tokenizer: cannot load '/etc/hostname'" in err, err


def test_an_engine_out_of_reach_is_one_error_line_at_start(smollm_path):
    pytest.importorskip("llama_cpp", reason="the GGUF tokenizer needs llama-cpp-python")
    url = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    args = ["--remote-url", url, "--remote-model", "smollm2", "--tokenizer", str(smollm_path)]
    one_error_line(run_cli("serve", *args, timeout=60), "argument --remote-url: cannot reach", url)


# -- over our own server (the embedded model through llama.cpp) ------------------------------------------
@pytest.fixture(scope="module")
def engine(smollm_path):
    """Our server on the embedded model, with a context of ``ENGINE_CONTEXT`` positions."""
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (extra: llamacpp)")
    pytest.importorskip("uvicorn", reason="the server needs the extra: server")
    from backtrack_sampler.models import load_llama
    from backtrack_sampler.provider.llamacpp_provider import LlamacppProvider

    served = LlamacppProvider(load_llama(smollm_path, n_ctx=ENGINE_CONTEXT))
    with our_server(served, VLLM_MODEL_NAME) as url:
        yield url, served


@pytest.fixture(scope="module")
def served(engine, smollm_path):
    """``serve --remote-url`` over our engine, two generations at once."""
    with serve_remote(engine[0], smollm_path, "--parallel", "2") as url:
        yield url


@pytest.mark.llamacpp
def test_the_engines_errors_name_the_flag(engine, smollm_path):
    url, provider = engine
    common = ["--remote-url", url, "--tokenizer", str(smollm_path)]
    err = one_error_line(run_cli("serve", *common, "--remote-model", "other", timeout=60), "argument --remote-model:")
    assert "'other' is not served" in err and "'smollm2'" in err, err
    with our_server(provider, VLLM_MODEL_NAME, api_key="s3cret") as keyed:
        common[1] = keyed
        done = run_cli("serve", *common, "--remote-model", "smollm2", timeout=60)
        one_error_line(done, "argument --remote-api-key:", "401")


@pytest.mark.llamacpp
def test_the_engines_context_length_checks_the_prompts(served):
    listed = httpx.get(f"{served}/models", timeout=30).json()["data"]
    assert [(m["id"], m["max_model_len"]) for m in listed] == [(VLLM_MODEL_NAME, ENGINE_CONTEXT)]
    # ~600 tokens: more than the engine's context, few enough characters to be tokenized and counted.
    body = request_body("completions", prompt="the sea and the sky " * 120)
    response = httpx.post(f"{served}/completions", json=body, timeout=60)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "context_length_exceeded" and error["param"] == "prompt", error
    assert f"context holds {ENGINE_CONTEXT}" in error["message"], error
    # The other clients' APIs report the engine's context too (KoboldCpp, llama.cpp's server).
    root = served.removesuffix("/v1")
    assert httpx.get(f"{root}/api/v1/config/max_context_length", timeout=30).json() == {"value": ENGINE_CONTEXT}
    assert httpx.get(f"{root}/props", timeout=30).json()["default_generation_settings"]["n_ctx"] == ENGINE_CONTEXT


@pytest.mark.llamacpp
@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_bans_stream_over_our_engine(served, endpoint):
    bans = bans_from_control(served, endpoint)
    text, rewinds = banned_run_is_clean(served, endpoint, bans)
    assert rewinds > 0, "the bans were written by the control run: a rewind must happen"
    final = post(served, endpoint, request_body(endpoint, banned_strings=bans))
    assert text == answer_text(endpoint, final)


@pytest.mark.llamacpp
def test_kobold_generate_bans_over_our_engine(served):
    """Every endpoint runs the same engine: KoboldCpp's generate with a ban list, as SillyTavern sends it."""
    url = served.removesuffix("/v1") + "/api/v1/generate"
    body = {"prompt": PROMPT, "max_length": MAX_TOKENS, "temperature": 0, "sampler_seed": -1}
    control = httpx.post(url, json=body, timeout=600).json()["results"][0]["text"]
    bans = words_of(control, 2)
    assert bans, control
    banned = httpx.post(url, json={**body, "banned_strings": bans}, timeout=600)
    assert banned.status_code == 200, banned.text
    text = banned.json()["results"][0]["text"]
    assert text and not banned_phrase_pattern(bans).search(text), (bans, text)


@pytest.mark.llamacpp
def test_replicas_answer_a_conversation_alike_whichever_served_its_last_turn(engine, smollm_path):
    """Two servers over one engine (as behind a load balancer): each turn is the same on either replica."""
    with serve_remote(engine[0], smollm_path) as first, serve_remote(engine[0], smollm_path) as second:
        messages = [{"role": "user", "content": "Name a colour and say why you like it."}]
        bans = ["blue", "red"]
        for turn in range(2):  # turn 1 went to both; turn 2 goes on from it, again on both
            body = request_body("chat/completions", messages=messages, banned_strings=bans)
            answers = [answer_text("chat/completions", post(url, "chat/completions", body)) for url in (first, second)]
            assert answers[0] == answers[1], (turn, answers)
            assert answers[0] and not banned_phrase_pattern(bans).search(answers[0]), answers
            messages += [{"role": "assistant", "content": answers[0]}, {"role": "user", "content": "And another?"}]


# -- over vLLM ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def vllm_served(request, smollm_path):
    """``serve --remote-url`` (4 generations at once) over the real vLLM CPU build on the embedded model.

    ``request.param``: whether vLLM loads our logits processor (bans in the chunk requests) or not (logit_bias).
    """
    pytest.importorskip("llama_cpp", reason="the GGUF tokenizer needs llama-cpp-python")
    with (
        vllm_for_module(plugin=request.param) as vllm_url,
        serve_remote(vllm_url, smollm_path, "--parallel", "4") as url,
    ):
        yield url


@pytest.mark.vllm
@pytest.mark.parametrize(
    ("vllm_served", "endpoint"),
    [(False, "completions"), (True, "chat/completions")],
    ids=["completions-logit_bias", "chat-plugin"],
    indirect=["vllm_served"],
)
def test_concurrent_streams_with_bans_over_vllm(vllm_served, endpoint):
    bans = bans_from_control(vllm_served, endpoint)
    alone, rewinds = banned_run_is_clean(vllm_served, endpoint, bans)
    assert rewinds > 0, "the bans were written by the control run: a rewind must happen"
    final = post(vllm_served, endpoint, request_body(endpoint, banned_strings=bans))
    assert alone == answer_text(endpoint, final)

    results: list = [None] * 3

    def client(i: int) -> None:
        try:
            results[i] = banned_run_is_clean(vllm_served, endpoint, bans)
        except BaseException as exc:  # noqa: BLE001 - raised in the test's thread below
            results[i] = exc

    threads = [threading.Thread(target=client, args=(i,)) for i in range(len(results))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for result in results:
        if isinstance(result, BaseException):
            raise result
    assert sum(rewinds for _, rewinds in results) > 0, results
    assert all(text for text, _ in results), results
    health = httpx.get(vllm_served.removesuffix("/v1") + "/health", timeout=30).json()["generation"]
    assert health["parallel"] == 4 and health["failed"] == 0, health
