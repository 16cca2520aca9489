"""The in-process queue (no Redis): same interface and the same worker loop, in one process."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from hbscreen.compose import wire_submitter
from hbscreen.inference.queue.batch import screen_via_queue
from hbscreen.inference.queue.memory import MemoryQueue
from hbscreen.inference.queue.protocol import Job, JobQueue, JobSource, QueueBusy, QueueConfig
from hbscreen.inference.worker import serve
from hbscreen.settings import Settings
from tests.redis_server import model_failed_process, noop_process, slow_process
from tests.synthetic import jpeg, synthetic_photo
from tests.tiny_models import build_tiny_models

GROUP = "child-6-23m"


def job(**kw: object) -> Job:
    return Job(group=GROUP, **kw)


class Local(MemoryQueue):
    """A MemoryQueue with the worker loop as a task, as the composition root wires it."""

    def start_workers(self, process, concurrency: int = 1) -> None:
        self._stop = asyncio.Event()
        self._task = asyncio.create_task(
            serve(self, process, concurrency=concurrency, stop=self._stop, consumer="local")
        )

    async def close(self) -> None:
        if hasattr(self, "_stop"):
            self._stop.set()
            await asyncio.wait_for(self._task, 10)
        await super().close()


async def test_implements_both_sides() -> None:
    q = MemoryQueue()
    assert isinstance(q, JobQueue) and isinstance(q, JobSource)
    await q.close()


async def test_round_trip_wait_and_claim_delivery() -> None:
    q = Local()
    q.start_workers(noop_process, concurrency=2)
    try:
        ids = [await q.submit(b"x" * i, job(reply_to={"k": str(i)})) for i in range(5)]
        outs = [await q.wait(i, 5) for i in ids]
        assert [o.job.id for o in outs] == ids
        assert all(o.status == "done" and o.result and o.result.job_id == o.job.id for o in outs)
        assert [o.job.reply_to for o in outs] == [{"k": str(i)} for i in range(5)]
        assert await q.depth() == 0
        assert await q.claim_delivery(ids[0]) is True
        assert await q.claim_delivery(ids[0]) is False
    finally:
        await q.close()


async def test_burst_beyond_depth_is_busy_and_nothing_is_dropped() -> None:
    q = Local(QueueConfig(max_depth=4))
    accepted, busy = [], 0
    for i in range(10):
        try:
            accepted.append(await q.submit(b"%d" % i, job()))
        except QueueBusy:
            busy += 1
    assert len(accepted) == 4 and busy == 6
    q.start_workers(noop_process)
    try:
        outs = [await q.wait(i, 5) for i in accepted]
        assert {o.status for o in outs} == {"done"}
    finally:
        await q.close()


async def test_cancel_and_deadline() -> None:
    q = Local(QueueConfig(job_deadline_s=0.3))
    gone = await q.submit(b"a", job())
    late = await q.submit(b"b", job())
    assert await q.cancel(gone) is True and await q.cancel(gone) is False
    await asyncio.sleep(0.4)
    q.start_workers(noop_process)
    try:
        o = await q.wait(late, 3)
        assert o.status == "expired" and o.result is None
        with pytest.raises(asyncio.TimeoutError):
            await q.wait(gone, 0.5)
    finally:
        await q.close()


@pytest.mark.parametrize("process", [slow_process, model_failed_process])
async def test_a_crashing_image_ends_dead_after_max_tries(process) -> None:
    q = Local(QueueConfig(max_tries=3))
    q.start_workers(process)
    try:
        jid = await q.submit(b"crash", job())
        o = await q.wait(jid, 5)
        assert o.status == "dead" and o.job.tries == 3
        assert o.result is not None and o.result.error.code == "model_failed"
        assert [d.job.id for d in q.dead_letters] == [jid]
    finally:
        await q.close()


async def test_models_run_off_the_event_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HBSCREEN_TEST_SLEEP_S", "0.5")
    q = Local()
    q.start_workers(slow_process)
    try:
        jid = await q.submit(b"slow", job())
        ticks, t0 = 0, time.monotonic()
        while time.monotonic() - t0 < 0.4:  # the loop keeps ticking while the job runs
            await asyncio.sleep(0.01)
            ticks += 1
        assert ticks > 20
        assert (await q.wait(jid, 3)).status == "done"
    finally:
        await q.close()


async def test_the_queue_starts_no_worker_itself() -> None:
    q = MemoryQueue()
    jid = await q.submit(b"x", job())
    with pytest.raises(asyncio.TimeoutError):
        await q.wait(jid, 0.3)
    assert await q.depth() == 1  # still waiting: no worker loop unless someone starts one
    await q.close()


async def test_composition_without_redis_screens_with_the_real_pipeline(tmp_path: Path) -> None:
    settings = Settings(models_dir=build_tiny_models(tmp_path / "models"), redis_url=None)
    wiring = wire_submitter(settings, submitter="bot")
    q = wiring.queue
    assert isinstance(q, MemoryQueue) and wiring.workers is not None
    try:
        jid = await q.submit(jpeg(synthetic_photo()), job())
        o = await q.wait(jid, 20)
        assert o.status == "done" and o.result is not None and o.result.ok, o.result
        assert o.result.job_id == jid and o.heatmap_jpeg and o.heatmap_jpeg[:2] == b"\xff\xd8"
    finally:
        await wiring.close()
    assert wiring.workers.done()


async def test_batch_waits_out_a_busy_queue_and_surfaces_failures() -> None:
    q = Local(QueueConfig(max_depth=3))
    q.start_workers(noop_process)
    try:
        items = [(f"p{i}.jpg", b"x" * i) for i in range(20)]
        got = {p: o async for p, o in screen_via_queue(q, items, GROUP, timeout=20)}
        assert sorted(got) == sorted(p for p, _ in items)
        assert {o.status for o in got.values()} == {"done"}
    finally:
        await q.close()

    class Broken(MemoryQueue):
        async def submit(self, image: bytes, job: Job) -> str:
            raise RuntimeError("redis is gone")

    with pytest.raises(RuntimeError, match="redis is gone"):
        async for _ in screen_via_queue(Broken(), [("a", b"x")], GROUP, timeout=5):
            pass
