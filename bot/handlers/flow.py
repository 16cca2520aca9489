"""The guided screening: language, consent, who, patient label, group, danger signs, photo.

Each answer is saved to the person's profile, then `advance()` asks for the first thing still
missing. So a button tapped late, a restart, or /language in the middle all land on the right
question, and the conversation state is always derived from what was answered.
"""

from __future__ import annotations

import contextlib
import logging
import re
from pathlib import Path

from telegram import BotCommand, BotCommandScopeChat, CallbackQuery, Message, Update
from telegram.error import TelegramError
from telegram.ext import ConversationHandler

from .. import keyboards, messages
from ..i18n import LANGUAGES, commands_for, language_name, t
from ..services import BotContext, Person, clear, load_person, now, save

log = logging.getLogger(__name__)

# Conversation states.
LANG, CONSENT, WHO, LABEL, PATIENT_CONSENT, GROUP, DANGER, PHOTO = range(8)
END = ConversationHandler.END

PHOTO_GUIDE = Path(__file__).resolve().parent.parent / "assets" / "photo_guide.jpg"
MAX_CAPTION = 1024  # Telegram counts UTF-16 code units
CAMPAIGN_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
LABEL_RE = re.compile(r"^[\w\-/#.]{1,20}$")
# What a new subject (someone else, next patient) must answer again.
SUBJECT_FIELDS = ("label", "patient_ok", "group", "danger", "danger_photo")


async def _send(update: Update, text: str, markup=None) -> None:
    await update.effective_chat.send_message(text, reply_markup=markup)


async def advance(
    update: Update, context: BotContext, person: Person, *, short: bool = False
) -> int:
    """Ask for the first missing answer and return the state that waits for it."""
    p, lang = person.profile, person.lang
    settings = context.services.settings
    if not p.get("lang"):
        await _send(update, t(lang, "Choose your language."), keyboards.languages())
        return LANG
    if p.get("consent_version") != settings.consent_policy_version:
        await _send(update, messages.consent_text(lang), keyboards.consent(lang))
        return CONSENT
    if not p.get("who"):
        await _send(update, t(lang, "Who will be screened?"), keyboards.who(lang))
        return WHO
    if p["who"] == "patient" and not p.get("label"):
        await _send(
            update,
            t(
                lang,
                "Health worker mode. Type a short label for the patient, like P-12. "
                "Do not type names.",
            ),
        )
        return LABEL
    if p["who"] in ("other", "patient") and not p.get("patient_ok"):
        if p.get("label"):
            text = t(
                lang,
                "Has patient {label} (or their carer) agreed to this screening?",
                label=messages.html.escape(p["label"]),
            )
        else:
            text = t(
                lang,
                "Does this person agree to the screening? "
                "For a child, a parent or carer must agree.",
            )
        await _send(update, text, keyboards.patient_consent(lang))
        return PATIENT_CONSENT
    if not p.get("group"):
        await _send(update, t(lang, "Choose the group of the person."), keyboards.group(lang))
        return GROUP
    if p.get("danger") is None:
        await _send(update, messages.danger_question(lang, p["group"]), keyboards.danger(lang))
        return DANGER
    if p["danger"] and not p.get("danger_photo"):
        # The urgent referral comes first; a photo only if she still wants one.
        await _send(
            update,
            messages.danger_referral_text(lang, person.worker),
            keyboards.after_danger(lang, person.worker),
        )
        return DANGER
    if short:
        await _send(update, t(lang, "Please send a photo of the inside of the lower eyelid."))
    else:
        await send_photo_guide(update, lang)
    return PHOTO


async def send_photo_guide(update: Update, lang: str) -> None:
    """One example image with the four steps as its caption; text alone if the image is gone."""
    text = messages.photo_guide_text(lang)
    try:
        data = PHOTO_GUIDE.read_bytes()
    except OSError:
        await _send(update, text)
        return
    try:
        if len(text.encode("utf-16-le")) // 2 <= MAX_CAPTION:
            await update.effective_chat.send_photo(data, caption=text)
            return
        await update.effective_chat.send_photo(data)
    except TelegramError as e:
        log.warning("the photo guide image could not be sent: %s", type(e).__name__)
    await _send(update, text)


