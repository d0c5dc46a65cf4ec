"""Protocol edge cases of OpenAICompatibleProvider, against a fake engine behind httpx.MockTransport.

The fake engine runs a scripted model over a tiny vocabulary and answers like
vLLM (``token_id:N`` tokens, top-k logprobs, ``logit_bias``, SSE streaming);
it samples greedily whatever the temperature, so results are exact. The real
tests run against real servers: tests/test_remote_server.py and tests/test_remote_vllm.py.
"""

from __future__ import annotations

import json
import re

import httpx
import numpy as np
import pytest

from backtrack_sampler import AntiSlopStrategy, BacktrackSampler, CreativeWritingStrategy
from backtrack_sampler.provider.remote import OpenAICompatibleProvider, RemoteError
from backtrack_sampler.provider.remote.position_rules import PositionRules
from scripted import EOS, check_stream, text_provider

VOCAB = [EOS, "a", "b", "c", "d", " ", "."]


def rule(text: str) -> dict[str, float]:
    """A small deterministic 'model': writes "ab ab ab..." and ends after 14 characters."""
    if len(text) >= 14:
        return {EOS: 5.0, ".": 1.0}
    if text.endswith("a"):
        return {"b": 3.0, " ": 2.0, "c": 1.0}
    if text.endswith("b"):
        return {" ": 3.0, "b": 2.5, "d": 1.0}
    return {"a": 3.0, "c": 2.0, "d": 0.5}


def local_model():
    return text_provider(VOCAB, rule)


class FakeEngine:
    """A vLLM-like /v1/completions over ``local_model()``, recording every request body.

    With ``plugin``, it applies the position-scoped rules of ``vllm_xargs`` as
    vLLM does with ``backtrack_sampler.vllm_plugin:PositionBans`` (a bad value is a 400).
    """

    def __init__(self, top_k: int = 3, plugin: bool = False, **break_things) -> None:
        self.model = local_model()
        self.top_k = top_k
        self.plugin = plugin
        self.bodies: list[dict] = []
        self.produced: list[int] = []  # per streamed request: tokens actually sent so far
        self.break_things = break_things
        self.failures_left = break_things.get("fail_first", 0)

    def handler(self, request: httpx.Request) -> httpx.Response:
        if request.method == "GET" and request.url.path == "/v1/models":
            return httpx.Response(200, json={"data": [{"id": "fake", "max_model_len": 64}]})
        body = json.loads(request.content)
        self.bodies.append(body)
        if self.failures_left:
            self.failures_left -= 1
            return httpx.Response(503, json={"error": {"message": "overloaded"}})
        if body.get("model") != "fake":
            return httpx.Response(404, json={"error": {"message": f"The model `{body.get('model')}` does not exist."}})
        if body.get("logprobs", 0) > 20:
            return httpx.Response(400, json={"error": {"message": "Requested sample logprobs of 21, max 20"}})
        try:
            rules = PositionRules.from_xargs(body.get("vllm_xargs")) if self.plugin else PositionRules()
        except ValueError as exc:
            return httpx.Response(400, json={"error": {"message": str(exc)}})
        steps = self._generate(body, rules)
        if not body.get("stream"):
            return httpx.Response(200, json={"choices": [self._choice(steps, done=True)]})
        index = len(self.produced)
        self.produced.append(0)
        return httpx.Response(200, content=self._sse(steps, index), headers={"content-type": "text/event-stream"})

    def _generate(self, body: dict, rules: PositionRules):
        tokens = list(body["prompt"])
        bias = {int(k): float(v) for k, v in (body.get("logit_bias") or {}).items()}
        for position in range(body["max_tokens"]):
            raw = np.array(self.model.next_logits(tokens), dtype=np.float64)
            logprobs = raw - raw.max() - np.log(np.exp(raw - raw.max()).sum())
            biased = raw.copy()
            for token, value in bias.items():
                biased[token] += value
            for token, factor in rules.penalties.get(position, {}).items():
                biased[token] += np.log(factor)
            biased[list(rules.bans.get(position, ()))] = -np.inf
            token = int(np.argmax(biased))
            top = np.argsort(-logprobs)[: self.top_k]
            yield token, {int(t): float(logprobs[t]) for t in top}, float(logprobs[token])
            tokens.append(token)
            if token == 0:
                return

    def _choice(self, steps, done: bool) -> dict:
        steps = list(steps)
        key = (lambda t: self.model.vocab[t]) if self.break_things.get("text_tokens") else (lambda t: f"token_id:{t}")
        logprobs = {
            "tokens": [key(t) for t, _, _ in steps],
            "token_logprobs": [lp for _, _, lp in steps],
            "top_logprobs": [{key(t): v for t, v in top.items()} for _, top, _ in steps],
        }
        if self.break_things.get("no_logprobs"):
            logprobs = None
        text = "".join(self.model.vocab[t] for t, _, _ in steps if t != 0)
        return {"index": 0, "text": text, "logprobs": logprobs, "finish_reason": "length" if not done else "stop"}

    def _sse(self, steps, index: int):
        for n, step in enumerate(steps):
            if self.break_things.get("break_stream_at") == n and index == 0:
                raise httpx.ReadError("connection reset")
            self.produced[index] += 1
            payload = {"choices": [self._choice([step], done=False) | {"finish_reason": None}]}
            yield f"data: {json.dumps(payload)}\n\n".encode()
        yield b"data: [DONE]\n\n"


