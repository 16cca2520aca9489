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

This module takes explicit configuration (`WorkerConfig`, `QueueConfig`); reading it from the
environment and choosing the queue is the composition root's job (`hbscreen.compose`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from .errors import ErrorCode
from .metrics import WorkerMetrics
from .queue.protocol import Delivery, Job, JobSource, Process, failed_result
from .result import ScreeningResult

log = logging.getLogger("hbscreen.worker")

__all__ = ["Process", "WorkerConfig", "pipeline_process", "run_worker", "serve"]


@dataclass(frozen=True)
class WorkerConfig:
    """How one worker process runs (from the settings, via the composition root)."""

    models_dir: Path | None = None  # None: the models shipped in the package
    ort_threads: int = 1  # onnxruntime intra-op threads per job
    concurrency: int = 1  # jobs in flight in this process
    metrics_port: int = 0  # Prometheus metrics port; 0: off
    shutdown_grace_s: float = 20.0  # on SIGTERM, finish jobs in hand this long


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
            done, jpeg = await loop.run_in_executor(pool, process, d.image, job)
            result, failure = done, _failure(done)
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
                info: dict[str, object] = {
                    "in_flight": len(inflight),
                    "done": counts["done"],
                    "since": started,
                }
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
                held = inflight.get(task)
                task.cancel()
                if held is not None:
                    with contextlib.suppress(Exception):
                        await source.release(held)
                    log.info("job handed back", extra={"job_id": held.job.id})
        pool.shutdown(wait=False, cancel_futures=True)
        log.info("worker stopped", extra={"consumer": consumer, "done": counts["done"]})


async def run_worker(
    source: JobSource,
    config: WorkerConfig,
    *,
    process: Process | None = None,
    stop: asyncio.Event | None = None,
    consumer: str = "worker",
    keep_alive_s: float = 1.0,
) -> None:
    """A worker process's loop on `source` until `stop` is set (or SIGTERM/SIGINT), with its
    metrics endpoint; the models load first (once). Closes `source` at the end."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
    if process is None:
        process = pipeline_process(config.models_dir, config.ort_threads)  # load once
    metrics = WorkerMetrics()
    if config.metrics_port:
        port = metrics.serve(config.metrics_port)
        log.info("metrics served", extra={"port": port})
    try:
        await serve(
            source,
            process,
            concurrency=config.concurrency,
            stop=stop,
            metrics=metrics,
            consumer=consumer,
            grace_s=config.shutdown_grace_s,
            keep_alive_s=keep_alive_s,
        )
    finally:
        metrics.stop()
        await source.close()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.remove_signal_handler(sig)
