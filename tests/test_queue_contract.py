"""The queue contract: one suite, run against the in-process queue and against Redis Streams
(a real, private redis-server, payloads sealed as deployed). Whatever a submitter or a worker
may rely on is here; what only one implementation does (Redis: restarts, reclaim after
kill -9, key layout and TTLs, two submitters; memory: no event-loop blocking) stays in
test_queue_memory.py / test_queue_redis.py.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from hbscreen.inference.metrics import WorkerMetrics
from hbscreen.inference.queue.batch import screen_via_queue
from hbscreen.inference.queue.memory import MemoryQueue
from hbscreen.inference.queue.protocol import (
    Job,
    JobQueue,
    JobSource,
    Process,
    QueueBusy,
    QueueConfig,
)
from hbscreen.inference.queue.redis_streams import RedisJobSource, RedisSubmitter
from hbscreen.inference.worker import serve
from tests.redis_server import (
    model_failed_process,
    noop_process,
    sealer_for_tests,
    slow_process,
)

GROUP = "child-6-23m"


def job(**kw: object) -> Job:
    return Job(**({"group": GROUP, "reply_to": {"chat": "k1"}} | kw))  # type: ignore[arg-type]


@dataclass
class Queues:
    """One implementation: a submitter's side and, on demand, workers on the worker's side."""

    kind: str
    url: str | None
    opened: list[JobQueue | JobSource] = field(default_factory=list)
    workers: list[tuple[asyncio.Task[None], asyncio.Event, WorkerMetrics]] = field(
        default_factory=list
    )
    _memory: MemoryQueue | None = None

    def config(self, **kw: object) -> QueueConfig:
        return QueueConfig(**({"claim_idle_s": 0.5, "heartbeat_s": 0.2} | kw))  # type: ignore[arg-type]

    def submitter(self, **kw: object) -> JobQueue:
        if self.url is None:
            self._memory = MemoryQueue(self.config(**kw))
            q: JobQueue = self._memory
        else:
            q = RedisSubmitter(
                self.url, self.config(**kw), submitter="bot", sealer=sealer_for_tests()
            )
        self.opened.append(q)
        return q

    def worker(
        self, process: Process = noop_process, concurrency: int = 1, **kw: object
    ) -> WorkerMetrics:
        """Start a worker loop (in this event loop) on the worker's side of the queue."""
        if self.url is None:
            assert self._memory is not None, "open the submitter first: one in-process queue"
            source: JobSource = self._memory
        else:
            source = RedisJobSource(self.url, self.config(**kw), sealer=sealer_for_tests())
            self.opened.append(source)
        stop, metrics = asyncio.Event(), WorkerMetrics()
        task = asyncio.create_task(
            serve(
                source,
                process,
                concurrency=concurrency,
                stop=stop,
                metrics=metrics,
                consumer=f"w{len(self.workers)}",
                grace_s=5,
                block_s=0.1,
                keep_alive_s=0.1,
            )
        )
        self.workers.append((task, stop, metrics))
        return metrics

    async def close(self) -> None:
        for task, stop, _ in self.workers:
            stop.set()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, 10)
        for q in reversed(self.opened):
            await q.close()


@pytest.fixture(params=["memory", "redis"])
async def queues(request: pytest.FixtureRequest) -> AsyncIterator[Queues]:
    url = None
    if request.param == "redis":
        url = request.getfixturevalue("redis_server").url
    qs = Queues(request.param, url)
    try:
        yield qs
    finally:
        await qs.close()


def count(metrics: WorkerMetrics, name: str) -> float:
    return metrics.registry.get_sample_value(name) or 0.0


