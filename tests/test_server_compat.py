"""The endpoints of TabbyAPI, text-generation-webui, llama.cpp's server and KoboldCpp (``server.compat``).

On the scripted model: the exact shapes each client reads, token ids equal to
the provider's own ``encode``, bans and stop strings through every generating
endpoint, each dialect's stream and its end, 400s naming the field as the
client sent it, ``/api/extra/abort`` stopping the generation it names (and
freeing the slot), and the API key in both headers. On the embedded model,
through uvicorn: streamed bans with no banned word in the stream, and the
stream's text equal to the unstreamed one.
"""

from __future__ import annotations

import json
import re
import threading
import time

import pytest

from server_support import (
    MODEL,
    OCEAN,
    SCRIPTED_ANSWER,
    ScriptedPool,
    greedy_text,
    in_process_client,
    make_app,
    reference_provider,
    scripted_logits,
    scripted_provider,
    sse_events,
)

pytest.importorskip("fastapi", reason="FastAPI is not installed (extra: server)")

GREEDY = {"temperature": 0}


def app_and_client(provider=None, **limits):
    app = make_app(provider if provider is not None else scripted_provider(), **limits)
    return app, in_process_client(app)


@pytest.fixture()
def http():
    return app_and_client()[1]


def assert_error(response, status: int, param: str | None, code: str | None = None) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["param"] == param, error
    if param is not None:
        assert error["message"].startswith(param), error
    if code is not None:
        assert error["code"] == code, error
    return error


def kobold_events(text: str) -> list[dict]:
    """The events of KoboldCpp's stream: each ``event: message`` and one ``data:`` line."""
    events = []
    for block in text.split("\n\n"):
        if not block.strip():
            continue
        event, data = block.split("\n")
        assert event == "event: message", block
        assert data.startswith("data: "), block
        events.append(json.loads(data[len("data: ") :]))
    return events


# -- TabbyAPI ------------------------------------------------------------------------------------
def test_tabby_model_card_and_list():
    app, http = app_and_client()
    card = http.get("/v1/model").json()
    assert card["id"] == MODEL and card["object"] == "model" and isinstance(card["created"], int)
    assert card["parameters"]["max_seq_len"] == app.state.provider.context_length == 4096
    assert card["parameters"]["max_batch_size"] == 1
    listed = http.get("/v1/model/list").json()
    assert listed["object"] == "list" and listed["data"] == [card]
    pool = in_process_client(make_app(ScriptedPool(3)))
    assert pool.get("/v1/model").json()["parameters"]["max_batch_size"] == 3


def test_tabby_tokens_are_the_providers():
    app, http = app_and_client()
    provider = app.state.provider
    for text in ("The ocean is a vast sea.", "x", "A sea\n\n{}"):
        encoded = http.post("/v1/token/encode", json={"text": text}).json()
        assert encoded == {"tokens": provider.encode(text), "length": len(provider.encode(text))}
        no_bos = http.post("/v1/token/encode", json={"text": text, "add_bos_token": False}).json()
        assert no_bos["tokens"] == provider.encode(text, add_bos=False)
        decoded = http.post("/v1/token/decode", json={"tokens": encoded["tokens"]}).json()
        assert decoded == {"text": provider.decode(encoded["tokens"])} and decoded["text"] == text
    chat = http.post("/v1/token/encode", json={"text": OCEAN}).json()
    assert chat["tokens"] == provider.encode(provider.apply_chat_template(OCEAN))


def test_tabby_token_errors_name_the_field(http):
    assert_error(http.post("/v1/token/decode", json={"tokens": [1, 10**6]}), 400, "tokens.1", "invalid_value")
    assert_error(http.post("/v1/token/decode", json={"tokens": "1,2"}), 400, "tokens", "invalid_type")
    assert_error(http.post("/v1/token/encode", json={"text": 5}), 400, "text")
    assert_error(http.post("/v1/token/encode", json={}), 400, "text", "missing_parameter")
    lone = http.post("/v1/token/encode", content=b'{"text": "a\\ud800"}', headers={"Content-Type": "application/json"})
    assert_error(lone, 400, "text", "invalid_value")


