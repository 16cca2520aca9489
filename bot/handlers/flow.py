"""The guided screening: language and consent, who, patient label, group, danger signs, photo.

Each answer is saved to the person's profile, then `advance()` asks for the first thing still
missing. So a button tapped late, a restart, or /language in the middle all land on the right
question, and the conversation state is always derived from what was answered.

Telegram allows a bot about one message a second per chat and thirty in all, so the flow is
frugal with requests: the questions are one "card" message edited in place as buttons are
tapped; the photo guide is sent once per person (later a button shows it again); the last
answer before the photo is acknowledged with a toast (answerCallbackQuery, which posts nothing
into the chat) instead of a new message. Counted in tests/test_bot_requests.py.
"""

from __future__ import annotations

import contextlib
import logging
import re
from pathlib import Path

from telegram import BotCommand, BotCommandScopeChat, CallbackQuery, InlineKeyboardMarkup, Update
from telegram.error import BadRequest, TelegramError
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


async def _send(update: Update, text: str, markup: InlineKeyboardMarkup | None = None) -> None:
    await update.effective_chat.send_message(text, reply_markup=markup)


async def show(update: Update, text: str, markup: InlineKeyboardMarkup | None = None) -> None:
    """The card: a tap on a text message edits that message in place (one request, no new
    message); anything else (a command, typed text, a tap under a photo) sends a new card."""
    query = update.callback_query
    msg = query.message if query is not None else None
    if msg is not None and getattr(msg, "text", None):
        try:
            await query.edit_message_text(text, reply_markup=markup)
            return
        except BadRequest as e:
            if "not modified" in str(e).lower():
                return
            log.info("the card could not be edited, sending a new one: %s", type(e).__name__)
        except TelegramError as e:
            log.info("the card could not be edited, sending a new one: %s", type(e).__name__)
    await _send(update, text, markup)


def _with_note(note: str | None, text: str) -> str:
    return f"{note}\n\n{text}" if note else text


def _subject_line(p: dict, lang: str) -> str:
    """ "P-12 · Child, 6 to 23 months" above the danger question: what the answers were."""
    parts = [messages.html.escape(p["label"])] if p.get("label") else []
    if p.get("group") in messages.GROUP_LABELS:
        parts.append(messages.group_label(lang, p["group"]))
    return f"<b>{' · '.join(parts)}</b>" if parts else ""


def question(person: Person, consent_version: str) -> tuple[int, str, InlineKeyboardMarkup | None]:
    """The first missing answer as (state, text, keyboard); PHOTO when nothing is missing."""
    p, lang = person.profile, person.lang
    if not p.get("lang") or p.get("consent_version") != consent_version:
        return CONSENT, messages.consent_text(lang), keyboards.consent(lang, with_languages=True)
    if not p.get("who"):
        return WHO, t(lang, "Who will be screened?"), keyboards.who(lang)
    if p["who"] == "patient" and not p.get("label"):
        prompt = t(
            lang,
            "Health worker mode. Type a short label for the patient, like P-12. Do not type names.",
        )
        return LABEL, prompt, None
    if not p.get("group"):
        other = p["who"] in ("other", "patient") and not p.get("patient_ok")
        if not other:
            return GROUP, t(lang, "Choose the group of the person."), keyboards.group(lang)
        if p.get("label"):
            ask = t(
                lang,
                "Has patient {label} (or their carer) agreed to this screening?",
                label=messages.html.escape(p["label"]),
            )
        else:
            ask = t(
                lang,
                "Does this person agree to the screening? "
                "For a child, a parent or carer must agree.",
            )
        then = t(lang, "If yes, choose their group.")
        text = f"{ask}\n{then}"
        if p["who"] == "patient":
            return GROUP, text, keyboards.group_flat(lang, refuse=True)
        return GROUP, text, keyboards.group(lang, refuse=True)
    if p.get("danger") is None:
        text = "\n\n".join(
            part
            for part in (
                _subject_line(p, lang),
                messages.danger_question(lang, p["group"]),
                t(lang, "If there are none, tap No, then send the photo."),
            )
            if part
        )
        return DANGER, text, keyboards.danger(lang, guide=bool(p.get("guide_seen")))
    if p["danger"] and not p.get("danger_photo"):
        # The urgent referral comes first; a photo only if she still wants one.
        worker = person.worker
        return (
            DANGER,
            messages.danger_referral_text(lang, worker),
            keyboards.after_danger(lang, worker),
        )
    return PHOTO, t(lang, "Please send a photo of the inside of the lower eyelid."), None


