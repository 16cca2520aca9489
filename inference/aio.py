"""Stopping a background task for sure.

Why not `task.cancel(); await task`: on Python 3.11 `asyncio.wait_for` drops a cancellation
that arrives while the operation it waits for has just finished (CPython gh-86296, fixed in
3.12), and redis-py wraps every socket write in `wait_for` (its default socket timeout). A task
that loops until cancelled on Redis commands (the bot's outcome intake, a lease renewer) then
misses its one cancel() and runs on, and whoever awaits it waits forever: the bot never shut
down. Cancelling again until the task has ended, within a bound, makes the stop certain.
`asyncio.wait` also leaves the caller's own cancellation alone, which awaiting the task under
`suppress(CancelledError)` would swallow.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

log = logging.getLogger(__name__)

RECANCEL_S = 0.5  # a cancelled task normally ends within milliseconds; then it is asked again


async def cancel_and_wait(
    tasks: asyncio.Future[Any] | Iterable[asyncio.Future[Any]],
    timeout: float,
    *,
    recancel_s: float = RECANCEL_S,
) -> set[asyncio.Future[Any]]:
    """Cancel the tasks and wait until they have ended, cancelling the ones still running
    every `recancel_s`, for at most `timeout` seconds. Returns those still running (empty when
    all ended). An exception a task ended with is read (so asyncio does not log it) and
    dropped: the caller is stopping it, not using its result."""
    every = {tasks} if isinstance(tasks, asyncio.Future) else set(tasks)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    pending, asked = every, set()
    while True:
        pending = {t for t in pending if not t.done()}
        left = deadline - loop.time()
        if not pending or left <= 0:
            break
        for task in pending:
            if task.cancel() and task in asked:  # rare: worth a line when it happens
                log.info("a task missed its cancel, cancelled again", extra={"task": repr(task)})
        asked |= pending
        await asyncio.wait(pending, timeout=min(recancel_s, left))
    for task in every - pending:
        if not task.cancelled():
            task.exception()
    return pending