async def eventually(cond, timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    until = loop.time() + timeout
    while loop.time() < until:
        if cond():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not reached in time")


async def test_both_sides_are_implemented(queues: Queues) -> None:
    q = queues.submitter()
    assert isinstance(q, JobQueue)
    queues.worker()
    source = queues.opened[-1]
    assert isinstance(source, JobSource)


async def test_round_trip_keeps_routing_and_delivery_is_claimed_once(queues: Queues) -> None:
    q = queues.submitter()
    queues.worker(concurrency=2)
    ids = [await q.submit(b"x" * (i + 1), job(reply_to={"k": str(i)})) for i in range(5)]
    assert len(set(ids)) == 5
    outs = [await q.wait(i, 10) for i in ids]
    assert [o.job.id for o in outs] == ids
    for i, o in enumerate(outs):
        assert o.status == "done" and o.result is not None and o.result.job_id == o.job.id
        assert o.job.reply_to == {"k": str(i)} and o.job.tries == 1 and o.job.group == GROUP
        assert o.heatmap_jpeg == b"\xff\xd8jpeg"
        assert o.job.deadline_at > o.job.submitted_at > 0
    assert await q.depth() == 0
    assert await q.claim_delivery(ids[0]) is True
    assert await q.claim_delivery(ids[0]) is False
    assert await q.claim_delivery(ids[1]) is True


async def test_a_burst_beyond_the_depth_is_busy_and_every_accepted_job_completes(
    queues: Queues,
) -> None:
    q = queues.submitter(max_depth=4)
    accepted, busy = [], 0
    for i in range(12):
        try:
            accepted.append(await q.submit(b"%d" % i, job()))
        except QueueBusy:
            busy += 1
    assert len(accepted) == 4 and busy == 8 and await q.depth() == 4
    queues.worker(concurrency=2)
    outs = [await q.wait(i, 10) for i in accepted]
    assert {o.status for o in outs} == {"done"} and await q.depth() == 0
    await q.submit(b"again", job())  # room again


async def test_the_queue_is_bounded_by_the_bytes_of_its_images(queues: Queues) -> None:
    q = queues.submitter(max_queued_bytes=2500)
    first = await q.submit(b"a" * 1000, job())
    await q.submit(b"b" * 1000, job())
    with pytest.raises(QueueBusy):
        await q.submit(b"c" * 1000, job())
    assert await q.cancel(first)
    await q.submit(b"d" * 1000, job())  # the cancelled image's bytes are free again


async def test_an_empty_queue_takes_one_image_larger_than_the_bound(queues: Queues) -> None:
    q = queues.submitter(max_queued_bytes=10)
    jid = await q.submit(b"x" * 100, job())
    with pytest.raises(QueueBusy):
        await q.submit(b"y", job())
    queues.worker()
    assert (await q.wait(jid, 10)).status == "done"
    await q.submit(b"z" * 100, job())  # empty again: the bytes were given back


async def test_cancel_of_a_queued_job_delivers_nothing(queues: Queues) -> None:
    q = queues.submitter()
    keep = await q.submit(b"keep", job())
    gone = await q.submit(b"gone", job())
    assert await q.cancel(gone) is True
    assert await q.cancel(gone) is False
    assert await q.cancel("no-such-job") is False
    assert await q.depth() == 1
    metrics = queues.worker()
    assert (await q.wait(keep, 10)).status == "done"
    with pytest.raises(asyncio.TimeoutError):
        await q.wait(gone, 0.5)
    assert await q.cancel(keep) is False  # already done
    assert count(metrics, "hbscreen_jobs_done_total") == 1


async def test_cancel_while_processing_drops_the_result(
    queues: Queues, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HBSCREEN_TEST_SLEEP_S", "0.6")
    q = queues.submitter()
    metrics = queues.worker(process=slow_process)
    jid = await q.submit(b"slow", job())
    await eventually(
        lambda: (metrics.registry.get_sample_value("hbscreen_jobs_in_flight") or 0) > 0
    )
    assert await q.cancel(jid) is True
    with pytest.raises(asyncio.TimeoutError):
        await q.wait(jid, 1.5)
    await eventually(lambda: count(metrics, "hbscreen_jobs_cancelled_total") == 1)
    assert count(metrics, "hbscreen_jobs_done_total") == 0


async def test_a_job_past_its_deadline_expires_and_a_late_result_is_dropped(
    queues: Queues, monkeypatch: pytest.MonkeyPatch
) -> None:
    q = queues.submitter(job_deadline_s=0.4)
    waited = await q.submit(b"nobody works yet", job())
    await asyncio.sleep(0.5)
    monkeypatch.setenv("HBSCREEN_TEST_SLEEP_S", "0.8")
    queues.worker(process=slow_process, job_deadline_s=0.4)
    o = await q.wait(waited, 5)
    assert (o.job.id, o.status, o.result) == (waited, "expired", None)
    late = await q.submit(b"too slow", job())
    o = await q.wait(late, 5)
    assert (o.status, o.result) == ("expired", None)
    await asyncio.sleep(0.8)  # the worker finishes after the deadline: nothing more comes
    with pytest.raises(asyncio.TimeoutError):
        await q.wait(late, 0.3)
    assert await q.depth() == 0


@pytest.mark.parametrize("process", [slow_process, model_failed_process])
async def test_a_crashing_image_is_dead_lettered_after_max_tries_and_the_person_told(
    queues: Queues, process: Process
) -> None:
    q = queues.submitter(max_tries=3)
    metrics = queues.worker(process=process, max_tries=3)
    jid = await q.submit(b"crash!", job())
    o = await q.wait(jid, 10)
    assert o.job.id == jid and o.status == "dead" and o.job.tries == 3
    assert o.result is not None and o.result.error is not None and not o.result.ok
    assert o.result.error.code == "model_failed"
    await eventually(lambda: count(metrics, "hbscreen_jobs_dead_lettered_total") == 1)
    assert count(metrics, "hbscreen_jobs_failed_total") == 3
    assert count(metrics, "hbscreen_jobs_retried_total") == 2
    assert await q.depth() == 0


async def test_a_batch_waits_out_a_busy_queue(queues: Queues) -> None:
    q = queues.submitter(max_depth=3)
    queues.worker(concurrency=2)
    items = [(f"p{i}.jpg", b"x" * (i + 1)) for i in range(15)]
    got = {p: o async for p, o in screen_via_queue(q, items, GROUP, timeout=30)}
    assert sorted(got) == sorted(p for p, _ in items)
    assert {o.status for o in got.values()} == {"done"}
    assert {o.job.reply_to["item"] for o in got.values()} == {str(i) for i in range(15)}


async def test_a_batch_surfaces_a_failing_submit(queues: Queues) -> None:
    q = queues.submitter()

    async def broken(image: bytes, j: Job) -> str:
        raise RuntimeError("redis is gone")

    q.submit = broken  # type: ignore[method-assign]
    with pytest.raises(RuntimeError, match="redis is gone"):
        async for _ in screen_via_queue(q, [("a", b"x")], GROUP, timeout=5):
            pass
