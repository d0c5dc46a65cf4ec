"""BatchedLlamacpp on the embedded model: many sequences in one decode, each exactly as if it ran alone.

Every strategy runs unchanged per sequence (AntiSlop with bans that fire,
JsonStrategy, seeded CreativeWriting, none); sequences join and leave while
others run; a closed stream frees its slot; a long prompt fits or is refused.
"""

from __future__ import annotations

import collections
import json
import random
import re
import threading
import time

import pytest

from backtrack_sampler import (
    AntiSlopStrategy,
    BacktrackSampler,
    CreativeWritingStrategy,
    FinishEvent,
    JsonStrategy,
    TextEvent,
)
from near_tie import NOISE, Tracer, assert_same_or_near_tie, greedy_parting, noise

pytestmark = pytest.mark.llamacpp

N_SLOTS = 16
TOPICS = ["a dog", "a lighthouse", "a robot", "the sea", "a baker", "a dragon", "a train", "a garden"]


@pytest.fixture(scope="module")
def llm(smollm_path):
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (extra: llamacpp)")
    from backtrack_sampler.models import load_llama

    return load_llama(smollm_path, n_ctx=512)


@pytest.fixture(scope="module")
def batched(llm):
    from backtrack_sampler.provider.llamacpp_batched import BatchedLlamacpp

    with BatchedLlamacpp(llm, n_slots=N_SLOTS, n_ctx=512) as engine:
        yield engine


def chat(batched, text: str) -> str:
    return batched.vocab.apply_chat_template([{"role": "user", "content": text}])


def top_words(text: str, n: int) -> list[str]:
    counts = collections.Counter(w.lower() for w in re.findall(r"[A-Za-z]{5,}", text))
    return [w for w, _ in counts.most_common(n)]


def make_jobs(batched) -> list[dict]:
    """16 requests of mixed work; the AntiSlop ones ban words their own greedy text uses, so bans fire."""
    jobs = []
    for i in range(4):
        prompt = chat(batched, f"Write a story about {TOPICS[i]}.")
        plain = run_alone(batched, {"prompt": prompt, "strategy": None, "kwargs": {"temperature": 0}})
        bans = top_words(plain.text, 2)
        assert bans, plain.text
        jobs.append({"prompt": prompt, "strategy": ("antislop", bans), "kwargs": {"temperature": 0}})
    for i in range(4):
        prompt = chat(batched, f"Describe {TOPICS[i + 4]} as a JSON object with a name and two facts.")
        kwargs = {"temperature": 0} if i < 2 else {"temperature": 0.7, "seed": i}
        jobs.append({"prompt": prompt, "strategy": ("json", None), "kwargs": kwargs})
    for i in range(4):
        prompt = chat(batched, f"Describe {TOPICS[i]} in a poem.")
        jobs.append({"prompt": prompt, "strategy": ("creative", None), "kwargs": {"temperature": 1.0, "seed": 10 + i}})
    for i in range(4):
        prompt = chat(batched, f"Tell me about {TOPICS[i + 4]}.")
        kwargs = {"temperature": 0} if i < 2 else {"temperature": 0.8, "top_p": 0.9, "top_k": 0, "seed": 20 + i}
        jobs.append({"prompt": prompt, "strategy": None, "kwargs": kwargs})
    for i, job in enumerate(jobs):
        job["kwargs"] = {"max_new_tokens": 12 + 3 * i, **job["kwargs"]}  # they leave at different steps
    return jobs


def build(provider, spec):
    if spec is None:
        return None
    name, arg = spec
    if name == "antislop":
        return AntiSlopStrategy(provider, arg)
    if name == "json":
        return JsonStrategy(provider, root="object")
    return CreativeWritingStrategy(provider)


def run_alone(batched, job):
    provider = batched.provider()
    return BacktrackSampler(provider, build(provider, job["strategy"])).generate_text(job["prompt"], **job["kwargs"])


