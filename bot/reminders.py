"""Opt-in reminders to screen again in N weeks.

The due time lives in the Store (so reminders survive restarts); a repeating JobQueue job
sends the due ones. /stop and /delete cancel them.
"""

from __future__ import annotations

import logging

from telegram.error import Forbidden, TelegramError

from .i18n import t
from .services import BotContext, Person, now, save

log = logging.getLogger(__name__)

WEEK_S = 7 * 24 * 3600


async def schedule_reminder(context: BotContext, person: Person, weeks: int) -> None:
    svc = context.services
    due = now() + weeks * WEEK_S
    await save(context, person, reminder_due=due, reminder_chat=svc.keyring.seal(person.chat_id))
    await svc.store.set_reminder(person.h, due)


async def send_due_reminders(context: BotContext) -> None:
    """JobQueue callback: send every reminder that is due, once."""
    svc = context.services
    for h in await svc.store.due_reminders(now()):
        profile = await svc.store.get_profile(h)
        sealed = profile.get("reminder_chat")
        await svc.store.clear_profile_fields(h, "reminder_due", "reminder_chat")
        if not sealed:
            continue
        lang = profile.get("lang") or "en"
        try:
            await context.bot.send_message(
                svc.keyring.open(sealed),
                t(
                    lang,
                    "Hello. It is time to check for anaemia again. Send /start to begin. "
                    "Send /stop to get no more reminders.",
                ),
            )
        except Forbidden:
            log.info("a reminder could not be sent: the person blocked the bot")
        except TelegramError as e:
            log.warning("a reminder could not be sent: %s", type(e).__name__)
