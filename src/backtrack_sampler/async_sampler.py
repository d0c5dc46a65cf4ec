"""Many generations in flight at once: on a local llama.cpp model, or an engine that batches (vLLM, SGLang, serve).

``AsyncBacktrackSampler`` gives each generation a fresh sampler, built by a
factory, and runs it in a worker thread (``concurrency.WorkerThreads``);
``run_concurrently`` is the blocking form for a list of prompts. The factory
decides where the sequences are decoded together:

- a local llama.cpp model: ``BatchedLlamacpp(llm, n_slots=N)`` (or
  ``models.load_batched``); ``batched.provider()`` is a provider on one of its
  N slots, and one ``llama_decode`` per step serves every running sequence.
  Give ``concurrency=N``: more generations wait for a slot, fewer leave slots
  idle. (The transformers backend does not batch: one sequence at a time.)
- a remote engine: ``OpenAICompatibleProvider.spawn()``, one per sequence.

Each sequence keeps its own strategy and rewinds on its own.

Example:
    >>> with load_batched(n_slots=8) as batched:  # doctest: +SKIP
    ...     def make_sampler():  # a slot provider and a strategy per generation
    ...         provider = batched.provider()
    ...         return BacktrackSampler(provider, AntiSlopStrategy(provider, ["tapestry"]))
    ...     results = run_concurrently(make_sampler, prompts, concurrency=8, max_new_tokens=200)
    >>> base = OpenAICompatibleProvider(url, "smollm2", tokenizer=gguf)  # doctest: +SKIP
    >>> def make_sampler():  # doctest: +SKIP
    ...     provider = base.spawn()  # same server and HTTP client, state of its own
    ...     return BacktrackSampler(provider, AntiSlopStrategy(provider, ["tapestry"]))
    >>> results = run_concurrently(make_sampler, prompts, concurrency=16, max_new_tokens=200)  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from backtrack_sampler.concurrency import WorkerThreads
from backtrack_sampler.core.checks import check_int
from backtrack_sampler.core.engine import BacktrackSampler, GenerationResult
from backtrack_sampler.core.events import Event

SamplerFactory = Callable[[], BacktrackSampler]
_END = object()


class AsyncBacktrackSampler:
    """Runs generations concurrently in worker threads, one fresh sampler per generation.

    Args:
        make_sampler: builds the sampler of one generation (a provider and a
            strategy of its own): ``BatchedLlamacpp.provider()`` for a slot of
            a local llama.cpp model, ``OpenAICompatibleProvider.spawn()`` for a
            remote engine.
        max_concurrency: the most generations running at once (with a
            ``BatchedLlamacpp``, its ``n_slots``).
    """

    def __init__(self, make_sampler: SamplerFactory, max_concurrency: int = 16) -> None:
        _check_arguments(make_sampler, max_concurrency)
        self.make_sampler = make_sampler
        self.max_concurrency = max_concurrency
        self._threads = WorkerThreads(max_concurrency)
        self._slots: asyncio.Semaphore | None = None

    async def stream(self, prompt: str | Sequence[int], **kwargs: Any) -> AsyncIterator[Event]:
        """The events of one generation (``BacktrackSampler.stream``'s arguments), as they come.

        Leaving the loop early stops the generation after its current token.
        """
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        stop = threading.Event()

        def produce() -> None:
            try:
                for event in new_sampler(self.make_sampler).stream(prompt, **kwargs):
                    loop.call_soon_threadsafe(queue.put_nowait, event)
                    if stop.is_set():
                        break
            except BaseException as exc:  # handed to the consumer, raised there
                loop.call_soon_threadsafe(queue.put_nowait, exc)
            finally:
                loop.call_soon_threadsafe(queue.put_nowait, _END)

        async with self._slot():
            future = asyncio.wrap_future(self._threads.submit(produce))
            try:
                while True:
                    item = await queue.get()
                    if item is _END:
                        break
                    if isinstance(item, BaseException):
                        raise item
                    yield item
            finally:
                stop.set()
                await asyncio.shield(future)

    async def generate_text(self, prompt: str | Sequence[int], **kwargs: Any) -> GenerationResult:
        """Run one generation in a worker thread; its final text, tokens, finish reason and stats."""
        async with self._slot():
            return await asyncio.wrap_future(self._threads.submit(_generate_text, self.make_sampler, prompt, kwargs))

    async def generate_many(
        self, prompts: Sequence[str | Sequence[int]], **kwargs: Any
    ) -> list[GenerationResult | BaseException]:
        """Run one generation per prompt, ``max_concurrency`` at a time; results (or errors) in order."""
        tasks = [self.generate_text(prompt, **kwargs) for prompt in prompts]
        return list(await asyncio.gather(*tasks, return_exceptions=True))

    def close(self) -> None:
        """Stop the worker threads (after the running generations)."""
        self._threads.close()

    def _slot(self) -> asyncio.Semaphore:
        """One of ``max_concurrency`` slots; a generation waits here rather than in the threads' queue."""
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.max_concurrency)
        return self._slots

    async def __aenter__(self) -> AsyncBacktrackSampler:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()


def run_concurrently(
    make_sampler: SamplerFactory,
    prompts: Sequence[str | Sequence[int]],
    concurrency: int = 16,
    **kwargs: Any,
) -> list[GenerationResult | BaseException]:
    """Run one generation per prompt, ``concurrency`` at a time, and wait; results (or errors) in order.

    Each generation gets a fresh sampler from ``make_sampler``; ``kwargs`` go
    to ``BacktrackSampler.generate_text``. Blocks; works inside or outside an
    event loop. On a local llama.cpp model, build the samplers on the slots of
    one ``BatchedLlamacpp`` and give ``concurrency`` its ``n_slots``::

        with load_batched(n_slots=8) as batched:
            results = run_concurrently(lambda: BacktrackSampler(batched.provider()), prompts, concurrency=8)
    """
    _check_arguments(make_sampler, concurrency)
    results: list[GenerationResult | BaseException] = [None] * len(prompts)  # type: ignore[list-item]
    with WorkerThreads(concurrency) as threads:
        jobs = range(len(prompts))
        for index, future in threads.as_completed(jobs, lambda i: _generate_text(make_sampler, prompts[i], kwargs)):
            error = future.exception()
            results[index] = error if error is not None else future.result()
    return results


def new_sampler(make_sampler: SamplerFactory) -> BacktrackSampler:
    """The sampler of one generation, from the factory; a ``TypeError`` if it is not a ``BacktrackSampler``."""
    sampler = make_sampler()
    if not isinstance(sampler, BacktrackSampler):
        raise TypeError(f"make_sampler must return a BacktrackSampler, got {type(sampler).__name__}")
    return sampler


def _generate_text(
    make_sampler: SamplerFactory, prompt: str | Sequence[int], kwargs: dict[str, Any]
) -> GenerationResult:
    return new_sampler(make_sampler).generate_text(prompt, **kwargs)


def _check_arguments(make_sampler: Any, max_concurrency: Any) -> None:
    if not callable(make_sampler):
        raise TypeError(f"make_sampler must be a callable returning a BacktrackSampler, got {make_sampler!r}")
    check_int("max_concurrency", max_concurrency, low=1)