def remote(engine: FakeEngine, **kwargs) -> OpenAICompatibleProvider:
    client = httpx.Client(transport=httpx.MockTransport(engine.handler), base_url="http://fake")
    kwargs.setdefault("max_retries", 0)
    kwargs.setdefault("sleep", no_sleep)
    return OpenAICompatibleProvider("http://fake/v1", "fake", tokenizer=local_model(), client=client, **kwargs)


def no_sleep(seconds: float) -> None:
    raise AssertionError(f"a test must not wait ({seconds} s): pass sleep=")


def generate(provider, strategy=None, **kwargs):
    kwargs.setdefault("max_new_tokens", 20)
    kwargs.setdefault("temperature", 0)
    events = list(BacktrackSampler(provider, strategy).stream("ab", **kwargs))
    return check_stream(events)


@pytest.mark.parametrize("mode", ["chunk", "step", "auto"])
def test_greedy_equals_the_local_model(mode):
    engine = FakeEngine()
    expected = generate(local_model())
    got = generate(remote(engine, mode=mode, chunk_size=4))
    assert got.tokens == expected.tokens and got.text == expected.text and got.reason == "eos"
    assert all(isinstance(t, int) for body in engine.bodies for t in body["prompt"])
    if mode == "step":
        assert {b["max_tokens"] for b in engine.bodies} == {1}
    else:
        assert any(b.get("stream") and b["max_tokens"] == 4 for b in engine.bodies)


def test_positional_bans_go_through_logit_bias_and_match_the_local_model():
    engine = FakeEngine()
    bans = ["ab ab"]
    expected = generate(local_model(), AntiSlopStrategy(local_model(), bans))
    provider = remote(engine, mode="chunk", chunk_size=4)
    got = generate(provider, AntiSlopStrategy(provider, bans))
    assert got.text == expected.text and got.stats.rewinds == expected.stats.rewinds > 0
    assert not re.search(r"\bab ab\b", got.text)  # AntiSlop matches whole words
    biased = [b for b in engine.bodies if "logit_bias" in b]
    assert biased and all(b["max_tokens"] == 1 and set(b["logit_bias"].values()) == {-100.0} for b in biased)
    assert not any("logit_bias" in b for b in engine.bodies if b.get("stream"))


@pytest.mark.parametrize("max_new_tokens", [5, 40])
def test_the_stream_is_closed_when_the_generation_ends(max_new_tokens):
    engine = FakeEngine()
    provider = remote(engine, mode="chunk", chunk_size=50)
    got = generate(provider, max_new_tokens=max_new_tokens)
    assert got.reason == ("length" if max_new_tokens == 5 else "eos")
    assert provider._chunk is not None and provider._chunk._pieces is None  # nothing left open


def test_a_rewind_closes_the_stream():
    engine = FakeEngine()
    provider = remote(engine, mode="chunk", chunk_size=12)
    got = generate(provider, AntiSlopStrategy(provider, ["ab "]))
    assert got.stats.rewinds > 0
    # The first stream was abandoned at the rewind: the client stopped reading it there.
    assert engine.produced[0] < 12


