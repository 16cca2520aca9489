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
from telegram.ext import ContextTypes

from hbscreen.inference.queue.base import Job, QueueBusy

from .. import metrics
from ..i18n import t
from ..services import MAX_UPLOAD_BYTES, Person, load_person, now, services
from .flow import PHOTO, advance

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".webp", ".heic", ".heif", ".bmp", ".tif", ".tiff"}


def is_image_document(doc: Document) -> bool:
    mime = (doc.mime_type or "").lower()
    ext = PurePath(doc.file_name or "").suffix.lower()
    if mime.startswith("image/"):
        return mime not in ("image/gif", "image/svg+xml")
    return (not mime or mime == "application/octet-stream") and ext in IMAGE_EXTENSIONS


async def on_photo(update: Update, context: ContextTypes.DEFAULT_TYPE) -> int:
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
        media = msg.document
        if not is_image_document(media):
            metrics.PHOTOS.labels("wrong_type").inc()
            await msg.reply_text(
                do_quote=True,
                text=t(lang, "This file is not a photo. Please send a photo (JPG or PNG)."),
            )
            return PHOTO
    if media.file_size and media.file_size > MAX_UPLOAD_BYTES:
        metrics.PHOTOS.labels("too_large").inc()
        await msg.reply_text(
            do_quote=True, text=t(lang, "This file is too big. Please send a photo under 20 MB.")
        )
        return PHOTO
    svc = services(context)
    if not await svc.store.hit_rate(person.h, svc.settings.rate_limit_per_hour):
        metrics.PHOTOS.labels("rate_limited").inc()
        await msg.reply_text(
            do_quote=True,
            text=t(
                lang,
                "You sent many photos in the last hour. Please wait a while, then try again. "
                "This keeps the service fair for everyone.",
            ),
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
    if len(data) > MAX_UPLOAD_BYTES:
        metrics.PHOTOS.labels("too_large").inc()
        await svc.store.refund_rate(person.h)
        await msg.reply_text(
            do_quote=True, text=t(lang, "This file is too big. Please send a photo under 20 MB.")
        )
        return PHOTO
    await submit(update, context, person, data)
    return PHOTO


SLOW_REPLY_S = 1.0  # a chat action ("sending a photo...") only when the result is slower


async def slow_reply(context: ContextTypes.DEFAULT_TYPE) -> None:
    """JobQueue callback: the result is not there after SLOW_REPLY_S, show a chat action."""
    svc = services(context)
    route = await svc.store.get_ticket(context.job.data)
    if not route:
        return  # delivered (or cancelled) already
    with contextlib.suppress(TelegramError):
        await context.bot.send_chat_action(svc.keyring.open(route["chat"]), ChatAction.UPLOAD_PHOTO)


async def submit(
    update: Update, context: ContextTypes.DEFAULT_TYPE, person: Person, data: bytes
) -> None:
    """Queue one photo; a status message (that delivery edits later) only when others wait."""
    svc = services(context)
    p, lang = person.profile, person.lang
    depth = await svc.queue.depth()
    status = None
    if depth >= 3:
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
        context.job_queue.run_once(slow_reply, SLOW_REPLY_S, data=ticket, name=f"slow-{ticket}")
        if svc.settings.status_update_s > 0:
            context.job_queue.run_once(
                still_working, svc.settings.status_update_s, data=ticket, name=f"status-{ticket}"
            )


async def _edit(context: ContextTypes.DEFAULT_TYPE, chat_id: int, message_id: int, text: str):
    with contextlib.suppress(TelegramError):
        await context.bot.edit_message_text(text, chat_id=chat_id, message_id=message_id)


async def still_working(context: ContextTypes.DEFAULT_TYPE) -> None:
    """Say the job is still in flight: edit the status message, or send one (delivery then
    edits it when the result comes)."""
    svc = services(context)
    ticket = context.job.data
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
