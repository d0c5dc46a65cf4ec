"""Worker threads for many generations at once (``WorkerThreads``), shared by ``async_sampler`` and ``batch``.

The engine is synchronous, and a provider and a strategy hold the state of
one generation, so concurrent generations run in worker threads, each with a
sampler of its own. A remote provider spends its time waiting on HTTP, and a
slot of a ``BatchedLlamacpp`` waits for the shared decode (both release the
GIL), so the engine sees as many sequences as there are threads, and batches
them.

``WorkerThreads`` runs at most ``max_in_flight`` jobs at once, hands results
back as they complete, and has one ``stop`` flag: set when the caller leaves
early (an exception, Ctrl-C), it keeps queued jobs from starting and tells
the running ones to end after their current token.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any, TypeVar

from backtrack_sampler.core.checks import check_int

J = TypeVar("J")
R = TypeVar("R")
_NO_JOB = object()
_POLL_SECONDS = 0.5  # how often the waiting thread wakes up (a Ctrl-C is seen by then at the latest)


class WorkerThreads:
    """A pool of ``max_in_flight`` worker threads with one stop flag.

    Args:
        max_in_flight: the most jobs running at once (the number of threads).
        name: the prefix of the threads' names.

    Example:
        >>> with WorkerThreads(4) as threads:  # doctest: +SKIP
        ...     for prompt, done in threads.as_completed(prompts, generate_one):
        ...         print(prompt, done.result())
    """

    def __init__(self, max_in_flight: int, name: str = "backtrack-sampler") -> None:
        self.max_in_flight = check_int("max_in_flight", max_in_flight, low=1)
        self.stop = threading.Event()
        """Set when the jobs should end: queued ones do not start, running ones should check it."""
        self._executor = ThreadPoolExecutor(self.max_in_flight, thread_name_prefix=name)

    def submit(self, fn: Callable[..., R], /, *args: Any) -> Future[R]:
        """Run ``fn(*args)`` in a worker thread when one is free."""
        return self._executor.submit(fn, *args)

    def as_completed(self, jobs: Iterable[J], work: Callable[[J], R]) -> Iterator[tuple[J, Future[R]]]:
        """Run ``work(job)`` for every job; yield ``(job, future)`` as each one ends.

        Jobs are taken from ``jobs`` lazily, at most ``2 * max_in_flight``
        ahead of the results, and none once ``stop`` is set. Jobs that end
        together come in the order they were given. ``future.result()`` gives
        the result or raises what ``work`` raised. Leaving the loop early (a
        ``break``, an exception) sets ``stop``, cancels the jobs not started
        and waits for the running ones.
        """
        queued = iter(jobs)
        pending: dict[Future[R], tuple[int, J]] = {}
        submitted = 0
        try:
            while True:
                while not self.stop.is_set() and len(pending) < 2 * self.max_in_flight:
                    job = next(queued, _NO_JOB)
                    if job is _NO_JOB:
                        break
                    pending[self.submit(work, job)] = (submitted, job)
                    submitted += 1
                if not pending:
                    return
                finished, _ = wait(pending, timeout=_POLL_SECONDS, return_when=FIRST_COMPLETED)
                for future in sorted(finished, key=lambda f: pending[f][0]):
                    _, job = pending.pop(future)
                    yield job, future
        finally:
            if pending:  # left early
                self.stop.set()
                for future in pending:
                    future.cancel()
                wait(pending)

    def close(self) -> None:
        """Set ``stop``, cancel the queued jobs and wait for the running ones."""
        self.stop.set()
        self._executor.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> WorkerThreads:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