# -- text-generation-webui ---------------------------------------------------------------------
def test_ooba_model_info_and_tokens():
    app, http = app_and_client()
    provider = app.state.provider
    info = http.get("/v1/internal/model/info").json()
    assert info["model_name"] == MODEL and info["lora_names"] == [] and isinstance(info["loader"], str)
    text = "The ocean is a vast and mysterious sea."
    tokens = provider.encode(text)
    assert http.post("/v1/internal/encode", json={"text": text}).json() == {"tokens": tokens, "length": len(tokens)}
    assert http.post("/v1/internal/token-count", json={"text": text}).json() == {"length": len(tokens)}
    assert http.post("/v1/internal/decode", json={"tokens": tokens}).json() == {"text": text}
    assert_error(http.post("/v1/internal/encode", json={"prompt": text}), 400, "text", "missing_parameter")


# -- llama.cpp server --------------------------------------------------------------------------
def test_llamacpp_tokenize_detokenize_and_props():
    app, http = app_and_client()
    provider = app.state.provider
    text = "A sea is a vast ocean."
    assert http.post("/tokenize", json={"content": text}).json() == {"tokens": provider.encode(text, add_bos=False)}
    with_bos = http.post("/tokenize", json={"content": text, "add_special": True}).json()
    assert with_bos == {"tokens": provider.encode(text, add_bos=True)}
    pieces = http.post("/tokenize", json={"content": text, "with_pieces": True}).json()["tokens"]
    assert [p["id"] for p in pieces] == provider.encode(text, add_bos=False)
    assert "".join(p["piece"] for p in pieces) == text
    vllm = http.post("/tokenize", json={"model": MODEL, "prompt": text}).json()  # SillyTavern's vLLM mode
    assert vllm["tokens"] == provider.encode(text, add_bos=False) and vllm["count"] == len(vllm["tokens"])
    assert http.post("/detokenize", json={"tokens": vllm["tokens"]}).json() == {"content": text}
    assert_error(http.post("/tokenize", json={"add_special": True}), 400, "content", "missing_parameter")
    assert_error(http.post("/detokenize", json={"tokens": [-1]}), 400, "tokens.0")
    props = http.get("/props").json()
    assert props["default_generation_settings"]["n_ctx"] == 4096
    assert props["chat_template"] == "" and props["total_slots"] == 1 and props["model_path"] == MODEL


def test_props_chat_template_is_the_models_own(server_provider):
    http = in_process_client(make_app(server_provider))
    template = http.get("/props").json()["chat_template"]
    assert template == server_provider.llm.metadata["tokenizer.chat_template"] and "im_start" in template


def test_llamacpp_completion_shapes():
    app, http = app_and_client()
    provider = app.state.provider
    body = {"prompt": "Hi", "n_predict": 6, **GREEDY, "return_tokens": True, "cache_prompt": True}
    answer = http.post("/completion", json=body).json()
    expected = greedy_text(reference_provider(provider), "Hi", 6)
    assert answer["content"] == expected == "The ocean is a vast and"
    assert answer["stop"] is True and answer["stop_type"] == "limit" and answer["stopping_word"] == ""
    assert answer["tokens"] == provider.encode(expected, add_bos=False)
    assert answer["tokens_predicted"] == 6 and answer["tokens_evaluated"] == len(provider.encode("Hi"))
    assert answer["model"] == MODEL and answer["prompt"] == "Hi"
    assert answer["generation_settings"]["n_ctx"] == 4096 and answer["generation_settings"]["params"]["n_predict"] == 6
    assert "completion_probabilities" not in answer
    tokens_prompt = http.post("/completion", json={**body, "prompt": provider.encode("Hi")}).json()
    assert tokens_prompt["content"] == expected


