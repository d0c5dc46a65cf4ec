"""One worker thread per model: requests queue in order, none is dropped, none shares the KV cache.

The event loop never runs the model. ``ModelWorker.submit`` puts a job on a
FIFO queue; the worker's thread runs jobs one at a time and hands each output
back to the job's event loop with ``call_soon_threadsafe``. A job whose client
went away is cancelled through its ``JobControl``: it is skipped if still
queued, and stops within a token if running.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import queue
import threading
import time
import weakref
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from backtrack_sampler.provider.base_provider import BaseProvider
from backtrack_sampler.server.control import JobControl
from backtrack_sampler.server.generation import GenerationPlan, Output, RequestRejected, run_plan

logger = logging.getLogger("backtrack_sampler.server")


@dataclass(frozen=True)
class JobFailed:
    """The generation raised: ``status`` 400 for a bad request the checks missed, 500 otherwise."""

    message: str
    status: int


@dataclass(frozen=True)
class JobEnded:
    """Nothing more will come for this job."""


@dataclass
class JobRecord:
    """What the worker remembers about a finished job (for ``/health`` and tests)."""

    job_id: int
    status: str  # "completed", "cancelled" or "failed"
    tokens_sampled: int
    tokens_after_cancel: int | None
    queued_s: float
    run_s: float


@dataclass
class Job:
    """A request's generation: its plan, its control, and where its outputs go."""

    plan: GenerationPlan
    loop: asyncio.AbstractEventLoop
    outputs: asyncio.Queue = field(default_factory=asyncio.Queue)
    control: JobControl = field(default_factory=JobControl)
    job_id: int = 0
    submitted: float = field(default_factory=time.perf_counter)

    def cancel(self) -> None:
        self.control.cancel()

    def put(self, item: Output | JobFailed | JobEnded) -> None:
        """Hand ``item`` to the event loop (called from the worker thread)."""
        try:
            self.loop.call_soon_threadsafe(self.outputs.put_nowait, item)
        except RuntimeError:  # the loop is closed: nobody is listening any more
            self.control.cancel()


class ModelWorker:
    """The single thread that runs every generation on ``provider``.

    Use ``ModelWorker.for_provider`` so that every app serving one provider
    shares one worker (and one queue).
    """

    _workers: weakref.WeakKeyDictionary[BaseProvider, ModelWorker] = weakref.WeakKeyDictionary()
    _workers_lock = threading.Lock()

    def __init__(self, provider: BaseProvider) -> None:
        self.provider = provider
        self._queue: queue.Queue[Job] = queue.Queue()
        self._ids = itertools.count(1)
        self._idle = threading.Condition()
        self._pending = 0
        self.running: Job | None = None
        self.history: deque[JobRecord] = deque(maxlen=256)
        self.counts = {"completed": 0, "cancelled": 0, "failed": 0}
        self._thread = threading.Thread(target=self._serve, name="backtrack-sampler-generate", daemon=True)
        self._thread.start()

    @classmethod
    def for_provider(cls, provider: BaseProvider) -> ModelWorker:
        with cls._workers_lock:
            worker = cls._workers.get(provider)
            if worker is None:
                worker = cls._workers[provider] = cls(provider)
            return worker

    def submit(self, plan: GenerationPlan) -> Job:
        """Queue a generation; call from the event loop that will read its outputs."""
        job = Job(plan, asyncio.get_running_loop(), job_id=next(self._ids))
        with self._idle:
            self._pending += 1
        self._queue.put(job)
        return job

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until no job is queued or running; ``False`` on timeout."""
        with self._idle:
            return self._idle.wait_for(lambda: self._pending == 0, timeout)

    def status(self) -> dict[str, Any]:
        return {"queued_or_running": self._pending, **self.counts}

    def _serve(self) -> None:
        while True:
            job = self._queue.get()
            started = time.perf_counter()
            status = "completed"
            try:
                if job.control.cancelled:
                    status = "cancelled"
                else:
                    self.running = job
                    run_plan(self.provider, job.plan, job.control, job.put)
                    if job.control.cancelled:
                        status = "cancelled"
            except RequestRejected as exc:
                status = "failed"
                job.put(JobFailed(str(exc), 400))
            except Exception as exc:  # a bug: report it to the client, keep serving
                logger.exception("generation %d failed", job.job_id)
                status = "failed"
                job.put(JobFailed(f"generation failed: {type(exc).__name__}: {exc}", 500))
            finally:
                self.running = None
                job.put(JobEnded())
                self._finish(job, status, started)

    def _finish(self, job: Job, status: str, started: float) -> None:
        now = time.perf_counter()
        record = JobRecord(
            job.job_id,
            status,
            job.control.tokens_sampled,
            job.control.tokens_after_cancel,
            queued_s=started - job.submitted,
            run_s=now - started,
        )
        self.history.append(record)
        with self._idle:
            self.counts[status] += 1
            self._pending -= 1
            self._idle.notify_all()