async def _answer(query: CallbackQuery | None) -> None:
    """Acknowledge the tap and show the choice under the question (best effort)."""
    if query is None:
        return
    with contextlib.suppress(TelegramError):
        await query.answer()
    msg, markup = query.message, getattr(query.message, "reply_markup", None)
    if not isinstance(msg, Message) or markup is None or not msg.text:
        return
    chosen = next(
        (b.text for row in markup.inline_keyboard for b in row if b.callback_data == query.data),
        None,
    )
    if chosen:
        with contextlib.suppress(TelegramError):
            await query.edit_message_text(
                f"{msg.text_html}\n\n<b>→ {messages.html.escape(chosen)}</b>", reply_markup=None
            )


# -- commands that (re)start the conversation -------------------------------------------------


async def start(update: Update, context: BotContext) -> int:
    person = await load_person(update, context)
    fields: dict = {"mode": "self", "session_started": now()}
    if context.args and CAMPAIGN_RE.match(context.args[0]):
        fields["campaign"] = context.args[0]
    await clear(context, person, "who", *SUBJECT_FIELDS)
    await save(context, person, **fields)
    return await advance(update, context, person)


async def worker(update: Update, context: BotContext) -> int:
    person = await load_person(update, context)
    await enter_worker_mode(context, person)
    return await advance(update, context, person)


async def enter_worker_mode(context: BotContext, person: Person) -> None:
    await clear(context, person, *SUBJECT_FIELDS)
    await save(context, person, mode="worker", who="patient", session_started=now())


async def language(update: Update, context: BotContext) -> int:
    person = await load_person(update, context)
    await _send(update, t(person.lang, "Choose your language."), keyboards.languages())
    return LANG


# -- answers (buttons) ------------------------------------------------------------------------


async def on_language(update: Update, context: BotContext) -> int:
    query = update.callback_query
    await _answer(query)
    lang = query.data.split(":", 1)[1]
    person = await load_person(update, context)
    if lang not in LANGUAGES:
        return await advance(update, context, person)
    await save(context, person, lang=lang)
    await set_chat_commands(context, person.chat_id, lang)
    await _send(update, t(lang, "Language: {name}.", name=language_name(lang)))
    return await advance(update, context, person)


async def set_chat_commands(context: BotContext, chat_id: int, lang: str) -> None:
    """This chat's command menu in its chosen language."""
    admin = chat_id in context.services.settings.admin_ids
    commands = [BotCommand(c, d) for c, d in commands_for(lang, admin=admin)]
    try:
        await context.bot.set_my_commands(commands, scope=BotCommandScopeChat(chat_id))
    except TelegramError as e:
        log.warning("could not set the chat's command menu: %s", type(e).__name__)


async def on_consent(update: Update, context: BotContext) -> int:
    query = update.callback_query
    await _answer(query)
    person = await load_person(update, context)
    lang = person.lang
    if query.data == "consent:yes":
        version = context.services.settings.consent_policy_version
        await save(context, person, consent_version=version, consent_at=now())
        return await advance(update, context, person)
    await context.services.store.delete_person(person.h)
    await _send(
        update,
        t(lang, "That is fine. Nothing about you is kept. Send /start if you change your mind."),
    )
    return END


async def on_who(update: Update, context: BotContext) -> int:
    query = update.callback_query
    await _answer(query)
    person = await load_person(update, context)
    choice = query.data.split(":", 1)[1]
    if choice == "worker":
        await enter_worker_mode(context, person)
    elif choice in ("me", "other"):
        await clear(context, person, *SUBJECT_FIELDS)
        await save(context, person, mode="self", who=choice)
    return await advance(update, context, person)


async def on_patient_consent(update: Update, context: BotContext) -> int:
    query = update.callback_query
    await _answer(query)
    person = await load_person(update, context)
    if query.data == "pc:yes":
        await save(context, person, patient_ok=True)
        return await advance(update, context, person)
    await clear(context, person, *SUBJECT_FIELDS)
    await _send(
        update,
        t(person.lang, "Then we will not screen this person. Send /start to begin again."),
    )
    return END


async def on_group(update: Update, context: BotContext) -> int:
    query = update.callback_query
    await _answer(query)
    person = await load_person(update, context)
    lang, choice = person.lang, query.data.split(":", 1)[1]
    if choice == "pregnant":
        await _send(update, t(lang, "How many months pregnant?"), keyboards.trimester(lang))
        return GROUP
    if choice == "child":
        await _send(update, t(lang, "How old is the child?"), keyboards.child_age(lang))
        return GROUP
    if choice == "baby":
        await _send(
            update,
            messages.young_baby_text(lang, person.worker),
            keyboards.young_baby(lang, person.worker),
        )
        return GROUP
    if choice in messages.GROUP_LABELS:
        await clear(context, person, "danger")
        await save(context, person, group=choice)
    return await advance(update, context, person)


