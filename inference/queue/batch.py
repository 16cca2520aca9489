"""Send a batch of photos through the workers (`hbscreen screen DIR --queue redis://...`)."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

from ..aio import cancel_and_wait
from .protocol import Job, JobOutcome, JobQueue, QueueBusy

BUSY_BACKOFF_S = 0.2
STOP_S = 5.0  # leaving early: how long the reader and the submitter get to stop


async def screen_via_queue(
    queue: JobQueue,
    items: Sequence[tuple[str, bytes]],
    group: str,
    *,
    cutout: bool = False,
    danger_signs: bool = False,
    timeout: float | None = None,
    max_in_flight: int = 50,
) -> AsyncIterator[tuple[str, JobOutcome]]:
    """Submit every (path, bytes) and yield (path, outcome) as outcomes arrive.

    At most `max_in_flight` of the batch's jobs wait at a time, so a big batch leaves room in
    the queue for people in the chat; a busy queue slows the batch down (it waits and submits
    again) instead of failing it. Each job still has the queue's deadline, after which its
    outcome is "expired". Paths stay here: a job carries only the item's index. `timeout`
    bounds the whole batch."""
    pending: dict[str, str] = {}  # job id -> path
    room = asyncio.Semaphore(max(1, max_in_flight))

    async def produce() -> None:
        for i in range(len(items)):
            job = Job(group=group, cutout=cutout, danger_signs=danger_signs)
            job.id, job.reply_to = uuid.uuid4().hex, {"item": str(i)}
            await room.acquire()
            # Read the item only now (a lazy sequence reads its file here), and let go of its
            # bytes once submitted: the batch holds one photo at a time, not the whole batch.
            path, data = items[i]
            pending[job.id] = path  # before submit: its outcome may come back at once
            while True:
                try:
                    await queue.submit(data, job)
                    break
                except QueueBusy:
                    await asyncio.sleep(BUSY_BACKOFF_S)
            del data

    producer = asyncio.create_task(produce())
    outcomes = queue.outcomes()
    nxt: asyncio.Future[JobOutcome] | None = None
    remaining = len(items)
    loop = asyncio.get_running_loop()
    until = None if timeout is None else loop.time() + timeout
    try:
        while remaining:
            left = None if until is None else max(0.0, until - loop.time())
            if nxt is None:
                nxt = asyncio.ensure_future(anext(outcomes))
            waiting: set[asyncio.Future[Any]] = {nxt} if producer.done() else {nxt, producer}
            done, _ = await asyncio.wait(waiting, timeout=left, return_when="FIRST_COMPLETED")
            if producer in done and producer.exception() is not None:
                raise producer.exception()  # type: ignore[misc]
            if nxt not in done:
                if not done:
                    msg = f"{remaining} of {len(items)} photos had no outcome in time"
                    raise TimeoutError(msg)
                continue
            o, nxt = nxt.result(), None
            path = pending.pop(o.job.id, None)
            if path is None:
                continue  # not this batch's (or a repeat after a reconnect)
            remaining -= 1
            room.release()
            yield path, o
    finally:
        # Not cancel() and await: a cancel lost in redis-py would wait for ever (..aio).
        await cancel_and_wait([t for t in (producer, nxt) if t is not None], STOP_S)
        with contextlib.suppress(Exception):
            await outcomes.aclose()  # type: ignore[attr-defined]
        # Left early (interrupted, timed out): the rest of the batch must not be screened for
        # nobody, nor its results wait in Redis; cancelled jobs publish no outcome.
        for job_id in list(pending):
            with contextlib.suppress(Exception):
                await queue.cancel(job_id)
