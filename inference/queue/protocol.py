"""The queue protocol and its types: the one contract between the bot, the queue and workers.

Data flows one way: submit (bot/CLI) -> worker -> outcome (bot/CLI). The image blob travels
beside the job, never inside the result.

Two sides, implemented by the in-process queue (`memory.MemoryQueue`, both sides in one
object) and by Redis Streams (`redis_streams.RedisSubmitter`, `redis_streams.RedisJobSource`):
- `JobQueue`, the submitter's side (bot, batch CLI): submit, cancel, outcomes, delivery claim.
- `JobSource`, the worker's side: take jobs, finish them, retry or hand them back. The worker
  loop in `hbscreen.inference.worker` runs against either implementation.
Who builds which queue and starts which workers is the composition root's business
(`hbscreen.compose`), not the queue's.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

from pydantic import BaseModel, Field

from ..errors import ErrorCode
from ..result import ErrorInfo, ScreeningResult

OutcomeStatus = Literal["done", "dead", "expired", "cancelled"]


@dataclass(frozen=True)
class QueueConfig:
    """The queue's limits, given explicitly by the composition root (from the settings).

    The in-process queue uses the first three; Redis uses all of them."""

    max_depth: int = 200  # jobs waiting or in flight; beyond it submit() raises QueueBusy
    # and the bytes of their images (Redis: sized to its maxmemory, so that no accepted job
    # is ever refused or evicted); one job is always accepted into an empty queue
    max_queued_bytes: int = 400 * 2**20
    job_deadline_s: float = 120.0  # a job not done by then ends as "expired"
    max_tries: int = 3  # a job whose models fail this often is dead-lettered
    image_ttl_s: int = 600  # the image bytes expire even if nobody cleans up
    claim_idle_s: float = 30.0  # an entry untouched this long belongs to a dead worker
    heartbeat_s: float = 5.0  # worker heartbeat period (key TTL: 3 periods)
    prefix: str = "hbscreen"  # key prefix (Redis), so one Redis can serve several deployments
    results_ttl_s: int = 24 * 3600  # outcomes, delivery markers and dead letters expire
    stream_maxlen: int = 10_000  # safety net on stream lengths (entries are deleted anyway)


class QueueBusy(Exception):
    """The queue is at its depth limit: tell the person to try again in a few minutes."""


class Job(BaseModel):
    """What a worker needs besides the image bytes. No names, no raw chat ids."""

    id: str = ""  # assigned by submit()
    group: str
    cutout: bool = False
    danger_signs: bool = False
    # Opaque routing data for the submitter (e.g. the bot's chat key, language, message id);
    # workers copy it to the outcome untouched.
    reply_to: dict[str, str] = Field(default_factory=dict)
    submitted_at: float = 0.0
    deadline_at: float = 0.0
    tries: int = 0


class JobOutcome(BaseModel):
    job: Job
    status: OutcomeStatus
    result: ScreeningResult | None = None
    # The heatmap JPEG travels beside the result; base64 when serialised.
    heatmap_jpeg: bytes | None = None


def failed_result(job: Job, message: str) -> ScreeningResult:
    """The answer a person gets when their photo could not be processed after every try."""
    return ScreeningResult(
        job_id=job.id,
        group=job.group,
        danger_signs=job.danger_signs,
        ok=False,
        referral="retake",
        error=ErrorInfo(code=ErrorCode.MODEL_FAILED.value, message=message),
    )


@runtime_checkable
class JobQueue(Protocol):
    async def submit(self, image: bytes, job: Job) -> str:
        """Store the image and enqueue the job; return its id. Raises QueueBusy when full."""

    async def cancel(self, job_id: str) -> bool:
        """Make sure no result of this job is delivered; True if it was still pending."""

    async def wait(self, job_id: str, timeout: float) -> JobOutcome:
        """Await one job's outcome (batch CLI). Raises TimeoutError."""

    def outcomes(self) -> AsyncIterator[JobOutcome]:
        """Stream outcomes of all jobs for the submitting service (the bot).

        Use either `outcomes()` or `wait()` on one queue object, not both. An outcome is
        acknowledged when the consumer asks for the next one, so after a crash of the
        submitter it may come again: guard the delivery with `claim_delivery`."""

    async def claim_delivery(self, job_id: str) -> bool:
        """True exactly once per job: makes delivery to the chat idempotent."""

    async def depth(self) -> int:
        """Jobs waiting or in flight."""

    async def close(self) -> None: ...


