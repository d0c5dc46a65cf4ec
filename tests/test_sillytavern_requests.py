"""SillyTavern's own requests, replayed against the server on the embedded model.

The fixtures (tests/fixtures/sillytavern/, see its README) are what SillyTavern
1.12.6 sent a backend in each Text Completion mode (TabbyAPI, KoboldCpp,
llama.cpp, ooba, vLLM) and in its KoboldAI API mode: status calls, the
tokenizing of an unquoted ban line, generate requests streamed and not, with
swipes, seed -1, and the abort of a streamed generation. Each test fills in the
placeholders (prompt, banned words, their token ids), sends the requests in
order as SillyTavern did, and reads the answers as SillyTavern's page does
(its stream parsers: ``choices[0].text || content``, KoboldCpp's ``token``).

The banned words come from a control run (the same request with an empty ban
box) on this machine, never from a list of words one CPU wrote: greedy (the
user's temperature 0), the control writes them and the banned run must not.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from server_support import MODEL, reference_provider

httpx = pytest.importorskip("httpx", reason="httpx is not installed (extra: dev)")
pytestmark = pytest.mark.llamacpp

FIXTURES = Path(__file__).parent / "fixtures" / "sillytavern"
SENTINEL_ID = 990001
"""The id the recording backend gave the unquoted ban line; it stands for the real ids."""
BAN_MODES = ["tabby", "koboldcpp", "llamacpp", "ooba"]
"""The modes that send SillyTavern's ban box (vLLM mode drops it; the KoboldAI mode has none)."""
TOKENIZE_MODES = [*BAN_MODES, "vllm", "kobold"]
STATUS_MODES = [*BAN_MODES, "vllm", "kobold"]
SWIPE_MODES = ["tabby", "vllm"]
OPENAI_STREAM_MODES = {"tabby", "koboldcpp", "ooba", "vllm"}
"""Modes whose stream is OpenAI's ``/v1/completions`` SSE, ended by ``[DONE]``."""
PROMPT = "User: Tell me a short story about a girl and her dog.\nSeraphina:"
LENGTH_FIELDS = ("max_new_tokens", "max_tokens", "n_predict", "num_predict", "max_length")
"""Where SillyTavern writes its "Response (tokens)" setting, in every body that has it."""
WORD = re.compile(r"[A-Za-z]{4,}")


# --- the fixtures and their placeholders -------------------------------------------------


def load(mode: str) -> dict[str, Any]:
    return json.loads((FIXTURES / f"{mode}.json").read_text())


def requests_of(mode: str, step: str) -> list[dict[str, Any]]:
    """The backend requests SillyTavern sent for ``step`` (one fixture step), in order."""
    steps = [s for s in load(mode)["steps"] if s["step"] == step]
    assert steps, f"{mode}.json has no step {step}"
    return steps[0]["backend_requests"]


def fill(value: Any, subs: dict[str, str], ids: list[int]) -> Any:
    """``value`` with each ``{{NAME}}`` replaced by ``subs[NAME]`` and the sentinel id by ``ids``."""
    if isinstance(value, str):
        if value == str(SENTINEL_ID):  # custom_token_bans: "990001"
            return ",".join(str(i) for i in ids)
        for name, text in subs.items():
            value = value.replace("{{" + name + "}}", text)
        return value
    if isinstance(value, dict):
        return {k: fill(v, subs, ids) for k, v in value.items()}
    if isinstance(value, list):
        out: list[Any] = []
        for item in value:
            if item == SENTINEL_ID:
                out.extend(ids)
            elif isinstance(item, list) and item and item[0] == SENTINEL_ID:  # llama.cpp logit_bias [id, false]
                out.extend([i, *item[1:]] for i in ids)
            else:
                out.append(fill(item, subs, ids))
        return out
    return value


