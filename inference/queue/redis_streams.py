"""The job queue on Redis Streams: any number of workers on any number of machines, one Redis.

Keys (all under one prefix, default "hbscreen"; a single Redis, not a cluster):
- `{p}:jobs`               stream of job entries `{id}`, read by the consumer group "workers".
                           Entries are deleted when their job ends, so XLEN is the queue depth;
                           MAXLEN ~ is only a safety net.
- `{p}:img:{id}`           the image bytes, TTL `image_ttl_s`, deleted when the job ends.
- `{p}:job:{id}`           hash: job JSON, results stream, current entry id, tries, state
                           ("queued" until it becomes done/dead/expired/cancelled); TTL. When
                           the job ends only the state stays, for `FINAL_STATE_TTL_S`.
- `{p}:deadlines`          sorted set id -> deadline; whoever runs `housekeeping` expires due
                           jobs, so a person gets an "expired" answer even with no worker up.
- `{p}:results:{name}`     stream of outcomes for one submitter (the bot, one CLI batch), read
                           through the consumer group `{name}`; an outcome is deleted once
                           acknowledged (it holds health data); trimmed, with a TTL.
- `{p}:dead`               dead-letter stream (trimmed, TTL): jobs that failed `max_tries`
                           times, without their routing data.
- `{p}:sent:{id}`          SET NX marker that makes delivery to a chat idempotent; TTL.
- `{p}:worker:{consumer}`  heartbeat of one worker; TTL 3 heartbeats.

State changes that must not race (submit against the depth limit, finish against cancel and
deadline, retry) are Lua scripts, so they are atomic. A job stalled in a dead worker is
reclaimed with XAUTOCLAIM after `claim_idle_s`; live workers keep their in-flight entries
fresh with XCLAIM ... JUSTID, so a slow job is not stolen.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ..result import ScreeningResult
from .base import (
    Delivery,
    Job,
    JobOutcome,
    OutcomeStatus,
    OutcomeWaiters,
    QueueBusy,
    Skipped,
    failed_result,
)

log = logging.getLogger(__name__)

WORKERS_GROUP = "workers"
# After a job ends its hash keeps only its state (no job data), so that a late worker or a late
# cancel sees it ended; then it expires.
FINAL_STATE_TTL_S = 600
TRANSIENT = (RedisConnectionError, RedisTimeoutError, ConnectionError, OSError)
T = TypeVar("T")

_SUBMIT = """
local p, id = ARGV[1], ARGV[2]
local stream = p .. ':jobs'
if redis.call('XLEN', stream) >= tonumber(ARGV[6]) then return false end
local h = p .. ':job:' .. id
if redis.call('EXISTS', h) == 1 then return redis.error_reply('job id in use') end
redis.call('SET', p .. ':img:' .. id, ARGV[3], 'EX', ARGV[7])
local e = redis.call('XADD', stream, 'MAXLEN', '~', ARGV[10], '*', 'id', id)
redis.call('HSET', h, 'job', ARGV[4], 'origin', ARGV[5], 'entry', e, 'tries', 0,
           'state', 'queued')
redis.call('EXPIRE', h, ARGV[8])
redis.call('ZADD', p .. ':deadlines', ARGV[9], id)
return e
"""

_BEGIN = """
local p, id, e = ARGV[1], ARGV[2], ARGV[3]
local stream = p .. ':jobs'
local h = p .. ':job:' .. id
local state = redis.call('HGET', h, 'state')
if state ~= 'queued' or redis.call('HGET', h, 'entry') ~= e then
  redis.call('XACK', stream, 'workers', e)
  redis.call('XDEL', stream, e)
  return {'skip', state or 'gone'}
end
local tries = redis.call('HINCRBY', h, 'tries', 1)
local img = redis.call('GET', p .. ':img:' .. id)
return {'run', tries, redis.call('HGET', h, 'job'), img}
"""

_FINISH = """
local p, id, e, status = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local stream = p .. ':jobs'
local h = p .. ':job:' .. id
redis.call('XACK', stream, 'workers', e)
redis.call('XDEL', stream, e)
local state = redis.call('HGET', h, 'state')
if state ~= 'queued' then return state or 'gone' end
local current = redis.call('HGET', h, 'entry')
redis.call('XACK', stream, 'workers', current)
redis.call('XDEL', stream, current)
redis.call('HSET', h, 'state', status)
local origin = redis.call('HGET', h, 'origin')
local job = redis.call('HGET', h, 'job')
local tries = redis.call('HGET', h, 'tries')
redis.call('XADD', origin, 'MAXLEN', '~', ARGV[7], '*', 'id', id, 'status', status,
           'job', job, 'tries', tries, 'result', ARGV[5], 'heatmap', ARGV[6])
