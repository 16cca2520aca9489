"""Delivery of job outcomes to chats: heatmap photo, result text, retake hints, apologies.

Runs as one task beside the bot, reading `queue.outcomes()`. Each outcome is delivered at most
once: `claim_delivery(job_id)` (shared across bot processes) and the ticket is popped
atomically. A job whose ticket is gone was cancelled (/cancel, /stop) or its person deleted
(/delete): nothing is sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import datetime, timezone

from telegram.error import Forbidden, TelegramError

from hbscreen.inference.queue.protocol import JobOutcome
from hbscreen.inference.result import ScreeningResult

from . import keyboards, messages, metrics
from .i18n import t
from .services import BotApplication, Services, now

log = logging.getLogger(__name__)


async def run_delivery(application: BotApplication) -> None:
    """Deliver outcomes until cancelled; one bad outcome never stops the loop."""
    svc = application.bot_data.services
    while True:
        try:
            async for outcome in svc.queue.outcomes():
                try:
                    await deliver(application, svc, outcome)
                except asyncio.CancelledError:
                    raise
                except Exception as e:
                    metrics.ERRORS.inc()
                    log.error("delivery failed: %s", type(e).__name__, exc_info=e)
        except asyncio.CancelledError:
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
    result = outcome.result
    if kind == "result":
        assert result is not None
        await _status(bot, chat_id, route, t(lang, "Photo checked."))
        if outcome.heatmap_jpeg:
            await _heatmap(bot, chat_id, outcome.heatmap_jpeg, lang)
        await bot.send_message(
            chat_id,
            messages.result_text(result, lang, label=route.get("label") or None),
            reply_markup=keyboards.after_result(lang, route.get("mode") == "worker"),
        )
    elif kind == "retake":
        assert result is not None and result.quality is not None
        await _status(bot, chat_id, route, t(lang, "Photo checked."))
        codes = result.quality.failing_codes
        await bot.send_message(chat_id, messages.retake_text(codes, lang, fails))
    elif kind == "refused":
        assert result is not None
        await _status(bot, chat_id, route, t(lang, "Could not check the photo."))
        code = result.error.code if result.error else None
        await bot.send_message(chat_id, messages.error_text(code, lang))
    else:  # dead, expired
        await _status(bot, chat_id, route, t(lang, "Could not check the photo."))
        await bot.send_message(chat_id, messages.could_not_process_text(lang))


async def _still_there(svc: Services, h: str) -> bool:
    """A person who deleted their data while the job ran gets no new record."""
    return bool(await svc.store.get_profile(h))


async def _record(svc: Services, h: str, route: dict, result: ScreeningResult) -> None:
    interval = result.interval_95 or result.interval_80
    low, high = sorted(interval) if interval else (None, None)
    await svc.store.add_record(
        h,
        {
            "time": now(),
            "label": route.get("label") or "",
            "group": result.group,
            "hb": result.hb_g_dl,
            "low": low,
            "high": high,
            "category": result.category,
            "referral": result.referral,
        },
    )
    day = datetime.now(timezone.utc).date().isoformat()
    await svc.store.count_stat(day, route.get("campaign") or "", result.referral)


async def _heatmap(bot, chat_id: int, jpeg: bytes, lang: str) -> None:
    """The heatmap is an extra: if Telegram refuses it, the result text still goes out."""
    try:
        await bot.send_photo(chat_id, jpeg, caption=messages.heatmap_caption(lang))
    except Forbidden:
        raise
    except TelegramError as e:
        log.warning("the heatmap could not be sent: %s", type(e).__name__)


async def _status(bot, chat_id: int, route: dict, text: str) -> None:
    if not route.get("status"):
        return
    with contextlib.suppress(TelegramError):
        await bot.edit_message_text(text, chat_id=chat_id, message_id=int(route["status"]))
