"""Queue benchmark: overhead of the Redis Streams queue, worker scaling, a burst of 1,000 jobs.

    python benchmarks/bench_queue.py [--jobs 200] [--overhead-n 500] [--standin]

1. enqueue -> outcome overhead with a no-op job, one job at a time (p50, p99);
2. throughput with 1 and 2 worker processes pinned to 1 and 2 cores (taskset), on the real
   pipeline: the shipped models when inference/models has them, else the tiny test models
   (same code path, tiny graphs), or a CPU-bound stand-in with --standin;
3. a burst of 1,000 no-op jobs: accepted vs busy at the default depth limit, and a drain
   with the limit raised; every accepted job must come back.

Starts its own redis-server (AOF on, appendfsync everysec as in production) on a free port
and its own worker processes; prints figures and asserts nothing. Targets: overhead p50 <= 3
ms; 2 workers >= 1.7x one. Run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hbscreen.inference.queue.protocol import (  # noqa: E402
    Job,
    QueueBusy,
    QueueConfig,
)
from hbscreen.inference.queue.redis_streams import RedisSubmitter  # noqa: E402
from tests.redis_server import QUEUE_KEY, RedisServer, sealer_for_tests  # noqa: E402

GROUP = "child-24-59m"


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(p / 100 * (len(xs) - 1)))]


def cpu_s(pid: int | None = None) -> float:
    """User+system CPU seconds of a process (this one by default): a load-independent cost."""
    if pid is None:
        t = os.times()
        return t.user + t.system
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def spawn(url: str, cores: str | None, process: str | None, models: Path | None):
    cmd = [sys.executable, "-m", "hbscreen.cli", "worker", "--redis", url]
    if process:
        cmd += ["--process", process]
    if models:
        cmd += ["--models", str(models)]
    if cores and shutil.which("taskset"):
        cmd = ["taskset", "-c", cores, *cmd]
    env = os.environ | {
        "HBSCREEN_QUEUE_KEY": QUEUE_KEY,  # payloads sealed as deployed
        "PYTHONPATH": str(ROOT),
        "HBSCREEN_LOG_LEVEL": "WARNING",
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
    }
    return subprocess.Popen(cmd, cwd=ROOT, env=env)


async def wait_workers(q: RedisSubmitter, n: int) -> None:
    until = time.monotonic() + 60
    while len(await q.r.keys(q.keys.worker("*"))) < n:  # live workers' heartbeats
        if time.monotonic() > until:
            raise RuntimeError("workers did not start")
        await asyncio.sleep(0.1)


def stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            p.kill()


async def overhead(url: str, n: int, redis_pid: int) -> None:
    procs = [spawn(url, None, "tests.redis_server:noop_process", None)]
    q = RedisSubmitter(url, submitter=None, sealer=sealer_for_tests())
    try:
        await wait_workers(q, 1)
        it = q.outcomes()
        lat = []
        pids = [None, procs[0].pid, redis_pid]
        for i in range(n + 20):
            if i == 20:  # after warm-up
                cpu0 = [cpu_s(p) for p in pids]
            t = time.perf_counter()
            await q.submit(b"x", Job(group=GROUP))
            await anext(it)
            if i >= 20:
                lat.append((time.perf_counter() - t) * 1000)
        cpu = [(cpu_s(p) - c) * 1000 / n for p, c in zip(pids, cpu0, strict=True)]
        print(
            f"overhead (no-op job, 1 worker process, {n} sequential jobs): "
            f"p50 {pct(lat, 50):.2f} ms, p99 {pct(lat, 99):.2f} ms, "
            f"mean {statistics.mean(lat):.2f} ms  [target p50 <= 3 ms]"
        )
        print(
            f"  CPU per job: submitter {cpu[0]:.2f} ms, worker {cpu[1]:.2f} "
            f"ms, redis {cpu[2]:.2f} ms; total {sum(cpu):.2f} ms"
        )
    finally:
        await q.close()
        stop(procs)


async def throughput(
    url: str, workers: int, jobs: int, image: bytes, process: str | None, models: Path | None
) -> float:
    cores = [str(i % (os.cpu_count() or 1)) for i in range(workers)]
    procs = [spawn(url, c, process, models) for c in cores]
    q = RedisSubmitter(
        url, QueueConfig(max_depth=jobs + 10), submitter=None, sealer=sealer_for_tests()
    )
    try:
        await wait_workers(q, workers)
        it = q.outcomes()
        for _ in range(4 * workers):  # warm-up: models loaded, caches hot
            await q.submit(image, Job(group=GROUP))
        for _ in range(4 * workers):
            await anext(it)
        cpu0 = [cpu_s(p.pid) for p in procs]
        t = time.perf_counter()
        for _ in range(jobs):
            await q.submit(image, Job(group=GROUP))
        statuses: dict[str, int] = {}
        ok = 0
        for _ in range(jobs):
            o = await anext(it)
            statuses[o.status] = statuses.get(o.status, 0) + 1
            ok += bool(o.result and o.result.ok)
        dt = time.perf_counter() - t
        rate = jobs / dt
        cpu = sum(cpu_s(p.pid) - c for p, c in zip(procs, cpu0, strict=True))
        print(
            f"throughput, {workers} worker process(es) on core(s) {','.join(cores)}: "
            f"{rate:.1f} photos/s ({jobs} jobs in {dt:.2f} s; {statuses}; ok={ok}); "
            f"worker CPU {cpu * 1000 / jobs:.1f} ms/photo = {jobs / cpu:.1f} photos per "
            f"CPU-second"
        )
        return rate
    finally:
        await q.close()
        stop(procs)


async def burst(url: str, n: int = 1000) -> None:
    procs = [spawn(url, None, "tests.redis_server:noop_process", None) for _ in range(2)]
    try:
        # At the default depth limit (200): a burst gets clear "busy" answers.
        q = RedisSubmitter(url, submitter=None, sealer=sealer_for_tests())
        await wait_workers(q, 2)
        accepted, busy = [], 0
        t = time.perf_counter()
        for _ in range(n):
            try:
                accepted.append(await q.submit(b"x" * 1000, Job(group=GROUP)))
            except QueueBusy:
                busy += 1
        dt_submit = time.perf_counter() - t
        it = q.outcomes()
        got = {(await anext(it)).job.id for _ in accepted}
        dt = time.perf_counter() - t
        print(
            f"burst of {n} at depth limit {q.max_depth}: accepted {len(accepted)}, busy {busy}, "
            f"completed {len(got & set(accepted))}/{len(accepted)}, submit {dt_submit:.2f} s, "
            f"all done {dt:.2f} s"
        )
        await q.close()
        # With room for all of them: every one completes.
        q = RedisSubmitter(
            url, QueueConfig(max_depth=n + 10), submitter=None, sealer=sealer_for_tests()
        )
        t = time.perf_counter()
        ids = [await q.submit(b"x" * 1000, Job(group=GROUP)) for _ in range(n)]
        dt_submit = time.perf_counter() - t
        it = q.outcomes()
        got = {(await anext(it)).job.id for _ in ids}
        dt = time.perf_counter() - t
        print(
            f"burst of {n} with depth limit {q.max_depth}: completed "
            f"{len(got & set(ids))}/{n}, submit {dt_submit:.2f} s ({n / dt_submit:.0f}/s), "
            f"all done {dt:.2f} s ({n / dt:.0f} jobs/s with 2 no-op workers)"
        )
        await q.close()
    finally:
        stop(procs)


def photo() -> bytes:
    import cv2

    bgr = cv2.imread(str(ROOT / "examples" / "eyelid.jpg"), cv2.IMREAD_COLOR)
    if bgr is None:
        from tests.test_pipeline import jpeg, synthetic_photo

        return jpeg(synthetic_photo(960, 1280))
    h, w = bgr.shape[:2]
    s = 1280 / max(h, w)
    bgr = cv2.resize(bgr, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA)
    return cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=200, help="jobs per throughput run")
    ap.add_argument("--overhead-n", type=int, default=500)
    ap.add_argument("--standin", action="store_true", help="CPU-bound stand-in, not models")
    ap.add_argument("--models", type=Path, help="models dir (default: shipped, else tiny)")
    ap.add_argument("--skip", nargs="*", default=[], choices=["overhead", "scaling", "burst"])
    a = ap.parse_args()
    load = os.getloadavg()
    print(f"cpus: {os.cpu_count()}, load average before: {load[0]:.2f} {load[1]:.2f}")
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp) / "redis", appendfsync="everysec").start()
        try:
            if "overhead" not in a.skip:
                assert server.proc is not None
                await overhead(server.url, a.overhead_n, server.proc.pid)
            if "scaling" not in a.skip:
                process, models = None, a.models
                if a.standin:
                    process = "tests.redis_server:busy_process"
                    what = "CPU-bound stand-in (busy_process, 20 ms of numpy per job)"
                elif models is None and (ROOT / "inference/models/regression.json").exists():
                    what = "real pipeline, shipped models"
                elif models is None:
                    from tests.tiny_models import build_tiny_models

                    models = build_tiny_models(Path(tmp) / "tiny")
                    what = "real pipeline code with the TINY test models (no shipped models)"
                else:
                    what = f"real pipeline, models from {models}"
                print(f"scaling workload: {what}; 1280 px JPEG")
                image = photo()
                one = await throughput(server.url, 1, a.jobs, image, process, models)
                two = await throughput(server.url, 2, a.jobs, image, process, models)
                print(f"scaling: 2 workers / 1 worker = {two / one:.2f}x  [target >= 1.7x]")
            if "burst" not in a.skip:
                await burst(server.url)
        finally:
            server.stop()
    load = os.getloadavg()
    print(f"load average after: {load[0]:.2f} {load[1]:.2f}")


if __name__ == "__main__":
    asyncio.run(main())
