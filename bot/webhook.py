"""The production HTTP server: Telegram's webhook plus /healthz, /readyz and /metrics.

The webhook path is the path of HBSCREEN_WEBHOOK_URL. A call is accepted only with the right
X-Telegram-Bot-Api-Secret-Token (compared in constant time); anything else gets 403, other
paths 404 and other methods 405. Bodies are capped at 1 MB (updates are small; photos are
fetched with getFile, not pushed).
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
from urllib.parse import urlparse

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from telegram import Update

from hbscreen.settings import Settings

from . import metrics
from .services import BotApplication

log = logging.getLogger(__name__)

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
MAX_BODY = 1024 * 1024


def webhook_path(settings: Settings) -> str:
    path = urlparse(settings.webhook_url or "").path
    return path if path and path != "/" else "/telegram"


def make_web_app(
    application: BotApplication, settings: Settings, *, webhook: bool
) -> web.Application:
    svc = application.bot_data.services
    secret = settings.webhook_secret.get_secret_value().encode() if settings.webhook_secret else b""

    async def telegram_update(request: web.Request) -> web.Response:
        given = request.headers.get(SECRET_HEADER, "").encode()
        if not secret or not hmac.compare_digest(given, secret):
            metrics.WEBHOOK_REFUSED.inc()
            return web.Response(status=403, text="forbidden")
        body = await request.read()  # over MAX_BODY: aiohttp answers 413
        try:
            data = json.loads(body)
            update = Update.de_json(data, application.bot)
        except Exception:
            metrics.WEBHOOK_REFUSED.inc()
            return web.Response(status=400, text="bad update")
        if update is None:
            return web.Response(status=400, text="bad update")
        await application.update_queue.put(update)
        return web.Response(text="ok")

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def readyz(request: web.Request) -> web.Response:
        problems = []
        if not application.running:
            problems.append("bot not running")
        if not await svc.store.ping():
            problems.append("store unreachable")
        try:
            await svc.queue.depth()
        except Exception:
            problems.append("queue unreachable")
        if problems:
            return web.Response(status=503, text="; ".join(problems))
        return web.Response(text="ready")

    async def metrics_page(request: web.Request) -> web.Response:
        with contextlib.suppress(Exception):
            metrics.QUEUE_DEPTH.set(await svc.queue.depth())
        body = generate_latest(metrics.REGISTRY)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application(client_max_size=MAX_BODY)
    if webhook:
        app.router.add_post(webhook_path(settings), telegram_update)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_page)
    return app
