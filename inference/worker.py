"""The screening worker: takes jobs from the queue, runs the pipeline, publishes outcomes.

One loop (`serve`) runs against either queue: the Redis Streams queue in `hbscreen worker`
processes, or the in-process queue inside `hbscreen bot`. The models load once per process and
run in a thread pool (onnxruntime releases the GIL), `worker_concurrency` jobs at a time, so
the event loop stays free for heartbeats, keep-alives and metrics.

A job whose processing raises, or whose models failed (error code `model_failed`), is retried
up to `max_tries` times and then dead-lettered; the person gets a "dead" outcome with an
explanation. Bad photos are not failures: they are answers (a result with `error`).
On SIGTERM the worker takes no new job, finishes the jobs in hand for `shutdown_grace_s`, and
hands back what is left.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import logging
import os
import signal
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import ErrorCode
from .metrics import WorkerMetrics
from .queue.base import Delivery, Job, JobSource, failed_result
from .result import ScreeningResult

if TYPE_CHECKING:
    from hbscreen.settings import Settings

    from .queue.redis_streams import RedisStreamsQueue

log = logging.getLogger("hbscreen.worker")

Process = Callable[[bytes, Job], tuple[ScreeningResult, bytes | None]]
DEAD_MESSAGE = "the photo could not be processed; please try again later or with another photo"


def pipeline_process(models_dir: Path | None = None, threads: int = 1) -> Process:
    """The real screening function; loads the models now (once per process)."""
    import cv2

    from .pipeline import Pipeline

    cv2.setNumThreads(1)
    pipeline = Pipeline.shared(models_dir, threads)

    def process(image: bytes, job: Job) -> tuple[ScreeningResult, bytes | None]:
        result, jpeg = pipeline.screen(
            image, job.group, cutout=job.cutout, danger_signs=job.danger_signs
        )
        result.job_id = job.id
        return result, jpeg

    return process


def _transient_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [ConnectionError, OSError, TimeoutError]
    with contextlib.suppress(ImportError):
        from redis.exceptions import ConnectionError as RedisConnectionError
        from redis.exceptions import TimeoutError as RedisTimeoutError

        errors += [RedisConnectionError, RedisTimeoutError]
    return tuple(errors)


TRANSIENT = _transient_errors()  # the queue backend is restarting: wait and try again


def _failure(result: ScreeningResult) -> str | None:
    """Why this result is a failure worth retrying (the models crashed), or None."""
    if result.error is not None and result.error.code == ErrorCode.MODEL_FAILED.value:
        return result.error.message
    return None


async def serve(
    source: JobSource,
    process: Process,
    *,
    concurrency: int = 1,
    stop: asyncio.Event | None = None,
    metrics: WorkerMetrics | None = None,
    consumer: str = "worker",
    grace_s: float = 20.0,
    block_s: float = 0.5,
    keep_alive_s: float = 1.0,
) -> None:
    """Process jobs from `source` until `stop` is set."""
    stop = stop or asyncio.Event()
    metrics = metrics or WorkerMetrics()
    loop = asyncio.get_running_loop()
    pool = ThreadPoolExecutor(max(1, concurrency), thread_name_prefix="hbscreen-job")
    inflight: dict[asyncio.Task[None], Delivery] = {}
    counts = {"done": 0}
    started = time.time()

    async def handle(d: Delivery) -> None:
        try:
            await process_one(d)
        except asyncio.CancelledError:
            raise
        except Exception:  # e.g. Redis gone for longer than the retries: the job stays
            # pending in the queue and is reclaimed later; this worker goes on.
            log.exception("job not settled", extra={"job_id": d.job.id})

    async def process_one(d: Delivery) -> None:
        job = d.job
        t0 = time.perf_counter()
        if job.submitted_at:
            metrics.queue_wait_seconds.observe(max(0.0, time.time() - job.submitted_at))
        metrics.in_flight.inc()
        result: ScreeningResult | None = None
        jpeg: bytes | None = None
        try:
            result, jpeg = await loop.run_in_executor(pool, process, d.image, job)
            failure = _failure(result)
        except Exception as e:
            failure = type(e).__name__
            log.warning("job raised", exc_info=True, extra={"job_id": job.id, "try": job.tries})
        finally:
            metrics.in_flight.dec()
        if failure is not None:
            metrics.failed.inc()
            if job.tries >= source.max_tries:
                res = await source.finish(
                    d, "dead", failed_result(job, DEAD_MESSAGE), reason=failure[:200]
                )
                metrics.count_skipped(res)
                log.error("job dead-lettered", extra={"job_id": job.id, "tries": job.tries})
            else:
                res = await source.retry(d)
                if res == "requeued":
                    metrics.retried.inc()
                log.warning("job retried", extra={"job_id": job.id, "try": job.tries})
            return
        assert result is not None
        result.job_id = result.job_id or job.id
        elapsed = time.perf_counter() - t0
        metrics.job_seconds.observe(elapsed)
        metrics.observe_stages(result.timings_ms)
        late = bool(job.deadline_at) and time.time() > job.deadline_at
        if late:
            res = await source.finish(d, "expired", None)
        else:
            res = await source.finish(d, "done", result, jpeg)
        if res == "done":
            metrics.done.inc()
            counts["done"] += 1
        else:
            metrics.count_skipped(res)
        log.info(
            "job finished",
            extra={
                "job_id": job.id,
                "outcome": res,
                "ok": result.ok,
                "code": result.error.code if result.error else None,
                "ms": round(elapsed * 1000, 1),
                "try": job.tries,
            },
        )

    metrics.up.set(1)
    delay = 0.05
    next_keep_alive = next_depth = 0.0
    log.info("worker started", extra={"consumer": consumer, "concurrency": concurrency})
    try:
        while not stop.is_set():
            try:
                info = {"in_flight": len(inflight), "done": counts["done"], "since": started}
                await source.housekeeping(consumer, info)
                now = time.monotonic()
                if now >= next_keep_alive and inflight:
                    next_keep_alive = now + keep_alive_s
                    await source.keep_alive(consumer, list(inflight.values()))
                if now >= next_depth:
                    next_depth = now + 1.0
                    metrics.queue_depth.set(await source.depth())
                free = concurrency - len(inflight)
                if free <= 0:
                    await asyncio.wait(
                        list(inflight), timeout=block_s, return_when=asyncio.FIRST_COMPLETED
                    )
                    continue
                ready, skipped = await source.take(consumer, free, block_s)
                delay = 0.05
            except TRANSIENT as e:
                log.warning("queue unavailable", extra={"error": repr(e)})
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
                continue
            for s in skipped:
                metrics.count_skipped(s)
            for d in ready:
                task = asyncio.create_task(handle(d))
                inflight[task] = d
                task.add_done_callback(lambda t: inflight.pop(t, None))
    finally:
        metrics.up.set(0)
        if inflight:
            log.info("finishing jobs in hand", extra={"count": len(inflight)})
            _done, pending = await asyncio.wait(list(inflight), timeout=grace_s)
            for task in pending:
                d = inflight.get(task)
                task.cancel()
                if d is not None:
                    with contextlib.suppress(Exception):
                        await source.release(d)
                    log.info("job handed back", extra={"job_id": d.job.id})
        pool.shutdown(wait=False, cancel_futures=True)
        log.info("worker stopped", extra={"consumer": consumer, "done": counts["done"]})


def redis_queue(settings: Settings, *, submitter: str | None = None) -> RedisStreamsQueue:
    from .queue.factory import make_queue

    if not settings.redis_url:
        raise ValueError("the worker needs REDIS_URL")
    q = make_queue(settings.redis_url, settings=settings, submitter=submitter or "worker")
    return q  # type: ignore[return-value]


async def run_worker(
    settings: Settings,
    *,
    process: Process | None = None,
    stop: asyncio.Event | None = None,
    consumer: str | None = None,
) -> None:
    """A worker against `settings.redis_url` until `stop` is set (or SIGTERM/SIGINT)."""
    from .queue.redis_streams import default_consumer_name

    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
    if process is None:
        process = pipeline_process(settings.models_dir, settings.ort_threads)  # load once
    queue = redis_queue(settings)
    metrics = WorkerMetrics()
    if settings.metrics_port:
        port = metrics.serve(settings.metrics_port)
        log.info("metrics served", extra={"port": port})
    try:
        await serve(
            queue,
            process,
            concurrency=settings.worker_concurrency,
            stop=stop,
            metrics=metrics,
            consumer=consumer or default_consumer_name(),
            grace_s=settings.shutdown_grace_s,
            keep_alive_s=min(1.0, settings.claim_idle_s / 3),
        )
    finally:
        metrics.stop()
        await queue.close()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.remove_signal_handler(sig)


def main(settings: Settings, *, process: Process | None = None) -> None:
    """`hbscreen worker`: JSON logs, then run until SIGTERM."""
    from .jsonlog import configure_json_logging

    configure_json_logging(settings.log_level, service="worker")
    asyncio.run(run_worker(settings, process=process))


def _load_process(spec: str) -> Process:
    """Turn "module:function" into a processing function (a stand-in for tests, benchmarks)."""
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


if __name__ == "__main__":  # python -m hbscreen.inference.worker (tests, benchmarks)
    from hbscreen.settings import Settings

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--redis", required=True)
    ap.add_argument("--process", help="module:function instead of the real pipeline")
    ap.add_argument("--models", type=Path)
    ap.add_argument("--concurrency", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--metrics-port", type=int, default=0)
    a = ap.parse_args()
    overrides = {
        "redis_url": a.redis,
        "worker_concurrency": a.concurrency,
        "ort_threads": a.threads,
        "metrics_port": a.metrics_port,
        "models_dir": a.models,
    }
    s = Settings().model_copy(update=overrides)
    main(s, process=_load_process(a.process) if a.process else None)
    os._exit(0)  # do not wait for a model thread stuck in a job that was handed back
