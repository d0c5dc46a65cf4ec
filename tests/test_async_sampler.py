"""AsyncBacktrackSampler: many generations in worker threads, each with a sampler of its own."""

from __future__ import annotations

import asyncio
import re
import threading

import pytest

from backtrack_sampler import AntiSlopStrategy, BacktrackSampler, FinishEvent, TextEvent
from backtrack_sampler.async_sampler import AsyncBacktrackSampler, run_concurrently
from scripted import EOS, check_stream, random_provider

VOCAB = [EOS, "a", "b", "ab", "ba", " ", "c"]


def make_sampler():
    provider = random_provider(VOCAB, seed=3)
    return BacktrackSampler(provider, AntiSlopStrategy(provider, ["ab", "b a"]))


def test_results_equal_the_sequential_ones_and_keep_their_order():
    prompts = ["a", "b", "ab", "ba", "a b", "bb"]
    expected = [make_sampler().generate_text(p, max_new_tokens=20, seed=i) for i, p in enumerate(prompts)]

    async def main():
        async with AsyncBacktrackSampler(make_sampler, max_concurrency=3) as sampler:
            tasks = [sampler.generate_text(p, max_new_tokens=20, seed=i) for i, p in enumerate(prompts)]
            return await asyncio.gather(*tasks)

    got = asyncio.run(main())
    assert [r.tokens for r in got] == [r.tokens for r in expected]
    assert [r.text for r in got] == [r.text for r in expected]


def test_no_more_than_max_concurrency_run_at_once():
    running, peak, lock = [0], [0], threading.Lock()

    def counting_sampler():
        sampler = make_sampler()
        original = sampler.provider._forward

        def forward(tokens):
            with lock:
                running[0] += 1
                peak[0] = max(peak[0], running[0])
            try:
                threading.Event().wait(0.001)
                return original(tokens)
            finally:
                with lock:
                    running[0] -= 1

        sampler.provider._forward = forward
        return sampler

    results = run_concurrently(counting_sampler, ["a"] * 8, concurrency=2, max_new_tokens=10, seed=0)
    assert all(not isinstance(r, BaseException) for r in results)
    assert 1 <= peak[0] <= 2


def test_stream_yields_the_events_and_leaving_early_stops_the_generation():
    async def main():
        sampler = AsyncBacktrackSampler(make_sampler, max_concurrency=1)
        events = [e async for e in sampler.stream("a", max_new_tokens=30, seed=1)]
        first = None
        async for event in sampler.stream("a", max_new_tokens=30, seed=1):
            if isinstance(event, TextEvent):
                first = event
                break
        sampler.close()
        return events, first

    events, first = asyncio.run(main())
    finish = check_stream(events)
    assert isinstance(finish, FinishEvent)
    assert first is not None and finish.text.startswith(first.text)


def test_errors_reach_the_caller_in_order():
    results = run_concurrently(make_sampler, ["a", "", "b"], concurrency=2, max_new_tokens=5)
    assert not isinstance(results[0], BaseException) and not isinstance(results[2], BaseException)
    assert isinstance(results[1], ValueError) and "prompt must not be empty" in str(results[1])

    async def streamed():
        async for _ in AsyncBacktrackSampler(make_sampler).stream("a", max_new_tokens=-1):
            pass

    with pytest.raises(ValueError, match="max_new_tokens must be an integer >= 0"):
        asyncio.run(streamed())


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="max_concurrency must be an integer >= 1, got 0"):
        AsyncBacktrackSampler(make_sampler, 0)
    with pytest.raises(TypeError, match="make_sampler must be a callable"):
        AsyncBacktrackSampler("sampler")
    results = run_concurrently(lambda: "not a sampler", ["a"], max_new_tokens=5)
    assert isinstance(results[0], TypeError) and "must return a BacktrackSampler" in str(results[0])


# -- the worker threads batch shares ----------------------------------------------------------------
def test_worker_threads_give_every_result_with_at_most_k_running():
    from backtrack_sampler.concurrency import WorkerThreads

    running, peak, lock = [0], [0], threading.Lock()

    def work(n):
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        threading.Event().wait(0.002)
        with lock:
            running[0] -= 1
        return n * n

    with WorkerThreads(3) as threads:
        got = {job: done.result() for job, done in threads.as_completed(range(20), work)}
    assert got == {n: n * n for n in range(20)} and 1 <= peak[0] <= 3


def test_leaving_the_worker_threads_early_stops_the_rest():
    from backtrack_sampler.concurrency import WorkerThreads

    started = []

    def work(n):
        started.append(n)
        if n == 0:
            raise ValueError("a bug")
        return n

    threads = WorkerThreads(1)
    with pytest.raises(ValueError, match="a bug"):
        for _, done in threads.as_completed(iter(range(100)), work):
            done.result()
    threads.close()
    assert threads.stop.is_set() and len(started) <= 3  # taken lazily, the queued ones cancelled
    with pytest.raises(ValueError, match="max_in_flight must be an integer >= 1, got 0"):
        WorkerThreads(0)


# -- on a local model: the slots of one batched llama.cpp context -----------------------------------
STARTS = ["Once upon a time", "The capital of France", "My favourite recipe", "Dear diary, today"]


@pytest.mark.llamacpp
def test_run_concurrently_on_batched_llamacpp_equals_each_prompt_alone(provider, smollm_path):
    from backtrack_sampler.models import load_batched

    # Prompts that share no prefix: llama.cpp's logits depend on how tokens are grouped into decodes (a prompt
    # evaluated whole or token by token differs in the last bits), so a prompt that reuses another one's cached
    # prefix may flip a near-tie; here every token is evaluated as it is when the prompt runs alone.
    prompts = [*STARTS, *(s.lower() for s in STARTS)]
    alone = [BacktrackSampler(provider).generate_text(p, max_new_tokens=24, temperature=0) for p in prompts]
    bans = ["the", "a"]
    # One llama.cpp thread: the test machine's cores are shared, and threads that wait on each other crawl then.
    with load_batched(smollm_path, n_ctx=512, threads=1, n_slots=4) as batched:
        results = run_concurrently(
            lambda: BacktrackSampler(batched.provider()), prompts, concurrency=4, max_new_tokens=24, temperature=0
        )
        assert batched.stats.max_sequences > 1  # they were decoded together

        def make_sampler():  # the README's pattern: a slot provider and a strategy per generation
            slot = batched.provider()
            return BacktrackSampler(slot, AntiSlopStrategy(slot, bans))

        banned = run_concurrently(make_sampler, prompts, concurrency=4, max_new_tokens=24, temperature=0)
    assert [r.tokens for r in results] == [r.tokens for r in alone]
    assert [r.text for r in results] == [r.text for r in alone]
    # Each sequence rewinds on its own while the others go on.
    assert sum(len(r.rewinds) for r in banned) > 0
    pattern = re.compile("|".join(rf"(?<!\w){b}(?!\w)" for b in bans), re.IGNORECASE)
    assert all(r.tokens and not pattern.search(r.text) for r in banned), [r.text for r in banned]
