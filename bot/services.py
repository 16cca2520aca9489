"""What every handler needs: the services, in a typed `application.bot_data` (never persisted),
reached from handlers as `context.services` through python-telegram-bot's custom context types.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from telegram import Update
from telegram.ext import Application, CallbackContext, ContextTypes, ExtBot
from telegram.ext import JobQueue as PTBJobQueue

from hbscreen.inference.queue.protocol import JobQueue
from hbscreen.settings import Settings

from .i18n import pick_language
from .storage import KeyRing, Store, derive_key

log = logging.getLogger(__name__)


@dataclass
class Services:
    settings: Settings
    queue: JobQueue
    store: Store
    keyring: KeyRing


def hash_secret(settings: Settings) -> bytes:
    """HBSCREEN_HASH_KEY; without it a key derived from the bot token (stable, but rotating the
    token then orphans stored records), with a warning."""
    if settings.hash_key is not None:
        return settings.hash_key.get_secret_value().encode()
    log.warning("HBSCREEN_HASH_KEY is not set; deriving the pseudonym key from the bot token")
    token = settings.telegram_bot_token.get_secret_value() if settings.telegram_bot_token else ""
    return derive_key(hashlib.sha256(token.encode()).digest(), "fallback-hash-key")


class BotData:
    """`application.bot_data`: what the running bot holds, by attribute (PTB creates it empty)."""

    def __init__(self) -> None:
        self._services: Services | None = None
        self.owns_store = False  # build_application made the store, so shutdown closes it
        self.delivery_task: asyncio.Task[None] | None = None

    @property
    def services(self) -> Services:
        if self._services is None:
            raise RuntimeError("no services: build the bot with build_application()")
        return self._services

    @services.setter
    def services(self, value: Services) -> None:
        self._services = value


class BotContext(CallbackContext[ExtBot[Any], dict[Any, Any], dict[Any, Any], BotData]):
    """The context every handler and job gets: `context.services` instead of a bot_data key."""

    @property
    def services(self) -> Services:
        return self.bot_data.services


CONTEXT_TYPES = ContextTypes(context=BotContext, bot_data=BotData)
# The job queue's type stays PTB's default: ApplicationBuilder.context_types() does not change it.
BotApplication = Application[
    ExtBot[Any], BotContext, dict[Any, Any], dict[Any, Any], BotData, PTBJobQueue[Any]
]


@dataclass
class Person:
    """The person in this chat, by pseudonym; `profile` is what the Store keeps."""

    h: str
    chat_id: int
    profile: dict[str, Any] = field(default_factory=dict)

    @property
    def lang(self) -> str:
        """The chosen language, else the guess from the Telegram client."""
        return self.profile.get("lang") or self.profile.get("lang_guess") or "en"

    @property
    def worker(self) -> bool:
        return self.profile.get("mode") == "worker"


async def load_person(update: Update, context: BotContext) -> Person:
    svc = context.services
    chat_id = update.effective_chat.id
    h = svc.keyring.person(chat_id)
    profile = await svc.store.get_profile(h)
    if not profile.get("lang"):
        user = update.effective_user
        profile["lang_guess"] = pick_language(user.language_code if user else None)
    return Person(h, chat_id, profile)


async def save(context: BotContext, person: Person, **fields: Any) -> None:
    person.profile.update(fields)
    await context.services.store.update_profile(person.h, **fields)


async def clear(context: BotContext, person: Person, *names: str) -> None:
    for name in names:
        person.profile.pop(name, None)
    await context.services.store.clear_profile_fields(person.h, *names)


def now() -> float:
    return time.time()
