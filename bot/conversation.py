"""All handlers, in the order PTB must see them.

Group -1: counting and group chats (pointed to a private chat, nothing else happens there).
Group 0: commands that never change the conversation; then the ConversationHandler; then
         what arrives outside a conversation (commands that end one, media, stale buttons).
Group 1: flush the persistence after every update, so a restart loses nothing answered.
"""

from __future__ import annotations

import warnings

from telegram import Update
from telegram.ext import (
    CallbackQueryHandler,
    CommandHandler,
    MessageHandler,
    TypeHandler,
    filters,
)
from telegram.warnings import PTBUserWarning

from hbscreen.inference.limits import IMAGE_EXTENSIONS

from .handlers import commands, flow, misc, photo
from .persistence import PersonConversationHandler
from .services import BotApplication, BotContext
from .storage import KeyRing

CONVERSATION_NAME = "screening"
PRIVATE = filters.ChatType.PRIVATE
IMAGE_INPUT = PRIVATE & (filters.PHOTO | filters.Document.ALL)
TEXT = PRIVATE & filters.TEXT & ~filters.COMMAND


def _flow_callbacks() -> list[CallbackQueryHandler]:
    return [
        CallbackQueryHandler(flow.on_language, pattern=r"^lang:"),
        CallbackQueryHandler(flow.on_consent, pattern=r"^consent:"),
        CallbackQueryHandler(flow.on_who, pattern=r"^who:"),
        CallbackQueryHandler(flow.on_patient_consent, pattern=r"^pc:"),
        CallbackQueryHandler(flow.on_group, pattern=r"^grp:"),
        CallbackQueryHandler(flow.on_danger, pattern=r"^danger:"),
        CallbackQueryHandler(flow.on_after, pattern=r"^after:"),
        CallbackQueryHandler(flow.on_guide, pattern=r"^guide:"),
    ]


def _ending_commands() -> list:
    """Commands and buttons that end the conversation; also registered outside it."""
    return [
        CommandHandler("cancel", commands.cancel, filters=PRIVATE),
        CommandHandler("stop", commands.stop, filters=PRIVATE),
        CallbackQueryHandler(commands.on_delete, pattern=r"^del:"),
    ]


def build_conversation(keyring: KeyRing) -> PersonConversationHandler:
    reprompt = [
        MessageHandler(TEXT | IMAGE_INPUT, flow.reprompt),
    ]
    with warnings.catch_warnings():
        # per_message=False with CallbackQueryHandlers is intended: one conversation per chat.
        warnings.simplefilter("ignore", PTBUserWarning)
        return PersonConversationHandler(
            keyring=keyring,
            entry_points=[
                CommandHandler("start", flow.start, filters=PRIVATE),
                CommandHandler("worker", flow.worker, filters=PRIVATE),
                CommandHandler("language", flow.language, filters=PRIVATE),
                *_flow_callbacks(),
            ],
            states={
                flow.LANG: reprompt,
                flow.CONSENT: reprompt,
                flow.WHO: reprompt,
                flow.LABEL: [MessageHandler(TEXT, flow.on_label), *reprompt],
                flow.PATIENT_CONSENT: reprompt,
                flow.GROUP: reprompt,
                # A photo after the urgent referral means she still wants the estimate.
                flow.DANGER: [MessageHandler(IMAGE_INPUT, photo.on_photo_after_danger), *reprompt],
                flow.PHOTO: [
                    MessageHandler(IMAGE_INPUT, photo.on_photo),
                    MessageHandler(TEXT, flow.photo_expected),
                ],
            },
            fallbacks=_ending_commands(),
            allow_reentry=True,
            name=CONVERSATION_NAME,
            persistent=True,
        )


async def _flush(update: object, context: BotContext) -> None:
    await context.application.update_persistence()


def register_handlers(application: BotApplication, keyring: KeyRing) -> None:
    application.add_handler(TypeHandler(Update, misc.count_update), group=-2)
    application.add_handler(
        MessageHandler(
            filters.ChatType.GROUPS & (filters.COMMAND | filters.PHOTO | filters.Document.ALL),
            misc.in_group,
        ),
        group=-1,
    )
    everywhere = [
        CommandHandler("help", commands.help_command, filters=PRIVATE),
        CommandHandler("privacy", commands.privacy, filters=PRIVATE),
        CommandHandler("delete", commands.delete, filters=PRIVATE),
        CommandHandler("summary", commands.summary, filters=PRIVATE),
        CommandHandler("export", commands.export, filters=PRIVATE),
        CommandHandler("stats", commands.stats, filters=PRIVATE),
        CallbackQueryHandler(commands.on_reminder, pattern=r"^remind:"),
        MessageHandler(
            PRIVATE & (filters.VIDEO | filters.VIDEO_NOTE | filters.ANIMATION), misc.video
        ),
        MessageHandler(PRIVATE & filters.Sticker.ALL, misc.sticker),
        MessageHandler(PRIVATE & (filters.VOICE | filters.AUDIO), misc.voice),
        MessageHandler(
            PRIVATE & filters.Document.ALL & ~filters.Document.IMAGE & ~_image_by_name(),
            misc.other_document,
        ),
    ]
    for handler in everywhere:
        application.add_handler(handler)
    application.add_handler(build_conversation(keyring))
    outside = [
        *_ending_commands(),
        MessageHandler(TEXT | IMAGE_INPUT, misc.outside_conversation),
        CallbackQueryHandler(misc.stale_button),
        MessageHandler(PRIVATE & filters.COMMAND, misc.unknown_command),
        MessageHandler(PRIVATE, misc.other_message),
    ]
    for handler in outside:
        application.add_handler(handler)
    application.add_handler(TypeHandler(Update, _flush), group=1)
    application.add_error_handler(misc.on_error)


def _image_by_name() -> filters.BaseFilter:
    exts = sorted(e.lstrip(".") for e in IMAGE_EXTENSIONS)
    f: filters.BaseFilter = filters.Document.FileExtension(exts[0])
    for ext in exts[1:]:
        f = f | filters.Document.FileExtension(ext)
    return f
