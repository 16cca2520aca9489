"""Kind answers to what the bot cannot use, group chats, and the error handler."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from telegram import Update
from telegram.error import TelegramError

from .. import metrics
from ..i18n import pick_language, t
from ..services import BotContext, load_person

log = logging.getLogger(__name__)


async def in_group(update: Update, context: BotContext) -> None:
    """Health data does not belong in a group chat: point to a private chat."""
    user = update.effective_user
    lang = pick_language(user.language_code if user else None)
    link = f"https://t.me/{context.bot.username}"
    await update.effective_message.reply_text(
        t(lang, "For your privacy, please talk to me in a private chat: {link}", link=link)
    )


async def video(update: Update, context: BotContext) -> None:
    person = await load_person(update, context)
    await update.effective_message.reply_text(
        t(person.lang, "Videos cannot be checked. Please send a photo.")
    )


async def sticker(update: Update, context: BotContext) -> None:
    person = await load_person(update, context)
    await update.effective_message.reply_text(
        t(person.lang, "Nice sticker! To check for anaemia, please send a photo of the eyelid.")
    )


async def voice(update: Update, context: BotContext) -> None:
    person = await load_person(update, context)
    await update.effective_message.reply_text(
        t(person.lang, "I cannot listen to voice messages. Please use the buttons or type.")
    )


async def other_document(update: Update, context: BotContext) -> None:
    person = await load_person(update, context)
    await update.effective_message.reply_text(
        t(person.lang, "This file is not a photo. Please send a photo (JPG or PNG).")
    )


async def other_message(update: Update, context: BotContext) -> None:
    person = await load_person(update, context)
    await update.effective_message.reply_text(
        t(person.lang, "I cannot use this. Please send a photo or use the buttons.")
    )


async def outside_conversation(update: Update, context: BotContext) -> None:
    """Text or a photo when no screening is going on."""
    person = await load_person(update, context)
    await update.effective_message.reply_text(
        t(person.lang, "Send /start to begin a screening. Send /help for help.")
    )


async def stale_button(update: Update, context: BotContext) -> None:
    person = await load_person(update, context)
    with contextlib.suppress(TelegramError):
        await update.callback_query.answer(
            t(person.lang, "This button is old. Send /start to begin again.")
        )


async def count_update(update: object, context: BotContext) -> None:
    metrics.UPDATES.inc()


# Updates already apologised for (an update can fail in a handler and again in the flush).
_APOLOGISED: OrderedDict[int, None] = OrderedDict()
BUSY_TEXT = "Many people are using the service now. Please try again in a few minutes."
SORRY_TEXT = "Sorry, something went wrong. Please try again, or send /start."


def storage_unavailable(err: BaseException | None) -> bool:
    """Redis down, restarting or too slow: a temporary state, not a bug in this update."""
    if err is None or isinstance(err, TelegramError):
        return False
    return isinstance(err, RedisConnectionError | RedisTimeoutError | ConnectionError | OSError)


def _first_apology(update_id: int) -> bool:
    if update_id in _APOLOGISED:
        return False
    _APOLOGISED[update_id] = None
    while len(_APOLOGISED) > 10_000:
        _APOLOGISED.popitem(last=False)
    return True


async def on_error(update: object, context: BotContext) -> None:
    """Log the error without the update (it holds chat content), and say sorry once.

    Needs nothing but Telegram: with Redis down the person hears "busy, try again in a few
    minutes" in their Telegram client's language (their chosen language lives in Redis)."""
    metrics.ERRORS.inc()
    err = context.error
    down = storage_unavailable(err)
    if down:
        metrics.STORE_UNAVAILABLE.inc()
        log.warning("storage unavailable while handling an update: %s", type(err).__name__)
    else:
        log.error(
            "error while handling an update: %s",
            type(err).__name__,
            exc_info=(type(err), err, err.__traceback__) if err else None,
        )
    if not (
        isinstance(update, Update)
        and update.effective_chat
        and update.effective_chat.type == "private"
        and _first_apology(update.update_id)
    ):
        return
    user = update.effective_user
    lang = pick_language(user.language_code if user else None)
    if not down:
        with contextlib.suppress(Exception):  # the chosen language, if the store answers soon
            lang = (await asyncio.wait_for(load_person(update, context), 1.0)).lang
    try:
        await update.effective_chat.send_message(t(lang, BUSY_TEXT if down else SORRY_TEXT))
    except Exception as e:  # the error handler must never raise
        log.info("could not apologise: %s", type(e).__name__)


async def unknown_command(update: Update, context: BotContext) -> None:
    person = await load_person(update, context)
    await update.effective_message.reply_text(
        t(person.lang, "I do not know this command. Send /help to see what I can do.")
    )