class Replay:
    """Sends fixture requests to the live server, placeholders filled."""

    def __init__(self, server) -> None:
        self.url = server.url
        self.client = httpx.Client(base_url=server.url, timeout=120)

    def subs(self, **names: str) -> dict[str, str]:
        base = {"BACKEND": self.url, "MODEL": MODEL, "PROMPT": PROMPT, "ABORT_PROMPT": PROMPT}
        base.update({"BANNED_STRING": "", "BANNED_WORD": ""})
        base.update(names)
        return base

    def body(self, request: dict[str, Any], ids: list[int] | None = None, **names: str) -> Any:
        return fill(request["body"], self.subs(**names), ids or [])

    def send(self, request: dict[str, Any], body: Any = None) -> httpx.Response:
        headers = request.get("headers") or {}
        if request["method"] == "GET":
            return self.client.get(request["path"], headers=headers)
        body = body if body is not None else request["body"]
        content = b"" if body is None else json.dumps(body)  # SillyTavern's abort call has no body
        return self.client.post(request["path"], content=content, headers=headers)

    def stream(self, request: dict[str, Any], body: Any) -> tuple[int, list[tuple[str, str]]]:
        """Status and the (event, data) pairs of a streamed answer."""
        headers = request.get("headers") or {}
        with self.client.stream("POST", request["path"], content=json.dumps(body), headers=headers) as response:
            return response.status_code, sse(response.iter_lines())


@pytest.fixture()
def replay(live_server):
    assert live_server.worker.wait_idle(timeout=120)
    r = Replay(live_server)
    yield r
    r.client.close()


def sse(lines) -> list[tuple[str, str]]:
    """(event, data) of each server-sent event, as a browser's EventSource parser splits them."""
    events, name, data = [], "message", []
    for line in lines:
        if line == "":
            if data:
                events.append((name, "\n".join(data)))
            name, data = "message", []
        elif line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[6:] if line[5:6] == " " else line[5:])
    if data:
        events.append((name, "\n".join(data)))
    return events


# --- SillyTavern's readers ---------------------------------------------------------------


def page_text(mode: str, data: dict[str, Any]) -> str:
    """The text SillyTavern's page takes from a non-streamed answer (script.js extractMessageFromData)."""
    if mode == "kobold":
        return data["results"][0]["text"]
    choices = data.get("choices")
    return choices[0]["text"] if choices else data["content"]


def page_stream(mode: str, events: list[tuple[str, str]]) -> tuple[str, list[str], bool]:
    """Text, swipes, and whether the stream ended the mode's way, read as SillyTavern's stream parsers do."""
    text, swipes, ended = "", [], False
    for i, (_, data) in enumerate(events):
        assert not ended, f"events after the end: {events[i:]}"
        if data == "[DONE]":
            ended = True
            continue
        parsed = json.loads(data)
        assert "error" not in parsed, parsed
        if mode == "kobold":  # kai-settings.js generateKoboldWithStreaming
            text += parsed.get("token") or ""
            ended = parsed.get("finish_reason") in ("stop", "length")
            continue
        choice = (parsed.get("choices") or [{}])[0]  # textgen-settings.js generateTextGenWithStreaming
        if choice.get("index", 0) > 0:
            index = choice["index"] - 1
            swipes += [""] * (index + 1 - len(swipes))
            swipes[index] += choice.get("text") or ""
        else:
            text += choice.get("text") or parsed.get("content") or ""
        if mode == "llamacpp" and parsed.get("stop") is True:  # llama.cpp's last event
            ended = True
    return text, swipes, ended


def page_ids(data: dict[str, Any]) -> tuple[list[int], int]:
    """Ids and count as SillyTavern reads a tokenize answer (src/endpoints/tokenizers.js)."""
    ids = data.get("tokens", data.get("ids")) or []
    count = data.get("length", data.get("count", data.get("value", len(ids))))
    return ids, count


def has_word(text: str, word: str) -> bool:
    return re.search(rf"(?<![A-Za-z]){re.escape(word)}(?![A-Za-z])", text) is not None


# --- helpers of the ban tests ------------------------------------------------------------


