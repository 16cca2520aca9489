"""Pick the queue: Redis Streams when a URL is given, else the in-process queue."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from .base import JobQueue

if TYPE_CHECKING:
    from hbscreen.settings import Settings

    from ..worker import Process


def make_queue(
    redis_url: str | None,
    *,
    submitter: str | None = None,
    settings: Settings | None = None,
    process: Process | None = None,
    start_workers: bool = True,
    **overrides: Any,
) -> JobQueue:
    """A queue for a submitter (the bot, a batch CLI) or a worker.

    - `redis_url`: Redis Streams; otherwise the in-process queue, whose worker loop starts in
      this process (with `process`, default the real pipeline) unless `start_workers=False`.
    - `submitter`: names this submitter's results stream. The bot must pass a stable name
      ("bot") so outcomes survive its restart; None gives a private stream that is deleted on
      close (a batch CLI), so two submitters never read each other's outcomes.
    - `settings` (default: from the environment) and keyword `overrides` give the limits:
      max_depth, job_deadline_s, image_ttl_s, max_tries, claim_idle_s, heartbeat_s, prefix.
    """
    if settings is None:
        from hbscreen.settings import get_settings

        settings = get_settings()
    opts: dict[str, Any] = {
        "max_depth": settings.queue_max_depth,
        "job_deadline_s": settings.job_deadline_s,
        "max_tries": settings.max_tries,
    }
    if redis_url:
        from .redis_streams import RedisStreamsQueue

        opts |= {
            "image_ttl_s": settings.image_ttl_s,
            "claim_idle_s": settings.claim_idle_s,
            "heartbeat_s": settings.heartbeat_s,
            "prefix": settings.redis_prefix,
        }
        opts |= overrides
        private = submitter is None
        name = submitter or f"client-{uuid.uuid4().hex[:12]}"
        return RedisStreamsQueue(redis_url, submitter=name, delete_results_on_close=private, **opts)

    from .memory import MemoryQueue

    opts |= {k: v for k, v in overrides.items() if k in opts}
    queue = MemoryQueue(**opts)
    if start_workers:
        queue.start_workers(
            process,
            concurrency=settings.worker_concurrency,
            models_dir=settings.models_dir,
            threads=settings.ort_threads,
        )
    return queue
