"""The Redis Streams queue against a real, private redis-server (AOF on, restartable): what
only it does (key layout and TTLs, sealed payloads, restarts, reclaim, processes, several
submitters). The behaviour both queues share is in test_queue_contract.py.

The `redis_server` fixture (tests/redis_server.py, via conftest) gives each test its own
server. Workers run either in-process (`serve` as a task) or as real subprocesses
(`hbscreen worker --process tests.redis_server:...`) that the tests kill -9 or SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from hbscreen.inference.metrics import WorkerMetrics
from hbscreen.inference.queue.protocol import Job, JobOutcome, QueueConfig
from hbscreen.inference.queue.redis_streams import RedisJobSource, RedisSubmitter
from hbscreen.inference.worker import serve
from tests.redis_server import (
    QUEUE_KEY,
    RedisServer,
    model_failed_process,
    noop_process,
    sealer_for_tests,
    slow_process,
)

pytestmark = pytest.mark.redis
ROOT = Path(__file__).resolve().parents[1]
GROUP = "child-6-23m"


def job(**kw: object) -> Job:
    return Job(**({"group": GROUP, "reply_to": {"chat": "k1"}} | kw))  # type: ignore[arg-type]


def config(**kw: object) -> QueueConfig:
    opts: dict[str, object] = {"claim_idle_s": 0.5, "heartbeat_s": 0.2}
    return QueueConfig(**(opts | kw))  # type: ignore[arg-type]


def make(server: RedisServer, name: str = "bot", **kw: object) -> RedisSubmitter:
    return RedisSubmitter(server.url, config(**kw), submitter=name, sealer=sealer_for_tests())


class Worker:
    """An in-process worker task with its own connection and metrics."""

    def __init__(self, server: RedisServer, process=noop_process, concurrency=1, **kw):
        self.queue = RedisJobSource(server.url, config(**kw), sealer=sealer_for_tests())
        self.metrics = WorkerMetrics()
        self.stop = asyncio.Event()
        self.task = asyncio.create_task(
            serve(
                self.queue,
                process,
                concurrency=concurrency,
                stop=self.stop,
                metrics=self.metrics,
                consumer=f"w{id(self)}",
                grace_s=5,
                block_s=0.1,
                keep_alive_s=0.1,
            )
        )

    def count(self, name: str) -> float:
        return self.metrics.registry.get_sample_value(name) or 0.0

    async def close(self) -> None:
        self.stop.set()
        await asyncio.wait_for(self.task, 10)
        await self.queue.close()


async def collect(q: RedisSubmitter, n: int, timeout: float) -> list[JobOutcome]:
    """Up to n outcomes within timeout, from one long-lived outcomes() iterator per queue
    (like the bot): an outcome is acknowledged when the next one is asked for."""
    out: list[JobOutcome] = []
    it = q.__dict__.setdefault("_test_outcomes", q.outcomes())

    async def go() -> None:
        while len(out) < n:
            out.append(await anext(it))  # type: ignore[call-overload]

    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(go(), timeout)
    return out


def spawn_worker(server: RedisServer, process: str, **env: str) -> subprocess.Popen[bytes]:
    e = os.environ | {
        "HBSCREEN_CLAIM_IDLE_S": "0.5",
        "HBSCREEN_HEARTBEAT_S": "0.2",
        "HBSCREEN_SHUTDOWN_GRACE_S": "5",
        "HBSCREEN_QUEUE_KEY": QUEUE_KEY,
        "PYTHONPATH": str(ROOT),
    }
    e |= env
    cmd = [
        sys.executable,
        "-m",
        "hbscreen.cli",
        "worker",
        "--redis",
        server.url,
        "--process",
        process,
    ]
    return subprocess.Popen(cmd, cwd=ROOT, env=e, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


async def wait_until(cond, timeout: float = 10.0) -> None:
    until = time.monotonic() + timeout
    while time.monotonic() < until:
        if await cond():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not reached in time")


async def test_round_trip_cleans_up_and_bounds_every_key(redis_server: RedisServer) -> None:
    q = make(redis_server)
    w = Worker(redis_server)
    try:
        ids = [await q.submit(b"img%d" % i, job()) for i in range(3)]
        outs = await collect(q, 3, 10)
        assert sorted(o.job.id for o in outs) == sorted(ids)
        for o in outs:
            assert o.status == "done" and o.result is not None and o.result.job_id == o.job.id
            assert o.heatmap_jpeg == b"\xff\xd8jpeg"
            assert o.job.reply_to == {"chat": "k1"} and o.job.tries == 1
        assert await q.depth() == 0
        assert await q.r.keys("{hbscreen}:img:*") == []  # images gone as soon as jobs end
        assert int(await q.r.get(q.keys.queued_bytes)) == 0
        for key in await q.r.keys("*"):
            ttl = await q.r.ttl(key)
            kind = (await q.r.type(key)).decode()
            # per-job keys expire; streams are trimmed and the results stream expires too
            forever = (q.keys.jobs, q.keys.deadlines, q.keys.queued_bytes)
            forever = tuple(k.encode() for k in forever)
            assert ttl > 0 or key in forever, (key, kind, ttl)
        await wait_until(lambda: _counted(w, "hbscreen_jobs_done_total", 3), 5)
        await collect(q, 1, 0.2)  # asking for more acknowledges: outcomes leave Redis
        assert await q.r.xlen(q.results_key) == 0
        assert await q.r.hkeys(q.keys.job(ids[0])) and not await q.r.hexists(
            q.keys.job(ids[0]), "job"
        )  # only the final state is kept, briefly
        beats = await q.r.keys("{hbscreen}:worker:*")
        assert beats and await q.r.ttl(beats[0]) > 0  # the worker's heartbeat
    finally:
        await w.close()
        await q.close()


async def test_cancel_deletes_the_image_at_once(redis_server: RedisServer) -> None:
    q = make(redis_server)
    try:
        gone = await q.submit(b"gone", job())
        assert await q.r.exists(q.keys.image(gone))
        assert await q.cancel(gone) is True
        assert not await q.r.exists(q.keys.image(gone))
        assert int(await q.r.get(q.keys.queued_bytes)) == 0
    finally:
        await q.close()


async def _counted(w: Worker, name: str, n: float) -> bool:
    return w.count(name) >= n


async def test_the_submitter_expires_due_jobs_with_no_worker_up(redis_server: RedisServer) -> None:
    q = make(redis_server, job_deadline_s=0.4)
    try:
        jid = await q.submit(b"nobody works", job())
        outs = await collect(q, 1, 5)  # the submitter itself expires due jobs
        assert [(o.job.id, o.status, o.result) for o in outs] == [(jid, "expired", None)]
        assert await q.depth() == 0 and not await q.r.exists(q.keys.image(jid))
    finally:
        await q.close()


async def test_dead_letters_keep_no_routing_data(redis_server: RedisServer) -> None:
    q = make(redis_server, max_tries=2)
    w = Worker(redis_server, process=model_failed_process, max_tries=2)
    try:
        jid = await q.submit(b"crash!", job())
        assert [o.status for o in await collect(q, 1, 10)] == ["dead"]
        dead = await q.dead_letters()
        assert [d["id"] for d in dead] == [jid] and dead[0]["tries"] == "2"
        assert "reply_to" not in dead[0]["job"] and "k1" not in dead[0]["job"]
        assert await q.depth() == 0 and not await q.r.exists(q.keys.image(jid))
    finally:
        await w.close()
        await q.close()


async def test_payloads_are_sealed_and_a_moved_blob_does_not_open(
    redis_server: RedisServer,
) -> None:
    """What Redis holds of a person (image, job, result, heatmap) is AES-GCM ciphertext bound
    to its job: a blob copied onto another job is refused (dead-lettered), never processed."""
    q = make(redis_server)
    photo = b"\xff\xd8 a very recognisable photo \xff\xd9" * 20
    try:
        a = await q.submit(photo, job(reply_to={"chat": "secret-route"}))
        b = await q.submit(b"another photo", job())
        sealed = await q.r.get(q.keys.image(a))
        assert sealed and photo not in sealed and b"recognisable" not in sealed
        assert b"secret-route" not in str(await q.r.hgetall(q.keys.job(a))).encode()
        await q.r.set(q.keys.image(b), sealed, keepttl=True)  # a's image onto b's job
        w = Worker(redis_server)
        try:
            outs = {o.job.id: o for o in await collect(q, 2, 10)}
        finally:
            await w.close()
        assert outs[a].status == "done" and outs[b].status == "dead"
        entries = await q.r.xrange(q.results_key)
        assert all(b"jpeg" not in v and b"hb_g_dl" not in v for _, f in entries for v in f.values())
    finally:
        await q.close()


async def test_claim_delivery_is_true_once_across_processes(redis_server: RedisServer) -> None:
    a, b = make(redis_server), make(redis_server)
    try:
        results = await asyncio.gather(*[q.claim_delivery("j1") for q in (a, b, a, b)])
        assert sorted(results) == [False, False, False, True]
        ttl = await a.r.ttl("{hbscreen}:sent:j1")
        assert ttl > 0
    finally:
        await a.close()
        await b.close()


async def test_outcome_not_acknowledged_comes_again_after_submitter_restart(
    redis_server: RedisServer,
) -> None:
    q = make(redis_server)
    w = Worker(redis_server)
    try:
        jid = await q.submit(b"x", job())
        it = q.outcomes()
        first = await asyncio.wait_for(anext(it), 5)
        assert first.job.id == jid
        await q.close()  # the bot dies before it asked for the next outcome (no ack)
        q2 = make(redis_server)
        again = await collect(q2, 1, 3)
        assert [o.job.id for o in again] == [jid]
        assert await q2.claim_delivery(jid) is True  # first delivery claims...
        assert await q2.claim_delivery(jid) is False  # ...a repeat is suppressed
        assert await collect(q2, 1, 0.5) == []  # acknowledged now
        await q2.close()
    finally:
        await w.close()


async def test_jobs_survive_a_redis_restart(redis_server: RedisServer) -> None:
    q = make(redis_server)
    ids = [await q.submit(b"%d" % i, job()) for i in range(10)]
    redis_server.restart(kill=True)  # AOF with fsync always: even SIGKILL loses nothing
    w = Worker(redis_server, concurrency=2)
    try:
        outs = await collect(q, 10, 15)
        assert sorted(o.job.id for o in outs) == sorted(ids)
        assert {o.status for o in outs} == {"done"}
        # and a restart while the worker and the submitter are running
        more = [await q.submit(b"m%d" % i, job()) for i in range(5)]
        redis_server.restart(down_s=0.3)
        outs = await collect(q, 5, 15)
        assert sorted(o.job.id for o in outs) == sorted(more)
    finally:
        await w.close()
        await q.close()


async def test_kill_9_mid_job_another_worker_finishes_it_exactly_once(
    redis_server: RedisServer,
) -> None:
    q = make(redis_server)
    proc = spawn_worker(redis_server, "tests.redis_server:slow_process", HBSCREEN_TEST_SLEEP_S="3")
    w: Worker | None = None
    try:
        jid = await q.submit(b"slow", job())
        await wait_until(lambda: _begun(q, jid), 15)  # the subprocess is processing it
        await asyncio.sleep(0.2)
        proc.send_signal(signal.SIGKILL)
        proc.wait(5)
        w = Worker(redis_server)  # a healthy worker reclaims it after claim_idle_s
        outs = await collect(q, 1, 8)
        outs += await collect(q, 1, 1.0)  # and nothing more
        assert [(o.job.id, o.status) for o in outs] == [(jid, "done")]
        assert outs[0].job.tries == 2
        assert await q.depth() == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        if w is not None:
            await w.close()
        await q.close()


async def _begun(q: RedisSubmitter, jid: str) -> bool:
    return int(await q.r.hget(q.keys.job(jid), "tries") or 0) >= 1


async def test_a_slow_job_is_kept_alive_not_stolen(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HBSCREEN_TEST_SLEEP_S", "1.5")  # three times claim_idle_s
    q = make(redis_server)
    a, b = Worker(redis_server, process=slow_process), Worker(redis_server, process=slow_process)
    try:
        jid = await q.submit(b"slow", job())
        outs = await collect(q, 2, 4)
        assert [(o.job.id, o.status, o.job.tries) for o in outs] == [(jid, "done", 1)]
        done = a.count("hbscreen_jobs_done_total") + b.count("hbscreen_jobs_done_total")
        assert done == 1
    finally:
        await a.close()
        await b.close()
        await q.close()


async def test_sigterm_finishes_the_job_in_hand(redis_server: RedisServer) -> None:
    q = make(redis_server)
    proc = spawn_worker(redis_server, "tests.redis_server:slow_process", HBSCREEN_TEST_SLEEP_S="1")
    try:
        jid = await q.submit(b"slow", job())
        await wait_until(lambda: _begun(q, jid), 15)
        proc.send_signal(signal.SIGTERM)
        outs = await collect(q, 1, 8)
        assert [(o.job.id, o.status) for o in outs] == [(jid, "done")]
        assert proc.wait(10) == 0
        log = proc.stdout.read().decode() if proc.stdout else ""
        assert '"msg": "worker stopped"' in log
    finally:
        if proc.poll() is None:
            proc.kill()
        await q.close()


async def test_sigterm_past_the_grace_hands_the_job_back(redis_server: RedisServer) -> None:
    q = make(redis_server)
    proc = spawn_worker(
        redis_server,
        "tests.redis_server:slow_process",
        HBSCREEN_TEST_SLEEP_S="3",
        HBSCREEN_SHUTDOWN_GRACE_S="0.2",
    )
    w: Worker | None = None
    try:
        jid = await q.submit(b"slow", job())
        await wait_until(lambda: _begun(q, jid), 15)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
        assert await q.depth() == 1  # handed back, not lost
        w = Worker(redis_server)
        outs = await collect(q, 1, 5)
        assert [(o.job.id, o.status, o.job.tries) for o in outs] == [(jid, "done", 1)]
    finally:
        if proc.poll() is None:
            proc.kill()
        if w is not None:
            await w.close()
        await q.close()


async def test_two_submitters_never_see_each_others_outcomes(redis_server: RedisServer) -> None:
    bot, cli = make(redis_server, "bot"), make(redis_server, "cli-1")
    w = Worker(redis_server, concurrency=2)
    try:
        b = [await bot.submit(b"b%d" % i, job()) for i in range(3)]
        c = [await cli.submit(b"c%d" % i, job()) for i in range(3)]
        got_c = [await cli.wait(j, 5) for j in c]
        got_b = await collect(bot, 3, 5)
        assert [o.job.id for o in got_c] == c
        assert sorted(o.job.id for o in got_b) == sorted(b)
        assert Counter(o.status for o in got_b + got_c) == {"done": 6}
    finally:
        await w.close()
        await bot.close()
        await cli.close()
