"""Reading a job's outputs on the event loop: every generating endpoint, whatever its dialect, waits here.

A job (``worker.Job``) puts its outputs on an ``asyncio.Queue`` from the
worker threads; the endpoints read them with ``collect`` (a whole response,
returning early if the client goes away) or ``outputs`` (a stream). Either
way the job is cancelled when the reader stops reading: a client that
disconnects stops its generation within a token.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

from starlette.requests import Request

from backtrack_sampler.server.generation import Output
from backtrack_sampler.server.worker import Job, JobEnded, JobFailed


async def collect(request: Request, job: Job, sink: Callable[[Output], None]) -> JobFailed | None:
    """Pass every output of ``job`` to ``sink``; return early (cancelling it) if the client disconnects.

    Returns the failure that ended the job, or ``None``.
    """
    disconnected = asyncio.ensure_future(wait_for_disconnect(request))
    try:
        while True:
            getter = asyncio.ensure_future(job.outputs.get())
            await asyncio.wait({getter, disconnected}, return_when=asyncio.FIRST_COMPLETED)
            if not getter.done():
                getter.cancel()
                job.cancel()
                return None
            item = getter.result()
            if isinstance(item, JobEnded):
                return None
            if isinstance(item, JobFailed):
                return item
            sink(item)
    finally:
        disconnected.cancel()
        job.cancel()  # no-op once finished


async def outputs(job: Job) -> AsyncIterator[Output | JobFailed]:
    """The outputs of ``job`` until it ends (a ``JobFailed`` is the last one); leaving early cancels it."""
    try:
        while True:
            item = await job.outputs.get()
            if isinstance(item, JobEnded):
                return
            yield item
            if isinstance(item, JobFailed):
                return
    finally:
        job.cancel()


async def wait_for_disconnect(request: Request) -> None:
    """Return when the client of ``request`` has gone away (its body was read already)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return
