"""The submitter's side of the Redis queue (the bot, a batch CLI): submit, cancel, read
outcomes from its own results stream, claim deliveries."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from redis.exceptions import ResponseError

from ...crypto import Sealer, TamperedError
from ..protocol import Job, JobOutcome, OutcomeWaiters, QueueBusy, QueueConfig
from .connection import TRANSIENT, RedisSide, parse_outcome, s, stream_entries
from .keys import FINAL_STATE_TTL_S, WORKERS_GROUP

log = logging.getLogger(__name__)


class RedisSubmitter(OutcomeWaiters):
    """`JobQueue` on Redis Streams. `submitter` names this submitter's results stream: the bot
    passes a stable name ("bot") so outcomes survive its restart; a batch CLI passes None for a
    private stream, deleted on close, so two submitters never read each other's outcomes.

    Commands are retried on transient errors for `retry_for_s` only (a person waits for the
    answer: better "busy, try later" soon than a long silence). With `sealer` (the key the bot
    and the workers share) the image, the job and the outcomes are encrypted in Redis."""

    def __init__(
        self,
        url: str,
        config: QueueConfig | None = None,
        *,
        submitter: str | None = "bot",
        retry_for_s: float = 2.0,
        sealer: Sealer | None = None,
    ) -> None:
        self.config = config or QueueConfig()
        self.side = RedisSide(url, self.config, retry_for_s=retry_for_s, sealer=sealer)
        self.keys = self.side.keys
        self.r = self.side.r
        self.max_depth = self.config.max_depth
        self.delete_results_on_close = submitter is None
        self.submitter = submitter or f"client-{uuid.uuid4().hex[:12]}"
        self.results_key = self.keys.results(self.submitter)
        self._closed = False
        self._init_waiters()

    async def _ensure_results(self) -> None:
        await self.side.ensure_group(self.results_key, self.submitter, self.config.results_ttl_s)

    async def submit(self, image: bytes, job: Job) -> str:
        await self._ensure_results()
        job = job.model_copy()
        job.id = job.id or uuid.uuid4().hex
        now = time.time()
        job.submitted_at = now
        job.deadline_at = job.deadline_at or now + self.config.job_deadline_s
        job.tries = 0
        k, blobs = self.keys, self.side.blobs
        entry = await self.side.scripts["submit"](
            keys=[k.jobs, k.job(job.id), k.image(job.id), k.deadlines, k.queued_bytes],
            args=[
                blobs.seal(job.id, "image", image),
                blobs.seal(job.id, "job", job.model_dump_json().encode()),
                self.results_key,
                self.config.max_depth,
                self.config.image_ttl_s,
                self.side.job_ttl_s,
                job.deadline_at,
                self.side.stream_maxlen,
                job.id,
                self.config.max_queued_bytes,
                self.config.results_ttl_s,
            ],
        )
        if entry is None:
            raise QueueBusy("the queue is full (jobs or bytes)")
        return job.id

    async def cancel(self, job_id: str) -> bool:
        k = self.keys
        res = await self.side.scripts["cancel"](
            keys=[k.jobs, k.job(job_id), k.image(job_id), k.deadlines, k.queued_bytes],
            args=[WORKERS_GROUP, FINAL_STATE_TTL_S, job_id],
        )
        return bool(res)

    async def claim_delivery(self, job_id: str) -> bool:
        key = self.keys.sent(job_id)
        return bool(await self.r.set(key, b"1", nx=True, ex=self.config.results_ttl_s))

    async def depth(self) -> int:
        return await self.side.depth()

    async def outcomes(self) -> AsyncIterator[JobOutcome]:
        group = consumer = self.submitter
        pending_first = True  # after a restart, first re-read what was read but not acked
        acks: list[bytes] = []  # sent with the next read: one round trip per batch
        delay = 0.05
        while not self._closed:
            try:
                await self._ensure_results()
                pipe = self.r.pipeline(transaction=False)
                if acks:  # acknowledged outcomes leave Redis (they hold health data)
                    pipe.xack(self.results_key, group, *acks)
                    pipe.xdel(self.results_key, *acks)
                pipe.xreadgroup(
                    group,
                    consumer,
                    {self.results_key: "0" if pending_first else ">"},
                    count=100,
                    block=None if pending_first else 500,
                )
                resp = (await pipe.execute())[-1]
                acks = []
                delay = 0.05
            except TRANSIENT as e:  # beyond the client's own retries: keep waiting
                log.warning("results stream unavailable", extra={"error": repr(e)})
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
                continue
            except ResponseError as e:
                if "NOGROUP" not in str(e):
                    raise
                self.side.forget_groups()
                acks = []
                continue
            entries = stream_entries(resp, self.results_key)
            if pending_first and not entries:
                pending_first = False
            for eid, fields in entries:
                acks.append(eid)  # acknowledged once the consumer asks for the next one
                if not fields:
                    continue
                try:
                    outcome = parse_outcome(fields, self.side.blobs)
                except TamperedError:  # another key (misconfigured) or altered in Redis
                    log.error(
                        "outcome does not decrypt: is HBSCREEN_QUEUE_KEY the same everywhere?",
                        extra={"job_id": s(fields.get(b"id"))},
                    )
                    continue
                yield outcome
            with contextlib.suppress(*TRANSIENT):
                await self.side.sweep()

    async def close(self) -> None:
        self._closed = True
        await self._stop_pump()
        if self.delete_results_on_close:
            with contextlib.suppress(*TRANSIENT):
                await self.r.delete(self.results_key)
        await self.side.close()

    # ---------------------------------------------------------------- operators and tests
    async def dead_letters(self, count: int = 100) -> list[dict[str, Any]]:
        """The newest dead letters (no routing data in them)."""
        entries: Any = await self.r.xrevrange(self.keys.dead, count=count)
        return [{s(k): s(v) for k, v in f.items()} for _, f in entries]