redis.call('EXPIRE', origin, ARGV[8])
if status == 'dead' then
  redis.call('XADD', p .. ':dead', 'MAXLEN', '~', ARGV[7], '*', 'id', id, 'job', ARGV[10],
             'tries', tries, 'reason', ARGV[9])
  redis.call('EXPIRE', p .. ':dead', ARGV[8])
end
redis.call('HDEL', h, 'job')
redis.call('EXPIRE', h, ARGV[11])
redis.call('DEL', p .. ':img:' .. id)
redis.call('ZREM', p .. ':deadlines', id)
return status
"""

_REQUEUE = """
local p, id, e, handback = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local stream = p .. ':jobs'
local h = p .. ':job:' .. id
redis.call('XACK', stream, 'workers', e)
local state = redis.call('HGET', h, 'state')
if state ~= 'queued' then redis.call('XDEL', stream, e); return state or 'gone' end
if redis.call('HGET', h, 'entry') ~= e then redis.call('XDEL', stream, e); return 'stale' end
redis.call('XDEL', stream, e)
local e2 = redis.call('XADD', stream, 'MAXLEN', '~', ARGV[5], '*', 'id', id)
redis.call('HSET', h, 'entry', e2)
if handback == '1' then redis.call('HINCRBY', h, 'tries', -1) end
return 'requeued'
"""

_CANCEL = """
local p, id = ARGV[1], ARGV[2]
local stream = p .. ':jobs'
local h = p .. ':job:' .. id
if redis.call('HGET', h, 'state') ~= 'queued' then return 0 end
redis.call('HSET', h, 'state', 'cancelled')
local e = redis.call('HGET', h, 'entry')
redis.call('XACK', stream, 'workers', e)
redis.call('XDEL', stream, e)
redis.call('HDEL', h, 'job')
redis.call('EXPIRE', h, ARGV[3])
redis.call('DEL', p .. ':img:' .. id)
redis.call('ZREM', p .. ':deadlines', id)
return 1
"""

_KEEP_ALIVE = """
local stream, consumer = ARGV[1], ARGV[2]
for i = 3, #ARGV do
  local p = redis.call('XPENDING', stream, 'workers', ARGV[i], ARGV[i], 1, consumer)
  if #p > 0 then
    redis.call('XCLAIM', stream, 'workers', consumer, 0, ARGV[i], 'JUSTID')
  end
end
return 0
"""

_EXPIRE_DUE = """
local p = ARGV[1]
local stream = p .. ':jobs'
local ids = redis.call('ZRANGEBYSCORE', p .. ':deadlines', '-inf', ARGV[2], 'LIMIT', 0, ARGV[3])
local n = 0
for _, id in ipairs(ids) do
  redis.call('ZREM', p .. ':deadlines', id)
  local h = p .. ':job:' .. id
  if redis.call('HGET', h, 'state') == 'queued' then
    local e = redis.call('HGET', h, 'entry')
    redis.call('XACK', stream, 'workers', e)
    redis.call('XDEL', stream, e)
    redis.call('HSET', h, 'state', 'expired')
    local origin = redis.call('HGET', h, 'origin')
    redis.call('XADD', origin, 'MAXLEN', '~', ARGV[4], '*', 'id', id, 'status', 'expired',
               'job', redis.call('HGET', h, 'job'), 'tries', redis.call('HGET', h, 'tries'),
               'result', '', 'heatmap', '')
    redis.call('EXPIRE', origin, ARGV[5])
    redis.call('HDEL', h, 'job')
    redis.call('EXPIRE', h, ARGV[6])
    redis.call('DEL', p .. ':img:' .. id)
    n = n + 1
  end
