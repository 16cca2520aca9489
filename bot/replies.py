"""How an outcome becomes Telegram messages: one function (`outcome_replies`) says what to
send, one (`send_reply`) sends one of them; the delivery mechanism (delivery.py: retries,
leases, exactly once) and the wording (messages.py) change independently.

A result is one message: the heatmap photo with the whole result as its caption and the
after-result buttons. Only when the text does not fit a caption (1024 UTF-16 units) does it
become two: the photo with its short caption, then the text with the buttons. A retake hint or
an apology is one text message; when a status message was left ("others are waiting", "still
checking"), that message is edited into it instead.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from telegram import InlineKeyboardMarkup, ReplyParameters
from telegram.error import BadRequest
from telegram.ext import ExtBot

from hbscreen.inference.queue.protocol import JobOutcome

from . import keyboards, messages
from .i18n import t

log = logging.getLogger(__name__)

MAX_CAPTION = 1024  # UTF-16 code units, as Telegram counts


@dataclass(frozen=True)
class Reply:
    """One message to send: text (or a caption, with `photo`) and its buttons.

    `edit_status`: edit the status message into this text instead of sending a new one;
    `optional`: nothing is lost if it fails; `alone`: the text to send if the photo fails."""

    text: str
    photo: bytes | None = None
    markup: InlineKeyboardMarkup | None = None
    edit_status: bool = False
    optional: bool = False
    alone: str | None = None


def caption_fits(text: str) -> bool:
    return len(text.encode("utf-16-le")) // 2 <= MAX_CAPTION


def outcome_replies(
    kind: str, outcome: JobOutcome, route: dict, lang: str, fails: int = 0
) -> list[Reply]:
    """The messages for one outcome; `kind` is result, retake, refused, dead or expired."""
    result = outcome.result
    has_status = bool(route.get("status"))
    if kind == "result":
        assert result is not None
        text = messages.result_text(result, lang, label=route.get("label") or None)
        markup = keyboards.after_result(lang, route.get("mode") == "worker")
        heatmap = outcome.heatmap_jpeg
        replies = []
        if has_status:
            replies.append(Reply(t(lang, "Photo checked."), edit_status=True, optional=True))
        if not heatmap:
            return [*replies, Reply(text, markup=markup)]
        with_hint = f"{text}\n\n<i>{messages.heatmap_caption(lang)}</i>"
        for caption in (with_hint, text):
            if caption_fits(caption):
                return [*replies, Reply(caption, photo=heatmap, markup=markup, alone=text)]
        return [
            *replies,
            Reply(messages.heatmap_caption(lang), photo=heatmap, optional=True),
            Reply(text, markup=markup),
        ]
    if kind == "retake":
        assert result is not None and result.quality is not None
        text = messages.retake_text(result.quality.failing_codes, lang, fails)
    elif kind == "refused":
        assert result is not None
        text = messages.error_text(result.error.code if result.error else None, lang)
    else:  # dead, expired
        text = messages.could_not_process_text(lang)
    return [Reply(text, edit_status=has_status)]


async def send_reply(
    bot: ExtBot[Any], chat_id: int, route: dict, reply: Reply, *, quote: bool = False
) -> object:
    """Send one Reply. A photo Telegram refuses (the heatmap is an extra) becomes its text
    alone; a status edit it refuses becomes a new message (unless optional: then it raises
    and the caller skips it). Transient errors (429, 5xx, timeouts) raise: the delivery
    mechanism retries. No internal 429 retries (rate_limit_args=0): a delivery waiting out a
    retry_after is rescheduled, it does not hold a slot."""
    reply_parameters = None
    if quote and route.get("photo_msg"):
        reply_parameters = ReplyParameters(
            int(route["photo_msg"]), allow_sending_without_reply=True
        )
    if reply.edit_status:
        try:
            return await bot.edit_message_text(
                reply.text,
                chat_id=chat_id,
                message_id=int(route["status"]),
                rate_limit_args=0,
            )
        except BadRequest:
            if reply.optional:
                raise
    if reply.photo is not None:
        try:
            return await bot.send_photo(
                chat_id,
                reply.photo,
                caption=reply.text,
                reply_markup=reply.markup,
                reply_parameters=reply_parameters,
                rate_limit_args=0,
            )
        except BadRequest as e:
            if reply.optional:
                raise
            log.warning("the heatmap could not be sent: %s", type(e).__name__)
    return await bot.send_message(
        chat_id,
        reply.alone or reply.text,
        reply_markup=reply.markup,
        reply_parameters=reply_parameters,
        rate_limit_args=0,
    )
