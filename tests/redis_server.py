"""A throwaway redis-server for tests: free port, tmp dir, AOF on, restartable.

Also the processing stand-ins that queue tests run in worker subprocesses
(`hbscreen worker --process tests.redis_server:slow_process`, a hidden test option).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hbscreen.inference.queue.protocol import Job
from hbscreen.inference.result import ErrorInfo, ScreeningResult

REDIS_SERVER = shutil.which("redis-server")
# The queue key the Redis tests share with their worker processes (HBSCREEN_QUEUE_KEY).
QUEUE_KEY = "test-queue-key-not-a-secret"


def sealer_for_tests():
    """The queue cipher a deployment derives from HBSCREEN_QUEUE_KEY, for QUEUE_KEY."""
    from hbscreen.compose import queue_sealer
    from hbscreen.settings import Settings

    return queue_sealer(Settings(redis_url="redis://unused", queue_key=QUEUE_KEY))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """redis-server on 127.0.0.1:<free port> with its data in `dir` (AOF; fsync always by
    default, so even a SIGKILL loses nothing; production runs everysec)."""

    def __init__(self, dir: Path, port: int | None = None, appendfsync: str = "always") -> None:
        if REDIS_SERVER is None:
            raise RuntimeError("redis-server is not installed")
        self.dir = Path(dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.appendfsync = appendfsync
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        args = [
            REDIS_SERVER,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.dir),
            "--appendonly", "yes",
            "--appendfsync", self.appendfsync,
            "--save", "",
            "--daemonize", "no",
            "--logfile", str(self.dir / "redis.log"),
        ]  # fmt: skip
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self._wait_ready()
        return self

    def _wait_ready(self, timeout: float = 10.0) -> None:
        until = time.monotonic() + timeout
        while time.monotonic() < until:
            assert self.proc is not None
            if self.proc.poll() is not None:
                log = (self.dir / "redis.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"redis-server exited: {log}")
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s,
            ):
                s.sendall(b"PING\r\n")
                if s.recv(64).startswith(b"+PONG"):
                    return
            time.sleep(0.02)
        raise RuntimeError("redis-server did not answer")

    def stop(self, *, kill: bool = False) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def restart(self, *, kill: bool = False, down_s: float = 0.0) -> None:
        """Stop (SIGTERM, or SIGKILL with kill=True) and start again on the same port and
        data dir: what survives is what the AOF kept."""
        self.stop(kill=kill)
        time.sleep(down_s)
        self.start()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A private redis-server per test (starts in ~20 ms)."""
    if REDIS_SERVER is None:
        pytest.skip("redis-server is not installed")
    server = RedisServer(tmp_path / "redis").start()
    try:
        yield server
    finally:
        server.stop(kill=True)


# ---------------------------------------------------------------- processing stand-ins
def fake_result(job: Job, hb: float = 11.5) -> ScreeningResult:
    return ScreeningResult(
        job_id=job.id, group=job.group, ok=True, hb_g_dl=hb, referral="routine",
        timings_ms={"decode": 1.0, "regression": 2.0},
    )  # fmt: skip


def noop_process(image: bytes, job: Job) -> tuple[ScreeningResult, bytes | None]:
    """No work: measures the queue itself."""
    return fake_result(job, hb=len(image) % 7 + 9.0), b"\xff\xd8jpeg"


def slow_process(image: bytes, job: Job) -> tuple[ScreeningResult, bytes | None]:
    """Sleeps HBSCREEN_TEST_SLEEP_S (default 1 s): time to kill a worker mid-job.

    An image starting with b"crash" fails like a model crash (ValueError)."""
    if image.startswith(b"crash"):
        raise ValueError("model crashed")
    time.sleep(float(os.environ.get("HBSCREEN_TEST_SLEEP_S", "1.0")))
    return fake_result(job), b"\xff\xd8jpeg"


def model_failed_process(image: bytes, job: Job) -> tuple[ScreeningResult, bytes | None]:
    """What the real pipeline returns when onnxruntime raised: a result with model_failed."""
    result = fake_result(job)
    result.ok, result.hb_g_dl, result.referral = False, None, "retake"
    result.error = ErrorInfo(code="model_failed", message="the models failed (RuntimeError)")
    return result, None


def busy_process(image: bytes, job: Job) -> tuple[ScreeningResult, bytes | None]:
    """CPU-bound stand-in (~HBSCREEN_TEST_BUSY_MS ms of numpy work holding a core)."""
    import numpy as np

    ms = float(os.environ.get("HBSCREEN_TEST_BUSY_MS", "20"))
    until = time.perf_counter() + ms / 1000
    a = np.ones((64, 64), np.float32)
    while time.perf_counter() < until:
        a = np.tanh(a @ a.T / 64.0)
    return fake_result(job), None
