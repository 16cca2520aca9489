"""On a pytest-timeout, print every asyncio task's stack before the test fails.

Why: a hung async test shows only the event loop idle in select (the main thread's stack says
nothing about what the test awaits). The tasks' stacks say which await never ended. Wraps the
SIGALRM handler pytest-timeout installs (its "signal" method, the default on Linux)."""

from __future__ import annotations

import asyncio
import io
import signal
from collections.abc import Generator
from typing import Any

import pytest


def task_stacks(loop: asyncio.AbstractEventLoop) -> str:
    """Every unfinished task of the loop, with the stack of the await it is suspended in."""
    out = io.StringIO()
    tasks = [t for t in asyncio.all_tasks(loop) if not t.done()]
    out.write(f"{len(tasks)} unfinished asyncio task(s)\n")
    for task in sorted(tasks, key=lambda t: t.get_name()):
        out.write(f"\n--- {task!r}\n")
        task.print_stack(file=out)
    return out.getvalue()


@pytest.hookimpl(wrapper=True)
def pytest_timeout_set_timer(item: pytest.Item, settings: Any) -> Generator[None, Any, Any]:
    result = yield
    handler = signal.getsignal(signal.SIGALRM) if hasattr(signal, "SIGALRM") else None
    if not callable(handler):
        return result  # the "thread" method: it exits the process after its own dump

    def dump_then_fail(signum: int, frame: Any) -> None:
        __tracebackhide__ = True
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None  # a sync test, or between tests: the thread dump says it all
        if loop is not None:
            terminal = item.config.get_terminal_writer()
            terminal.sep("+", title="asyncio tasks at the timeout")
            terminal.write(task_stacks(loop))
            terminal.sep("+", title="asyncio tasks at the timeout")
        handler(signum, frame)

    signal.signal(signal.SIGALRM, dump_then_fail)
    return result