def test_llamacpp_completion_stop_words_and_probabilities(http):
    stopped = http.post("/completion", json={"prompt": "Hi", "n_predict": 12, **GREEDY, "stop": [" vast"]}).json()
    assert stopped["content"] == "The ocean is a"
    assert stopped["stop_type"] == "word" and stopped["stopping_word"] == " vast"
    probs = http.post("/completion", json={"prompt": "Hi", "n_predict": 3, **GREEDY, "n_probs": 2}).json()
    entries = probs["completion_probabilities"]
    assert [e["token"] for e in entries] == ["The", " ocean", " is"]
    for entry in entries:
        assert len(entry["top_logprobs"]) == 2 and entry["top_logprobs"][0]["id"] == entry["id"]
        assert entry["probs"] == entry["top_logprobs"] and entry["content"] == entry["token"]  # older names
        assert entry["logprob"] <= 0 and abs(entry["top_logprobs"][0]["prob"] - 2.718281828 ** entry["logprob"]) < 1e-9
    assert bytes(entries[1]["bytes"]) == b" ocean"


def test_llamacpp_completion_bans_and_its_stream(http):
    body = {"prompt": "Hi", "n_predict": 8, **GREEDY, "banned_strings": ["vast"]}
    whole = http.post("/completion", json=body).json()
    assert "vast" not in whole["content"] and whole["content"].startswith("The ocean is a deep")
    streamed = http.post("/completion", json={**body, "stream": True})
    assert streamed.headers["content-type"].startswith("text/event-stream")
    events = sse_events(streamed.text)
    assert "[DONE]" not in events  # llama.cpp ends with its stop: true object
    assert all(e["stop"] is False and e["content"] for e in events[:-1])
    assert events[-1]["stop"] is True and events[-1]["content"] == "" and events[-1]["stop_type"] == "limit"
    assert "".join(e["content"] for e in events[:-1]) == whole["content"]
    assert [t for e in events[:-1] for t in e["tokens"]]  # streamed events carry their token ids


def test_llamacpp_completion_errors_name_its_fields(http):
    assert_error(http.post("/completion", json={"prompt": "Hi", "n_predict": 5000}), 400, "n_predict", "limit")
    assert_error(http.post("/completion", json={"prompt": "Hi", "n_probs": 99}), 400, "n_probs", "limit")
    assert_error(http.post("/completion", json={"prompt": "Hi", "n_predict": "4"}), 400, "n_predict", "invalid_type")
    assert_error(http.post("/completion", json={"prompt": ["Hi", "A"]}), 400, "prompt.0")  # one prompt only
    assert_error(http.post("/completion", json={"prompt": "Hi", "top_p": 7}), 400, "top_p")
    assert_error(http.post("/completion", json={"n_predict": 4}), 400, "prompt", "missing_parameter")


def test_llamacpp_defaults_negative_n_predict_and_temperature(http):
    unlimited = http.post("/completion", json={"prompt": "Hi", "n_predict": -1, "temperature": -1})
    assert unlimited.status_code == 200, unlimited.text
    limited = http.post("/completion", json={"prompt": "Hi", "max_tokens": 3, "temperature": -0.5}).json()
    assert limited["content"] == "The ocean is" and limited["generation_settings"]["params"]["temperature"] == 0


# -- KoboldCpp -------------------------------------------------------------------------------------
def test_kobold_info_endpoints():
    app, http = app_and_client()
    assert http.get("/api/v1/model").json() == {"result": f"koboldcpp/{MODEL}"}
    version = http.get("/api/extra/version").json()
    assert version["result"] == "KoboldCpp" and version["protected"] is False
    # SillyTavern streams, tokenizes and sends min_p from KoboldCpp 1.30, 1.41 and 1.48 on.
    assert tuple(int(p) for p in version["version"].split(".")) >= (1, 48)
    assert http.get("/api/v1/info/version").json() == {"result": "1.2.5"}  # stop_sequence from United 1.2.2
    assert http.get("/api/v1/config/max_context_length").json() == {"value": 4096}
    text = "The ocean is a vast sea."
    count = http.post("/api/extra/tokencount", json={"prompt": text}).json()
    assert count == {"value": len(app.state.provider.encode(text)), "ids": app.state.provider.encode(text)}