end
return n
"""


def dead_letter_job(job: Job) -> str:
    """What the dead-letter stream keeps of a job: no routing data (it may identify a chat)."""
    return job.model_dump_json(exclude={"reply_to"})


def _entries(resp: Any, stream: str) -> list[tuple[bytes, dict[bytes, bytes] | None]]:
    """XREADGROUP's reply (a list in RESP2, a dict in RESP3) -> the entries of one stream."""
    if not resp:
        return []
    if isinstance(resp, dict):
        for key, value in resp.items():
            if _s(key) == stream:
                return value[0] if value and isinstance(value[0], list) else value
        return []
    return resp[0][1]


def _s(v: bytes | str | None) -> str:
    return v.decode() if isinstance(v, bytes) else (v or "")


def parse_outcome(fields: dict[bytes, bytes]) -> JobOutcome:
    """A results-stream entry -> JobOutcome."""
    job = Job.model_validate_json(fields[b"job"])
    job.tries = int(fields.get(b"tries") or 0)
    raw = fields.get(b"result") or b""
    result = ScreeningResult.model_validate_json(raw) if raw else None
    status: OutcomeStatus = _s(fields[b"status"])  # type: ignore[assignment]
    return JobOutcome(
        job=job, status=status, result=result, heatmap_jpeg=fields.get(b"heatmap") or None
    )


async def retry_transient(
    fn: Callable[[], Awaitable[T]], *, for_s: float = 60.0, what: str = "redis"
) -> T:
    """Call fn until it does not fail with a connection error (Redis restarting), for a while.

    Only for idempotent calls: the Lua scripts check the job's state first."""
    delay, until = 0.05, time.monotonic() + for_s
    while True:
        try:
            return await fn()
        except TRANSIENT as e:
            if time.monotonic() > until:
                raise
            log.warning("redis unavailable, retrying", extra={"what": what, "error": repr(e)})
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)


