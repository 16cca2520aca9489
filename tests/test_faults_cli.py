"""`hbscreen screen DIR --queue` under faults (issue 12 part 2): the batch streams, and an
interrupted batch leaves no health data in Redis.

Real redis-server, the real CLI in a subprocess, a worker loop with a slow stand-in pipeline.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from hbscreen.inference.queue.redis_streams import RedisJobSource
from hbscreen.inference.worker import serve
from tests.redis_server import QUEUE_KEY, RedisServer, noop_process, sealer_for_tests, slow_process
from tests.synthetic import synthetic_jpeg

ROOT = Path(__file__).resolve().parents[1]
DEADLINE_S = 30


@contextlib.asynccontextmanager
async def worker(url: str, process=slow_process) -> AsyncIterator[None]:
    q = RedisJobSource(url, sealer=sealer_for_tests())
    stop = asyncio.Event()
    task = asyncio.create_task(serve(q, process, stop=stop, block_s=0.1, grace_s=1))
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)
        await q.close()


def cli(folder: Path, url: str, out: Path) -> subprocess.Popen[str]:
    """The CLI; its stderr goes to OUT/stderr.txt (read by a failing assertion)."""
    env = os.environ | {
        "PYTHONPATH": str(ROOT),
        "HBSCREEN_JOB_DEADLINE_S": str(DEADLINE_S),
        "HBSCREEN_TEST_SLEEP_S": "0.4",
        "HBSCREEN_QUEUE_KEY": QUEUE_KEY,
    }
    cmd = [sys.executable, "-m", "hbscreen.cli", "screen", str(folder), "--json"]
    cmd += ["--queue", url, "--out", str(out), "--no-heatmap"]
    out.mkdir(parents=True, exist_ok=True)
    with (out / "stderr.txt").open("w") as err:
        return subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=err, text=True
        )


async def first_line(proc: subprocess.Popen[str]) -> str:
    assert proc.stdout is not None
    return await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 30)


async def keys(url: str, pattern: str) -> list[bytes]:
    r = aioredis.Redis.from_url(url)
    try:
        return [k async for k in r.scan_iter(match=pattern)]
    finally:
        await r.aclose()


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    data = synthetic_jpeg(240, 320)
    for i in range(8):
        (folder / f"p{i}.jpg").write_bytes(data)
    return folder


@pytest.mark.parametrize("how", [signal.SIGINT, signal.SIGTERM])
async def test_interrupted_batch_leaves_no_results_and_cancels_the_rest(
    redis_server: RedisServer,
    photos: Path,
    tmp_path: Path,
    how: signal.Signals,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HBSCREEN_TEST_SLEEP_S", "0.4")  # the in-test worker's stand-in
    async with worker(redis_server.url):
        proc = cli(photos, redis_server.url, tmp_path / "out")
        assert (await first_line(proc)).startswith("{")  # one result streamed out already
        proc.send_signal(how)
        await asyncio.to_thread(proc.wait, 30)
        await asyncio.sleep(1.0)  # the job in the worker's hands finishes meanwhile
    stderr = (tmp_path / "out" / "stderr.txt").read_text()
    assert "Traceback" not in stderr or "KeyboardInterrupt" in stderr.splitlines()[-1], stderr
    assert proc.returncode != 0  # interrupted, and says so
    assert await keys(redis_server.url, "{hbscreen}:results:*") == []  # no health data waits
    assert await keys(redis_server.url, "{hbscreen}:img:*") == []  # no photo waits
    r = aioredis.Redis.from_url(redis_server.url)
    states = [await r.hget(k, "state") for k in await keys(redis_server.url, "{hbscreen}:job:*")]
    await r.aclose()
    assert b"cancelled" in states and b"queued" not in states, states


async def test_killed_batch_results_expire_with_the_deadline_not_in_7_days(
    redis_server: RedisServer, photos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HBSCREEN_TEST_SLEEP_S", "0.4")
    async with worker(redis_server.url):
        proc = cli(photos, redis_server.url, tmp_path / "out")
        await first_line(proc)
        proc.kill()  # no clean-up possible
        await asyncio.to_thread(proc.wait, 30)
        await asyncio.sleep(0.8)  # a result or two more lands in the orphaned stream
        streams = await keys(redis_server.url, "{hbscreen}:results:*")
        assert streams
        r = aioredis.Redis.from_url(redis_server.url)
        ttls = [await r.ttl(k) for k in streams]
        await r.aclose()
    assert all(0 < t <= DEADLINE_S + 300 for t in ttls), ttls


def _peak_rss_mb(cmd: list[str], env: dict[str, str]) -> float:
    """The child's own peak RSS (VmHWM of its address space, polled while it runs). Not
    getrusage: Linux carries the parent's high-water mark into a child across fork and exec,
    so in a long pytest process ru_maxrss would report pytest's peak, not the CLI's."""
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
    status = Path(f"/proc/{proc.pid}/status")
    peak = 0.0
    while proc.poll() is None:
        with contextlib.suppress(OSError):
            for line in status.read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak = max(peak, int(line.split()[1]) / 1024)
        time.sleep(0.005)
    assert proc.returncode == 0
    return peak


async def test_batch_is_streamed_not_loaded(redis_server: RedisServer, tmp_path: Path) -> None:
    """Peak RSS of the CLI with 14 x 19 MB files against 2 of them: it grows by the photos in
    flight (their bytes, the sealed copies, the command buffers), not by the batch; reading the
    batch first would add the twelve more files (+228 MB at least). Measured: +42 to +57 MB
    for 8 against 2."""
    big = os.urandom(19 * 1024 * 1024)
    sizes = {}
    env = os.environ | {
        "PYTHONPATH": str(ROOT),
        "HBSCREEN_JOB_DEADLINE_S": str(DEADLINE_S),
        "HBSCREEN_QUEUE_KEY": QUEUE_KEY,
    }
    async with worker(redis_server.url, noop_process):
        for n in (2, 14):
            folder = tmp_path / f"b{n}"
            folder.mkdir()
            for i in range(n):
                (folder / f"p{i}.jpg").write_bytes(b"\xff\xd8\xff" + big[: -3 - i])
            cmd = [sys.executable, "-m", "hbscreen.cli", "screen", str(folder), "--json"]
            cmd += ["--queue", redis_server.url, "--out", str(tmp_path / f"o{n}"), "--no-heatmap"]
            sizes[n] = await asyncio.to_thread(_peak_rss_mb, cmd, env)
    print(f"peak RSS by batch size (MB): {sizes}")
    growth = sizes[14] - sizes[2]
    assert growth < 5 * 19, sizes  # twelve more files of 19 MB each would add 228 MB
