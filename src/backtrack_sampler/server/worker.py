"""The worker threads that run every generation: one per sequence the model decodes at once.

The event loop never runs the model. ``ModelWorker.submit`` puts each choice
of a request on one FIFO queue; the worker's threads take them in arrival
order and hand each output back to the job's event loop with
``call_soon_threadsafe``.

- A provider (one sequence at a time) gets one thread: requests run one after
  another, none sharing the KV cache.
- A ``SequencePool`` (``BatchedLlamacpp``: N sequences decoded together) gets
  N threads, each with a provider of its own. Up to N choices run at once,
  each joining the running batch when it starts and leaving it when it ends
  (continuous batching); the choices of one request run side by side; the
  rest wait in the queue, in arrival order.

A job whose client went away is cancelled through its ``JobControl``: its
choices are skipped if still queued, and stop within a token if running.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import queue
import threading
import time
import weakref
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from backtrack_sampler.core.base_provider import BackendError
from backtrack_sampler.provider.base_provider import BaseProvider
from backtrack_sampler.server.control import JobControl
from backtrack_sampler.server.generation import ChoiceSpec, GenerationPlan, Output, RequestRejected, run_choice

logger = logging.getLogger("backtrack_sampler.server")


@runtime_checkable
class SequencePool(Protocol):
    """A model that decodes ``n_slots`` sequences together (``BatchedLlamacpp``).

    ``provider()`` gives a provider for one generation at a time; a provider
    that never generates (the server plans requests with one) holds no slot.
    """

    n_slots: int

    def provider(self) -> BaseProvider: ...


@dataclass(frozen=True)
class JobFailed:
    """The generation raised: ``status`` 400, 502 or 500.

    400 for a bad request the checks missed (naming ``param``), 502 when the
    backend failed (``BackendError``: a remote engine), 500 otherwise.
    """

    message: str
    status: int
    param: str | None = None


@dataclass(frozen=True)
class JobEnded:
    """Nothing more will come for this job."""


@dataclass
class JobRecord:
    """What the worker remembers about a finished job (for ``/health`` and tests).

    ``most_choices_at_once`` is the most of its choices that ran at the same
    time (1 with a single-sequence provider).
    """

    job_id: int
    status: str  # "completed", "cancelled" or "failed"
    tokens_sampled: int
    tokens_after_cancel: int | None
    queued_s: float
    run_s: float
    most_choices_at_once: int = 1


@dataclass
class Job:
    """A request's generation: its plan, its control, and where its outputs go."""

    plan: GenerationPlan
    loop: asyncio.AbstractEventLoop
    outputs: asyncio.Queue = field(default_factory=asyncio.Queue)
    control: JobControl = field(default_factory=JobControl)
    job_id: int = 0
    submitted: float = field(default_factory=time.perf_counter)
    # Kept by the worker, under its lock:
    started: float | None = None
    choices_left: int = 0
    choices_running: int = 0
    most_choices_at_once: int = 0
    failure: JobFailed | None = None

    def cancel(self) -> None:
        self.control.cancel()

    def put(self, item: Output | JobFailed | JobEnded) -> None:
        """Hand ``item`` to the event loop (called from a worker thread)."""
        try:
            self.loop.call_soon_threadsafe(self.outputs.put_nowait, item)
        except RuntimeError:  # the loop is closed: nobody is listening any more
            self.control.cancel()