@dataclass
class Delivery:
    """One job handed to a worker; `handle` is the implementation's token (a stream entry id),
    `results_to` where its outcome goes (the Redis queue: the submitter's results stream)."""

    job: Job
    image: bytes
    handle: str = ""
    results_to: str = ""


# The processing a worker runs on each job: the real pipeline, or a stand-in in tests.
Process = Callable[[bytes, Job], tuple[ScreeningResult, bytes | None]]


# What `JobSource.take` did with a job it did not hand out (for metrics).
Skipped = Literal["dead", "expired", "cancelled", "gone"]


@runtime_checkable
class JobSource(Protocol):
    """The worker's side of a queue."""

    max_tries: int

    async def take(
        self, consumer: str, n: int, block_s: float
    ) -> tuple[list[Delivery], list[Skipped]]:
        """Up to n jobs to process (new, or reclaimed from a dead worker), waiting at most
        block_s; also what was settled without processing (expired, dead after N tries...)."""

    async def finish(
        self,
        d: Delivery,
        status: OutcomeStatus,
        result: ScreeningResult | None,
        heatmap_jpeg: bytes | None = None,
        reason: str = "",
    ) -> str:
        """Publish the outcome unless the job was cancelled, expired or already finished;
        returns what happened ("done", "dead", "expired", or the earlier final state)."""

    async def retry(self, d: Delivery) -> str:
        """Put a failed job back at the end of the queue (its try is counted)."""

    async def release(self, d: Delivery) -> str:
        """Hand a job back on shutdown without counting the try."""

    async def keep_alive(self, consumer: str, ds: list[Delivery]) -> None:
        """Tell the queue these jobs are still being worked on (not stalled)."""

    async def housekeeping(self, consumer: str, info: dict[str, object]) -> None:
        """Heartbeat, expire jobs past their deadline; cheap, called about once a second."""

    async def depth(self) -> int: ...

    async def close(self) -> None: ...


class OutcomeWaiters:
    """`wait(job_id)` on top of `outcomes()`: one background reader hands each outcome to its
    waiter, or keeps it (bounded) until someone waits for it. For batch submitters."""

    _waiters: dict[str, asyncio.Future[JobOutcome]]
    _early: dict[str, JobOutcome]
    _pump: asyncio.Task[None] | None

    def outcomes(self) -> AsyncIterator[JobOutcome]:
        raise NotImplementedError

    def _init_waiters(self) -> None:
        self._waiters, self._early, self._pump = {}, {}, None

    async def wait(self, job_id: str, timeout: float) -> JobOutcome:
        if job_id in self._early:
            return self._early.pop(job_id)
        fut: asyncio.Future[JobOutcome] = asyncio.get_running_loop().create_future()
        self._waiters[job_id] = fut
        if self._pump is None or self._pump.done():
            self._pump = asyncio.create_task(self._run_pump())
        try:
            return await asyncio.wait_for(fut, timeout)
        finally:
            self._waiters.pop(job_id, None)

    async def _run_pump(self) -> None:
        async for o in self.outcomes():
            fut = self._waiters.get(o.job.id)
            if fut is not None and not fut.done():
                fut.set_result(o)
            elif len(self._early) < 100_000:
                self._early[o.job.id] = o

    async def _stop_pump(self) -> None:
        if self._pump is not None:
            self._pump.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._pump
            self._pump = None