async def on_danger(update: Update, context: BotContext) -> int:
    query = update.callback_query
    await _answer(query)
    person = await load_person(update, context)
    if query.data == "danger:photo":  # after the urgent referral, she still wants a photo
        if person.profile.get("danger"):
            await save(context, person, danger_photo=True)
        return await advance(update, context, person)
    await save(context, person, danger=query.data == "danger:yes")
    return await advance(update, context, person)


async def on_after(update: Update, context: BotContext) -> int:
    """The buttons under a result: other eye, someone else / next patient, done."""
    query = update.callback_query
    await _answer(query)
    person = await load_person(update, context)
    lang, choice = person.lang, query.data.split(":", 1)[1]
    if choice == "eye":
        if person.profile.get("group") and person.profile.get("danger") is not None:
            await _send(update, t(lang, "Send a photo of the other eye."))
            return PHOTO
        return await advance(update, context, person)
    await record_referral_without_photo(context, person)
    if choice == "other":
        if person.worker:
            await clear(context, person, *SUBJECT_FIELDS)
        else:
            await clear(context, person, "who", *SUBJECT_FIELDS)
        return await advance(update, context, person)
    await _send(update, t(lang, "Thank you. Take care. Send /start for a new screening."))
    settings = context.services.settings
    if not person.worker and not person.profile.get("reminder_due") and settings.reminder_weeks:
        await _send(
            update,
            t(
                lang,
                "Would you like a reminder to screen again in {weeks} weeks?",
                weeks=settings.reminder_weeks,
            ),
            keyboards.reminder(lang, settings.reminder_weeks),
        )
    return END


async def record_referral_without_photo(context: BotContext, person: Person) -> None:
    """A patient sent to a facility for danger signs, with no photo: still a line in the
    worker's /summary and /export (referred today), never counted as a screening."""
    p = person.profile
    if not (p.get("danger") and not p.get("danger_photo") and p.get("group")):
        return
    await context.services.store.add_record(
        person.h,
        {
            "time": now(),
            "label": p.get("label") or "",
            "group": p["group"],
            "hb": None,
            "photo": False,
            "danger": True,
            "referral": "urgent",
        },
    )
    await save(context, person, danger_photo=True)  # once, even if a button is tapped twice


# -- typed text -------------------------------------------------------------------------------


def looks_like_a_name(label: str) -> bool:
    """A label with letters and no digit is probably a name: ask for a code instead."""
    return not any(ch.isdigit() for ch in label)


async def on_label(update: Update, context: BotContext) -> int:
    person = await load_person(update, context)
    lang = person.lang
    label = (update.effective_message.text or "").strip()
    if looks_like_a_name(label):
        await _send(
            update,
            t(
                lang,
                "This looks like a name. Please do not use names. "
                "Use a number or a code, like P-12.",
            ),
        )
        return LABEL
    if not LABEL_RE.match(label):
        await _send(
            update,
            t(lang, "Please use a short label: up to 20 letters or numbers, no spaces, like P-12."),
        )
        return LABEL
    await clear(context, person, "patient_ok", "group", "danger")
    await save(context, person, label=label)
    return await advance(update, context, person)


async def reprompt(update: Update, context: BotContext) -> int:
    """Typed text or a photo where a button answer was expected: ask the question again."""
    person = await load_person(update, context)
    msg = update.effective_message
    if msg is not None and (msg.photo or msg.document):
        await _send(update, t(person.lang, "First answer the question above, please."))
    elif msg is not None and msg.text:
        await _send(update, t(person.lang, "Please use the buttons below the question."))
    return await advance(update, context, person, short=True)


async def photo_expected(update: Update, context: BotContext) -> int:
    """Typed text while the bot waits for the photo."""
    person = await load_person(update, context)
    return await advance(update, context, person, short=True)


async def set_default_commands(context_bot, admin_ids: list[int]) -> None:
    """The command menu per language (Telegram picks by the app's language), and English as
    the default; admins also see /stats."""
    try:
        for lang in LANGUAGES:
            cmds = [BotCommand(c, d) for c, d in commands_for(lang)]
            await context_bot.set_my_commands(cmds, language_code=lang)
        await context_bot.set_my_commands([BotCommand(c, d) for c, d in commands_for("en")])
        for admin in admin_ids:
            cmds = [BotCommand(c, d) for c, d in commands_for("en", admin=True)]
            await context_bot.set_my_commands(cmds, scope=BotCommandScopeChat(admin))
    except TelegramError as e:
        log.warning("could not set the command menu: %s", type(e).__name__)