def test_kobold_generate_renames_its_fields(http):
    body = {"prompt": "Hi", "max_length": 12, **GREEDY, "stop_sequence": [" mysterious", ""], "genkey": "KCPP1"}
    stopped = http.post("/api/v1/generate", json=body).json()
    assert stopped == {"results": [{"text": "The ocean is a vast and", "finish_reason": "stop"}]}
    limited = http.post("/api/v1/generate", json={"prompt": "Hi", "max_length": 3, **GREEDY}).json()
    assert limited == {"results": [{"text": "The ocean is", "finish_reason": "length"}]}
    seeded = {"prompt": "Hi", "max_length": 10, "temperature": 1.5, "sampler_seed": 7, "n": 3}
    first, again = (http.post("/api/v1/generate", json=seeded).json()["results"] for _ in range(2))
    assert first == again and len(first) == 3  # the seed is honoured: the same texts again
    assert len({r["text"] for r in first}) > 1  # and the n results use seed, seed + 1, ...


def test_kobold_default_length_is_koboldcpps_within_the_limit():
    _, http = app_and_client(max_tokens_limit=7)
    results = http.post("/api/v1/generate", json={"prompt": "Hi", **GREEDY}).json()["results"]
    assert results[0]["finish_reason"] == "length" and results[0]["text"] == greedy_text(scripted_provider(), "Hi", 7)


def test_kobold_bans_fire_in_generate_and_stream(http):
    body = {"prompt": "Hi", "max_length": 8, **GREEDY, "banned_strings": ["vast", "mysterious"]}
    whole = http.post("/api/v1/generate", json=body).json()["results"][0]
    assert "vast" not in whole["text"] and "mysterious" not in whole["text"] and whole["text"].startswith("The ocean")
    streamed = http.post("/api/extra/generate/stream", json=body)
    assert streamed.status_code == 200 and streamed.headers["content-type"].startswith("text/event-stream")
    events = kobold_events(streamed.text)
    assert all(e["finish_reason"] == "null" and e["token"] for e in events[:-1])
    assert events[-1] == {"token": "", "finish_reason": "length"}
    assert "".join(e["token"] for e in events) == whole["text"]


def test_kobold_errors_name_its_fields(http):
    assert_error(http.post("/api/v1/generate", json={"prompt": "Hi", "max_length": 5000}), 400, "max_length", "limit")
    assert_error(http.post("/api/v1/generate", json={"prompt": "Hi", "sampler_seed": "7"}), 400, "sampler_seed")
    assert_error(http.post("/api/v1/generate", json={"prompt": "Hi", "stop_sequence": "x"}), 400, "stop_sequence")
    many = {"prompt": "Hi", "stop_sequence": [f"s{i}" for i in range(40)]}
    assert_error(http.post("/api/v1/generate", json=many), 400, "stop_sequence", "limit")
    assert_error(http.post("/api/extra/generate/stream", json={"prompt": "Hi", "n": 2}), 400, "n", "unsupported")
    assert_error(http.post("/api/v1/generate", json={"prompt": "Hi", "temperature": -1}), 400, "temperature")
    assert_error(http.post("/api/extra/tokencount", json={"text": "Hi"}), 400, "prompt", "missing_parameter")
    assert_error(http.post("/api/extra/abort", json={"genkey": 5}), 400, "genkey")


