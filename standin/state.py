"""What the stand-in keeps: chats, messages, events, files and the calls it received."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from PIL import Image

T = TypeVar("T")
PHOTO_SIDES = (90, 320, 800, 1280)  # the smaller sizes Telegram keeps besides the largest


class ChangeSignal:
    """Wakes every waiter when something changed; each waiter re-checks its own condition."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def fire(self) -> None:
        self._event.set()
        self._event = asyncio.Event()

    async def wait_for(self, check: Callable[[], T | None], timeout: float | None) -> T:
        async def until() -> T:
            while True:
                result = check()
                if result:
                    return result
                await self._event.wait()

        return await asyncio.wait_for(until(), timeout)


def photo_variants(data: bytes) -> list[tuple[bytes, int, int]]:
    """The sizes Telegram keeps of a photo, smallest first; the largest is the original bytes.

    Raises ValueError when the bytes are not an image Pillow can decode. JPEGs decode at a
    reduced scale (draft mode) and each size is made from the next larger one: a 12 MP photo
    takes tens of milliseconds, not seconds.
    """
    try:
        with Image.open(io.BytesIO(data)) as img:
            width, height = img.size
            largest_small = max((s for s in PHOTO_SIDES if s < max(width, height)), default=0)
            if largest_small:
                img.draft("RGB", (largest_small, largest_small))
            img.load()
            current = img.convert("RGB")
    except Exception as exc:  # Pillow raises many kinds for broken files
        raise ValueError(f"not a decodable image: {exc}") from exc
    out = []
    for side in sorted((s for s in PHOTO_SIDES if s < max(width, height)), reverse=True):
        current = current.copy()
        current.thumbnail((side, side))
        buf = io.BytesIO()
        current.save(buf, "JPEG", quality=80)
        out.append((buf.getvalue(), current.width, current.height))
    out.reverse()
    out.append((data, width, height))
    return out


# --------------------------------------------------------------------------------------------
# What the server keeps
# --------------------------------------------------------------------------------------------


@dataclass
class StoredFile:
    """A file Telegram holds: downloadable at base_file_url + token + '/' + file_path."""

    file_id: str
    file_unique_id: str
    data: bytes = field(repr=False)
    file_path: str
    mime_type: str | None = None
    file_name: str | None = None

    @property
    def size(self) -> int:
        return len(self.data)


@dataclass
class ChatMessage:
    """One message in a chat, from the bot or from a simulated user, as it stands now."""

    message_id: int
    chat_id: int
    from_bot: bool
    kind: str  # text, photo, document, sticker, voice, video
    date: int
    text: str | None = None  # as a person sees it: markup parsed away
    caption: str | None = None
    entities: list[dict[str, Any]] = field(default_factory=list)
    source: str | None = None  # text or caption as the bot sent it, before parsing
    parse_mode: str | None = None
    reply_markup: dict[str, Any] | None = None  # whatever markup came with it
    media: Any = None  # the JSON for photo (a list of PhotoSize), document, sticker, ...
    data: bytes | None = field(default=None, repr=False)  # photo (largest) or document bytes
    file_name: str | None = None
    mime_type: str | None = None
    sender: dict[str, Any] | None = None
    reply_to: int | None = None
    edit_date: int | None = None
    deleted: bool = False

    @property
    def content(self) -> str:
        """Text or caption, whichever the message has."""
        return self.text or self.caption or ""

    @property
    def inline_keyboard(self) -> list[list[dict[str, Any]]]:
        if self.reply_markup and "inline_keyboard" in self.reply_markup:
            return self.reply_markup["inline_keyboard"]
        return []

    @property
    def reply_keyboard(self) -> list[list[dict[str, Any]]]:
        if self.reply_markup and "keyboard" in self.reply_markup:
            return self.reply_markup["keyboard"]
        return []

    @property
    def buttons(self) -> list[dict[str, Any]]:
        """Inline buttons, then reply-keyboard buttons, row by row."""
        return [b for row in self.inline_keyboard + self.reply_keyboard for b in row]

    @property
    def button_texts(self) -> list[str]:
        return [b.get("text", "") for b in self.buttons]

    def describe(self) -> str:
        """One readable block for transcripts."""
        head = ""
        if self.kind != "text":
            head = f"[{self.kind}"
            if self.file_name:
                head += f" {self.file_name}"
            if self.data is not None:
                head += f", {len(self.data)} bytes"
            head += "] "
        body = head + self.content
        if self.inline_keyboard:
            body += "\n" + " / ".join(
                "[" + " | ".join(b.get("text", "") for b in row) + "]"
                for row in self.inline_keyboard
            )
        if self.reply_keyboard:
            body += "\nkeyboard: " + " / ".join(
                "[" + " | ".join(b.get("text", "") for b in row) + "]"
                for row in self.reply_keyboard
            )
        if self.reply_markup and self.reply_markup.get("remove_keyboard"):
            body += "\n(keyboard removed)"
        return body


@dataclass
class ChatEvent:
    """Something that happened in a chat, in order: message, edit, delete, action, answer."""

    seq: int
    kind: str
    message: ChatMessage | None = None  # the message as it stands now
    detail: str | None = None
    snapshot: ChatMessage | None = None  # the message as it was when this happened


@dataclass
class ApiCall:
    """A Bot API call as the stand-in received it (file parts by name and size only)."""

    method: str
    params: dict[str, Any]
    files: dict[str, int]


class ChatState:
    def __init__(self, chat: dict[str, Any]) -> None:
        self.chat = chat
        self.messages: list[ChatMessage] = []
        self.events: list[ChatEvent] = []
        self.changed = ChangeSignal()
        self.next_message_id = 1
        self.reply_keyboard: dict[str, Any] | None = None
        self.blocked = False
        self.menu_button: dict[str, Any] | None = None

    @property
    def id(self) -> int:
        return self.chat["id"]

    def find(self, message_id: int) -> ChatMessage | None:
        for m in reversed(self.messages):
            if m.message_id == message_id and not m.deleted:
                return m
        return None


def scope_key(scope: Any) -> str:
    """Commands are kept per scope; equal scopes give equal keys."""
    if not scope:
        scope = {"type": "default"}
    return json.dumps(scope, sort_keys=True)
