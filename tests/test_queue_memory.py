"""The in-process queue (no Redis): what only it does. The behaviour both queues share is in
test_queue_contract.py."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from hbscreen.compose import wire_submitter
from hbscreen.inference.queue.memory import MemoryQueue
from hbscreen.inference.queue.protocol import Job, JobQueue, JobSource, QueueConfig
from hbscreen.inference.worker import serve
from hbscreen.settings import Settings
from tests.redis_server import model_failed_process, slow_process
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


async def test_dead_letters_are_kept_in_memory() -> None:
    q = Local(QueueConfig(max_tries=2))
    q.start_workers(model_failed_process)
    try:
        jid = await q.submit(b"crash", job())
        assert (await q.wait(jid, 5)).status == "dead"
        assert [d.job.id for d in q.dead_letters] == [jid]
    finally:
        await q.close()
