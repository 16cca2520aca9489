"""Simulated users: people in a chat who send what a Telegram client would send and read
what the bot sent, with event-driven waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import secrets
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from PIL import Image

from .entities import command_entities
from .state import ChatEvent, ChatMessage, ChatState, photo_variants, scope_key

if TYPE_CHECKING:
    from .server import BotAPIStandIn


T = TypeVar("T")


class ConversationTimeout(TimeoutError):
    """A simulated user waited in vain; the message holds the conversation so far."""


class SimulatedUser:
    """A person in one chat: sends what a Telegram client would send, reads what the bot sent.

    Waits are event-driven and read forward from a cursor: each wait consumes what it returns,
    so `send ...; wait ...` pairs read the bot's replies in order.
    """

    def __init__(self, standin: BotAPIStandIn, person: dict[str, Any], state: ChatState):
        self.standin = standin
        self.person = person
        self._state = state
        self._cursor = len(state.events)

    @property
    def id(self) -> int:
        return self.person["id"]

    @property
    def chat_id(self) -> int:
        return self._state.id

    @property
    def language_code(self) -> str | None:
        return self.person.get("language_code")

    # ---- what the bot sent -------------------------------------------------------------------

    @property
    def messages(self) -> list[ChatMessage]:
        """The bot's messages in this chat, as they stand now (deleted ones left out)."""
        return [m for m in self._state.messages if m.from_bot and not m.deleted]

    @property
    def all_messages(self) -> list[ChatMessage]:
        """Everything in the chat from both sides, deleted ones included."""
        return list(self._state.messages)

    @property
    def events(self) -> list[ChatEvent]:
        return list(self._state.events)

    @property
    def chat_actions(self) -> list[str]:
        return [e.detail or "" for e in self._state.events if e.kind == "action"]

    @property
    def reply_keyboard(self) -> list[list[dict[str, Any]]]:
        kb = self._state.reply_keyboard
        return kb["keyboard"] if kb else []

    def command_menu(self) -> list[dict[str, Any]]:
        """The command menu this person sees (scope and language fallbacks like Telegram)."""
        chat = self._state.chat
        if chat["type"] == "private":
            scopes = [{"type": "chat", "chat_id": chat["id"]}, {"type": "all_private_chats"}]
        else:
            scopes = [
                {"type": "chat_member", "chat_id": chat["id"], "user_id": self.id},
                {"type": "chat", "chat_id": chat["id"]},
                {"type": "all_group_chats"},
            ]
        scopes.append({"type": "default"})
        for scope in scopes:
            for lang in (self.language_code or "", ""):
                found = self.standin._commands.get((scope_key(scope), lang))
                if found is not None:
                    return list(found)
        return []

    def block(self) -> None:
        """The person blocks the bot: sends answer 403 like Telegram."""
        self._state.blocked = True

    def unblock(self) -> None:
        self._state.blocked = False

    def transcript(self, last: int | None = None) -> str:
        """The conversation so far, readable."""
        lines = []
        events = self._state.events[-last:] if last else self._state.events
        for e in events:
            if e.kind == "message" and e.snapshot is not None:
                m = e.snapshot
                who = "bot " if m.from_bot else "user"
                text = m.describe().replace("\n", "\n" + " " * 13)
                lines.append(f"{who} #{m.message_id:<4} {text}")
            elif e.kind == "edit" and e.snapshot is not None:
                text = e.snapshot.describe().replace("\n", "\n" + " " * 13)
                lines.append(f"bot  ~{e.snapshot.message_id:<4} (edited) {text}")
            elif e.kind == "delete" and e.message is not None:
                lines.append(f"bot  x{e.message.message_id:<4} (deleted)")
            elif e.kind == "action":
                lines.append(f"bot        ... {e.detail}")
            elif e.kind == "tap":
                lines.append(f"user       (taps) {e.detail}")
            elif e.kind == "answer":
                lines.append(f"bot        (answers the tap) {e.detail}")
        return "\n".join(lines) if lines else "(nothing yet)"

    # ---- sending -----------------------------------------------------------------------------

    async def _send(self, kind: str, **fields: Any) -> ChatMessage:
        msg = self.standin._add_message(
            self._state, from_bot=False, kind=kind, sender=self.person, **fields
        )
        await self.standin.inject_update({"message": self.standin.message_json(msg)})
        return msg

    async def send_text(self, text: str, *, reply_to: int | None = None) -> ChatMessage:
        return await self._send(
            "text", text=text, entities=command_entities(text), reply_to=reply_to
        )

    async def send_command(self, command: str, payload: str | None = None) -> ChatMessage:
        """`/start` or, with a payload, a deep link's `/start <payload>`."""
        command = command if command.startswith("/") else f"/{command}"
        if self._state.chat["type"] != "private" and "@" not in command:
            command = f"{command}@{self.standin.bot_user['username']}"
        return await self.send_text(f"{command} {payload}" if payload else command)

    async def tap_button(self, target: str, *, message: ChatMessage | None = None) -> str | None:
        """Tap an inline button (by text or callback_data) on the newest message that has it,
        or a reply-keyboard button (sends its text). Returns the callback query id, if any."""
        candidates = [message] if message else list(reversed(self.messages))
        for exact in (True, False):
            for msg in candidates:
                for button in [b for row in msg.inline_keyboard for b in row]:
                    if _matches(button, target, exact):
                        return await self._tap_inline(msg, button)
            for button in [b for row in self.reply_keyboard for b in row]:
                if _matches(button, target, exact):
                    if self._state.reply_keyboard and self._state.reply_keyboard.get(
                        "one_time_keyboard"
                    ):
                        self._state.reply_keyboard = None
                    await self.send_text(button["text"])
                    return None
        raise LookupError(
            f"no button {target!r} to tap; buttons now: {self.visible_buttons()}\n"
            + self.transcript(last=12)
        )

    def visible_buttons(self) -> list[str]:
        """Texts of the buttons one can tap now: inline ones newest first, then the keyboard."""
        out = [
            b.get("text", "")
            for m in reversed(self.messages)
            for b in m.buttons
            if m.inline_keyboard
        ]
        return out + [b.get("text", "") for row in self.reply_keyboard for b in row]

    async def _tap_inline(self, msg: ChatMessage, button: dict[str, Any]) -> str | None:
        self.standin._emit(self._state, "tap", msg, detail=button.get("text"))
        if "callback_data" not in button:
            return None  # a URL button opens a browser; nothing reaches the bot
        query_id = str(secrets.randbits(63))
        self.standin.callback_answers[query_id] = None
        self.standin._query_chats[query_id] = self._state
        await self.standin.inject_update(
            {
                "callback_query": {
                    "id": query_id,
                    "from": self.person,
                    "message": self.standin.message_json(msg),
                    "chat_instance": str(abs(self.chat_id) * 7919),
                    "data": button["callback_data"],
                }
            }
        )
        return query_id

    async def send_photo(self, data: bytes, *, caption: str | None = None) -> ChatMessage:
        """A photo as Telegram clients send it: several PhotoSize entries, largest = the bytes."""
        try:  # resizing takes a while for a big photo: not on the event loop
            variants = await asyncio.to_thread(photo_variants, data)
        except ValueError:
            variants = None
        sizes = self.standin.store_photo(data, lenient=True, variants=variants)
        return await self._send(
            "photo", media=sizes, data=data, caption=caption, mime_type="image/jpeg"
        )

    async def send_document(
        self,
        data: bytes,
        file_name: str = "file.bin",
        mime_type: str | None = None,
        *,
        caption: str | None = None,
    ) -> ChatMessage:
        doc = self.standin.store_document(data, file_name, mime_type)
        if doc["mime_type"].startswith("image/"):
            with contextlib.suppress(ValueError):
                small = (await asyncio.to_thread(photo_variants, data))[0]  # clients add one
                stored = self.standin._store(small[0], "thumbnails", "jpg", "image/jpeg")
                doc["thumbnail"] = {
                    "file_id": stored.file_id,
                    "file_unique_id": stored.file_unique_id,
                    "file_size": stored.size,
                    "width": small[1],
                    "height": small[2],
                }
        return await self._send(
            "document",
            media=doc,
            data=data,
            caption=caption,
            file_name=file_name,
            mime_type=doc["mime_type"],
        )

    async def send_sticker(self, emoji: str = "👍") -> ChatMessage:
        buf = io.BytesIO()
        Image.new("RGBA", (512, 512), (255, 200, 0, 255)).save(buf, "WEBP")
        stored = self.standin._store(buf.getvalue(), "stickers", "webp", "image/webp")
        sticker = {
            "file_id": stored.file_id,
            "file_unique_id": stored.file_unique_id,
            "file_size": stored.size,
            "type": "regular",
            "width": 512,
            "height": 512,
            "is_animated": False,
            "is_video": False,
            "emoji": emoji,
        }
        return await self._send("sticker", media=sticker, data=stored.data)

    async def send_voice(
        self,
        data: bytes = b"OggS" + bytes(2000),
        duration: int = 2,
    ) -> ChatMessage:
        stored = self.standin._store(data, "voice", "oga", "audio/ogg")
        voice = {
            "file_id": stored.file_id,
            "file_unique_id": stored.file_unique_id,
            "file_size": stored.size,
            "duration": duration,
            "mime_type": "audio/ogg",
        }
        return await self._send("voice", media=voice, data=data)

    async def send_video(self, data: bytes = bytes(4000), duration: int = 3) -> ChatMessage:
        stored = self.standin._store(data, "videos", "mp4", "video/mp4")
        video = {
            "file_id": stored.file_id,
            "file_unique_id": stored.file_unique_id,
            "file_size": stored.size,
            "duration": duration,
            "width": 640,
            "height": 480,
            "mime_type": "video/mp4",
        }
        return await self._send("video", media=video, data=data)

    # ---- waiting -----------------------------------------------------------------------------

    async def _wait(self, check: Callable[[], T | None], timeout: float, what: str) -> T:
        try:
            return await self._state.changed.wait_for(check, timeout)
        except TimeoutError:
            raise ConversationTimeout(
                f"waited {timeout:g}s for {what}; the conversation so far:\n{self.transcript()}"
            ) from None

    async def wait_for_messages(self, n: int = 1, timeout: float = 10.0) -> list[ChatMessage]:
        """The next n new messages from the bot (after the previous wait)."""

        def check() -> list[tuple[int, ChatMessage]] | None:
            found = []
            for i in range(self._cursor, len(self._state.events)):
                e = self._state.events[i]
                if e.kind == "message" and e.message is not None and e.message.from_bot:
                    found.append((i, e.message))
                    if len(found) == n:
                        return found
            return None

        found = await self._wait(check, timeout, f"{n} message(s) from the bot")
        self._cursor = found[-1][0] + 1
        return [m for _, m in found]

    async def wait_for(
        self,
        predicate: Callable[[ChatMessage], bool],
        timeout: float = 10.0,
        what: str = "a matching message",
    ) -> ChatMessage:
        """The next bot message, new or edited, for which predicate(message) holds now."""

        def check() -> tuple[int, ChatMessage] | None:
            for i in range(self._cursor, len(self._state.events)):
                e = self._state.events[i]
                m = e.message
                if (
                    e.kind in ("message", "edit")
                    and m is not None
                    and m.from_bot
                    and not m.deleted
                    and predicate(m)
                ):
                    return i, m
            return None

        index, msg = await self._wait(check, timeout, what)
        self._cursor = index + 1
        return msg

    async def wait_for_text(self, substring: str, timeout: float = 10.0) -> ChatMessage:
        """The next bot message (or edit) whose text or caption contains substring."""
        return await self.wait_for(
            lambda m: substring in m.content, timeout, f"a message containing {substring!r}"
        )

    async def wait_for_photo(self, timeout: float = 10.0) -> ChatMessage:
        return await self.wait_for(lambda m: m.kind == "photo", timeout, "a photo")

    async def wait_for_document(self, timeout: float = 10.0) -> ChatMessage:
        return await self.wait_for(lambda m: m.kind == "document", timeout, "a document")

    async def wait_for_button(self, target: str, timeout: float = 10.0) -> None:
        """Until a button with this text or callback_data can be tapped."""

        def check() -> bool:
            return any(
                _matches(b, target, exact=False)
                for b in [b for m in self.messages for row in m.inline_keyboard for b in row]
                + [b for row in self.reply_keyboard for b in row]
            )

        await self._wait(check, timeout, f"a button {target!r}")

    async def wait_for_answer(self, query_id: str, timeout: float = 10.0) -> dict[str, Any]:
        """The bot's answerCallbackQuery for a tap."""
        return await self._wait(
            lambda: self.standin.callback_answers.get(query_id),
            timeout,
            f"the answer to callback query {query_id}",
        )

    async def wait_idle(self, quiet: float = 0.5, timeout: float = 30.0) -> None:
        """Until the bot has done nothing in this chat for `quiet` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            seen = len(self._state.events)

            def changed(seen: int = seen) -> bool:
                return len(self._state.events) > seen or self.standin._closing

            try:
                await self._state.changed.wait_for(
                    changed, min(quiet, max(0.0, deadline - loop.time()))
                )
            except TimeoutError:
                return
            if loop.time() >= deadline or self.standin._closing:
                raise ConversationTimeout(
                    f"the bot did not go quiet within {timeout:g}s\n{self.transcript(last=20)}"
                )

    async def next_events(self, after: int, timeout: float | None = None) -> list[ChatEvent]:
        """The chat's events from index `after` on, waiting until there is at least one (or the
        stand-in stops: then []). For live printers such as demo-chat."""
        await self._state.changed.wait_for(
            lambda: len(self._state.events) > after or self.standin._closing, timeout
        )
        return self._state.events[after:]

    def skip_to_end(self) -> None:
        """Mark everything so far as read."""
        self._cursor = len(self._state.events)


def _matches(button: dict[str, Any], target: str, exact: bool) -> bool:
    text, data = button.get("text", ""), button.get("callback_data")
    if target in (text, data):
        return True
    return not exact and target.casefold() in text.casefold()