def test_sampling_settings_reach_the_engine_with_reproducible_seeds():
    bodies = []
    for _ in range(2):
        engine = FakeEngine()
        generate(remote(engine, mode="chunk", chunk_size=4), temperature=0.7, top_k=5, top_p=0.9, min_p=0.05, seed=3)
        bodies.append(engine.bodies)
    first = bodies[0][0]
    assert (first["temperature"], first["top_k"], first["top_p"], first["min_p"]) == (0.7, 5, 0.9, 0.05)
    assert [b["seed"] for b in bodies[0]] == [b["seed"] for b in bodies[1]]
    assert len({b["seed"] for b in bodies[0]}) == len(bodies[0])  # a fresh draw per request


def test_logprobs_only_requests_are_greedy():
    engine = FakeEngine()

    class Sharpen(CreativeWritingStrategy):
        needs_full_logits = False  # a strategy that adjusts logits without needing all of them

        def __init__(self) -> None:
            pass

        def reset(self) -> None:
            pass

        def adjust_logits(self, ctx, logits):
            return logits * 2

        def on_token(self, ctx, token):
            from backtrack_sampler import Continue

            return Continue()

    got = generate(remote(engine), Sharpen(), temperature=0.8, seed=1)
    assert got.tokens
    assert all(b["temperature"] == 0.0 and b["max_tokens"] == 1 and "seed" not in b for b in engine.bodies)


def test_the_top_k_become_logits_and_everything_else_minus_inf():
    engine = FakeEngine(top_k=2)
    provider = remote(engine)
    logits = provider.prefill(provider.encode("ab"))
    assert logits.shape == (len(VOCAB),) and np.isfinite(logits).sum() == 2
    top = np.flatnonzero(np.isfinite(logits))
    assert len(top) == 2 and logits[provider.encode(" ")[0]] == logits.max()  # the fake model's favourite
    assert np.all(logits[top] < 0)  # log-probabilities of the full distribution, not renormalised
    assert np.logaddexp.reduce(logits[top]) < 0


def test_a_strategy_needing_full_logits_is_refused():
    provider = remote(FakeEngine())
    with pytest.raises(ValueError, match="only top-k"):
        BacktrackSampler(provider, CreativeWritingStrategy(provider))


def test_context_length_comes_from_the_server_and_bounds_the_chunks():
    engine = FakeEngine()
    provider = remote(engine, mode="chunk", chunk_size=50)
    assert provider.context_length == 64
    generate(provider, max_new_tokens=3)
    assert engine.bodies[0]["max_tokens"] == 3


def test_transient_failures_are_retried():
    engine = FakeEngine(fail_first=2)
    waits = []
    got = generate(remote(engine, max_retries=2, mode="step", sleep=waits.append))
    assert got.text == generate(local_model()).text
    assert waits == [0.5, 1.0]  # twice as long before each retry


def test_a_broken_stream_is_asked_again_from_the_prefix():
    engine = FakeEngine(break_stream_at=3)
    got = generate(remote(engine, mode="chunk", chunk_size=8))
    assert got.tokens == generate(local_model()).tokens


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        ({"text_tokens": True}, "return_tokens_as_token_ids"),
        ({"no_logprobs": True}, "without logprobs"),
        ({"fail_first": 5}, "answered 503: overloaded"),
    ],
)
def test_protocol_errors_are_clear(breakage, message):
    provider = remote(FakeEngine(**breakage), mode="step")
    with pytest.raises(RemoteError, match=message):
        generate(provider)


def test_server_errors_carry_the_servers_message():
    provider = remote(FakeEngine(), top_logprobs=21, mode="step")
    with pytest.raises(RemoteError, match="answered 400: Requested sample logprobs of 21") as info:
        generate(provider)
    assert info.value.status == 400


def test_a_model_the_server_does_not_serve_is_named():
    client = httpx.Client(transport=httpx.MockTransport(FakeEngine().handler))
    with pytest.raises(ValueError, match="model 'other' is not served at http://fake/v1 \\(served: 'fake'\\)"):
        OpenAICompatibleProvider("http://fake", "other", tokenizer=local_model(), client=client)


