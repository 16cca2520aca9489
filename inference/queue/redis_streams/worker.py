"""The worker's side of the Redis queue: take jobs (new, or reclaimed from a dead worker),
finish, retry or hand them back, keep them alive, heartbeat.

A job stalled in a dead worker is reclaimed with XAUTOCLAIM after `claim_idle_s`; live workers
keep their in-flight entries fresh with XCLAIM ... JUSTID, so a slow job is not stolen. State
changes that must not race (finish against cancel and deadline, retry) are Lua scripts."""

from __future__ import annotations

import json
import logging
import os
import socket
import time
import uuid
from typing import Any

from redis.exceptions import ResponseError

from ...crypto import Sealer, TamperedError
from ...result import ScreeningResult
from ..protocol import Delivery, Job, OutcomeStatus, QueueConfig, Skipped, failed_result
from .connection import RedisSide, s, stream_entries
from .keys import FINAL_STATE_TTL_S, WORKERS_GROUP

log = logging.getLogger(__name__)


def dead_letter_job(job: Job) -> str:
    """What the dead-letter stream keeps of a job: no routing data (it may identify a chat)."""
    return job.model_dump_json(exclude={"reply_to"})


def default_consumer_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class RedisJobSource:
    """`JobSource` on Redis Streams. Settling a job (finish, retry) is retried on transient
    errors for `retry_for_s` (Redis restarting): the work is done, do not lose it. `sealer`:
    the key shared with the submitters (images in, results and heatmaps out, encrypted)."""

    def __init__(
        self,
        url: str,
        config: QueueConfig | None = None,
        *,
        retry_for_s: float = 60.0,
        sealer: Sealer | None = None,
    ) -> None:
        self.config = config or QueueConfig()
        self.side = RedisSide(url, self.config, retry_for_s=retry_for_s, sealer=sealer)
        self.keys = self.side.keys
        self.r = self.side.r
        self.max_tries = self.config.max_tries
        self._claim_cursor = "0-0"
        self._next_reclaim = 0.0
        self._next_heartbeat = 0.0
        self._next_consumer_gc = 0.0

    async def take(
        self, consumer: str, n: int, block_s: float
    ) -> tuple[list[Delivery], list[Skipped]]:
        await self.side.ensure_group(self.keys.jobs, WORKERS_GROUP)
        try:
            entries = await self._read_jobs(consumer, n, block_s)
        except ResponseError as e:
            if "NOGROUP" not in str(e):
                raise
            self.side.forget_groups()  # Redis lost the group (no persistence): recreate
            return [], []
        ready: list[Delivery] = []
        skipped: list[Skipped] = []
        for eid, fields in entries:
            if not fields or b"id" not in fields:
                await self.r.xack(self.keys.jobs, WORKERS_GROUP, eid)
                continue
            d, skip = await self._start(s(eid), s(fields[b"id"]))
            if d is not None:
                ready.append(d)
            elif skip is not None:
                skipped.append(skip)
        return ready, skipped

    async def _read_jobs(
        self, consumer: str, n: int, block_s: float
    ) -> list[tuple[bytes, dict[bytes, bytes] | None]]:
        """Stalled jobs of dead workers first (XAUTOCLAIM), else new ones (XREADGROUP)."""
        jobs = self.keys.jobs
        entries: list[tuple[bytes, dict[bytes, bytes] | None]] = []
        if time.monotonic() >= self._next_reclaim:
            resp = await self.r.xautoclaim(
                jobs,
                WORKERS_GROUP,
                consumer,
                min_idle_time=int(self.config.claim_idle_s * 1000),
                start_id=self._claim_cursor,
                count=n,
            )
            cursor, claimed = resp[0], resp[1]
            self._claim_cursor = s(cursor)
            if self._claim_cursor == "0-0":
                self._next_reclaim = time.monotonic() + max(self.config.claim_idle_s / 4, 0.05)
            entries += claimed
            if claimed:
                log.info("reclaimed stalled jobs", extra={"count": len(claimed)})
        if not entries:
            reply: Any = await self.r.xreadgroup(
                WORKERS_GROUP,
                consumer,
                {jobs: ">"},
                count=n,
                block=max(1, int(block_s * 1000)),
            )
            entries = stream_entries(reply, jobs)
        return entries

    async def _start(self, entry: str, job_id: str) -> tuple[Delivery | None, Skipped | None]:
        k = self.keys
        res = await self.side.scripts["begin"](
            keys=[k.jobs, k.job(job_id), k.image(job_id)], args=[entry, WORKERS_GROUP]
        )
        if s(res[0]) == "skip":
            state = s(res[1])
            return None, "cancelled" if state == "cancelled" else None
        tries, origin, blobs = int(res[1]), s(res[3]), self.side.blobs
        image = res[4] if len(res) > 4 else None  # Lua turns a missing image into nil
        try:
            job = Job.model_validate_json(blobs.open(job_id, "job", res[2]))
            image = blobs.open(job_id, "image", image) if image is not None else None
        except TamperedError:  # sealed with another key, or altered: never guess its content
            log.error(
                "job does not decrypt: is HBSCREEN_QUEUE_KEY the same everywhere?",
                extra={"job_id": job_id},
            )
            d = Delivery(job=Job(id=job_id, group=""), image=b"", handle=entry, results_to=origin)
            await self.finish(d, "dead", None, reason="does not decrypt")
            return None, "dead"
        job.tries = tries
        d = Delivery(job=job, image=image or b"", handle=entry, results_to=origin)
        if job.deadline_at and time.time() > job.deadline_at:
            await self.finish(d, "expired", None)
            return None, "expired"
        if tries > self.max_tries:
            msg = "the photo could not be processed (its worker stopped every time)"
            await self.finish(d, "dead", failed_result(job, msg), reason="stalled")
            return None, "dead"
        if image is None:
            await self.finish(d, "expired", None)  # the image outlived its TTL
            return None, "expired"
        return d, None

    async def finish(
        self,
        d: Delivery,
        status: OutcomeStatus,
        result: ScreeningResult | None,
        heatmap_jpeg: bytes | None = None,
        reason: str = "",
    ) -> str:
        k, job_id, blobs = self.keys, d.job.id, self.side.blobs
        payload = result.model_dump_json().encode() if result is not None else b""
        res = await self.side.scripts["finish"](
            keys=[
                k.jobs,
                k.job(job_id),
                k.image(job_id),
                k.deadlines,
                d.results_to,
                k.dead,
                k.queued_bytes,
            ],
            args=[
                d.handle,
                WORKERS_GROUP,
                status,
                blobs.seal(job_id, "result", payload),
                blobs.seal(job_id, "heatmap", heatmap_jpeg or b""),
                self.side.stream_maxlen,
                self.config.results_ttl_s,
                reason,
                dead_letter_job(d.job) if status == "dead" else "",
                FINAL_STATE_TTL_S,
                job_id,
            ],
        )
        return s(res)

    async def retry(self, d: Delivery) -> str:
        return await self._requeue(d, handback=False)

    async def release(self, d: Delivery) -> str:
        return await self._requeue(d, handback=True)

    async def _requeue(self, d: Delivery, handback: bool) -> str:
        k = self.keys
        res = await self.side.scripts["requeue"](
            keys=[k.jobs, k.job(d.job.id)],
            args=[
                d.handle,
                WORKERS_GROUP,
                "1" if handback else "0",
                self.side.stream_maxlen,
                d.job.id,
            ],
        )
        return s(res)

    async def keep_alive(self, consumer: str, ds: list[Delivery]) -> None:
        if ds:  # only entries still ours: never steal back a job another worker reclaimed
            await self.side.scripts["keep_alive"](
                keys=[self.keys.jobs], args=[WORKERS_GROUP, consumer, *[d.handle for d in ds]]
            )

    async def housekeeping(self, consumer: str, info: dict[str, object]) -> None:
        now = time.monotonic()
        if now >= self._next_heartbeat:
            self._next_heartbeat = now + self.config.heartbeat_s
            beat = {"consumer": consumer, "at": time.time(), **info}
            await self.r.set(
                self.keys.worker(consumer),
                json.dumps(beat),
                ex=max(1, int(3 * self.config.heartbeat_s)),
            )
        await self.side.sweep()
        if now >= self._next_consumer_gc:
            self._next_consumer_gc = now + 600
            await self._forget_idle_consumers()

    async def _forget_idle_consumers(self) -> None:
        """Consumers of workers that are gone (no pending jobs, idle an hour) are deleted,
        so the group does not grow with every worker restart."""
        try:
            consumers = await self.r.xinfo_consumers(self.keys.jobs, WORKERS_GROUP)
        except ResponseError:
            return
        for c in consumers:
            if int(c.get("pending", 0)) == 0 and int(c.get("idle", 0)) > 3_600_000:
                await self.r.xgroup_delconsumer(self.keys.jobs, WORKERS_GROUP, c["name"])

    async def depth(self) -> int:
        return await self.side.depth()

    async def close(self) -> None:
        await self.side.close()