class ModelWorker:
    """The threads that run every generation on one model: one for a provider, N for a ``SequencePool``.

    Use ``ModelWorker.for_provider`` so that every app serving one model
    shares one worker (and one queue).

    Attributes:
        parallel: how many choices may run at once.
        history: the records of the last finished jobs.
        counts: finished jobs by status.
    """

    _workers: weakref.WeakKeyDictionary[Any, ModelWorker] = weakref.WeakKeyDictionary()
    _workers_lock = threading.Lock()

    def __init__(self, model: BaseProvider | SequencePool) -> None:
        if isinstance(model, BaseProvider):
            providers = [model]
        elif isinstance(model, SequencePool):
            providers = [model.provider() for _ in range(model.n_slots)]
        else:
            raise TypeError(f"model must be a BaseProvider or a SequencePool, got {type(model).__name__}")
        self.model = model
        self.parallel = len(providers)
        self._queue: queue.Queue[tuple[Job, ChoiceSpec]] = queue.Queue()
        self._ids = itertools.count(1)
        self._lock = threading.Condition()
        self._pending = 0  # jobs queued or running
        self._running: list[Job] = []  # one entry per running choice, oldest first
        self.history: deque[JobRecord] = deque(maxlen=256)
        self.counts = {"completed": 0, "cancelled": 0, "failed": 0}
        for i, provider in enumerate(providers):
            name = f"backtrack-sampler-generate-{i}"
            threading.Thread(target=self._serve, args=(provider,), name=name, daemon=True).start()

    @classmethod
    def for_provider(cls, model: BaseProvider | SequencePool) -> ModelWorker:
        with cls._workers_lock:
            worker = cls._workers.get(model)
            if worker is None:
                worker = cls._workers[model] = cls(model)
            return worker

    @property
    def running(self) -> Job | None:
        """The job whose choice started last among those running now, or ``None``."""
        with self._lock:
            return self._running[-1] if self._running else None

    def submit(self, plan: GenerationPlan) -> Job:
        """Queue every choice of a generation; call from the event loop that will read its outputs."""
        job = Job(plan, asyncio.get_running_loop(), job_id=next(self._ids), choices_left=len(plan.choices))
        with self._lock:  # counted and queued together: what /health counts is in the queue, in order
            self._pending += 1
            for choice in plan.choices:
                self._queue.put((job, choice))
        if not plan.choices:
            job.put(JobEnded())
            self._record(job, "completed", time.perf_counter())
        return job

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until no job is queued or running; ``False`` on timeout."""
        with self._lock:
            return self._lock.wait_for(lambda: self._pending == 0, timeout)

    def status(self) -> dict[str, Any]:
        """Jobs queued or running, choices running, how many may run at once, and finished jobs by status."""
        with self._lock:
            running = len(self._running)
            return {"queued_or_running": self._pending, "running": running, "parallel": self.parallel, **self.counts}

    def batch_stats(self) -> dict[str, Any] | None:
        """The ``SequencePool``'s counters (decodes, tokens, most sequences in one step...), if it keeps any."""
        stats = getattr(self.model, "stats", None)
        if stats is None or not dataclasses.is_dataclass(stats):
            return None
        return {"slots": self.parallel, **dataclasses.asdict(stats)}

    # -- the worker threads ---------------------------------------------------------------
    def _serve(self, provider: BaseProvider) -> None:
        while True:
            job, choice = self._queue.get()
            self._start(job)
            try:
                run_choice(provider, job.plan, choice, job.control, job.put)
            except RequestRejected as exc:
                self._fail(job, JobFailed(str(exc), 400, exc.param))
            except BackendError as exc:  # the remote engine failed: 502, as a gateway answers
                logger.warning("generation %d (choice %d): the backend failed: %s", job.job_id, choice.index, exc)
                self._fail(job, JobFailed(f"the model backend failed: {exc}", 502))
            except Exception as exc:  # a bug: report it to the client, keep serving
                logger.exception("generation %d (choice %d) failed", job.job_id, choice.index)
                self._fail(job, JobFailed(f"generation failed: {type(exc).__name__}: {exc}", 500))
            finally:
                self._end(job)

    def _start(self, job: Job) -> None:
        with self._lock:
            if job.started is None:
                job.started = time.perf_counter()
            self._running.append(job)
            job.choices_running += 1
            job.most_choices_at_once = max(job.most_choices_at_once, job.choices_running)

    def _fail(self, job: Job, failure: JobFailed) -> None:
        """Report the first failure of a job, and stop its other choices."""
        with self._lock:
            first = job.failure is None
            job.failure = job.failure or failure
        if first:
            job.put(failure)
            job.cancel()

    def _end(self, job: Job) -> None:
        with self._lock:
            self._running.remove(job)
            job.choices_running -= 1
            job.choices_left -= 1
            if job.choices_left > 0:
                return
        status = _status(job)  # before JobEnded: a client that has its answer may cancel after it
        job.put(JobEnded())
        self._record(job, status, time.perf_counter())

    def _record(self, job: Job, status: str, now: float) -> None:
        started = job.started if job.started is not None else now
        record = JobRecord(
            job.job_id,
            status,
            job.control.tokens_sampled,
            job.control.tokens_after_cancel,
            queued_s=started - job.submitted,
            run_s=now - started,
            most_choices_at_once=max(1, job.most_choices_at_once),
        )
        with self._lock:
            self.history.append(record)
            self.counts[status] += 1
            self._pending -= 1
            self._lock.notify_all()


def _status(job: Job) -> str:
    if job.failure is not None:
        return "failed"
    return "cancelled" if job.control.cancelled else "completed"
