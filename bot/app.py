"""Build the bot (python-telegram-bot v22) and run it: polling for development, a webhook on an
aiohttp server for production (see webhook.py). `hbscreen bot` calls `run_bot`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from urllib.parse import urlsplit

from telegram import Update
from telegram.constants import ParseMode
from telegram.error import InvalidToken, NetworkError
from telegram.ext import ApplicationBuilder, Defaults

from hbscreen.inference.aio import cancel_and_wait
from hbscreen.inference.queue.protocol import JobQueue
from hbscreen.settings import Settings, get_settings

from . import delivery, logscrub
from .concurrency import PerChatRateLimiter, PerChatUpdateProcessor
from .conversation import register_handlers
from .delivery import run_delivery
from .handlers.flow import set_default_commands
from .persistence import StorePersistence
from .reminders import send_due_reminders
from .services import CONTEXT_TYPES, BotApplication, BotContext, Services, hash_secret
from .storage import KeyRing, Store, make_store
from .updates import guard_replays

log = logging.getLogger(__name__)

MAX_CONCURRENT_UPDATES = 256
DELIVERY_STOP_S = 3 * delivery.STOP_S  # at shutdown, for the delivery task and its own


class StartupError(RuntimeError):
    """A configuration or reachability problem at start-up, said in one line to the operator."""


def quiet_loggers() -> None:
    """httpx logs every request URL at INFO, and Bot API URLs contain the token."""
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.getLogger("apscheduler").setLevel(logging.ERROR)  # "skipped: already running"


def build_application(
    settings: Settings, queue: JobQueue, *, store: Store | None = None
) -> BotApplication:
    """The configured Application; the caller runs it (run_bot, or a test's serve_polling)."""
    quiet_loggers()
    if settings.telegram_bot_token is None:
        raise ValueError("TELEGRAM_BOT_TOKEN is not set")
    owns_store = store is None
    keyring = KeyRing(hash_secret(settings))
    store = store or make_store(
        settings.redis_url,
        prefix=f"{settings.redis_prefix}:bot:",
        sealer=keyring.records,
        record_ttl_s=settings.record_ttl_s,
    )
    application = (
        ApplicationBuilder()
        .token(settings.telegram_bot_token.get_secret_value())
        .base_url(settings.telegram_api_base_url)
        .base_file_url(settings.telegram_file_base_url)
        .rate_limiter(PerChatRateLimiter(max_retries=3))
        .concurrent_updates(PerChatUpdateProcessor(MAX_CONCURRENT_UPDATES))
        .persistence(StorePersistence(store))
        .defaults(Defaults(parse_mode=ParseMode.HTML))
        .context_types(CONTEXT_TYPES)
        .post_init(_post_init)
        .post_stop(_post_stop)
        .post_shutdown(_post_shutdown)
        .build()
    )
    application.bot_data.services = Services(settings, queue, store, keyring)
    application.bot_data.owns_store = owns_store
    register_handlers(application, keyring)
    guard_replays(application, store)
    return application


async def _post_init(application: BotApplication) -> None:
    svc = application.bot_data.services
    await svc.store.migrate()  # once: records of the old scheme cannot be read, they go
    await set_default_commands(application.bot, svc.settings.admin_ids)
    application.bot_data.delivery_task = asyncio.create_task(
        run_delivery(application), name="hbscreen-delivery"
    )
    if application.job_queue is not None:
        application.job_queue.run_repeating(
            send_due_reminders,
            interval=svc.settings.reminder_check_s,
            first=1.0,
            name="reminders",
        )
        if svc.settings.aof_rewrite_s > 0:  # expired and deleted data leave the disk too
            application.job_queue.run_repeating(
                _compact_store,
                interval=svc.settings.aof_rewrite_s,
                first=svc.settings.aof_rewrite_s,
                name="aof-rewrite",
            )


async def _compact_store(context: BotContext) -> None:
    try:
        await context.services.store.compact()
    except Exception as e:  # e.g. a managed Redis that refuses BGREWRITEAOF
        log.warning("scheduled AOF rewrite failed: %s", type(e).__name__)


async def _post_stop(application: BotApplication) -> None:
    """Stop the delivery loops; bounded, so a stop never hangs (hbscreen.inference.aio).
    What was not delivered stays in the book for the next bot process."""
    task, application.bot_data.delivery_task = application.bot_data.delivery_task, None
    # Asked again only after its own stop had its time (a new cancel would cut that short).
    again = delivery.STOP_S + 1.0
    if task is not None and await cancel_and_wait(task, DELIVERY_STOP_S, recancel_s=again):
        log.error("the delivery task did not stop within %.0f s", DELIVERY_STOP_S)


async def _post_shutdown(application: BotApplication) -> None:
    await _post_stop(application)
    if application.bot_data.owns_store:
        await application.bot_data.services.store.close()


async def serve(settings: Settings, stop: asyncio.Event | None = None) -> None:
    """Run until `stop` is set (or SIGINT/SIGTERM): polling without HBSCREEN_WEBHOOK_URL, a
    webhook with it; /healthz, /readyz and /metrics are served in both modes."""
    from hbscreen.compose import wire_submitter

    from .webhook import make_web_app

    if stop is None:  # run_bot: stop on SIGINT/SIGTERM
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
    if settings.telegram_bot_token is None:
        raise StartupError("TELEGRAM_BOT_TOKEN is not set")
    webhook = bool(settings.webhook_url)
    if webhook and settings.webhook_secret is None:
        raise StartupError("HBSCREEN_WEBHOOK_SECRET must be set with HBSCREEN_WEBHOOK_URL")
    try:
        wiring = wire_submitter(settings, submitter="bot")
        application = build_application(settings, wiring.queue)
    except ValueError as e:  # redis-py refuses a malformed REDIS_URL this way
        raise StartupError(f"REDIS_URL is not a usable Redis URL ({e})") from None
    try:
        await preflight(application, settings)
    except BaseException:
        with contextlib.suppress(Exception):
            await wiring.close()
        with contextlib.suppress(Exception):
            await application.bot_data.services.store.close()
        raise
    from aiohttp import web

    runner = web.AppRunner(make_web_app(application, settings, webhook=webhook), access_log=None)
    try:
        await _post_init(application)
        await application.start()
        # Listen before telling Telegram where to deliver, so no first update is refused.
        await runner.setup()
        await web.TCPSite(runner, settings.listen_host, settings.listen_port).start()
        if settings.webhook_url and settings.webhook_secret:  # webhook (checked above)
            await application.bot.set_webhook(
                settings.webhook_url,
                secret_token=settings.webhook_secret.get_secret_value(),
                allowed_updates=Update.ALL_TYPES,
            )
        else:
            await application.bot.delete_webhook()
            if application.updater is None:  # ApplicationBuilder always makes one
                raise RuntimeError("polling needs the Application's Updater")
            await application.updater.start_polling(allowed_updates=Update.ALL_TYPES)
        log.info(
            "bot running (%s); health on %s:%s",
            "webhook" if webhook else "polling",
            settings.listen_host,
            settings.listen_port,
        )
        await stop.wait()
    finally:
        await runner.cleanup()
        if application.updater and application.updater.running:
            await application.updater.stop()
        if application.running:
            await application.stop()
        await _post_stop(application)
        await application.shutdown()
        await _post_shutdown(application)
        await wiring.close()


def _where(url: str) -> str:
    """host:port of a URL, without credentials or path (tokens and passwords stay out)."""
    try:
        parts = urlsplit(url)
        return f"{parts.hostname}:{parts.port}" if parts.port else str(parts.hostname)
    except ValueError:
        return "(unreadable URL)"


async def preflight(application: BotApplication, settings: Settings) -> None:
    """Redis answers and the Bot API knows the token, else StartupError (one line, no trace).
    Ends with the application initialised."""
    store = application.bot_data.services.store
    if settings.redis_url and not await store.ping():
        raise StartupError(f"cannot reach Redis at {_where(settings.redis_url)} (REDIS_URL)")
    try:
        await application.initialize()
    except InvalidToken:
        raise StartupError(
            "the Bot API refused TELEGRAM_BOT_TOKEN: it is wrong or was revoked "
            "(check it with @BotFather)"
        ) from None
    except NetworkError as e:  # refused, unresolvable, timed out
        raise StartupError(
            f"cannot reach the Bot API at {_where(settings.telegram_api_base_url)} "
            f"({type(e).__name__}); check the network or TELEGRAM_API_BASE_URL"
        ) from None


def run_bot(settings: Settings | None = None) -> int:
    """Entry point for `hbscreen bot`: 0 after a clean stop, 2 when it cannot start."""
    settings = settings or get_settings()
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logscrub.install(logscrub.secrets_of(settings))  # whatever the level: no token, no chat
    quiet_loggers()
    try:
        asyncio.run(serve(settings))
    except StartupError as e:
        print(f"hbscreen bot: {e}", file=sys.stderr)
        return 2
    return 0
