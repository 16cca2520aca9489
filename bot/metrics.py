"""Prometheus metrics of the bot, in their own registry (served at /metrics): counts only,
never anything about a person."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

REGISTRY = CollectorRegistry()

UPDATES = Counter("hbscreen_bot_updates", "Updates handled", registry=REGISTRY)
PHOTOS = Counter(
    "hbscreen_bot_photos",
    "Photos received, by what happened to them",
    ["outcome"],
    registry=REGISTRY,
)
DELIVERIES = Counter(
    "hbscreen_bot_deliveries",
    "Job outcomes delivered to chats, by kind",
    ["kind"],
    registry=REGISTRY,
)
ERRORS = Counter("hbscreen_bot_errors", "Errors while handling updates", registry=REGISTRY)
WEBHOOK_REFUSED = Counter(
    "hbscreen_bot_webhook_refused", "Webhook calls refused (bad secret or body)", registry=REGISTRY
)
QUEUE_DEPTH = Gauge("hbscreen_bot_queue_depth", "Jobs waiting or in flight", registry=REGISTRY)
