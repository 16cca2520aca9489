"""Photo intake: cheap checks, the rate limit, download to memory, a job on the queue.

The bytes never touch the disk: `download_as_bytearray` keeps them in memory, the queue holds
them until the job ends. The job carries only a random ticket; the ticket (in the Store, with a
TTL) says where to deliver, with the chat id sealed.

A photo costs one chat-bound request when the queue is short: the result. A status message is
sent only when others are waiting; a chat action only when the result takes over a second
(`SLOW_REPLY_S`). A photo that fails, is refused or meets a full queue is taken back from the
person's hourly limit.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
from pathlib import PurePath

from telegram import Document, PhotoSize, Update
from telegram.constants import ChatAction
from telegram.error import TelegramError

from hbscreen.inference.limits import IMAGE_EXTENSIONS, MAX_BYTES
from hbscreen.inference.queue.protocol import Job, QueueBusy
from hbscreen.settings import Settings

from .. import messages, metrics
from ..i18n import t
from ..services import BotContext, Person, load_person, now, save
from .flow import PHOTO, advance, reprompt

log = logging.getLogger(__name__)


def is_image_document(doc: Document) -> bool:
    mime = (doc.mime_type or "").lower()
    ext = PurePath(doc.file_name or "").suffix.lower()
    if mime.startswith("image/"):
        return mime not in ("image/gif", "image/svg+xml")
    return (not mime or mime == "application/octet-stream") and ext in IMAGE_EXTENSIONS


async def on_photo_after_danger(update: Update, context: BotContext) -> int:
    """A photo while the danger question or the urgent referral is on screen: after the
    referral it is the "take the photo anyway" answer (nothing is lost); before the answer,
    the question is asked again."""
    person = await load_person(update, context)
    if not person.profile.get("danger"):
        return await reprompt(update, context)
    await save(context, person, danger_photo=True)
    return await on_photo(update, context)


async def on_photo(update: Update, context: BotContext) -> int:
    """A photo or a document in the PHOTO state."""
    person = await load_person(update, context)
    p = person.profile
    if not p.get("group") or p.get("danger") is None:
        return await advance(update, context, person)
    msg = update.effective_message
    lang = person.lang
    media: PhotoSize | Document
    if msg.photo:
        media = msg.photo[-1]  # the largest size
    else:
        document = msg.document
        assert document is not None  # IMAGE_INPUT lets only photos and documents in
        media = document
        if not is_image_document(document):
            metrics.PHOTOS.labels("wrong_type").inc()
            await msg.reply_text(
                do_quote=True,
                text=t(lang, "This file is not a photo. Please send a photo (JPG or PNG)."),
            )
            return PHOTO
    if media.file_size and media.file_size > MAX_BYTES:
        metrics.PHOTOS.labels("too_large").inc()
        await msg.reply_text(
            do_quote=True, text=t(lang, "This file is too big. Please send a photo under 20 MB.")
        )
        return PHOTO
    svc = context.services
    limit = rate_limit_for(svc.settings, person)
    if not await svc.store.hit_rate(person.h, limit):
        metrics.PHOTOS.labels("rate_limited").inc()
        free_at = await svc.store.rate_free_at(person.h, limit)
        await msg.reply_text(
            do_quote=True,
            text=messages.rate_limited_text(lang, free_at, now(), svc.settings.tz),
        )
        return PHOTO
    try:
        tg_file = await media.get_file()
        data = bytes(await tg_file.download_as_bytearray())
    except TelegramError as e:
        log.info("photo download failed: %s", type(e).__name__)
        metrics.PHOTOS.labels("download_failed").inc()
        await svc.store.refund_rate(person.h)
        await msg.reply_text(
            do_quote=True, text=t(lang, "I could not get this photo. Please send it again.")
        )
        return PHOTO
    if len(data) > MAX_BYTES:
        metrics.PHOTOS.labels("too_large").inc()
        await svc.store.refund_rate(person.h)
        await msg.reply_text(
            do_quote=True, text=t(lang, "This file is too big. Please send a photo under 20 MB.")
        )
        return PHOTO
    await submit(update, context, person, data)
    return PHOTO


def rate_limit_for(settings: Settings, person: Person) -> int:
    """Photos per hour: a health worker screens a clinic's patients (2 eyes each, retakes),
    a person screens herself and her family."""
    return settings.worker_rate_limit_per_hour if person.worker else settings.rate_limit_per_hour


SLOW_REPLY_S = 1.0  # a chat action ("sending a photo...") only when the result is slower
# "Other photos are waiting before yours" only when the wait is long: a worker screens a photo
# in tens of milliseconds, so a few photos ahead cost less than the message (the chat action
# covers a wait of over a second).
BUSY_DEPTH = 20


async def slow_reply(context: BotContext) -> None:
    """JobQueue callback: the result is not there after SLOW_REPLY_S, show a chat action."""
    svc = context.services
    route = await svc.store.get_ticket(str(context.job.data))
    if not route:
        return  # delivered (or cancelled) already
    with contextlib.suppress(TelegramError):
        await context.bot.send_chat_action(svc.keyring.open(route["chat"]), ChatAction.UPLOAD_PHOTO)


async def submit(update: Update, context: BotContext, person: Person, data: bytes) -> None:
    """Queue one photo; a status message (that delivery edits later) only when others wait."""
    svc = context.services
    p, lang = person.profile, person.lang
    depth = await svc.queue.depth()
    status = None
    if depth >= BUSY_DEPTH:
        text = t(lang, "Photo received. Other photos are waiting before yours. Please wait.")
        status = await update.effective_message.reply_text(text, do_quote=True)
    ticket = secrets.token_urlsafe(12)
    ttl = int(svc.settings.job_deadline_s) + 600
    route = {
        "chat": svc.keyring.seal(person.chat_id),
        "lang": lang,
        "status": status.message_id if status else 0,
        "photo_msg": update.effective_message.message_id,
        "label": p.get("label") or "",
        "campaign": p.get("campaign") or "",
        "mode": p.get("mode") or "self",
        "sent_at": now(),
    }
    await svc.store.put_ticket(ticket, person.h, route, ttl)
    job = Job(group=p["group"], danger_signs=bool(p.get("danger")), reply_to={"ticket": ticket})
    try:
        job_id = await svc.queue.submit(data, job)
    except QueueBusy:
        await svc.store.pop_ticket(ticket)
        await svc.store.refund_rate(person.h)
        metrics.PHOTOS.labels("busy").inc()
        busy = t(lang, "Many people are using the service now. Please try again in a few minutes.")
        if status is not None:
            await _edit(context, person.chat_id, status.message_id, busy)
        else:
            with contextlib.suppress(TelegramError):
                await update.effective_message.reply_text(busy, do_quote=True)
        return
    metrics.PHOTOS.labels("accepted").inc()
    await svc.store.update_ticket(ticket, job_id=job_id)
    if context.job_queue is not None:
        context.job_queue.run_once(  # PTB types context.job_queue as JobQueue[ST]
            slow_reply,  # type: ignore[arg-type]
            SLOW_REPLY_S,
            data=ticket,
            name=f"slow-{ticket}",
        )
        if svc.settings.status_update_s > 0:
            context.job_queue.run_once(
                still_working,  # type: ignore[arg-type]
                svc.settings.status_update_s,
                data=ticket,
                name=f"status-{ticket}",
            )


async def _edit(context: BotContext, chat_id: int, message_id: int, text: str):
    with contextlib.suppress(TelegramError):
        await context.bot.edit_message_text(text, chat_id=chat_id, message_id=message_id)


async def still_working(context: BotContext) -> None:
    """Say the job is still in flight: edit the status message, or send one (delivery then
    edits it when the result comes)."""
    svc = context.services
    ticket = str(context.job.data)
    route = await svc.store.get_ticket(ticket)
    if not route:
        return
    chat_id = svc.keyring.open(route["chat"])
    text = t(route["lang"], "Still checking. Please wait a little more.")
    if route.get("status"):
        await _edit(context, chat_id, route["status"], text)
        return
    with contextlib.suppress(TelegramError):
        sent = await context.bot.send_message(chat_id, text)
        await svc.store.update_ticket(ticket, status=sent.message_id)
