"""The in-process queue: the same interface as the Redis queue, for one machine without Redis.

`hbscreen bot` uses it when REDIS_URL is unset; `start_workers()` runs the worker loop of
`hbscreen.inference.worker` as a task in the same event loop, with the models in a thread pool, so a
slow model never blocks the bot. Nothing survives a restart (that is what Redis is for).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..result import ScreeningResult
from .base import (
    Delivery,
    Job,
    JobOutcome,
    OutcomeStatus,
    OutcomeWaiters,
    QueueBusy,
    Skipped,
)

if TYPE_CHECKING:
    from ..worker import Process

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

    def __init__(
        self, *, max_depth: int = 200, job_deadline_s: float = 120.0, max_tries: int = 3
    ) -> None:
        self.max_depth = max_depth
        self.job_deadline_s = job_deadline_s
        self.max_tries = max_tries
        self._entries: dict[str, _Entry] = {}
        self._ready: deque[str] = deque()
        self._final: OrderedDict[str, str] = OrderedDict()
        self._sent: OrderedDict[str, str] = OrderedDict()
        self._out: asyncio.Queue[JobOutcome] = asyncio.Queue()
        self._wake = asyncio.Event()
        self.dead_letters: deque[JobOutcome] = deque(maxlen=1000)
        self._next_sweep = 0.0
        self._workers: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self._worker_args: dict[str, object] | None = None
        self._init_waiters()

    # ---------------------------------------------------------------- in-process workers
    def start_workers(
        self,
        process: Process | None = None,
        *,
        concurrency: int = 1,
        models_dir: Path | None = None,
        threads: int = 1,
    ) -> None:
        """Run the worker loop in this event loop (now if one runs, else at the first submit).

        Without `process` the real pipeline is loaded once, in a thread."""
        self._worker_args = {
            "process": process,
            "concurrency": concurrency,
            "models_dir": models_dir,
            "threads": threads,
        }
        with contextlib.suppress(RuntimeError):
            asyncio.get_running_loop()
            self._ensure_workers()

    def _ensure_workers(self) -> None:
        if self._worker_args is None or (self._workers and not self._workers.done()):
            return
        self._workers = asyncio.create_task(self._run_workers(**self._worker_args))  # type: ignore[arg-type]

    async def _run_workers(
        self, process: Process | None, concurrency: int, models_dir: Path | None, threads: int
    ) -> None:
        from ..worker import pipeline_process, serve

        if process is None:
            loop = asyncio.get_running_loop()
            process = await loop.run_in_executor(None, pipeline_process, models_dir, threads)
        await serve(self, process, concurrency=concurrency, stop=self._stop, consumer="local")

    # ---------------------------------------------------------------- submitter side
    async def submit(self, image: bytes, job: Job) -> str:
        self._ensure_workers()
        if len(self._entries) >= self.max_depth:
            raise QueueBusy(f"{self.max_depth} jobs are waiting")
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
        self._stop.set()
        self._wake.set()
        if self._workers is not None:
            with contextlib.suppress(Exception):
                await self._workers
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