def run_streamed(batched, job, delay: float, out: dict) -> None:
    """Stream one job (after ``delay``), keeping the text the events carried and the final event."""
    time.sleep(delay)
    provider = batched.provider()
    sampler = BacktrackSampler(provider, build(provider, job["strategy"]))
    streamed, finish = [], None
    for event in sampler.stream(job["prompt"], **job["kwargs"]):
        if isinstance(event, TextEvent):
            streamed.append(event.text)
        elif isinstance(event, FinishEvent):
            finish = event
    out["streamed"], out["finish"] = "".join(streamed), finish


def test_sixteen_mixed_sequences_in_one_batch_each_equal_to_itself_alone(batched, monkeypatch):
    tracer = Tracer().install(monkeypatch)
    tracer.phase = "control"
    jobs = make_jobs(batched)
    tracer.phase = "alone"
    alone = [run_alone(batched, job) for job in jobs]
    before = batched.stats.max_sequences
    outs = [{} for _ in jobs]
    delays = [random.Random(i).uniform(0, 0.3) for i in range(len(jobs))]  # they join at different steps
    threads = [
        threading.Thread(target=run_streamed, args=(batched, j, d, o))
        for j, d, o in zip(jobs, delays, outs, strict=True)
    ]
    tracer.phase = "batched"
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert batched.stats.max_sequences >= 8 > before  # they shared decodes
    parted = 0
    for i, (job, single, out) in enumerate(zip(jobs, alone, outs, strict=True)):
        finish = out["finish"]
        prompt, seed = batched.vocab.encode(job["prompt"]), job["kwargs"].get("seed")
        traces = tracer.trace("alone", prompt, seed), tracer.trace("batched", prompt, seed)
        greedy = job["kwargs"]["temperature"] == 0 and job["strategy"] is None
        # Equal to itself alone, or parted where rounding decides between two nearly tied tokens.
        if assert_same_or_near_tie(*traces, f"job {i} ({job['strategy']}, {job['kwargs']})", greedy) is None:
            assert finish.tokens == single.tokens, job
        else:
            parted += 1
        for text in (single.text, finish.text):
            if job["strategy"] and job["strategy"][0] == "antislop":
                for word in job["strategy"][1]:
                    assert not re.search(rf"\b{word}\b", text, re.IGNORECASE), (word, text)
            if job["strategy"] == ("json", None):
                json.loads(text)  # complete, or closed to fit max_new_tokens
        assert out["streamed"] == finish.text  # what the caller received is the final text
    print(f"{parted} of {len(jobs)} sequences parted from their run alone at a near-tie")
    rewinds = sum(len(single.rewinds) for job, single in zip(jobs, alone, strict=True) if job["strategy"])
    assert rewinds > 0  # the bans fired, and CreativeWriting rewound


def test_greedy_tokens_and_logits_agree_with_the_single_sequence_provider(batched, llm):
    from backtrack_sampler.provider.llamacpp_provider import LlamacppProvider

    single = LlamacppProvider(llm)
    for topic in TOPICS[:4]:
        prompt = chat(batched, f"Write a story about {topic}.")
        tokens = single.encode(prompt)
        reference = single.prefill(tokens)
        provider = batched.provider()
        mine = provider.prefill(tokens)
        provider.release()
        print(f"{topic}: prompt logits differ by at most {noise(mine, reference):.4f}")
        assert noise(mine, reference) <= NOISE
        a = BacktrackSampler(single).generate_text(prompt, max_new_tokens=32, temperature=0).tokens
        b = run_alone(batched, {"prompt": prompt, "strategy": None, "kwargs": {"max_new_tokens": 32, "temperature": 0}})
        # Batched kernels round otherwise: the texts are equal up to a near-tie, if they part at all.
        greedy_parting(single, tokens, a, b.tokens, topic)