async def advance(
    update: Update,
    context: BotContext,
    person: Person,
    *,
    note: str | None = None,
) -> int:
    """Show the first missing question (on the card) and return the state that waits for it.

    Once everything is answered: the photo guide the first time, later a short prompt with a
    button that shows the guide again."""
    state, text, markup = question(person, context.services.settings.consent_policy_version)
    if state == PHOTO:
        if not person.profile.get("guide_seen"):
            # Saved first: the guide is the last thing the person sees of this step.
            await save(context, person, guide_seen=True)
            await send_photo_guide(update, person.lang)
            return PHOTO
        markup = keyboards.show_guide(person.lang)
    await show(update, _with_note(note, text), markup)
    return state


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


async def _answer(query: CallbackQuery | None, toast: str | None = None) -> None:
    """Acknowledge the tap (best effort); a toast says what to do next without a message."""
    if query is None:
        return
    with contextlib.suppress(TelegramError):
        await query.answer(toast[:200] if toast else None)


# -- commands that (re)start the conversation -------------------------------------------------


async def start(update: Update, context: BotContext) -> int:
    """A new screening. Someone who screened themselves before keeps their group (the danger
    question shows it, with a button to change it); anyone else starts at "who"."""
    person = await load_person(update, context)
    fields: dict = {"mode": "self", "session_started": now()}
    if context.args and CAMPAIGN_RE.match(context.args[0]):
        fields["campaign"] = context.args[0]
    if person.profile.get("who") == "me" and person.profile.get("group"):
        await clear(context, person, "label", "patient_ok", "danger")
    else:
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
    """A language: the card turns into the next question in it (the consent card re-renders).

    The command menu follows the Telegram app's language (set per language at start-up);
    no per-chat menu, which would cost a request per person."""
    query = update.callback_query
    await _answer(query)
    lang = query.data.split(":", 1)[1]
    person = await load_person(update, context)
    if lang not in LANGUAGES:
        return await advance(update, context, person)
    consenting = person.profile.get("consent_version") != (
        context.services.settings.consent_policy_version
    )
    unchanged = lang == person.lang
    await save(context, person, lang=lang)
    if consenting and unchanged:
        return CONSENT  # the card is already in this language
    note = None if consenting else t(lang, "Language: {name}.", name=language_name(lang))
    return await advance(update, context, person, note=note)


