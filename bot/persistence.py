"""Conversation state that survives a bot restart, without raw chat ids.

PTB's persistence keys conversations by (chat_id, user_id). `PersonConversationHandler`
keys them by the person's keyed hash instead, and `StorePersistence` writes only those
conversation states to the bot's Store (Redis in production). User, chat and bot data are not
persisted: everything else the bot remembers lives in the Store under the same hash, so
/delete can erase it in one place. The application flushes after every update (see app.py), so
a restart loses at most the update being handled.
"""

from __future__ import annotations

from typing import Any

from telegram import Update
from telegram.ext import BasePersistence, ConversationHandler, PersistenceInput

from .storage import KeyRing, Store


class PersonConversationHandler(ConversationHandler):
    """A ConversationHandler whose key is the keyed hash of the chat, not the raw ids."""

    def __init__(self, *args: Any, keyring: KeyRing, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._keyring = keyring

    def _get_key(self, update: Update) -> tuple[str]:
        chat = update.effective_chat
        if chat is None:
            raise RuntimeError("Can't build key for update without effective chat!")
        return (self._keyring.person(chat.id),)


class StorePersistence(BasePersistence):
    """Conversation states in the Store; nothing else."""

    def __init__(self, store: Store) -> None:
        super().__init__(
            store_data=PersistenceInput(
                bot_data=False, chat_data=False, user_data=False, callback_data=False
            ),
            update_interval=1,
        )
        self.store = store

    async def get_conversations(self, name: str) -> dict[tuple[str | int, ...], object]:
        return {(h,): state for h, state in (await self.store.get_conversations(name)).items()}

    async def update_conversation(self, name: str, key: tuple, new_state: object | None) -> None:
        await self.store.set_conversation(name, str(key[0]), new_state)

    # Not persisted (store_data above): PTB still calls some of these with empty data.
    async def get_user_data(self) -> dict[int, Any]:
        return {}

    async def get_chat_data(self) -> dict[int, Any]:
        return {}

    async def get_bot_data(self) -> dict[Any, Any]:
        return {}

    async def get_callback_data(self) -> None:
        return None

    async def update_user_data(self, user_id: int, data: Any) -> None:
        return None

    async def update_chat_data(self, chat_id: int, data: Any) -> None:
        return None

    async def update_bot_data(self, data: Any) -> None:
        return None

    async def update_callback_data(self, data: Any) -> None:
        return None

    async def drop_chat_data(self, chat_id: int) -> None:
        return None

    async def drop_user_data(self, user_id: int) -> None:
        return None

    async def refresh_user_data(self, user_id: int, user_data: Any) -> None:
        return None

    async def refresh_chat_data(self, chat_id: int, chat_data: Any) -> None:
        return None

    async def refresh_bot_data(self, bot_data: Any) -> None:
        return None

    async def flush(self) -> None:
        return None
