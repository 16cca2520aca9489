"""Commands for everyone (/help /privacy /cancel /stop /delete), health workers (/summary
/export) and admins (/stats)."""

from __future__ import annotations

import csv
import io
import logging
from datetime import datetime, timedelta, timezone, tzinfo

from telegram import InputFile, Update

from .. import keyboards, messages
from ..i18n import t
from ..services import BotContext, Person, clear, load_person
from .flow import END

log = logging.getLogger(__name__)

STATS_DAYS = 14
# One row per photo. Times are in the deployment's HBSCREEN_TIMEZONE, with the UTC offset.
CSV_COLUMNS = [
    "label",
    "time",
    "group",
    "validated_for_group",
    "danger_signs",
    "estimate",
    "interval_level",
    "interval_low",
    "interval_high",
    "category",
    "referral",
]


async def help_command(update: Update, context: BotContext) -> None:
    person = await load_person(update, context)
    await update.effective_chat.send_message(messages.help_text(person.lang))


async def privacy(update: Update, context: BotContext) -> None:
    person = await load_person(update, context)
    p = person.profile
    text = messages.privacy_text(person.lang, p.get("consent_version"), p.get("consent_at"))
    await update.effective_chat.send_message(text)


async def cancel_jobs(context: BotContext, person: Person) -> int:
    """Cancel this person's jobs in flight: no result of them will be delivered."""
    svc = context.services
    n = 0
    for ticket in await svc.store.tickets_of(person.h):
        route = await svc.store.pop_ticket(ticket)
        if route and route.get("job_id"):
            await svc.queue.cancel(route["job_id"])
            n += 1
    return n


async def cancel(update: Update, context: BotContext) -> int:
    person = await load_person(update, context)
    n = await cancel_jobs(context, person)
    if n:
        text = t(
            person.lang, "Stopped. Your photo will not be checked. Send /start to begin again."
        )
    else:
        text = t(person.lang, "Stopped. Send /start to begin again.")
    await update.effective_chat.send_message(text)
    return END


async def stop(update: Update, context: BotContext) -> int:
    person = await load_person(update, context)
    await cancel_jobs(context, person)
    await context.services.store.cancel_reminder(person.h)
    await clear(context, person, "reminder_due", "reminder_chat")
    await update.effective_chat.send_message(
        t(
            person.lang,
            "Done. You will get no more reminders from me. "
            "Your data stays until you send /delete. Send /start to use the bot again.",
        )
    )
    return END


async def delete(update: Update, context: BotContext) -> None:
    person = await load_person(update, context)
    await update.effective_chat.send_message(
        t(person.lang, "Delete everything we keep about you? This cannot be undone."),
        reply_markup=keyboards.delete_confirm(person.lang),
    )


async def on_delete(update: Update, context: BotContext) -> int | None:
    query = update.callback_query
    await query.answer()
    person = await load_person(update, context)
    lang = person.lang
    if query.data != "del:yes":
        await update.effective_chat.send_message(t(lang, "OK. Nothing was deleted."))
        return None
    await cancel_jobs(context, person)
    await context.services.store.delete_person(person.h)
    await update.effective_chat.send_message(
        t(lang, "Everything about you is deleted. Send /start if you want to use the bot again.")
    )
    return END


async def on_reminder(update: Update, context: BotContext) -> None:
    from ..reminders import schedule_reminder

    query = update.callback_query
    await query.answer()
    person = await load_person(update, context)
    parts = query.data.split(":")
    if parts[1] == "yes":
        weeks = context.services.settings.reminder_weeks
        await schedule_reminder(context, person, weeks)
        await update.effective_chat.send_message(
            t(
                person.lang,
                "OK. I will remind you in {weeks} weeks. Send /stop to cancel it.",
                weeks=weeks,
            )
        )
    else:
        await update.effective_chat.send_message(t(person.lang, "OK. No reminder."))


async def summary(update: Update, context: BotContext) -> None:
    person = await load_person(update, context)
    svc = context.services
    since = person.profile.get("session_started", 0)
    records = [r for r in await svc.store.records(person.h) if r["time"] >= since]
    await update.effective_chat.send_message(
        messages.summary_text(records, person.lang, svc.settings.tz)
    )


def _cell(value: object) -> str:
    """A CSV cell that a spreadsheet will not run as a formula."""
    text = "" if value is None else str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@") else text


def _yes_no(value: object) -> str:
    return "" if value is None else ("yes" if value else "no")


def records_csv(records: list[dict], tz: tzinfo = timezone.utc) -> bytes:
    """The CSV a health worker takes to her register: local times, the group and whether the
    model is validated for it, danger signs, the interval and its level."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    for r in records:
        when = datetime.fromtimestamp(r["time"], tz=tz).isoformat(timespec="seconds")
        level = r.get("level")
        writer.writerow(
            [
                _cell(r.get("label")),
                when,
                r.get("group", ""),
                _yes_no(r.get("validated")),
                _yes_no(r.get("danger")),
                "" if r.get("hb") is None else f"{r['hb']:.1f}",
                "" if r.get("low") is None or not level else f"{level}%",
                "" if r.get("low") is None else f"{r['low']:.1f}",
                "" if r.get("high") is None else f"{r['high']:.1f}",
                r.get("category") or "",
                r.get("referral") or "",
            ]
        )
    return out.getvalue().encode("utf-8")


async def export(update: Update, context: BotContext) -> None:
    person = await load_person(update, context)
    svc = context.services
    records = await svc.store.records(person.h)
    tz = svc.settings.tz
    day = datetime.now(tz).date().isoformat()  # her local date: one file per day of work
    if not records:
        await update.effective_chat.send_message(t(person.lang, "There is nothing to export yet."))
        return
    await update.effective_chat.send_document(
        InputFile(io.BytesIO(records_csv(records, tz)), filename=f"screenings-{day}.csv"),
        caption=t(person.lang, "Your screenings as a CSV file."),
    )


async def stats(update: Update, context: BotContext) -> None:
    svc = context.services
    person = await load_person(update, context)
    user = update.effective_user
    if user is None or user.id not in svc.settings.admin_ids:
        await update.effective_chat.send_message(
            t(person.lang, "This command is only for administrators.")
        )
        return
    today = datetime.now(timezone.utc).date()
    days = [(today - timedelta(days=i)).isoformat() for i in range(STATS_DAYS)]
    counts = await svc.store.stats(days)
    await update.effective_chat.send_message(messages.stats_text(counts, person.lang, STATS_DAYS))