async def set_chat_commands(context: BotContext, chat_id: int, lang: str) -> None:
    """This chat's command menu in one language (not used per person: see on_language)."""
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
        fields: dict = {"consent_version": version, "consent_at": now()}
        if not person.profile.get("lang"):
            fields["lang"] = lang  # agreeing in the guessed language chooses it
        await save(context, person, **fields)
        return await advance(update, context, person)
    await context.services.store.delete_person(person.h)
    await show(
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
    """pc:no under the group question (pc:yes only on cards sent by older versions)."""
    query = update.callback_query
    await _answer(query)
    person = await load_person(update, context)
    if query.data == "pc:yes":
        await save(context, person, patient_ok=True)
        return await advance(update, context, person)
    await clear(context, person, *SUBJECT_FIELDS)
    await show(
        update,
        t(person.lang, "Then we will not screen this person. Send /start to begin again."),
    )
    return END


async def on_group(update: Update, context: BotContext) -> int:
    """A group; choosing one for someone else also says they agreed (the card asked so)."""
    query = update.callback_query
    await _answer(query)
    person = await load_person(update, context)
    lang, choice = person.lang, query.data.split(":", 1)[1]
    if choice == "change":
        await clear(context, person, "group", "danger")
        return await advance(update, context, person)
    if choice == "pregnant":
        await show(update, t(lang, "How many months pregnant?"), keyboards.trimester(lang))
        return GROUP
    if choice == "child":
        await show(update, t(lang, "How old is the child?"), keyboards.child_age(lang))
        return GROUP
    if choice == "baby":
        await show(
            update,
            messages.young_baby_text(lang, person.worker),
            keyboards.young_baby(lang, person.worker),
        )
        return GROUP
    if choice in messages.GROUP_LABELS:
        fields: dict = {"group": choice}
        if person.profile.get("who") in ("other", "patient"):
            fields["patient_ok"] = True
        await clear(context, person, "danger")
        await save(context, person, **fields)
    return await advance(update, context, person)


async def on_danger(update: Update, context: BotContext) -> int:
    """Danger signs: the card turns into the urgent referral (a photo only if still wanted).
    None: a toast, and the photo guide the first time; the card already says "send the photo"."""
    query = update.callback_query
    person = await load_person(update, context)
    lang = person.lang
    if query.data == "danger:photo":  # after the urgent referral, she still wants a photo
        await _answer(query)
        if person.profile.get("danger"):
            await save(context, person, danger_photo=True)
        return await advance(update, context, person)
    danger = query.data == "danger:yes"
    await save(context, person, danger=danger)
    if danger or not person.profile.get("group"):
        await _answer(query)
        return await advance(update, context, person)
    await _answer(query, t(lang, "Thank you. Now send the photo."))
    if not person.profile.get("guide_seen"):
        await save(context, person, guide_seen=True)  # first: the guide is the last thing seen
        await send_photo_guide(update, lang)
    return PHOTO


async def on_guide(update: Update, context: BotContext) -> int | None:
    """The "how to take the photo" button: the guide again, on request."""
    query = update.callback_query
    await _answer(query)
    person = await load_person(update, context)
    await send_photo_guide(update, person.lang)
    ready = person.profile.get("group") and person.profile.get("danger") is not None
    return PHOTO if ready else None


async def on_after(update: Update, context: BotContext) -> int:
    """The buttons under a result: other eye, someone else / next patient, done.

    The first two are answered with a toast only: the next step is the person's (a photo, a
    typed label), so no message is needed."""
    query = update.callback_query
    person = await load_person(update, context)
    lang, choice = person.lang, query.data.split(":", 1)[1]
    if choice == "eye":
        if person.profile.get("group") and person.profile.get("danger") is not None:
            await _answer(query, t(lang, "Send a photo of the other eye."))
            return PHOTO
        await _answer(query)
        return await advance(update, context, person)
    await record_referral_without_photo(context, person)
    if choice == "other":
        await clear(context, person, *SUBJECT_FIELDS)
        if person.worker:
            state, prompt, _ = question(person, context.services.settings.consent_policy_version)
            if state == LABEL:
                await _answer(query, prompt)
                return LABEL
        else:
            await save(context, person, mode="self", who="other")
        await _answer(query)
        return await advance(update, context, person)
    await _answer(query)
    text = t(lang, "Thank you. Take care. Send /start for a new screening.")
    settings = context.services.settings
    markup = None
    if not person.worker and not person.profile.get("reminder_due") and settings.reminder_weeks:
        ask = t(
            lang,
            "Would you like a reminder to screen again in {weeks} weeks?",
            weeks=settings.reminder_weeks,
        )
        text, markup = f"{text}\n\n{ask}", keyboards.reminder(lang, settings.reminder_weeks)
    await _send(update, text, markup)
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
    """Typed text or a photo where a button answer was expected: the question again, as one
    new card with the reason on top."""
    person = await load_person(update, context)
    msg = update.effective_message
    note = None
    if msg is not None and (msg.photo or msg.document):
        note = t(person.lang, "First answer the question above, please.")
    elif msg is not None and msg.text:
        note = t(person.lang, "Please use the buttons below the question.")
    return await advance(update, context, person, note=note)


async def photo_expected(update: Update, context: BotContext) -> int:
    """Typed text while the bot waits for the photo."""
    person = await load_person(update, context)
    return await advance(update, context, person)


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
