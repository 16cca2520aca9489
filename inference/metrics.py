"""Prometheus metrics of a worker, served over HTTP for scraping.

Each worker gets its own registry, so several workers (or tests) in one process do not clash.
"""

from __future__ import annotations

import contextlib
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

STAGE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
JOB_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class WorkerMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.done = Counter("hbscreen_jobs_done", "Jobs finished with a result", registry=r)
        self.failed = Counter(
            "hbscreen_jobs_failed", "Job attempts that raised or whose models failed", registry=r
        )
        self.retried = Counter("hbscreen_jobs_retried", "Jobs put back for another try", registry=r)
        self.dead = Counter(
            "hbscreen_jobs_dead_lettered", "Jobs moved to the dead-letter stream", registry=r
        )
        self.expired = Counter(
            "hbscreen_jobs_expired", "Jobs dropped after their deadline", registry=r
        )
        self.cancelled = Counter(
            "hbscreen_jobs_cancelled", "Jobs dropped because the person cancelled", registry=r
        )
        self.job_seconds = Histogram(
            "hbscreen_job_seconds", "Processing time of one job", buckets=JOB_BUCKETS, registry=r
        )
        self.queue_wait_seconds = Histogram(
            "hbscreen_queue_wait_seconds",
            "Time from submit to start of processing",
            buckets=JOB_BUCKETS,
            registry=r,
        )
        self.stage_seconds = Histogram(
            "hbscreen_stage_seconds",
            "Latency per pipeline stage (from result.timings_ms)",
            ["stage"],
            buckets=STAGE_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge("hbscreen_queue_depth", "Jobs waiting or in flight", registry=r)
        self.in_flight = Gauge("hbscreen_jobs_in_flight", "Jobs in this worker", registry=r)
        self.up = Gauge("hbscreen_worker_up", "1 while the worker runs", registry=r)
        self._server: Any = None

    def count_skipped(self, what: str) -> None:
        counter = {"dead": self.dead, "expired": self.expired, "cancelled": self.cancelled}
        if what in counter:
            counter[what].inc()

    def observe_stages(self, timings_ms: dict[str, float]) -> None:
        for stage, ms in timings_ms.items():
            self.stage_seconds.labels(stage=stage).observe(ms / 1000.0)

    def serve(self, port: int, addr: str = "0.0.0.0") -> int:
        """Serve /metrics on `port` (0: a free port); returns the port."""
        server, _thread = start_http_server(port, addr=addr, registry=self.registry)
        self._server = server
        return int(server.server_port)

    def stop(self) -> None:
        if self._server is not None:
            with contextlib.suppress(Exception):
                self._server.shutdown()
                self._server.server_close()
            self._server = None
