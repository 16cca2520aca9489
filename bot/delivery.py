"""Delivery of job outcomes to chats: heatmap photo, result text, retake hints, apologies.

Runs as one task beside the bot, reading `queue.outcomes()`. Each outcome is delivered at most
once: `claim_delivery(job_id)` (shared across bot processes) and the ticket is popped
atomically. A job whose ticket is gone was cancelled (/cancel, /stop) or its person deleted
(/delete): nothing is sent.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timezone

from telegram.error import Forbidden

from hbscreen.inference.queue.protocol import JobOutcome
from hbscreen.inference.result import ScreeningResult

from . import metrics
from .replies import outcome_replies, send_replies
from .services import BotApplication, Services, now

log = logging.getLogger(__name__)


MAX_CONCURRENT_DELIVERIES = 256


async def _deliver_logged(application: BotApplication, svc: Services, outcome: JobOutcome) -> None:
    try:
        await deliver(application, svc, outcome)
    except asyncio.CancelledError:
        raise
    except Exception as e:
        metrics.ERRORS.inc()
        log.error("delivery failed: %s", type(e).__name__, exc_info=e)


async def run_delivery(application: BotApplication) -> None:
    """Deliver outcomes until cancelled; one bad outcome never stops the loop.

    Each outcome is delivered in its own task (at most MAX_CONCURRENT_DELIVERIES at once), so
    a chat whose sends wait out a 429 never holds back another chat's result."""
    svc = application.bot_data.services
    slots = asyncio.Semaphore(MAX_CONCURRENT_DELIVERIES)
    tasks: set[asyncio.Task] = set()

    async def one(outcome: JobOutcome) -> None:
        try:
            await _deliver_logged(application, svc, outcome)
        finally:
            slots.release()

    while True:
        try:
            async for outcome in svc.queue.outcomes():
                await slots.acquire()
                task = asyncio.create_task(one(outcome))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
        except asyncio.CancelledError:
            for task in tasks:
                task.cancel()
            raise
        except Exception as e:
            log.error("outcome stream failed, reconnecting: %s", type(e).__name__, exc_info=e)
            await asyncio.sleep(1.0)


async def deliver(application: BotApplication, svc: Services, outcome: JobOutcome) -> bool:
    """Send one outcome to its chat; True if something was sent."""
    ticket = outcome.job.reply_to.get("ticket")
    if not ticket:
        return False  # not submitted by the bot
    if outcome.status == "cancelled":
        await svc.store.pop_ticket(ticket)
        return False
    if not await svc.queue.claim_delivery(outcome.job.id):
        return False
    route = await svc.store.pop_ticket(ticket)
    if route is None:
        metrics.DELIVERIES.labels("dropped").inc()
        return False
    h, lang = route["h"], route.get("lang") or "en"
    chat_id = svc.keyring.open(route["chat"])
    bot = application.bot
    result = outcome.result
    kind: str
    if outcome.status != "done" or result is None:
        kind = outcome.status
    elif result.ok and result.hb_g_dl is not None:
        kind = "result"
    elif result.referral == "retake" and result.quality is not None and result.error is None:
        kind = "retake"
    else:
        kind = "refused"
    fails = 0
    # Record first, so /summary right after the reply already lists it; a person who deleted
    # their data while the job ran gets no new record.
    if kind in ("result", "retake") and await _still_there(svc, h):
        assert result is not None
        await _record(svc, h, route, result)
        profile = await svc.store.get_profile(h)
        fails = 0 if kind == "result" else int(profile.get("fails") or 0) + 1
        await svc.store.update_profile(h, fails=fails)
    if kind != "result":  # refused, failed or expired photos do not count against the limit
        await svc.store.refund_rate(h)
    try:
        await _send(bot, chat_id, route, lang, kind, outcome, fails)
    except Forbidden:
        log.info("a result could not be sent: the person blocked the bot")
        return False
    metrics.DELIVERIES.labels(kind).inc()
    return True


async def _send(
    bot, chat_id: int, route: dict, lang: str, kind: str, outcome: JobOutcome, fails: int
) -> None:
    """What to send is replies.outcome_replies (one message for a result); this sends it."""
    await send_replies(bot, chat_id, route, outcome_replies(kind, outcome, route, lang, fails))


async def _still_there(svc: Services, h: str) -> bool:
    """A person who deleted their data while the job ran gets no new record."""
    return bool(await svc.store.get_profile(h))


async def _record(svc: Services, h: str, route: dict, result: ScreeningResult) -> None:
    interval = result.interval_95 or result.interval_80
    low, high = sorted(interval) if interval else (None, None)
    level = (95 if result.interval_95 else 80) if interval else None
    await svc.store.add_record(
        h,
        {
            "time": now(),
            "label": route.get("label") or "",
            "group": result.group,
            "hb": result.hb_g_dl,
            "low": low,
            "high": high,
            "level": level,
            "validated": result.validated_for_group,
            "danger": result.danger_signs,
            "category": result.category,
            "referral": result.referral,
        },
    )
    day = datetime.now(timezone.utc).date().isoformat()
    await svc.store.count_stat(day, route.get("campaign") or "", result.referral)
