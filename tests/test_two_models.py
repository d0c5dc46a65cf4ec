"""The integration tests that depend on the tokenizer, on both model families of the tests.

``any_provider`` runs each test on SmolLM2 135M (byte-level BPE, 49k tokens) and on
Gemma 3 270M (SentencePiece with byte-fallback tokens, 262k tokens, sliding-window
attention over 512 positions, no chat template: raw prompts). What they cover is what
a tokenizer can break: a banned word spelled over several tokens (the split-token
leak), regex bans, stream == final text, LoopGuard, JsonStrategy at its length limit,
the server's streaming with bans, and the batched provider (each sequence equal to
itself alone, with rewinds past Gemma's sliding window). Every ban is picked from a
control run of the same test, never from what one CPU happened to write.
"""

from __future__ import annotations

import json
import re
import threading

import pytest

from backtrack_sampler import (
    AntiSlopStrategy,
    BacktrackSampler,
    FinishEvent,
    JsonStrategy,
    LoopGuardStrategy,
    RewindEvent,
    RewindRefusedEvent,
    TextEvent,
)
from backtrack_sampler.metrics.diversity import words  # LoopGuard's words: inner apostrophes stay
from near_tie import Tracer, assert_same_or_near_tie

pytestmark = pytest.mark.llamacpp

STORY = "Once upon a time, in a small village by the sea, there lived"
LOOPING = "Repeat after me: the cat sat on the mat. The cat sat on the mat. The cat sat on the mat."


def greedy(provider, prompt: str, strategy=None, max_new_tokens: int = 48):
    """Every event of a greedy generation, checked: the streamed text is the final text."""
    events = list(BacktrackSampler(provider, strategy).stream(prompt, max_new_tokens=max_new_tokens, temperature=0))
    finish = events[-1]
    assert isinstance(finish, FinishEvent)
    assert "".join(e.text for e in events if isinstance(e, TextEvent)) == finish.text
    return events


def whole_word(word: str) -> re.Pattern:
    return re.compile(rf"(?<!\w){re.escape(word)}(?!\w)", re.IGNORECASE)


def split_word(provider, text: str) -> str:
    """A word of ``text`` (5+ letters) that the tokenizer spells with two tokens or more, else its first word."""
    words = re.findall(r"[A-Za-z]{5,}", text)
    assert words, text
    base = len(provider.encode("So"))
    return next((w for w in words if len(provider.encode("So " + w)) - base >= 2), words[0])


def test_a_word_spelled_over_several_tokens_is_banned_and_never_leaks(any_provider):
    control = greedy(any_provider, STORY)[-1]
    word = split_word(any_provider, control.text)
    assert whole_word(word).search(control.text)  # without the ban the model writes it
    events = greedy(any_provider, STORY, AntiSlopStrategy(any_provider, [word]))
    assert not whole_word(word).search(events[-1].text) and any(isinstance(e, RewindEvent) for e in events)


def test_a_regex_ban_never_leaks(any_provider):
    control = greedy(any_provider, STORY)[-1]
    word = split_word(any_provider, control.text)
    pattern = rf"\b{re.escape(word[:4])}\w*"  # the word and any other starting as it does
    assert re.search(pattern, control.text, re.IGNORECASE)
    events = greedy(any_provider, STORY, AntiSlopStrategy(any_provider, [], regex=[pattern]))
    assert not re.search(pattern, events[-1].text, re.IGNORECASE), events[-1].text
    assert any(isinstance(e, RewindEvent) for e in events)


def repeated(units: list[str], n: int) -> bool:
    grams = [tuple(units[i : i + n]) for i in range(len(units) - n + 1)]
    return len(set(grams)) < len(grams)


def test_loop_guard_takes_back_the_loop_the_model_falls_into(any_provider):
    control = greedy(any_provider, LOOPING, max_new_tokens=64)[-1]
    assert repeated(words(control.text), 4), control.text  # greedy, the model loops
    events = greedy(any_provider, LOOPING, LoopGuardStrategy(any_provider, 4), max_new_tokens=64)
    assert any(isinstance(e, RewindEvent) for e in events)
    if not any(isinstance(e, RewindRefusedEvent) for e in events):
        assert not repeated(words(events[-1].text), 4), events[-1].text


