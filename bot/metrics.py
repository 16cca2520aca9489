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
STORE_UNAVAILABLE = Counter(
    "hbscreen_bot_store_unavailable",
    "Updates answered with 'busy' because Redis was unreachable",
    registry=REGISTRY,
)
DELIVERY_ATTEMPTS = Counter(
    "hbscreen_bot_delivery_attempts",
    "Delivery attempts that failed and were retried or given up, by reason",
    ["reason"],
    registry=REGISTRY,
)
DELIVERIES_LOST = Counter(
    "hbscreen_bot_deliveries_lost",
    "Results that could not be delivered before their deadline (or were refused for good)",
    ["reason"],
    registry=REGISTRY,
)
DELIVERIES_PENDING = Gauge(
    "hbscreen_bot_deliveries_pending", "Outcomes accepted but not yet delivered", registry=REGISTRY
)
REPLAYED_UPDATES = Counter(
    "hbscreen_bot_replayed_updates",
    "Updates seen before (same update_id), ignored",
    registry=REGISTRY,
)
