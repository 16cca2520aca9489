"""The in-process queue: the same interface as the Redis queue, for one machine without Redis.

`hbscreen bot` uses it when REDIS_URL is unset: the composition root (`hbscreen.compose`) runs
the worker loop of `hbscreen.inference.worker` against it as a task in the same event loop,
with the models in a thread pool, so a slow model never blocks the bot. Nothing survives a
restart (that is what Redis is for).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import AsyncIterator
from dataclasses import dataclass

from ..result import ScreeningResult
from .protocol import (
    Delivery,
    Job,
    JobOutcome,
    OutcomeStatus,
    OutcomeWaiters,
    QueueBusy,
    QueueConfig,
    Skipped,
)

FINAL_KEPT = 10_000  # final states remembered (late finish, cancel after the end)
SENT_KEPT = 100_000  # delivery claims remembered


@dataclass
class _Entry:
    job: Job
    image: bytes
    tries: int = 0
    in_flight: bool = False
    handle: int = 0


def _remember(d: OrderedDict[str, str], key: str, value: str, cap: int) -> None:
    d[key] = value
    d.move_to_end(key)
    while len(d) > cap:
        d.popitem(last=False)


class MemoryQueue(OutcomeWaiters):
    """Both sides (`JobQueue` and `JobSource`) in one process."""

    def __init__(self, config: QueueConfig | None = None) -> None:
        config = config or QueueConfig()
        self.max_depth = config.max_depth
        self.job_deadline_s = config.job_deadline_s
        self.max_tries = config.max_tries
        self.max_queued_bytes = config.max_queued_bytes
        self._entries: dict[str, _Entry] = {}
        self._ready: deque[str] = deque()
        self._final: OrderedDict[str, str] = OrderedDict()
        self._sent: OrderedDict[str, str] = OrderedDict()
        self._out: asyncio.Queue[JobOutcome] = asyncio.Queue()
        self._wake = asyncio.Event()
        self.dead_letters: deque[JobOutcome] = deque(maxlen=1000)
        self._next_sweep = 0.0
        self._init_waiters()

    # ---------------------------------------------------------------- submitter side
    async def submit(self, image: bytes, job: Job) -> str:
        if len(self._entries) >= self.max_depth:
            raise QueueBusy(f"{self.max_depth} jobs are waiting")
        queued = sum(len(e.image) for e in self._entries.values())
        if self._entries and queued + len(image) > self.max_queued_bytes:
            raise QueueBusy("the queued images fill the queue's memory")
        job = job.model_copy()
        job.id = job.id or uuid.uuid4().hex
        if job.id in self._entries or job.id in self._final:
            raise ValueError("job id in use")
        now = time.time()
        job.submitted_at = now
        job.deadline_at = job.deadline_at or now + self.job_deadline_s
        job.tries = 0
        self._entries[job.id] = _Entry(job, image)
        self._ready.append(job.id)
        self._wake.set()
        return job.id

    async def cancel(self, job_id: str) -> bool:
        entry = self._entries.pop(job_id, None)
        if entry is None:
            return False
        _remember(self._final, job_id, "cancelled", FINAL_KEPT)
        with contextlib.suppress(ValueError):
            self._ready.remove(job_id)
        return True

    async def claim_delivery(self, job_id: str) -> bool:
        if job_id in self._sent:
            return False
        _remember(self._sent, job_id, "1", SENT_KEPT)
        return True

    async def depth(self) -> int:
        return len(self._entries)

    async def outcomes(self) -> AsyncIterator[JobOutcome]:
        while True:
            yield await self._out.get()

    async def close(self) -> None:
        self._wake.set()
        await self._stop_pump()

    # ---------------------------------------------------------------- worker side
    async def take(
        self, consumer: str, n: int, block_s: float
    ) -> tuple[list[Delivery], list[Skipped]]:
        if not self._ready:
            self._wake.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), block_s)
        ready: list[Delivery] = []
        skipped: list[Skipped] = []
        while self._ready and len(ready) < n:
            job_id = self._ready.popleft()
            entry = self._entries.get(job_id)
            if entry is None:
                continue
            entry.tries += 1
            entry.handle += 1
            entry.in_flight = True
            job = entry.job.model_copy(update={"tries": entry.tries})
            d = Delivery(job=job, image=entry.image, handle=str(entry.handle))
            if job.deadline_at and time.time() > job.deadline_at:
                await self.finish(d, "expired", None)
                skipped.append("expired")
                continue
            ready.append(d)
        return ready, skipped

    async def finish(
        self,
        d: Delivery,
        status: OutcomeStatus,
        result: ScreeningResult | None,
        heatmap_jpeg: bytes | None = None,
        reason: str = "",
    ) -> str:
        entry = self._entries.pop(d.job.id, None)
        if entry is None:
            return self._final.get(d.job.id, "gone")
        _remember(self._final, d.job.id, status, FINAL_KEPT)
        outcome = JobOutcome(job=d.job, status=status, result=result, heatmap_jpeg=heatmap_jpeg)
        if status == "dead":
            self.dead_letters.append(outcome)
        self._out.put_nowait(outcome)
        return status

    async def retry(self, d: Delivery) -> str:
        return self._requeue(d, handback=False)

    async def release(self, d: Delivery) -> str:
        return self._requeue(d, handback=True)

    def _requeue(self, d: Delivery, handback: bool) -> str:
        entry = self._entries.get(d.job.id)
        if entry is None:
            return self._final.get(d.job.id, "gone")
        entry.in_flight = False
        if handback:
            entry.tries -= 1
            self._ready.appendleft(d.job.id)
        else:
            self._ready.append(d.job.id)
        self._wake.set()
        return "requeued"

    async def keep_alive(self, consumer: str, ds: list[Delivery]) -> None:
        return None

    async def housekeeping(self, consumer: str, info: dict[str, object]) -> None:
        now = time.monotonic()
        if now < self._next_sweep:
            return
        self._next_sweep = now + 0.5
        wall = time.time()
        for job_id, entry in list(self._entries.items()):
            if not entry.in_flight and entry.job.deadline_at and wall > entry.job.deadline_at:
                d = Delivery(job=entry.job.model_copy(update={"tries": entry.tries}), image=b"")
                await self.finish(d, "expired", None)
                with contextlib.suppress(ValueError):
                    self._ready.remove(job_id)