def test_an_unreachable_server_is_named():
    with pytest.raises(RemoteError, match="cannot reach http://127.0.0.1:9/v1/models"):
        OpenAICompatibleProvider("http://127.0.0.1:9", "m", tokenizer=local_model(), timeout=2)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"base_url": "localhost:8000"}, "base_url must be an http"),
        ({"model": ""}, "model must be a non-empty string"),
        ({"tokenizer": None}, "tokenizer is required"),
        ({"tokenizer": 3}, "tokenizer must be a provider"),
        ({"tokenizer": "/nonexistent/model.gguf"}, "tokenizer must be a .gguf file or a model directory"),
        ({"mode": "fast"}, "mode must be one of auto, step, chunk, got 'fast'"),
        ({"chunk_size": 0}, "chunk_size must be an integer >= 1, got 0"),
        ({"top_logprobs": True}, "top_logprobs must be an integer >= 1, got True"),
        ({"timeout": -1}, "timeout must be a number of seconds > 0, got -1"),
        ({"context_length": 0}, "context_length must be an integer >= 1 or None, got 0"),
    ],
)
def test_bad_arguments_are_named(kwargs, message):
    args = {"base_url": "http://fake", "model": "fake", "tokenizer": local_model()} | kwargs
    client = httpx.Client(transport=httpx.MockTransport(FakeEngine().handler))
    with pytest.raises((ValueError, TypeError, FileNotFoundError), match=message):
        OpenAICompatibleProvider(**args, client=client)


def test_spawned_providers_share_the_client_but_not_the_state():
    engine = FakeEngine()
    provider = remote(engine, mode="chunk", chunk_size=4)
    other = provider.spawn()
    assert other.client is provider.client and other.tokenizer is provider.tokenizer
    assert generate(other).text == generate(provider).text
    assert other.requests > 0 and other.n_past != 0
    other.close()
    assert not provider.client.is_closed


@pytest.mark.transformers
@pytest.mark.llamacpp
def test_the_gguf_and_hf_tokenizers_of_the_embedded_model_agree(smollm_path):
    pytest.importorskip("transformers", reason="transformers is not installed (extra: transformers)")
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (extra: llamacpp)")
    from backtrack_sampler.models import embedded_hf_dir
    from backtrack_sampler.provider.remote.tokenizer import load_tokenizer

    gguf, hf = load_tokenizer(smollm_path), load_tokenizer(embedded_hf_dir())
    assert gguf.vocab_size == hf.vocab_size == 49152
    assert 2 in gguf.eos_token_ids and 2 in hf.eos_token_ids
    messages = [{"role": "user", "content": "Héllo, wörld! 你好 🙂"}]
    texts = ["Once upon a time", "  spaces\tand\nlines", messages[0]["content"], gguf.apply_chat_template(messages)]
    for text in texts:
        assert gguf.encode(text) == hf.encode(text)
    assert hf.apply_chat_template(messages).startswith("<|im_start|>")
    ids = [*range(0, 49152, 97), *gguf.encode(messages[0]["content"])]
    # llama.cpp gives b"" for the few tokens the GGUF types as control (e.g. 26675, a newline and 64 spaces).
    differ = [t for t in ids if gguf.token_bytes(t) != hf.token_bytes(t)]
    assert len(differ) <= 3 and all(gguf.token_bytes(t) == b"" for t in differ)


def test_remote_and_batch_modules_import_no_backend():
    import subprocess
    import sys

    code = (
        "import sys\n"
        "import backtrack_sampler.provider.openai_compatible_provider, backtrack_sampler.async_sampler\n"
        "import backtrack_sampler.provider.remote, backtrack_sampler.provider.remote_tokenizer\n"
        "import backtrack_sampler.batch, backtrack_sampler.cli.batch, backtrack_sampler.cli\n"
        "backtrack_sampler.cli.build_parser()\n"
        "heavy = ('torch', 'transformers', 'llama_cpp', 'httpx', 'fastapi', 'uvicorn')\n"
        "print(','.join(m for m in heavy if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


class RawUnicodeEngine(FakeEngine):
    """Streams JSON as vLLM and this package's server write it: non-ASCII raw, U+2028, U+2029 and U+0085 included."""

    def _sse(self, steps, index: int):
        for chunk in super()._sse(steps, index):
            if chunk.startswith(b"data: {"):
                payload = json.loads(chunk[len(b"data: ") :])
                payload["choices"][0]["text"] += "\u2028\u2029\u0085"
                chunk = f"data: {json.dumps(payload, ensure_ascii=False)}\r\n\r\n".encode()
            yield chunk


def test_a_stream_holding_unicode_line_separators_is_read_line_by_line_at_line_feeds():
    # httpx's iter_lines splits at U+2028 too (as str.splitlines does): each chunk would be cut in two.
    engine = RawUnicodeEngine()
    finish = generate(remote(engine, mode="chunk"))
    assert finish.text == generate(local_model()).text
    assert any(b.get("stream") for b in engine.bodies)
