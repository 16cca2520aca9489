"""What both sides of the Redis queue share: the connection (with redis-py's own retry and
backoff for transient errors), the Lua scripts, stream helpers and the deadline sweep."""

from __future__ import annotations

import contextlib
import time
from functools import cache
from importlib.resources import files
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ...crypto import Sealer
from ...result import ScreeningResult
from ..protocol import Job, JobOutcome, OutcomeStatus, QueueConfig
from .keys import FINAL_STATE_TTL_S, WORKERS_GROUP, Keys

# Errors after which a call may succeed if repeated (Redis restarting, a dropped connection).
TRANSIENT: tuple[type[BaseException], ...] = (
    RedisConnectionError,
    RedisTimeoutError,
    ConnectionError,
    OSError,
)
BACKOFF_BASE_S, BACKOFF_CAP_S = 0.05, 1.0
SCRIPTS = ("submit", "begin", "finish", "requeue", "cancel", "keep_alive", "expire")


@cache
def script_source(name: str) -> str:
    """One Lua script, shipped as package data next to this module (lua/NAME.lua)."""
    return (files(__package__) / "lua" / f"{name}.lua").read_text(encoding="utf-8")


def connect(url: str, *, retry_for_s: float) -> aioredis.Redis:
    """A client whose commands are retried on connection errors and timeouts, with exponential
    backoff and full jitter (up to 50 ms doubling to 1 s), for at most about `retry_for_s`.

    Every command the queue sends is safe to repeat: the scripts check the job's state first
    and submit recognises its own job."""
    backoff = ExponentialWithJitterBackoff(base=BACKOFF_BASE_S, cap=BACKOFF_CAP_S)
    retries, worst = 0, 0.0
    while worst < retry_for_s:
        worst += min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2**retries)
        retries += 1
    return aioredis.Redis.from_url(
        url,
        decode_responses=False,
        health_check_interval=10,
        retry=Retry(backoff, retries),
        retry_on_error=[RedisConnectionError, RedisTimeoutError, ConnectionError, OSError],
    )


def s(v: bytes | str | None) -> str:
    return v.decode() if isinstance(v, bytes) else (v or "")


def stream_entries(resp: Any, stream: str) -> list[tuple[bytes, dict[bytes, bytes] | None]]:
    """XREADGROUP's reply (a list in RESP2, a dict in RESP3) -> the entries of one stream."""
    if not resp:
        return []
    if isinstance(resp, dict):
        for key, value in resp.items():
            if s(key) == stream:
                return value[0] if value and isinstance(value[0], list) else value
        return []
    return resp[0][1]


class Blobs:
    """What the queue writes to Redis about a person — the image, the job, the result and the
    heatmap — sealed with AES-GCM when a `Sealer` is given (bound to the job id and field, so
    a blob moved to another job does not open), so neither Redis's memory nor its AOF/RDB
    files hold them in plaintext. Without a sealer (tests, development) they pass as is."""

    def __init__(self, sealer: Sealer | None) -> None:
        self.sealer = sealer

    def seal(self, job_id: str, field: str, plain: bytes) -> bytes:
        if self.sealer is None or not plain:
            return plain
        return self.sealer.seal(plain, f"hbscreen-queue/{job_id}/{field}".encode())

    def open(self, job_id: str, field: str, blob: bytes) -> bytes:
        """Raises `hbscreen.inference.crypto.TamperedError` when the blob does not open."""
        if self.sealer is None or not blob:
            return blob
        return self.sealer.open(blob, f"hbscreen-queue/{job_id}/{field}".encode())


def parse_outcome(fields: dict[bytes, bytes], blobs: Blobs) -> JobOutcome:
    """A results-stream entry -> JobOutcome (opening what the worker sealed)."""
    job_id = s(fields[b"id"])
    job = Job.model_validate_json(blobs.open(job_id, "job", fields[b"job"]))
    job.tries = int(fields.get(b"tries") or 0)
    raw = blobs.open(job_id, "result", fields.get(b"result") or b"")
    result = ScreeningResult.model_validate_json(raw) if raw else None
    status: OutcomeStatus = s(fields[b"status"])  # type: ignore[assignment]
    heatmap = blobs.open(job_id, "heatmap", fields.get(b"heatmap") or b"")
    return JobOutcome(job=job, status=status, result=result, heatmap_jpeg=heatmap or None)


class RedisSide:
    """The connection, keys, scripts and housekeeping one side of the queue needs."""

    def __init__(
        self, url: str, config: QueueConfig, *, retry_for_s: float, sealer: Sealer | None
    ) -> None:
        self.url = url
        self.config = config
        self.blobs = Blobs(sealer)
        self.keys = Keys(config.prefix)
        self.max_depth = config.max_depth
        self.max_tries = config.max_tries
        self.stream_maxlen = max(config.stream_maxlen, 10 * config.max_depth)
        self.job_ttl_s = int(max(config.image_ttl_s, config.job_deadline_s) + 3600)
        self.r = connect(url, retry_for_s=retry_for_s)
        self.scripts: dict[str, AsyncScript] = {
            n: self.r.register_script(script_source(n)) for n in SCRIPTS
        }
        self._groups_ready: set[tuple[str, str]] = set()
        self._next_sweep = 0.0

    async def ensure_group(self, stream: str, group: str, ttl_s: int | None = None) -> None:
        if (stream, group) in self._groups_ready:
            return
        try:
            await self.r.xgroup_create(stream, group, id="0", mkstream=True)
        except ResponseError as e:
            if "BUSYGROUP" not in str(e):
                raise
        if ttl_s:
            await self.r.expire(stream, ttl_s)
        self._groups_ready.add((stream, group))

    def forget_groups(self) -> None:
        """The stream expired or Redis lost it: create its group again on the next call."""
        self._groups_ready.clear()

    async def sweep(self) -> int:
        """Expire jobs past their deadline (at most every 0.5 s, 100 at a time); both sides run
        it, so people get an "expired" answer even with no worker up."""
        now = time.monotonic()
        if now < self._next_sweep:
            return 0
        self._next_sweep = now + 0.5
        k, wall = self.keys, time.time()
        due = await self.r.zrangebyscore(k.deadlines, "-inf", wall, start=0, num=100)
        n = 0
        for raw in due:
            job_id = s(raw)  # type: ignore[arg-type]  # ZRANGEBYSCORE without scores: members
            origin = await self.r.hget(k.job(job_id), "origin")
            if origin is None:  # the job hash expired or ended: nothing to tell anyone
                await self.r.zrem(k.deadlines, job_id)
                continue
            n += int(
                await self.scripts["expire"](
                    keys=[
                        k.jobs,
                        k.job(job_id),
                        k.image(job_id),
                        k.deadlines,
                        s(origin),
                        k.queued_bytes,
                    ],
                    args=[
                        WORKERS_GROUP,
                        wall,
                        self.stream_maxlen,
                        self.config.results_ttl_s,
                        FINAL_STATE_TTL_S,
                        job_id,
                    ],
                )
            )
        return n

    async def depth(self) -> int:
        """Jobs waiting or in flight."""
        return int(await self.r.xlen(self.keys.jobs))

    async def close(self) -> None:
        with contextlib.suppress(*TRANSIENT):
            await self.r.aclose()