class RedisStreamsQueue(OutcomeWaiters):
    """Both sides of the Redis Streams queue: `JobQueue` for submitters, `JobSource` for
    workers. One object per process; `submitter` names this submitter's results stream."""

    def __init__(
        self,
        url: str,
        *,
        submitter: str = "bot",
        prefix: str = "hbscreen",
        max_depth: int = 200,
        job_deadline_s: float = 120.0,
        image_ttl_s: int = 600,
        max_tries: int = 3,
        claim_idle_s: float = 30.0,
        heartbeat_s: float = 5.0,
        results_ttl_s: int = 7 * 24 * 3600,
        stream_maxlen: int = 10_000,
        delete_results_on_close: bool = False,
    ) -> None:
        self.url = url
        self.prefix = prefix
        self.submitter = submitter
        self.max_depth = max_depth
        self.job_deadline_s = job_deadline_s
        self.image_ttl_s = image_ttl_s
        self.max_tries = max_tries
        self.claim_idle_s = claim_idle_s
        self.heartbeat_s = heartbeat_s
        self.results_ttl_s = results_ttl_s
        self.stream_maxlen = max(stream_maxlen, 10 * max_depth)
        self.delete_results_on_close = delete_results_on_close
        self.jobs_key = f"{prefix}:jobs"
        self.dead_key = f"{prefix}:dead"
        self.results_key = f"{prefix}:results:{submitter}"
        self.job_ttl_s = int(max(image_ttl_s, job_deadline_s) + 3600)
        self.r = aioredis.Redis.from_url(url, decode_responses=False, health_check_interval=10)
        self._submit = self.r.register_script(_SUBMIT)
        self._begin = self.r.register_script(_BEGIN)
        self._finish = self.r.register_script(_FINISH)
        self._requeue = self.r.register_script(_REQUEUE)
        self._cancel = self.r.register_script(_CANCEL)
        self._expire_due = self.r.register_script(_EXPIRE_DUE)
        self._keep_alive = self.r.register_script(_KEEP_ALIVE)
        self._groups_ready: set[tuple[str, str]] = set()
        self._claim_cursor = "0-0"
        self._next_reclaim = 0.0
        self._next_heartbeat = 0.0
        self._next_sweep = 0.0
        self._next_consumer_gc = 0.0
        self._init_waiters()
        self._closed = False

    # ---------------------------------------------------------------- submitter side
    async def _ensure_group(self, stream: str, group: str) -> None:
        if (stream, group) in self._groups_ready:
            return
        try:
            await self.r.xgroup_create(stream, group, id="0", mkstream=True)
        except ResponseError as e:
            if "BUSYGROUP" not in str(e):
                raise
        if stream == self.results_key:
            await self.r.expire(stream, self.results_ttl_s)
        self._groups_ready.add((stream, group))

    async def submit(self, image: bytes, job: Job) -> str:
        await self._ensure_group(self.results_key, self.submitter)
        job = job.model_copy()
        job.id = job.id or uuid.uuid4().hex
        now = time.time()
        job.submitted_at = now
        job.deadline_at = job.deadline_at or now + self.job_deadline_s
        job.tries = 0
        entry = await self._submit(
            args=[
                self.prefix,
                job.id,
                image,
                job.model_dump_json(),
                self.results_key,
                self.max_depth,
                self.image_ttl_s,
                self.job_ttl_s,
                job.deadline_at,
                self.stream_maxlen,
            ]
        )
        if entry is None:
            raise QueueBusy(f"{self.max_depth} jobs are waiting")
        return job.id

    async def cancel(self, job_id: str) -> bool:
        return bool(await self._cancel(args=[self.prefix, job_id, FINAL_STATE_TTL_S]))

    async def claim_delivery(self, job_id: str) -> bool:
        key = f"{self.prefix}:sent:{job_id}"
        return bool(await self.r.set(key, b"1", nx=True, ex=self.results_ttl_s))

    async def depth(self) -> int:
        return int(await self.r.xlen(self.jobs_key))

    async def outcomes(self) -> AsyncIterator[JobOutcome]:
        group = consumer = self.submitter
        pending_first = True  # after a restart, first re-read what was read but not acked
        acks: list[bytes] = []  # sent with the next read: one round trip per batch
        delay = 0.05
        while not self._closed:
            try:
                await self._ensure_group(self.results_key, group)
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
            except TRANSIENT as e:
                log.warning("results stream unavailable", extra={"error": repr(e)})
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
                continue
            except ResponseError as e:
                if "NOGROUP" not in str(e):
                    raise
                self._groups_ready.clear()  # the stream expired or Redis lost it: recreate
                acks = []
                continue
            entries = _entries(resp, self.results_key)
            if pending_first and not entries:
                pending_first = False
            for eid, fields in entries:
                if fields:
                    yield parse_outcome(fields)
                acks.append(eid)  # acknowledged once the consumer asks for the next one
            with contextlib.suppress(*TRANSIENT):
                await self._sweep()

    async def workers(self) -> list[dict[str, Any]]:
        """Heartbeats of the live workers (for readiness checks and operators)."""
        out = []
        async for key in self.r.scan_iter(match=f"{self.prefix}:worker:*", count=100):
            raw = await self.r.get(key)
            if raw:
                out.append(json.loads(raw))
        return out

    async def close(self) -> None:
        self._closed = True
        await self._stop_pump()
        if self.delete_results_on_close:
            with contextlib.suppress(*TRANSIENT):
                await self.r.delete(self.results_key)
        await self.r.aclose()

    # ---------------------------------------------------------------- worker side
    async def take(
        self, consumer: str, n: int, block_s: float
    ) -> tuple[list[Delivery], list[Skipped]]:
        await self._ensure_group(self.jobs_key, WORKERS_GROUP)
        try:
            entries = await self._read_jobs(consumer, n, block_s)
        except ResponseError as e:
            if "NOGROUP" not in str(e):
                raise
            self._groups_ready.clear()  # Redis lost the group (no persistence): recreate
            return [], []
        ready: list[Delivery] = []
        skipped: list[Skipped] = []
        for eid, fields in entries:
            if not fields or b"id" not in fields:
                await self.r.xack(self.jobs_key, WORKERS_GROUP, eid)
                continue
            d, skip = await self._start(_s(eid), _s(fields[b"id"]))
            if d is not None:
                ready.append(d)
            elif skip is not None:
                skipped.append(skip)
        return ready, skipped

    async def _read_jobs(
        self, consumer: str, n: int, block_s: float
    ) -> list[tuple[bytes, dict[bytes, bytes] | None]]:
        """Stalled jobs of dead workers first (XAUTOCLAIM), else new ones (XREADGROUP)."""
        entries: list[tuple[bytes, dict[bytes, bytes] | None]] = []
        if time.monotonic() >= self._next_reclaim:
            resp = await self.r.xautoclaim(
                self.jobs_key,
                WORKERS_GROUP,
                consumer,
                min_idle_time=int(self.claim_idle_s * 1000),
                start_id=self._claim_cursor,
                count=n,
            )
            cursor, claimed = resp[0], resp[1]
            self._claim_cursor = _s(cursor)
            if self._claim_cursor == "0-0":
                self._next_reclaim = time.monotonic() + max(self.claim_idle_s / 4, 0.05)
            entries += claimed
            if claimed:
                log.info("reclaimed stalled jobs", extra={"count": len(claimed)})
        if not entries:
            resp = await self.r.xreadgroup(
                WORKERS_GROUP,
                consumer,
                {self.jobs_key: ">"},
                count=n,
                block=max(1, int(block_s * 1000)),
            )
            entries = _entries(resp, self.jobs_key)
        return entries

    async def _start(self, entry: str, job_id: str) -> tuple[Delivery | None, Skipped | None]:
        res = await self._begin(args=[self.prefix, job_id, entry])
        if _s(res[0]) == "skip":
            state = _s(res[1])
            return None, "cancelled" if state == "cancelled" else None
        tries, job = int(res[1]), Job.model_validate_json(res[2])
        job.tries = tries
        image = res[3] if len(res) > 3 else None  # Lua turns a missing image into nil
        d = Delivery(job=job, image=image or b"", handle=entry)
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
        payload = result.model_dump_json() if result is not None else ""
        res = await retry_transient(
            lambda: self._finish(
                args=[
                    self.prefix,
                    d.job.id,
                    d.handle,
                    status,
                    payload,
                    heatmap_jpeg or b"",
                    self.stream_maxlen,
                    self.results_ttl_s,
                    reason,
                    dead_letter_job(d.job) if status == "dead" else "",
                    FINAL_STATE_TTL_S,
                ]
            ),
            what="finish",
        )
        return _s(res)

    async def retry(self, d: Delivery) -> str:
        return await self._requeue_job(d, handback=False)

    async def release(self, d: Delivery) -> str:
        return await self._requeue_job(d, handback=True)

    async def _requeue_job(self, d: Delivery, handback: bool) -> str:
        res = await retry_transient(
            lambda: self._requeue(
                args=[
                    self.prefix,
                    d.job.id,
                    d.handle,
                    "1" if handback else "0",
                    self.stream_maxlen,
                ]
            ),
            what="requeue",
        )
        return _s(res)

    async def keep_alive(self, consumer: str, ds: list[Delivery]) -> None:
        if ds:  # only entries still ours: never steal back a job another worker reclaimed
            await self._keep_alive(args=[self.jobs_key, consumer, *[d.handle for d in ds]])

    async def housekeeping(self, consumer: str, info: dict[str, object]) -> None:
        now = time.monotonic()
        if now >= self._next_heartbeat:
            self._next_heartbeat = now + self.heartbeat_s
            beat = {"consumer": consumer, "at": time.time(), **info}
            await self.r.set(
                f"{self.prefix}:worker:{consumer}",
                json.dumps(beat),
                ex=max(1, int(3 * self.heartbeat_s)),
            )
        await self._sweep()
        if now >= self._next_consumer_gc:
            self._next_consumer_gc = now + 600
            await self._forget_idle_consumers()

    async def _sweep(self) -> None:
        now = time.monotonic()
        if now < self._next_sweep:
            return
        self._next_sweep = now + 0.5
        await self._expire_due(
            args=[
                self.prefix,
                time.time(),
                100,
                self.stream_maxlen,
                self.results_ttl_s,
                FINAL_STATE_TTL_S,
            ]
        )

    async def _forget_idle_consumers(self) -> None:
        """Consumers of workers that are gone (no pending jobs, idle an hour) are deleted,
        so the group does not grow with every worker restart."""
        try:
            consumers = await self.r.xinfo_consumers(self.jobs_key, WORKERS_GROUP)
        except ResponseError:
            return
        for c in consumers:
            if int(c.get("pending", 0)) == 0 and int(c.get("idle", 0)) > 3_600_000:
                await self.r.xgroup_delconsumer(self.jobs_key, WORKERS_GROUP, c["name"])

    # ---------------------------------------------------------------- operators and tests
    async def dead_letters(self, count: int = 100) -> list[dict[str, str]]:
        entries = await self.r.xrevrange(self.dead_key, count=count)
        return [{_s(k): _s(v) for k, v in f.items()} for _, f in entries]


def default_consumer_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