def test_json_is_valid_at_every_limit(any_provider):
    prompt = "Here is a JSON object describing a cat, with its name and age:\n"
    sampler = BacktrackSampler(any_provider, JsonStrategy(any_provider, root="object"))
    for limit in range(2, 42, 3):
        result = sampler.generate_text(prompt, max_new_tokens=limit, temperature=0.7, seed=limit)
        assert isinstance(json.loads(result.text), dict), (limit, result.text)
        assert len(result.tokens) <= limit


def test_the_server_streams_without_the_banned_word(any_provider):
    pytest.importorskip("fastapi", reason="FastAPI is not installed (extra: server)")
    from server_support import MODEL, in_process_client, make_app, sse_events

    control = greedy(any_provider, STORY)[-1]
    word = split_word(any_provider, control.text)
    http = in_process_client(make_app(any_provider))
    body = {"model": MODEL, "prompt": STORY, "max_tokens": 48, "temperature": 0, "banned_strings": [word]}
    whole = http.post("/v1/completions", json=body)
    assert whole.status_code == 200, whole.text
    streamed = http.post("/v1/completions", json={**body, "stream": True})
    assert streamed.status_code == 200, streamed.text
    events = sse_events(streamed.text)
    assert events[-1] == "[DONE]"
    text = "".join(e["choices"][0]["text"] for e in events[:-1] if e["choices"])
    assert text == whole.json()["choices"][0]["text"]
    assert not whole_word(word).search(text), text


def long_prompt(provider, topic: str, positions: int) -> str:
    """A raw prompt about ``topic`` of about ``positions`` tokens, so the generation runs past that position."""
    sentences = [f"Chapter {i}: the {topic} was seen again near house number {i * 7}." for i in range(200)]
    text = ""
    for sentence in sentences:
        if len(provider.encode(text + sentence + " ")) > positions:
            break
        text += sentence + " "
    return text + f"This is the story of the {topic}:"


def test_batched_sequences_each_equal_themselves_alone_with_rewinds_past_the_window(any_llm, monkeypatch):
    """Four sequences in one batch, prompts of ~515 tokens: the bans rewind past position 512,
    where Gemma's sliding-window layers no longer see the prompt's start."""
    from backtrack_sampler.provider.llamacpp_batched import BatchedLlamacpp

    tracer = Tracer().install(monkeypatch)
    with BatchedLlamacpp(any_llm, n_slots=4, n_ctx=640) as batched:
        jobs = []
        for topic in ("lighthouse", "dragon", "baker", "train"):
            prompt = long_prompt(batched.vocab, topic, 515)  # every generated position is past 512
            tracer.phase = "control"
            control = BacktrackSampler(batched.provider()).generate_text(prompt, max_new_tokens=40, temperature=0)
            bans = list(dict.fromkeys(re.findall(r"[A-Za-z]{4,}", control.text)))
            assert bans, control.text
            jobs.append((prompt, bans[:2]))

        def run(prompt: str, bans: list[str], out: list) -> None:
            provider = batched.provider()
            strategy = AntiSlopStrategy(provider, bans)
            out.append(BacktrackSampler(provider, strategy).generate_text(prompt, max_new_tokens=40, temperature=0))

        tracer.phase = "alone"
        alone = []
        for prompt, bans in jobs:
            run(prompt, bans, alone)
        tracer.phase = "batched"
        together: list[list] = [[] for _ in jobs]
        threads = [threading.Thread(target=run, args=(*job, out)) for job, out in zip(jobs, together, strict=True)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=600)
        assert batched.stats.max_sequences >= 2
    n_prompt = [len(batched.vocab.encode(prompt)) for prompt, _ in jobs]
    late = [n + e.position for n, result in zip(n_prompt, alone, strict=True) for e in result.rewinds]
    assert late and min(late) > 512, (n_prompt, late)  # rewinds past the sliding window
    for (prompt, bans), single, (result,) in zip(jobs, alone, together, strict=True):
        for text in (single.text, result.text):
            assert not any(whole_word(b).search(text) for b in bans), (bans, text)
        key = batched.vocab.encode(prompt), None
        traces = tracer.trace("alone", *key), tracer.trace("batched", *key)
        if assert_same_or_near_tie(*traces, prompt[-30:], greedy=True) is None:
            assert result.tokens == single.tokens
