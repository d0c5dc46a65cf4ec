"""Many generations in flight at once, for engines that batch (vLLM, SGLang, ``backtrack-sampler serve``).

The engine is synchronous, and a provider and a strategy hold the state of
one generation, so each generation runs in a worker thread with its own
sampler, built by a factory. A remote provider spends its time waiting on HTTP
(which releases the GIL), so the remote engine sees as many sequences as there
are threads, and batches them.

Example:
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
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from backtrack_sampler.core.engine import BacktrackSampler, GenerationResult
from backtrack_sampler.core.events import Event

SamplerFactory = Callable[[], BacktrackSampler]
_END = object()


class AsyncBacktrackSampler:
    """Runs generations concurrently in worker threads, one fresh sampler per generation.

    Args:
        make_sampler: builds the sampler of one generation (a provider and a
            strategy of its own; ``OpenAICompatibleProvider.spawn`` shares the
            server connection).
        max_concurrency: the most generations running at once.
    """

    def __init__(self, make_sampler: SamplerFactory, max_concurrency: int = 16) -> None:
        if not callable(make_sampler):
            raise TypeError(f"make_sampler must be a callable returning a BacktrackSampler, got {make_sampler!r}")
        if isinstance(max_concurrency, bool) or not isinstance(max_concurrency, int) or max_concurrency < 1:
            raise ValueError(f"max_concurrency must be an integer >= 1, got {max_concurrency!r}")
        self.make_sampler = make_sampler
        self.max_concurrency = max_concurrency
        self._executor = ThreadPoolExecutor(max_concurrency, thread_name_prefix="backtrack-sampler")
        self._slots: asyncio.Semaphore | None = None

    async def stream(self, prompt: str | Sequence[int], **kwargs: Any) -> AsyncIterator[Event]:
        """The events of one generation (``BacktrackSampler.stream``'s arguments), as they come.

        Leaving the loop early stops the generation after its current token.
        """
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.max_concurrency)
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        stop = threading.Event()

        def produce() -> None:
            try:
                sampler = self.make_sampler()
                if not isinstance(sampler, BacktrackSampler):
                    raise TypeError(f"make_sampler must return a BacktrackSampler, got {type(sampler).__name__}")
                for event in sampler.stream(prompt, **kwargs):
                    loop.call_soon_threadsafe(queue.put_nowait, event)
                    if stop.is_set():
                        break
            except BaseException as exc:  # handed to the consumer, raised there
                loop.call_soon_threadsafe(queue.put_nowait, exc)
            finally:
                loop.call_soon_threadsafe(queue.put_nowait, _END)

        async with self._slots:
            future = loop.run_in_executor(self._executor, produce)
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
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.max_concurrency)
        loop = asyncio.get_running_loop()

        def run() -> GenerationResult:
            sampler = self.make_sampler()
            if not isinstance(sampler, BacktrackSampler):
                raise TypeError(f"make_sampler must return a BacktrackSampler, got {type(sampler).__name__}")
            return sampler.generate_text(prompt, **kwargs)

        async with self._slots:
            return await loop.run_in_executor(self._executor, run)

    async def generate_many(
        self, prompts: Sequence[str | Sequence[int]], **kwargs: Any
    ) -> list[GenerationResult | BaseException]:
        """Run one generation per prompt, ``max_concurrency`` at a time; results (or errors) in order."""
        tasks = [self.generate_text(prompt, **kwargs) for prompt in prompts]
        return list(await asyncio.gather(*tasks, return_exceptions=True))

    def close(self) -> None:
        """Stop the worker threads (after the running generations)."""
        self._executor.shutdown(wait=True)

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
    """Blocking helper: ``AsyncBacktrackSampler.generate_many`` in a fresh event loop."""

    async def main() -> list[GenerationResult | BaseException]:
        async with AsyncBacktrackSampler(make_sampler, concurrency) as sampler:
            return await sampler.generate_many(prompts, **kwargs)

    return asyncio.run(main())