def greedy(body: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """``body`` with the user's temperature at 0 (deterministic), and ``changes``."""
    return {**body, "temperature": 0, **changes}


def empty_ban_box(body: dict[str, Any]) -> dict[str, Any]:
    """``body`` as SillyTavern sends it with an empty ban box (as in the fixtures' abort step)."""
    out = dict(body)
    if "banned_strings" in out:
        out["banned_strings"] = []
    if "custom_token_bans" in out:
        out["custom_token_bans"] = ""
    if isinstance(out.get("logit_bias"), list):
        out["logit_bias"] = [pair for pair in out["logit_bias"] if pair[0] != SENTINEL_ID]
    return out


def tokenize(replay: Replay, mode: str, text: str) -> list[int]:
    """The backend's ids of ``text``, through the tokenize request SillyTavern sent in ``mode``."""
    (request,) = requests_of(mode, "tokenize")
    reply = replay.send(request, replay.body(request, BANNED_WORD=text))
    assert reply.status_code == 200, reply.text
    ids, count = page_ids(reply.json())
    assert count == len(ids)
    return ids


def control_text(replay: Replay, mode: str) -> str:
    (request,) = requests_of(mode, "generate")
    reply = replay.send(request, greedy(empty_ban_box(replay.body(request))))
    assert reply.status_code == 200, reply.text
    return page_text(mode, reply.json())


def pick_bans(text: str, provider) -> tuple[str, str, int]:
    """From the control's text: a word for a quoted line, and one written as a single token for an unquoted line.

    The unquoted line is the word with its leading space (`` word``), the one
    token the model writes it as mid-sentence; returns the quoted word, the
    unquoted line and where the control wrote that line first.
    """
    words = list(dict.fromkeys(WORD.findall(text)))
    assert len(words) >= 2, f"the control wrote too few words to ban: {text!r}"
    for word in words[1:]:
        line = " " + word
        at = re.search(rf"{re.escape(line)}(?![A-Za-z])", text)
        if at and len(provider.encode(line, False)) == 1:
            quoted = next(w for w in words if w != word)
            return quoted, line, at.start()
    pytest.skip(f"no single-token word in the control to ban: {text!r}")


# --- the tests ---------------------------------------------------------------------------


@pytest.mark.parametrize("mode", STATUS_MODES)
def test_status_calls_answer_what_sillytavern_reads(replay, mode):
    for request in requests_of(mode, "status"):
        reply = replay.send(request)
        assert reply.status_code == 200, (request["path"], reply.text)
        data = reply.json()
        path = request["path"]
        if path in ("/v1/models", "/v1/model/list"):
            assert MODEL in [m["id"] for m in data["data"]]
        elif path == "/v1/model":  # TabbyAPI: the loaded model
            assert data["id"] == MODEL
        elif path == "/v1/internal/model/info":  # ooba: then SillyTavern tokenizes through the backend
            assert data["model_name"] == MODEL
        elif path == "/api/v1/info/version":  # >= 1.2.2: stop sequences; >= 1.2.4: EOS unban
            assert tuple(int(x) for x in data["result"].split(".")) >= (1, 2, 4)
        elif path == "/api/extra/version":  # KoboldCpp: streaming, tokenization
            assert data["result"] == "KoboldCpp" and data["version"]
        elif path == "/api/v1/model":
            assert data["result"] and data["result"] != "ReadOnly"
        else:
            pytest.fail(f"a status call this test does not know: {path}")


@pytest.mark.parametrize("mode", TOKENIZE_MODES)
@pytest.mark.parametrize("text", [" dog", "Max", "naïve café, 東京"])
def test_tokenize_gives_the_models_tokens(replay, server_provider, mode, text):
    ids = tokenize(replay, mode, text)
    provider = reference_provider(server_provider)
    assert ids in (provider.encode(text, False), provider.encode(text, True))


@pytest.mark.parametrize("mode", BAN_MODES)
def test_the_ban_box_holds_greedy_and_streamed(replay, server_provider, mode):
    """Quoted and unquoted lines of the ban box, as SillyTavern sends them: the control's words are gone."""
    control = control_text(replay, mode)
    quoted, line, at = pick_bans(control, reference_provider(server_provider))
    assert has_word(control, quoted)
    ids = tokenize(replay, mode, line)
    (request,) = requests_of(mode, "generate")
    body = greedy(replay.body(request, ids, BANNED_STRING=quoted))
    assert quoted in json.dumps(body) and str(ids[0]) in json.dumps(body)
    reply = replay.send(request, body)
    assert reply.status_code == 200, reply.text
    text = page_text(mode, reply.json())
    assert not has_word(text, quoted), (quoted, text)
    assert text != control  # a ban fired: greedy, the control wrote the word

    # Streamed: the same text (greedy), no banned word in any event, the mode's own end.
    (request,) = requests_of(mode, "generate_stream")
    status, events = replay.stream(request, greedy(replay.body(request, ids, BANNED_STRING=quoted)))
    assert status == 200, events
    streamed, swipes, ended = page_stream(mode, events)
    assert ended, events[-3:]
    if mode in OPENAI_STREAM_MODES:
        assert events[-1][1] == "[DONE]"
    assert swipes == []
    assert streamed == text
    assert not any(quoted in data for _, data in events)

    # The unquoted line alone: greedy, the run follows the control until the control wrote that token.
    (request,) = requests_of(mode, "generate")
    body = greedy(replay.body(request, ids, BANNED_STRING=quoted), banned_strings=[])
    reply = replay.send(request, body)
    assert reply.status_code == 200, reply.text
    alone = page_text(mode, reply.json())
    assert alone[:at] == control[:at]
    assert not alone.startswith(control[: at + len(line)]), (line, control, alone)


@pytest.mark.parametrize("mode", BAN_MODES)
def test_sillytavern_defaults_seed_minus_one_sample_and_keep_the_bans(replay, server_provider, mode):
    """SillyTavern's own sampling (seed -1: random, temperature 0.5...), streamed and not: no banned word."""
    control = control_text(replay, mode)
    quoted, line, _ = pick_bans(control, reference_provider(server_provider))
    ids = tokenize(replay, mode, line)
    for step in ("generate", "generate_stream"):
        (request,) = requests_of(mode, step)
        body = replay.body(request, ids, BANNED_STRING=quoted)
        assert body["seed"] == -1
        if step == "generate":
            reply = replay.send(request, body)
            assert reply.status_code == 200, reply.text
            text = page_text(mode, reply.json())
        else:
            status, events = replay.stream(request, body)
            assert status == 200, events
            text, _, ended = page_stream(mode, events)
            assert ended
        assert text.strip()
        assert not has_word(text, quoted), (quoted, text)


@pytest.mark.parametrize("mode", SWIPE_MODES)
def test_swipes_each_come_back(replay, server_provider, mode):
    """``n`` 2 (SillyTavern's "Multiple swipes per generation"): both choices, streamed and not, bans in each."""
    quoted = ""
    if mode in BAN_MODES:
        control = control_text(replay, mode)
        quoted, _, _ = pick_bans(control, reference_provider(server_provider))
    (request,) = requests_of(mode, "generate_swipes")
    body = replay.body(request, BANNED_STRING=quoted)
    assert body["n"] == 2
    reply = replay.send(request, body)
    assert reply.status_code == 200, reply.text
    choices = reply.json()["choices"]
    assert sorted(c["index"] for c in choices) == [0, 1]
    for choice in choices:
        assert choice["text"].strip()
        assert not (quoted and has_word(choice["text"], quoted))

    (request,) = requests_of(mode, "generate_swipes_stream")
    status, events = replay.stream(request, replay.body(request, BANNED_STRING=quoted))
    assert status == 200, events
    text, swipes, ended = page_stream(mode, events)
    assert ended and events[-1][1] == "[DONE]"
    assert len(swipes) == 1 and text.strip() and swipes[0].strip()
    for each in (text, *swipes):
        assert not (quoted and has_word(each, quoted))


def test_vllm_mode_drops_the_ban_box_before_it_reaches_the_server():
    """SillyTavern's vLLM mode keeps only vLLM's own fields (src/constants.js VLLM_KEYS): no bans, no seed."""
    (request,) = requests_of("vllm", "generate")
    body = request["body"]
    assert "banned_strings" not in body and "custom_token_bans" not in body and "seed" not in body
    page = next(s for s in load("vllm")["steps"] if s["step"] == "generate")["page_body"]
    assert page["banned_strings"] == ["{{BANNED_STRING}}"]  # the page had them


@pytest.mark.parametrize("mode", ["vllm", "kobold"])
def test_modes_without_bans_generate(replay, mode):
    for step in ("generate", "generate_stream"):
        (request,) = requests_of(mode, step)
        body = replay.body(request)
        if step == "generate":
            reply = replay.send(request, body)
            assert reply.status_code == 200, reply.text
            assert page_text(mode, reply.json()).strip()
        else:
            status, events = replay.stream(request, body)
            assert status == 200, events
            text, _, ended = page_stream(mode, events)
            assert ended and text.strip()
            if mode == "kobold":
                assert all(name == "message" for name, _ in events)


def long_generation(body: dict[str, Any]) -> dict[str, Any]:
    """``body`` with the Response slider at 400 tokens and, where SillyTavern sends it, "Ban EOS Token" ticked."""
    out = {**body, **{name: 400 for name in LENGTH_FIELDS if name in body}}
    if "ban_eos_token" in out:
        out["ban_eos_token"] = True
    if "ignore_eos" in out:
        out["ignore_eos"] = True
    return out


@pytest.mark.parametrize("mode", [*BAN_MODES, "vllm", "kobold"])
def test_abort_frees_the_slot(replay, live_server, mode):
    """The Stop button mid-stream: SillyTavern drops the stream (KoboldCpp modes: after posting /api/extra/abort)."""
    worker = live_server.worker
    stream_request, *after = requests_of(mode, "abort")
    done = len(worker.history)
    body = long_generation(replay.body(stream_request))
    headers = stream_request.get("headers") or {}
    with replay.client.stream("POST", stream_request["path"], content=json.dumps(body), headers=headers) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("data:"):
                break  # the first words are on the page: the user presses Stop
        for request in after:  # KoboldCpp: the abort call, while the stream is still open
            assert request["path"] == "/api/extra/abort"
            reply = replay.send(request)
            assert reply.status_code == 200, reply.text
    assert worker.wait_idle(timeout=120)
    record = worker.history[done]
    assert record.status == "cancelled"
    assert record.tokens_sampled < 400
    # The model is free: the next generation runs in full.
    (request,) = requests_of(mode, "generate")
    reply = replay.send(request, greedy(empty_ban_box(replay.body(request))))
    assert reply.status_code == 200, reply.text
    assert page_text(mode, reply.json()).strip()


@pytest.mark.parametrize("mode", ["koboldcpp", "kobold"])
def test_the_abort_call_alone_stops_the_generation(replay, live_server, mode):
    """KoboldCpp's /api/extra/abort ends the running generation: the stream, still open, finishes early."""
    worker = live_server.worker
    stream_request, abort_request = requests_of(mode, "abort")
    done = len(worker.history)
    body = long_generation(replay.body(stream_request))
    headers = stream_request.get("headers") or {}
    with replay.client.stream("POST", stream_request["path"], content=json.dumps(body), headers=headers) as response:
        lines = response.iter_lines()
        first = next(line for line in lines if line.startswith("data:"))
        reply = replay.send(abort_request)
        assert reply.status_code == 200, reply.text
        events = sse([first, "", *lines])
    _, _, ended = page_stream(mode, events)
    assert ended
    assert worker.wait_idle(timeout=120)
    record = worker.history[done]
    assert record.status == "cancelled" and record.tokens_sampled < 400
    assert reply.json()["success"] == "true"