def test_a_closed_stream_frees_its_slot_and_the_others_are_unaffected(batched):
    prompt = chat(batched, "Write a long story about a cat.")
    other = {"prompt": chat(batched, "Tell me about a train."), "strategy": None}
    other["kwargs"] = {"max_new_tokens": 24, "temperature": 0}
    expected = run_alone(batched, other)
    free_before = len(batched._free)
    stream = BacktrackSampler(batched.provider()).stream(prompt, max_new_tokens=200, temperature=0)
    next(stream)  # holds a slot mid-generation
    assert len(batched._free) == free_before - 1
    out: dict = {}
    thread = threading.Thread(target=run_streamed, args=(batched, other, 0.0, out))
    thread.start()
    for _ in range(3):
        next(stream)
    stream.close()
    thread.join(timeout=120)
    assert out["finish"].tokens == expected.tokens
    assert len(batched._free) == free_before


def test_requests_beyond_the_slots_queue_in_order_and_all_complete(llm):
    from backtrack_sampler.async_sampler import run_concurrently
    from backtrack_sampler.provider.llamacpp_batched import BatchedLlamacpp

    with BatchedLlamacpp(llm, n_slots=2, n_ctx=256) as small:
        prompts = [chat(small, f"Name {i} colors.") for i in range(6)]
        alone = [BacktrackSampler(small.provider()).generate_text(p, max_new_tokens=8, temperature=0) for p in prompts]
        results = run_concurrently(
            lambda: BacktrackSampler(small.provider()), prompts, 6, max_new_tokens=8, temperature=0
        )
        assert [r.tokens for r in results] == [a.tokens for a in alone]
        assert small.stats.max_sequences == 2
        assert sorted(small._free) == [0, 1]


def test_each_slot_holds_its_own_context(llm):
    from backtrack_sampler.provider.llamacpp_batched import BatchedLlamacpp

    with BatchedLlamacpp(llm, n_slots=2, n_ctx=64) as small:
        provider = small.provider()
        assert provider.context_length == small.context_length >= 64
        too_long = list(range(10, 10 + small.context_length))
        with pytest.raises(ValueError, match="context holds"):
            BacktrackSampler(provider).generate_text(too_long, max_new_tokens=4)
        result = BacktrackSampler(provider).generate_text("Hi", max_new_tokens=200, temperature=0)
        assert result.stats.prompt_tokens + len(result.tokens) <= small.context_length


@pytest.mark.parametrize("value", ["yes", 1, 0.5, "AUTO"])
def test_flash_attn_must_be_a_setting_llama_cpp_knows(llm, value):
    from backtrack_sampler.provider.llamacpp_batched import BatchedLlamacpp

    expected = rf"flash_attn must be one of 'auto', 'on', 'off', True, False or None, got {re.escape(repr(value))}"
    with pytest.raises(ValueError, match=expected):
        BatchedLlamacpp(llm, n_slots=2, n_ctx=64, flash_attn=value)


@pytest.mark.parametrize("flash_attn", [True, False, "auto"])
def test_with_flash_attn_on_or_off_a_batch_equals_each_sequence_alone(llm, flash_attn):
    """The setting reaches llama.cpp (the context is built) and batching stays exact with it too."""
    from backtrack_sampler.async_sampler import run_concurrently
    from backtrack_sampler.provider.llamacpp_batched import BatchedLlamacpp

    with BatchedLlamacpp(llm, n_slots=3, n_ctx=128, flash_attn=flash_attn) as small:
        prompts = [chat(small, f"Name {i + 2} colours.") for i in range(3)]
        alone = [BacktrackSampler(small.provider()).generate_text(p, max_new_tokens=12, temperature=0) for p in prompts]
        together = run_concurrently(
            lambda: BacktrackSampler(small.provider()), prompts, 3, max_new_tokens=12, temperature=0
        )
    assert [r.tokens for r in together] == [a.tokens for a in alone]
