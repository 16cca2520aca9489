"""What every handler needs, kept in application.bot_data (which is never persisted)."""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from telegram import Update
from telegram.ext import ContextTypes

from hbscreen.inference.queue.protocol import JobQueue
from hbscreen.settings import Settings

from .i18n import pick_language
from .storage import KeyRing, Store, derive_key

log = logging.getLogger(__name__)

SERVICES = "hbscreen_services"
MAX_UPLOAD_BYTES = 20 * 1024 * 1024  # Telegram's own download limit for bots


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


def services(context: ContextTypes.DEFAULT_TYPE) -> Services:
    return context.application.bot_data[SERVICES]


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


async def load_person(update: Update, context: ContextTypes.DEFAULT_TYPE) -> Person:
    svc = services(context)
    chat_id = update.effective_chat.id
    h = svc.keyring.person(chat_id)
    profile = await svc.store.get_profile(h)
    if not profile.get("lang"):
        user = update.effective_user
        profile["lang_guess"] = pick_language(user.language_code if user else None)
    return Person(h, chat_id, profile)


async def save(context: ContextTypes.DEFAULT_TYPE, person: Person, **fields: Any) -> None:
    person.profile.update(fields)
    await services(context).store.update_profile(person.h, **fields)


async def clear(context: ContextTypes.DEFAULT_TYPE, person: Person, *names: str) -> None:
    for name in names:
        person.profile.pop(name, None)
    await services(context).store.clear_profile_fields(person.h, *names)


def now() -> float:
    return time.time()
