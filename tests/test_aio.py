"""Stopping background tasks for sure (hbscreen.inference.aio), and the bot's stop with a
delivery intake that misses its cancel, as redis-py's reads do on Python 3.11 (a cancel that
meets asyncio.wait_for as its operation finishes is dropped: CPython gh-86296)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from types import SimpleNamespace

import pytest

from hbscreen.bot.app import _post_stop
from hbscreen.bot.delivery import run_delivery
from hbscreen.bot.storage import MemoryStore
from hbscreen.inference.aio import cancel_and_wait
from hbscreen.inference.queue.protocol import JobOutcome
from hbscreen.settings import Settings


async def deaf_loop(misses: int, stop: asyncio.Event | None = None) -> None:
    """Runs until cancelled, but the first `misses` cancels are lost (as in wait_for)."""
    while stop is None or not stop.is_set():
        try:
            await asyncio.sleep(0.01)
        except asyncio.CancelledError:
            if misses <= 0:
                raise
            misses -= 1


async def test_a_task_that_missed_its_cancel_is_cancelled_again() -> None:
    task = asyncio.create_task(deaf_loop(misses=2))
    await asyncio.sleep(0.05)
    t0 = time.monotonic()
    assert await cancel_and_wait(task, timeout=5, recancel_s=0.1) == set()
    assert task.cancelled() and time.monotonic() - t0 < 2


async def test_a_task_that_never_stops_is_given_up_after_the_timeout() -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(deaf_loop(misses=10**9, stop=stop))
    await asyncio.sleep(0.05)
    t0 = time.monotonic()
    assert await cancel_and_wait(task, timeout=0.3, recancel_s=0.1) == {task}
    assert 0.3 <= time.monotonic() - t0 < 2
    stop.set()
    await task


async def test_the_callers_own_cancellation_goes_through() -> None:
    """`task.cancel(); with suppress(CancelledError): await task` would swallow it."""
    stop = asyncio.Event()
    child = asyncio.create_task(deaf_loop(misses=10**9, stop=stop))
    caller = asyncio.create_task(cancel_and_wait(child, timeout=30))
    await asyncio.sleep(0.05)
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    stop.set()
    await child


async def test_an_exception_a_task_ended_with_is_read() -> None:
    async def fails() -> None:
        raise ValueError("boom")

    task = asyncio.create_task(fails())
    await asyncio.sleep(0)
    assert await cancel_and_wait(task, timeout=1) == set()
    assert task.done() and not task.cancelled()


class DeafQueue:
    """A queue whose outcome stream misses the first cancel, like RedisSubmitter.outcomes()
    over redis-py on Python 3.11."""

    def __init__(self) -> None:
        self.reading = asyncio.Event()
        self.ended = False

    async def outcomes(self) -> AsyncIterator[JobOutcome]:
        self.reading.set()
        try:
            await deaf_loop(misses=1)
        finally:
            self.ended = True
        return
        yield  # an async generator that yields nothing


async def test_the_bot_stops_though_its_outcome_intake_missed_the_cancel() -> None:
    queue = DeafQueue()
    settings = Settings(hash_key="test-hash-key-not-a-secret", redis_url=None)
    services = SimpleNamespace(settings=settings, queue=queue, store=MemoryStore())
    application = SimpleNamespace(bot_data=SimpleNamespace(services=services, delivery_task=None))
    application.bot_data.delivery_task = asyncio.create_task(run_delivery(application))
    await asyncio.wait_for(queue.reading.wait(), 5)
    t0 = time.monotonic()
    await asyncio.wait_for(_post_stop(application), 15)  # before: waited for ever
    assert queue.ended and time.monotonic() - t0 < 5
    assert application.bot_data.delivery_task is None
