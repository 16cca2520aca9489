"""The composition root: turns the settings into the queue and the workers, and wires them.

`hbscreen.inference` takes explicit, typed configuration and imports nothing from here or from
the settings; this module is the one place that reads the settings object for the queue and
the workers. Used by the CLI (`hbscreen worker`, `hbscreen screen --queue`), the bot's start-up
(`hbscreen bot`, `hbscreen demo-chat`) and the tests that run workers as processes.

- With `REDIS_URL`: the submitter gets a `RedisSubmitter`; workers are separate processes
  (`hbscreen worker`), each with a `RedisJobSource`.
- Without it: one `MemoryQueue`, and the worker loop runs as a task in the same event loop,
  started here (the queue itself starts nothing).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import os
import sys
from dataclasses import dataclass, field

from hbscreen.inference.crypto import Sealer
from hbscreen.inference.queue.protocol import JobQueue, Process, QueueConfig
from hbscreen.inference.worker import WorkerConfig

from .settings import Settings

log = logging.getLogger(__name__)


def queue_config(settings: Settings) -> QueueConfig:
    return QueueConfig(
        max_depth=settings.queue_max_depth,
        max_queued_bytes=settings.queue_max_mb * 2**20,
        job_deadline_s=settings.job_deadline_s,
        max_tries=settings.max_tries,
        image_ttl_s=settings.image_ttl_s,
        claim_idle_s=settings.claim_idle_s,
        heartbeat_s=settings.heartbeat_s,
        prefix=settings.redis_prefix,
        results_ttl_s=settings.results_ttl_s,
    )


QUEUE_KEY_INFO = "hbscreen/queue-blobs/v1"
NO_QUEUE_KEY = (
    "set HBSCREEN_QUEUE_KEY (one secret, the same for the bot and every worker): photos, "
    "results and heatmaps are encrypted in Redis with it"
)


def queue_sealer(settings: Settings) -> Sealer | None:
    """The cipher of the queue's blobs in Redis, from HBSCREEN_QUEUE_KEY (HKDF, then AES-GCM).

    Required with REDIS_URL (raises ValueError without it); None for the in-process queue,
    which never writes to disk."""
    if not settings.redis_url:
        return None
    if settings.queue_key is None or not settings.queue_key.get_secret_value():
        raise ValueError(NO_QUEUE_KEY)
    return Sealer.from_secret(settings.queue_key.get_secret_value().encode(), QUEUE_KEY_INFO)


def worker_config(settings: Settings) -> WorkerConfig:
    return WorkerConfig(
        models_dir=settings.models_dir,
        ort_threads=settings.ort_threads,
        concurrency=settings.worker_concurrency,
        metrics_port=settings.metrics_port,
        shutdown_grace_s=settings.shutdown_grace_s,
    )


@dataclass
class Wiring:
    """A submitter's queue and, for the in-process queue, the worker task serving it."""

    queue: JobQueue
    workers: asyncio.Task[None] | None = None
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def close(self) -> None:
        """Stop the in-process workers (they hand back what they hold), then the queue."""
        self.stop.set()
        if self.workers is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.workers, 30)
        await self.queue.close()


def wire_submitter(
    settings: Settings,
    *,
    submitter: str | None = "bot",
    process: Process | None = None,
    start_workers: bool = True,
) -> Wiring:
    """The queue for a submitter (the bot: `submitter="bot"`, a stable results stream; a
    batch CLI: None, a private one), from `settings.redis_url`.

    Without Redis the in-process worker loop starts here (call from a running event loop),
    with `process` or the real pipeline (loaded in a thread), unless `start_workers=False`."""
    config = queue_config(settings)
    if settings.redis_url:
        from hbscreen.inference.queue.redis_streams import RedisSubmitter

        sealer = queue_sealer(settings)
        return Wiring(
            RedisSubmitter(settings.redis_url, config, submitter=submitter, sealer=sealer)
        )

    from hbscreen.inference.queue.memory import MemoryQueue

    queue = MemoryQueue(config)
    wiring = Wiring(queue)
    if start_workers:
        wiring.workers = asyncio.create_task(
            _local_workers(queue, worker_config(settings), process, wiring.stop),
            name="hbscreen-local-workers",
        )
    return wiring


async def _local_workers(
    queue: object, config: WorkerConfig, process: Process | None, stop: asyncio.Event
) -> None:
    from hbscreen.inference.queue.memory import MemoryQueue
    from hbscreen.inference.worker import pipeline_process, serve

    assert isinstance(queue, MemoryQueue)
    if process is None:
        loop = asyncio.get_running_loop()
        process = await loop.run_in_executor(
            None, pipeline_process, config.models_dir, config.ort_threads
        )
    await serve(queue, process, concurrency=config.concurrency, stop=stop, consumer="local")


def load_process(spec: str) -> Process:
    """Turn "module:function" into a processing function: `hbscreen worker --process`, a
    hidden option for tests and benchmarks (a stand-in that sleeps, fails or counts)."""
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


async def run_worker(
    settings: Settings, *, process: Process | None = None, stop: asyncio.Event | None = None
) -> None:
    """One worker on `settings.redis_url` until `stop` (or SIGTERM/SIGINT)."""
    from hbscreen.inference.queue.redis_streams import RedisJobSource, default_consumer_name
    from hbscreen.inference.worker import run_worker as run

    if not settings.redis_url:
        raise ValueError("the worker needs REDIS_URL")
    source = RedisJobSource(
        settings.redis_url, queue_config(settings), sealer=queue_sealer(settings)
    )
    await run(
        source,
        worker_config(settings),
        process=process,
        stop=stop,
        consumer=default_consumer_name(),
        keep_alive_s=min(1.0, settings.claim_idle_s / 3),
    )


def worker_main(settings: Settings, *, process: Process | None = None) -> None:
    """`hbscreen worker`: JSON logs, then run until SIGTERM."""
    from hbscreen.inference.jsonlog import configure_json_logging

    configure_json_logging(settings.log_level, service="worker")
    asyncio.run(run_worker(settings, process=process))
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # do not wait for a model thread stuck in a job that was handed back