# -- abort --------------------------------------------------------------------------------------------
class HeldModel:
    """A scripted model that waits at its ``hold_at``-th generated position until ``release``."""

    def __init__(self, hold_at: int = 3) -> None:
        self.gate = threading.Event()
        self.hold_at = hold_at
        self.prompt_length = 2  # "Hi" is two tokens

    def logits(self, tokens):
        if len(tokens) >= self.prompt_length + self.hold_at:
            assert self.gate.wait(timeout=60)
        return scripted_logits(tokens)


def wait_until(condition, timeout=60.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


@pytest.mark.parametrize("path", ["/api/v1/generate", "/api/extra/generate/stream"])
def test_abort_stops_the_generation_it_names_and_frees_the_slot(path):
    from backtrack_sampler.provider.scripted_provider import ScriptedProvider
    from server_support import SCRIPTED_VOCAB

    model = HeldModel()
    app, http = app_and_client(ScriptedProvider(SCRIPTED_VOCAB, model.logits, 0, 4096))
    worker = app.state.worker
    replies = []
    body = {"prompt": "Hi", "max_length": 400, **GREEDY, "genkey": "KCPP1234"}
    thread = threading.Thread(target=lambda: replies.append(http.post(path, json=body)))
    thread.start()
    wait_until(lambda: worker.status()["running"] == 1)
    assert http.post("/api/extra/abort", json={"genkey": "other"}).json() == {"success": "false", "done": "false"}
    assert http.post("/api/extra/abort").json()["success"] == "false"  # no genkey: only those sent without one
    assert http.post("/api/extra/abort", json={"genkey": "KCPP1234"}).json() == {"success": "true", "done": "true"}
    model.gate.set()
    thread.join(timeout=60)
    assert worker.wait_idle(timeout=60)
    record = worker.history[-1]
    assert record.status == "cancelled" and record.tokens_after_cancel <= 1 and record.tokens_sampled < 10
    reply = replies[0]
    assert reply.status_code == 200, reply.text
    if path.endswith("stream"):
        events = kobold_events(reply.text)
        text = "".join(e["token"] for e in events)
        assert events[-1]["finish_reason"] in ("length", "stop") and events[-1]["token"] == ""
    else:
        (result,) = reply.json()["results"]
        text = result["text"]
    assert SCRIPTED_ANSWER.startswith(text) and len(text) < len(SCRIPTED_ANSWER)
    # The slot is free: the next generation runs to its end.
    after = http.post("/api/v1/generate", json={"prompt": "Hi", "max_length": 5, **GREEDY}).json()
    assert after["results"][0]["text"] == "The ocean is a vast"
    assert http.post("/api/extra/abort", json={"genkey": "KCPP1234"}).json()["success"] == "false"  # it is over


def test_abort_without_a_genkey_stops_the_generations_sent_without_one():
    from backtrack_sampler.provider.scripted_provider import ScriptedProvider
    from server_support import SCRIPTED_VOCAB

    model = HeldModel()
    app, http = app_and_client(ScriptedProvider(SCRIPTED_VOCAB, model.logits, 0, 4096))
    replies = []
    body = {"prompt": "Hi", "max_length": 400, **GREEDY}
    thread = threading.Thread(target=lambda: replies.append(http.post("/api/v1/generate", json=body)))
    thread.start()
    wait_until(lambda: app.state.worker.status()["running"] == 1)
    assert http.post("/api/extra/abort").json() == {"success": "true", "done": "true"}  # SillyTavern sends no body
    model.gate.set()
    thread.join(timeout=60)
    assert app.state.worker.wait_idle(timeout=60) and app.state.worker.history[-1].status == "cancelled"
    assert replies[0].json()["results"][0]["finish_reason"] == "length"


@pytest.mark.parametrize(
    "path, body",
    [
        ("/completion", {"prompt": "Hi", "n_predict": 400, "stream": True}),
        ("/api/extra/generate/stream", {"prompt": "Hi", "max_length": 400}),
        ("/api/v1/generate", {"prompt": "Hi", "max_length": 400}),
    ],
)
def test_a_client_that_disconnects_cancels_its_generation(path, body):
    httpx = pytest.importorskip("httpx")
    from backtrack_sampler.provider.scripted_provider import ScriptedProvider
    from server_support import SCRIPTED_VOCAB, LiveServer

    model = HeldModel()
    app = make_app(ScriptedProvider(SCRIPTED_VOCAB, model.logits, 0, 4096))
    with LiveServer(app) as server, httpx.Client(base_url=server.url, timeout=60) as client:
        if path.endswith("generate"):  # not streamed: the client gives up waiting (its read timeout)
            with pytest.raises(httpx.ReadTimeout):
                client.post(path, json={**body, **GREEDY}, timeout=httpx.Timeout(60, read=5))
        else:
            with client.stream("POST", path, json={**body, **GREEDY}) as response:
                assert response.status_code == 200
                wait_until(lambda: server.worker.status()["running"] == 1)
        # The connection is closed: the generation is cancelled though the model still holds its token.
        wait_until(lambda: server.worker.running is not None and server.worker.running.control.cancelled)
        model.gate.set()
        assert server.worker.wait_idle(timeout=60)
        record = server.worker.history[-1]
        assert record.status == "cancelled" and record.tokens_after_cancel <= 1 and record.tokens_sampled < 10


# -- the API key ----------------------------------------------------------------------------------
ROUTES = [
    ("GET", "/v1/model", None),
    ("GET", "/v1/model/list", None),
    ("POST", "/v1/token/encode", {"text": "Hi"}),
    ("POST", "/v1/token/decode", {"tokens": [5]}),
    ("GET", "/v1/internal/model/info", None),
    ("POST", "/v1/internal/encode", {"text": "Hi"}),
    ("POST", "/tokenize", {"content": "Hi"}),
    ("POST", "/detokenize", {"tokens": [5]}),
    ("GET", "/props", None),
    ("POST", "/completion", {"prompt": "Hi", "n_predict": 2}),
    ("POST", "/api/v1/generate", {"prompt": "Hi", "max_length": 2}),
    ("POST", "/api/extra/generate/stream", {"prompt": "Hi", "max_length": 2}),
    ("POST", "/api/extra/tokencount", {"prompt": "Hi"}),
    ("POST", "/api/extra/abort", {}),
    ("GET", "/api/v1/model", None),
    ("GET", "/api/extra/version", None),
    ("GET", "/api/v1/config/max_context_length", None),
    ("POST", "/v1/completions", {"prompt": "Hi", "max_tokens": 2}),
    ("GET", "/openapi.json", None),
]


def test_every_route_needs_the_key_in_either_header():
    _, http = app_and_client(api_key="s3cret")
    for method, path, body in ROUTES:
        send = {"json": body} if body is not None else {}
        assert_error(http.request(method, path, **send), 401, None, "invalid_api_key")
        wrong = http.request(method, path, headers={"x-api-key": "nope"}, **send)
        assert_error(wrong, 401, None, "invalid_api_key")
        for headers in ({"Authorization": "Bearer s3cret"}, {"x-api-key": "s3cret"}):
            response = http.request(method, path, headers=headers, **send)
            assert response.status_code == 200, (path, headers, response.text)
        # SillyTavern's TabbyAPI mode sends both; one right key is enough.
        both = http.request(method, path, headers={"x-api-key": "s3cret", "Authorization": "Bearer x"}, **send)
        assert both.status_code == 200, (path, both.text)
    assert http.get("/health").status_code == 200 and http.get("/").status_code == 200
    assert http.get("/static/index.html").status_code in (200, 404)  # static files need no key
    assert http.get("/api/extra/version", headers={"x-api-key": "s3cret"}).json()["protected"] is True


# -- the embedded model, through uvicorn ---------------------------------------------------------
STORY = "Once upon a time, in a small village by the sea, there lived"


def whole_word(word: str) -> re.Pattern:
    return re.compile(rf"(?<!\w){re.escape(word)}(?!\w)", re.IGNORECASE)


@pytest.fixture(scope="module")
def control(live_server, server_provider) -> tuple[str, str]:
    """A greedy control run (no ban) through KoboldCpp's endpoint, and a word of it to ban (5+ letters)."""
    httpx = pytest.importorskip("httpx")
    body = {"prompt": STORY, "max_length": 40, **GREEDY}
    text = httpx.post(f"{live_server.url}/api/v1/generate", json=body, timeout=300).json()["results"][0]["text"]
    words = re.findall(r"[A-Za-z]{5,}", text)
    assert words, text
    assert whole_word(words[0]).search(text)  # without the ban the model writes it
    return text, words[0]


def stream_text(url: str, body: dict, parse) -> tuple[str, list[str]]:
    """The streamed text of a request and its raw blocks, read as they arrive."""
    httpx = pytest.importorskip("httpx")
    pieces, blocks = [], []
    with httpx.stream("POST", url, json=body, timeout=300) as response:
        assert response.status_code == 200, response.read()
        buffer = ""
        for chunk in response.iter_text():
            buffer += chunk
            while "\n\n" in buffer:
                block, buffer = buffer.split("\n\n", 1)
                blocks.append(block)
                pieces.append(parse(block))
    return "".join(p for p in pieces if p), blocks


@pytest.mark.llamacpp
def test_real_model_kobold_stream_never_shows_the_banned_word(live_server, control):
    word = control[1]
    body = {"prompt": STORY, "max_length": 40, **GREEDY, "banned_strings": [word]}
    httpx = pytest.importorskip("httpx")
    whole = httpx.post(f"{live_server.url}/api/v1/generate", json=body, timeout=300).json()["results"][0]["text"]

    def token(block: str) -> str:
        event, data = block.split("\n")
        assert event == "event: message"
        return json.loads(data.removeprefix("data: "))["token"]

    streamed, blocks = stream_text(f"{live_server.url}/api/extra/generate/stream", body, token)
    assert streamed == whole and not whole_word(word).search(streamed), streamed
    assert json.loads(blocks[-1].split("\n")[1].removeprefix("data: "))["finish_reason"] in ("stop", "length")


@pytest.mark.llamacpp
def test_real_model_llamacpp_stream_equals_its_answer_without_the_banned_word(live_server, control):
    word = control[1]
    body = {"prompt": STORY, "n_predict": 40, **GREEDY, "banned_strings": [word], "cache_prompt": True}
    httpx = pytest.importorskip("httpx")
    whole = httpx.post(f"{live_server.url}/completion", json=body, timeout=300).json()
    assert whole["stop"] is True and not whole_word(word).search(whole["content"]), whole["content"]
    events = []

    def content(block: str) -> str:
        events.append(json.loads(block.removeprefix("data: ")))
        return events[-1]["content"]

    streamed, _ = stream_text(f"{live_server.url}/completion", {**body, "stream": True}, content)
    assert streamed == whole["content"] and events[-1]["stop"] is True
    assert all(e["stop"] is False for e in events[:-1])


@pytest.mark.llamacpp
def test_real_model_tokenizers_are_the_models(live_server, server_provider):
    httpx = pytest.importorskip("httpx")
    provider = reference_provider(server_provider)
    text = "Ban these: dog, Max, tapestry."
    url = live_server.url
    assert httpx.post(f"{url}/tokenize", json={"content": text}).json()["tokens"] == provider.encode(text, False)
    assert httpx.post(f"{url}/v1/token/encode", json={"text": text}).json()["tokens"] == provider.encode(text)
    assert httpx.post(f"{url}/v1/internal/encode", json={"text": text}).json()["tokens"] == provider.encode(text)
    assert httpx.post(f"{url}/api/extra/tokencount", json={"prompt": text}).json()["ids"] == provider.encode(text)
    props = httpx.get(f"{url}/props").json()
    assert props["default_generation_settings"]["n_ctx"] == provider.context_length
