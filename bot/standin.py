"""A local stand-in for the Telegram Bot API, and simulated users who talk to a bot through it.

Why: the bot is tested and demonstrated (`hbscreen demo-chat`) over real HTTP with unmodified
python-telegram-bot, without a token or the internet. The server keeps what Telegram keeps
(chats, messages, files, pending updates, the webhook, command menus) and refuses what Telegram
refuses (a wrong token, markup it cannot parse, an edit that changes nothing, a file too big to
download, a button with too much callback data), so such bugs show up here and not in production.

    async with BotAPIStandIn() as standin:
        app = Application.builder().token(standin.token).base_url(standin.base_url)
              .base_file_url(standin.base_file_url).build()
        async with serve_polling(app):
            user = standin.user(42, first_name="Amina", language_code="sw")
            await user.send_command("/start")
            reply = await user.wait_for_messages(1)

Everything runs on the caller's event loop; nothing is written to disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import io
import json
import logging
import mimetypes
import re
import secrets
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aiohttp import ClientError, ClientSession, ClientTimeout, web
from aiohttp.web_request import FileField
from PIL import Image

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_TOKEN = "123456789:STANDIN-not-a-secret-token"
MAX_TEXT = 4096
MAX_CAPTION = 1024
MAX_DOWNLOAD = 20 * 1024 * 1024  # getFile refuses bigger files, like Telegram's cloud API
MAX_UPLOAD = 50 * 1024 * 1024
PHOTO_SIDES = (90, 320, 800, 1280)  # the smaller sizes Telegram keeps besides the largest
CHAT_ACTIONS = frozenset(
    {
        "typing",
        "upload_photo",
        "record_video",
        "upload_video",
        "record_voice",
        "upload_voice",
        "upload_document",
        "choose_sticker",
        "find_location",
        "record_video_note",
        "upload_video_note",
    }
)
# Update kinds Telegram leaves out unless allowed_updates names them.
OPT_IN_UPDATES = frozenset({"chat_member", "message_reaction", "message_reaction_count"})
INLINE_ACTIONS = (
    "url",
    "callback_data",
    "web_app",
    "login_url",
    "switch_inline_query",
    "switch_inline_query_current_chat",
    "switch_inline_query_chosen_chat",
    "copy_text",
    "callback_game",
    "pay",
)


class ApiError(Exception):
    """A Bot API error answer: HTTP status = error_code, like Telegram."""

    def __init__(self, code: int, description: str, parameters: dict[str, Any] | None = None):
        super().__init__(description)
        self.code = code
        self.description = description
        self.parameters = parameters

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "ok": False,
            "error_code": self.code,
            "description": self.description,
        }
        if self.parameters:
            out["parameters"] = self.parameters
        return out


def _bad(description: str) -> ApiError:
    return ApiError(400, f"Bad Request: {description}")


class ConversationTimeout(TimeoutError):
    """A simulated user waited in vain; the message holds the conversation so far."""


# --------------------------------------------------------------------------------------------
# Small helpers: change signals, text lengths, markup parsing
# --------------------------------------------------------------------------------------------


class _Signal:
    """Wakes every waiter when something changed; each waiter re-checks its own condition."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def fire(self) -> None:
        self._event.set()
        self._event = asyncio.Event()

    async def wait_for(self, check: Callable[[], T], timeout: float | None) -> T:
        async def until() -> T:
            while True:
                result = check()
                if result:
                    return result
                await self._event.wait()

        return await asyncio.wait_for(until(), timeout)


def utf16_len(text: str) -> int:
    """Telegram counts lengths and entity offsets in UTF-16 code units."""
    return len(text.encode("utf-16-le")) // 2


def _markup_error(what: str) -> ApiError:
    return _bad(f"can't parse entities: {what}")


_HTML_ENTITY_TYPES = {
    "b": "bold",
    "strong": "bold",
    "i": "italic",
    "em": "italic",
    "u": "underline",
    "ins": "underline",
    "s": "strikethrough",
    "strike": "strikethrough",
    "del": "strikethrough",
    "tg-spoiler": "spoiler",
    "span": "spoiler",
    "a": "text_link",
    "code": "code",
    "pre": "pre",
    "blockquote": "blockquote",
    "tg-emoji": "custom_emoji",
}
_TAG_RE = re.compile(
    r"<(/?)([a-zA-Z][a-zA-Z0-9-]*)"
    r"((?:\s+[a-zA-Z-]+(?:\s*=\s*(?:\"[^\"]*\"|'[^']*'|[^\s>\"']+))?)*)\s*>"
)
_ATTR_RE = re.compile(r"([a-zA-Z-]+)(?:\s*=\s*(?:\"([^\"]*)\"|'([^']*)'|([^\s>\"']+)))?")
_HTML_CHARREF_RE = re.compile(r"&(#[0-9]{1,7}|#[xX][0-9a-fA-F]{1,6}|lt|gt|amp|quot);")
_NAMED_REFS = {"lt": "<", "gt": ">", "amp": "&", "quot": '"'}


class _TextBuilder:
    """Collects parsed text and its entities with UTF-16 offsets."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.pos = 0
        self.entities: list[dict[str, Any]] = []

    def add(self, text: str) -> None:
        self.parts.append(text)
        self.pos += utf16_len(text)

    def entity(self, kind: str, start: int, **extra: Any) -> None:
        if self.pos > start:  # Telegram drops empty entities
            self.entities.append(
                {"type": kind, "offset": start, "length": self.pos - start, **extra}
            )

    def result(self) -> tuple[str, list[dict[str, Any]]]:
        self.entities.sort(key=lambda e: (e["offset"], -e["length"]))
        return "".join(self.parts), self.entities


def _byte_offset(src: str, index: int) -> int:
    return len(src[:index].encode("utf-8"))


def parse_html(src: str) -> tuple[str, list[dict[str, Any]]]:
    """Telegram's HTML parse mode: the supported tags only, <, > and & escaped, tags closed."""
    out = _TextBuilder()
    stack: list[tuple[str, int, dict[str, Any]]] = []
    i = 0
    while i < len(src):
        c = src[i]
        if c == "<":
            m = _TAG_RE.match(src, i)
            if not m:
                raise _markup_error(
                    f"Unexpected start of a tag or an unescaped '<' at byte offset "
                    f"{_byte_offset(src, i)}"
                )
            name = m.group(2).lower()
            if m.group(1):
                if not stack or stack[-1][0] != name:
                    expected = f'"</{stack[-1][0]}>"' if stack else "no end tag"
                    raise _markup_error(
                        f"Unmatched end tag at byte offset {_byte_offset(src, i)}, expected "
                        f'{expected}, found "</{name}>"'
                    )
                tag, start, extra = stack.pop()
                out.entity(_HTML_ENTITY_TYPES[tag], start, **extra)
            else:
                if name not in _HTML_ENTITY_TYPES:
                    raise _markup_error(
                        f'Unsupported start tag "{name}" at byte offset {_byte_offset(src, i)}'
                    )
                attrs = {
                    a.group(1).lower(): a.group(2) or a.group(3) or a.group(4) or ""
                    for a in _ATTR_RE.finditer(m.group(3))
                }
                extra: dict[str, Any] = {}
                if name == "a":
                    extra["url"] = attrs.get("href", "")
                elif name == "span" and attrs.get("class") != "tg-spoiler":
                    raise _markup_error('Tag "span" must have class "tg-spoiler"')
                elif name == "tg-emoji":
                    extra["custom_emoji_id"] = attrs.get("emoji-id", "")
                stack.append((name, out.pos, extra))
            i = m.end()
            continue
        if c == "&":
            m = _HTML_CHARREF_RE.match(src, i)
            if m:
                ref = m.group(1)
                if ref.startswith(("#x", "#X")):
                    out.add(chr(int(ref[2:], 16)))
                elif ref.startswith("#"):
                    out.add(chr(int(ref[1:])))
                else:
                    out.add(_NAMED_REFS[ref])
                i = m.end()
                continue
        out.add(c)
        i += 1
    if stack:
        raise _markup_error(f'Can\'t find end tag corresponding to start tag "{stack[-1][0]}"')
    return out.result()


_MDV2_RESERVED = frozenset("_*[]()~`>#+-=|{}.!")
_MD_ENTITY_TYPES = {
    "*": "bold",
    "_": "italic",
    "__": "underline",
    "~": "strikethrough",
    "||": "spoiler",
    "[": "text_link",
}


def parse_markdown(src: str, *, v2: bool) -> tuple[str, list[dict[str, Any]]]:
    """Telegram's MarkdownV2 (reserved characters must be escaped) or legacy Markdown."""
    out = _TextBuilder()
    stack: list[tuple[str, int, int]] = []  # marker, utf16 start, source index
    markers = ("||", "__", "*", "_", "~", "[") if v2 else ("*", "_", "[")
    i, n = 0, len(src)

    def unterminated(marker: str, index: int) -> ApiError:
        what = _MD_ENTITY_TYPES.get(marker, "code")
        return _markup_error(
            f"Can't find end of {what} entity at byte offset {_byte_offset(src, index)}"
        )

    while i < n:
        c = src[i]
        if c == "\\" and i + 1 < n and (v2 or src[i + 1] in "_*`["):
            out.add(src[i + 1])
            i += 2
            continue
        if c == "`":
            fence = "```" if src.startswith("```", i) else "`"
            j = src.find(fence, i + len(fence))
            if j < 0:
                raise unterminated("`", i)
            body = src[i + len(fence) : j]
            if v2:
                body = re.sub(r"\\([`\\])", r"\1", body)
            start = out.pos
            if fence == "```":
                first, nl, rest = body.partition("\n")
                language = first if nl and first and " " not in first else ""
                out.add(rest if language else body)
                out.entity("pre", start, **({"language": language} if language else {}))
            else:
                out.add(body)
                out.entity("code", start)
            i = j + len(fence)
            continue
        if c == "]" and stack and stack[-1][0] == "[":
            if src[i + 1 : i + 2] != "(":
                if v2:
                    raise _markup_error(
                        "Character ']' is reserved and must be escaped with the preceding '\\'"
                    )
            else:
                j = src.find(")", i + 2)
                if j < 0:
                    raise unterminated("[", stack[-1][2])
                url = src[i + 2 : j].replace("\\)", ")").replace("\\\\", "\\")
                _, start, _ = stack.pop()
                out.entity("text_link", start, url=url)
                i = j + 1
                continue
        marker = next((m for m in markers if src.startswith(m, i)), None)
        if marker == "_" and v2 and src.startswith("__", i):
            marker = "__"
        if marker is not None:
            if stack and stack[-1][0] == marker and marker != "[":
                _, start, _ = stack.pop()
                out.entity(_MD_ENTITY_TYPES[marker], start)
            elif marker in [s[0] for s in stack] and marker != "[":
                raise unterminated(stack[-1][0], stack[-1][2])
            elif not v2 and stack:
                out.add(marker)  # legacy Markdown does not nest
            else:
                stack.append((marker, out.pos, i))
            i += len(marker)
            continue
        if v2 and c == ">" and (i == 0 or src[i - 1] == "\n"):
            start = out.pos
            j = src.find("\n", i)
            j = n if j < 0 else j
            line, _ = parse_markdown(src[i + 1 : j], v2=True)
            out.add(line)
            out.entity("blockquote", start)
            i = j
            continue
        if v2 and c in _MDV2_RESERVED:
            raise _markup_error(
                f"Character '{c}' is reserved and must be escaped with the preceding '\\'"
            )
        out.add(c)
        i += 1
    if stack:
        raise unterminated(stack[-1][0], stack[-1][2])
    return out.result()


def render_text(
    text: str, parse_mode: str | None, entities: list[dict[str, Any]] | None = None
) -> tuple[str, list[dict[str, Any]]]:
    """What a person sees and the entities Telegram returns; outer whitespace trimmed."""
    mode = (parse_mode or "").lower()
    if entities:
        plain, ents = text, list(entities)
    elif mode == "html":
        plain, ents = parse_html(text)
    elif mode == "markdownv2":
        plain, ents = parse_markdown(text, v2=True)
    elif mode == "markdown":
        plain, ents = parse_markdown(text, v2=False)
    elif mode:
        raise _bad(f"unsupported parse_mode {parse_mode!r}")
    else:
        plain, ents = text, []
    stripped = plain.lstrip()
    shift = utf16_len(plain) - utf16_len(stripped)
    plain = stripped.rstrip()
    limit = utf16_len(plain)
    trimmed = []
    for e in ents:
        start = max(0, e["offset"] - shift)
        end = min(limit, e["offset"] + e["length"] - shift)
        if end > start:
            trimmed.append({**e, "offset": start, "length": end - start})
    return plain, trimmed


def _command_entities(text: str) -> list[dict[str, Any]]:
    """Telegram marks /commands in what people type; PTB's CommandHandler needs offset 0."""
    out = []
    for m in re.finditer(r"(?<!\S)/[A-Za-z0-9_]{1,32}(?:@[A-Za-z0-9_]{3,32})?", text):
        out.append(
            {
                "type": "bot_command",
                "offset": utf16_len(text[: m.start()]),
                "length": utf16_len(m.group()),
            }
        )
    return out


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


class _ChatState:
    def __init__(self, chat: dict[str, Any]) -> None:
        self.chat = chat
        self.messages: list[ChatMessage] = []
        self.events: list[ChatEvent] = []
        self.changed = _Signal()
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


class _Params:
    """Bot API parameters from a query string, a form, JSON or multipart (PTB: JSON-in-form)."""

    def __init__(self, values: dict[str, Any], files: dict[str, FileField]):
        self.values = values
        self.files = files

    def raw(self, name: str) -> Any:
        return self.values.get(name)

    def get_str(self, name: str, *, required: bool = False) -> str | None:
        v = self.values.get(name)
        if v is None or v == "":
            if required:
                raise _bad(f"{name} is empty")
            return None
        return v if isinstance(v, str) else json.dumps(v)

    def get_int(
        self, name: str, *, required: bool = False, default: int | None = None
    ) -> int | None:
        v = self.values.get(name)
        if v is None or v == "":
            if required:
                raise _bad(f"{name} is empty")
            return default
        try:
            return int(v)
        except (TypeError, ValueError):
            raise _bad(f"invalid {name} specified") from None

    def get_float(self, name: str, default: float = 0.0) -> float:
        v = self.values.get(name)
        if v is None or v == "":
            return default
        try:
            return float(v)
        except (TypeError, ValueError):
            raise _bad(f"invalid {name} specified") from None

    def get_bool(self, name: str) -> bool:
        v = self.values.get(name)
        if isinstance(v, str):
            return v.strip().lower() in ("true", "1")
        return bool(v)

    def get_json(self, name: str) -> Any:
        v = self.values.get(name)
        if isinstance(v, str):
            if v == "":
                return None
            try:
                return json.loads(v)
            except json.JSONDecodeError:
                raise _bad(f"can't parse {name} JSON object") from None
        return v


# --------------------------------------------------------------------------------------------
# The server
# --------------------------------------------------------------------------------------------


class BotAPIStandIn:
    """An aiohttp server on 127.0.0.1 that answers like api.telegram.org for one bot."""

    def __init__(
        self,
        token: str = DEFAULT_TOKEN,
        *,
        bot_username: str = "hbscreen_standin_bot",
        bot_name: str = "hbscreen (stand-in)",
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.token = token
        self.host = host
        self.port = port
        self.bot_user: dict[str, Any] = {
            "id": int(token.split(":", 1)[0]),
            "is_bot": True,
            "first_name": bot_name,
            "username": bot_username,
            "can_join_groups": True,
            "can_read_all_group_messages": False,
            "supports_inline_queries": False,
            "can_connect_to_business": False,
            "has_main_web_app": False,
        }
        self.calls: list[ApiCall] = []
        self.files: dict[str, StoredFile] = {}
        self.dropped_updates: list[dict[str, Any]] = []
        self.webhook_deliveries: list[dict[str, Any]] = []
        self.callback_answers: dict[str, dict[str, Any] | None] = {}
        self._chats: dict[int, _ChatState] = {}
        self._query_chats: dict[str, _ChatState] = {}
        self._files_by_path: dict[str, StoredFile] = {}
        self._photo_sets: dict[str, list[dict[str, Any]]] = {}
        self._pending: list[dict[str, Any]] = []
        self._next_update_id = 100_001
        self._updates_changed = _Signal()
        self._poll_generation = 0
        self._allowed_updates: list[str] = []
        self._webhook: dict[str, Any] | None = None
        self._webhook_error: tuple[int, str] | None = None
        self._webhook_task: asyncio.Task[None] | None = None
        self._commands: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self._bot_texts: dict[tuple[str, str], str] = {}
        self._default_menu_button: dict[str, Any] = {"type": "commands"}
        self._failures: list[tuple[str | None, ApiError]] = []
        self._seq = 0
        self._closing = False
        self._runner: web.AppRunner | None = None
        self._methods: dict[str, Callable[[_Params], Any]] = {
            name.lower(): getattr(self, f"_m_{_snake(name)}")
            for name in (
                "getMe",
                "logOut",
                "close",
                "getUpdates",
                "setWebhook",
                "deleteWebhook",
                "getWebhookInfo",
                "sendMessage",
                "sendPhoto",
                "sendDocument",
                "sendMediaGroup",
                "sendChatAction",
                "editMessageText",
                "editMessageCaption",
                "editMessageReplyMarkup",
                "deleteMessage",
                "deleteMessages",
                "answerCallbackQuery",
                "getFile",
                "setMyCommands",
                "getMyCommands",
                "deleteMyCommands",
                "setChatMenuButton",
                "getChatMenuButton",
                "setMyDescription",
                "getMyDescription",
                "setMyShortDescription",
                "getMyShortDescription",
                "setMyName",
                "getMyName",
                "leaveChat",
            )
        }

    # ---- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> BotAPIStandIn:
        app = web.Application(client_max_size=MAX_UPLOAD + 1024 * 1024)
        app.router.add_route("*", "/bot{token}/{method}", self._handle_method)
        app.router.add_get("/file/bot{token}/{path:.+}", self._handle_file)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def stop(self) -> None:
        self._closing = True
        self._updates_changed.fire()
        for state in self._chats.values():
            state.changed.fire()
        if self._webhook_task:
            self._webhook_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._webhook_task
        if self._runner:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> BotAPIStandIn:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        """For PTB's base_url / TELEGRAM_API_BASE_URL (PTB appends the token)."""
        return f"{self.url}/bot"

    @property
    def base_file_url(self) -> str:
        """For PTB's base_file_url / TELEGRAM_FILE_BASE_URL (PTB appends the token)."""
        return f"{self.url}/file/bot"

    # ---- what tests use besides users --------------------------------------------------------

    def user(
        self,
        user_id: int,
        first_name: str = "Test",
        *,
        last_name: str | None = None,
        username: str | None = None,
        language_code: str | None = "en",
        chat_type: str = "private",
        chat_id: int | None = None,
        chat_title: str | None = None,
    ) -> SimulatedUser:
        """A person; chat_type "group"/"supergroup" puts them in a group chat (by chat_id)."""
        person: dict[str, Any] = {"id": user_id, "is_bot": False, "first_name": first_name}
        if last_name:
            person["last_name"] = last_name
        if username:
            person["username"] = username
        if language_code:
            person["language_code"] = language_code
        if chat_type == "private":
            chat = {"id": user_id, "type": "private", "first_name": first_name}
            if username:
                chat["username"] = username
        elif chat_type in ("group", "supergroup"):
            if chat_id is None:
                chat_id = -(10**12 + user_id) if chat_type == "supergroup" else -(10**6 + user_id)
            chat = {"id": chat_id, "type": chat_type, "title": chat_title or "Test group"}
        else:
            raise ValueError(f"unsupported chat_type {chat_type!r}")
        state = self._chats.get(chat["id"])
        if state is None:
            state = self._chats[chat["id"]] = _ChatState(chat)
        return SimulatedUser(self, person, state)

    def fail_next(
        self,
        method: str | None = None,
        *,
        error_code: int = 429,
        description: str | None = None,
        retry_after: int | None = None,
        count: int = 1,
    ) -> None:
        """Make the next `count` calls (of `method`, or any send method) fail like Telegram would.

        The default is flood control: 429 with parameters.retry_after (AIORateLimiter retries).
        """
        params = None
        if error_code == 429:
            retry_after = 1 if retry_after is None else retry_after
            params = {"retry_after": retry_after}
            description = description or f"Too Many Requests: retry after {retry_after}"
        err = ApiError(error_code, description or "Internal Server Error", params)
        for _ in range(count):
            self._failures.append((method.lower() if method else None, err))

    def calls_to(self, method: str) -> list[ApiCall]:
        return [c for c in self.calls if c.method.lower() == method.lower()]

    def commands(
        self, language_code: str = "", scope: dict[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        """The command list set for exactly this scope and language (what getMyCommands says)."""
        return list(self._commands.get((_scope_key(scope), language_code or ""), []))

    @property
    def unanswered_queries(self) -> list[str]:
        """Callback queries the bot never answered (a Telegram client shows a spinner)."""
        return [q for q, answer in self.callback_answers.items() if answer is None]

    @property
    def webhook_url(self) -> str | None:
        return self._webhook["url"] if self._webhook else None

    async def wait_for_webhook(self, url: str | None = None, timeout: float = 10.0) -> str:
        """Until the bot has set a webhook (this URL, if given); returns the URL."""

        def check() -> str | None:
            current = self.webhook_url
            return current if current and (url is None or current == url) else None

        return await self._updates_changed.wait_for(check, timeout)

    @property
    def pending_updates(self) -> list[dict[str, Any]]:
        return list(self._pending)

    async def inject_update(self, update: dict[str, Any]) -> dict[str, Any]:
        """Queue a raw update (without update_id) for getUpdates or the webhook."""
        kind = next(k for k in update if k != "update_id")
        allowed = set(self._allowed_updates)
        if (allowed and kind not in allowed) or (not allowed and kind in OPT_IN_UPDATES):
            self.dropped_updates.append(update)
            return update
        full = {"update_id": self._next_update_id, **update}
        self._next_update_id += 1
        self._pending.append(full)
        self._updates_changed.fire()
        return full

    # ---- HTTP --------------------------------------------------------------------------------

    async def _handle_method(self, request: web.Request) -> web.Response:
        if request.match_info["token"] != self.token:
            return web.json_response(ApiError(401, "Unauthorized").body(), status=401)
        name = request.match_info["method"]
        handler = self._methods.get(name.lower())
        if handler is None:
            return web.json_response(ApiError(404, "Not Found").body(), status=404)
        try:
            params = await _read_params(request)
            self.calls.append(
                ApiCall(
                    name,
                    dict(params.values),
                    {k: _field_size(f) for k, f in params.files.items()},
                )
            )
            self._maybe_fail(name.lower())
            result = await handler(params)
        except ApiError as err:
            return web.json_response(err.body(), status=err.code)
        body: dict[str, Any] = {"ok": True, "result": result}
        description = _DESCRIPTIONS.get(name.lower())
        if description:
            body["description"] = description
        return web.json_response(body)

    async def _handle_file(self, request: web.Request) -> web.Response:
        stored = self._files_by_path.get(request.match_info["path"])
        if request.match_info["token"] != self.token or stored is None:
            return web.json_response(ApiError(404, "Not Found").body(), status=404)
        return web.Response(
            body=stored.data, content_type=stored.mime_type or "application/octet-stream"
        )

    def _maybe_fail(self, method: str) -> None:
        for i, (target, err) in enumerate(self._failures):
            if target == method or (target is None and method.startswith(("send", "edit"))):
                del self._failures[i]
                raise err

    # ---- updates and webhook -----------------------------------------------------------------

    def _confirm(self, offset: int | None) -> None:
        if offset is None or offset == 0:
            return
        if offset < 0:
            self._pending = self._pending[offset:]
        else:
            self._pending = [u for u in self._pending if u["update_id"] >= offset]

    async def _m_get_updates(self, p: _Params) -> list[dict[str, Any]]:
        if self._webhook:
            raise ApiError(
                409,
                "Conflict: can't use getUpdates method while webhook is active; "
                "use deleteWebhook to delete the webhook first",
            )
        limit = min(max(p.get_int("limit", default=100) or 100, 1), 100)
        timeout = max(0.0, p.get_float("timeout"))
        allowed = p.get_json("allowed_updates")
        if allowed is not None:
            self._allowed_updates = list(allowed)
        self._confirm(p.get_int("offset"))
        self._poll_generation += 1
        mine = self._poll_generation
        self._updates_changed.fire()  # an older long poll ends with 409, like Telegram
        if not self._pending and timeout:
            with contextlib.suppress(TimeoutError):
                await self._updates_changed.wait_for(
                    lambda: (
                        bool(self._pending)
                        or self._closing
                        or mine != self._poll_generation
                        or self._webhook is not None
                    ),
                    timeout,
                )
            if mine != self._poll_generation and not self._closing:
                raise ApiError(
                    409,
                    "Conflict: terminated by other getUpdates request; make sure that only one "
                    "bot instance is running",
                )
        return self._pending[:limit]

    async def _m_set_webhook(self, p: _Params) -> bool:
        url = p.get_str("url") or ""
        if p.get_bool("drop_pending_updates"):
            self._pending.clear()
        if not url:
            return await self._m_delete_webhook(p)
        if not re.match(r"^https://|^http://(127\.\d+\.\d+\.\d+|localhost|\[::1\])[:/]", url):
            raise _bad("bad webhook: An HTTPS URL must be provided for webhook")
        secret = p.get_str("secret_token")
        if secret is not None and not re.fullmatch(r"[A-Za-z0-9_-]{1,256}", secret):
            raise _bad("secret token contains unallowed characters")
        allowed = p.get_json("allowed_updates")
        if allowed is not None:
            self._allowed_updates = list(allowed)
        self._webhook = {
            "url": url,
            "secret_token": secret,
            "max_connections": p.get_int("max_connections", default=40),
        }
        self._webhook_error = None
        self._updates_changed.fire()
        if self._webhook_task is None or self._webhook_task.done():
            self._webhook_task = asyncio.create_task(self._deliver_webhook())
        return True

    async def _m_delete_webhook(self, p: _Params) -> bool:
        if p.get_bool("drop_pending_updates"):
            self._pending.clear()
        self._webhook = None
        self._updates_changed.fire()
        return True

    async def _m_get_webhook_info(self, p: _Params) -> dict[str, Any]:
        info: dict[str, Any] = {
            "url": self.webhook_url or "",
            "has_custom_certificate": False,
            "pending_update_count": len(self._pending),
        }
        if self._webhook:
            info["max_connections"] = self._webhook["max_connections"]
            info["ip_address"] = "127.0.0.1"
            if self._allowed_updates:
                info["allowed_updates"] = self._allowed_updates
            if self._webhook_error:
                info["last_error_date"], info["last_error_message"] = self._webhook_error
        return info

    async def _deliver_webhook(self) -> None:
        """POST pending updates in order to the webhook; retry with backoff on failure."""
        backoff = 0.05
        async with ClientSession(timeout=ClientTimeout(total=10)) as session:
            while True:
                await self._updates_changed.wait_for(
                    lambda: self._closing or self._webhook is None or bool(self._pending), None
                )
                if self._closing or self._webhook is None:
                    return
                hook, update = self._webhook, self._pending[0]
                headers = {}
                if hook["secret_token"]:
                    headers["X-Telegram-Bot-Api-Secret-Token"] = hook["secret_token"]
                try:
                    async with session.post(hook["url"], json=update, headers=headers) as resp:
                        ok = 200 <= resp.status < 300
                        error = f"Wrong response from the webhook: {resp.status} {resp.reason}"
                except (ClientError, TimeoutError) as exc:
                    ok, error = False, f"Connection failed: {type(exc).__name__}"
                if ok:
                    if self._pending and self._pending[0] is update:
                        self._pending.pop(0)
                    self.webhook_deliveries.append(update)
                    backoff = 0.05
                else:
                    self._webhook_error = (int(time.time()), error)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 2.0)

    # ---- chats and messages ------------------------------------------------------------------

    def _emit(
        self,
        state: _ChatState,
        kind: str,
        message: ChatMessage | None = None,
        detail: str | None = None,
    ) -> None:
        self._seq += 1
        snapshot = dataclasses.replace(message) if message is not None else None
        state.events.append(ChatEvent(self._seq, kind, message, detail, snapshot))
        state.changed.fire()

    def _chat(self, p: _Params) -> _ChatState:
        raw = p.raw("chat_id")
        if raw is None or raw == "":
            raise _bad("chat_id is empty")
        state = None
        if isinstance(raw, str) and raw.startswith("@"):
            state = next(
                (s for s in self._chats.values() if s.chat.get("username") == raw[1:]), None
            )
        else:
            with contextlib.suppress(TypeError, ValueError):
                state = self._chats.get(int(raw))
        if state is None:
            raise _bad("chat not found")
        return state

    def _chat_to_send(self, p: _Params) -> _ChatState:
        state = self._chat(p)
        if state.blocked:
            raise ApiError(403, "Forbidden: bot was blocked by the user")
        return state

    def _add_message(self, state: _ChatState, **fields: Any) -> ChatMessage:
        msg = ChatMessage(
            message_id=state.next_message_id, chat_id=state.id, date=int(time.time()), **fields
        )
        state.next_message_id += 1
        state.messages.append(msg)
        self._emit(state, "message", msg)
        return msg

    def message_json(self, msg: ChatMessage, *, with_reply: bool = True) -> dict[str, Any]:
        """The Message object as Telegram would return or deliver it now."""
        state = self._chats[msg.chat_id]
        out: dict[str, Any] = {
            "message_id": msg.message_id,
            "from": self.bot_user if msg.from_bot else msg.sender,
            "chat": state.chat,
            "date": msg.date,
        }
        if msg.kind == "text":
            out["text"] = msg.text
            if msg.entities:
                out["entities"] = msg.entities
        else:
            out[msg.kind] = msg.media
            if msg.caption:
                out["caption"] = msg.caption
                if msg.entities:
                    out["caption_entities"] = msg.entities
        if msg.inline_keyboard:
            out["reply_markup"] = {"inline_keyboard": msg.inline_keyboard}
        if msg.edit_date:
            out["edit_date"] = msg.edit_date
        if with_reply and msg.reply_to:
            replied = state.find(msg.reply_to)
            if replied:
                out["reply_to_message"] = self.message_json(replied, with_reply=False)
        return out

    def _reply_markup(self, state: _ChatState, p: _Params, *, edit: bool = False) -> Any:
        markup = p.get_json("reply_markup")
        if markup is None:
            return None
        if not isinstance(markup, dict):
            raise _bad("can't parse reply keyboard markup JSON object")
        if "inline_keyboard" in markup:
            rows = markup["inline_keyboard"]
            if not isinstance(rows, list) or not all(isinstance(r, list) for r in rows):
                raise _bad(
                    'can\'t parse inline keyboard button: field "inline_keyboard" of '
                    "the InlineKeyboardMarkup must be an Array of Arrays"
                )
            for row in rows:
                for button in row:
                    _check_inline_button(button)
            return {"inline_keyboard": rows}
        if edit:
            raise _bad("inline keyboard expected")
        if "keyboard" in markup:
            rows = [
                [{"text": b} if isinstance(b, str) else b for b in row]
                for row in markup["keyboard"]
            ]
            if not rows or not all(b.get("text") for row in rows for b in row):
                raise _bad("keyboard button text is empty")
            normal = {**markup, "keyboard": rows}
            state.reply_keyboard = normal
            return normal
        if markup.get("remove_keyboard"):
            state.reply_keyboard = None
            return markup
        if markup.get("force_reply"):
            return markup
        raise _bad("can't parse reply keyboard markup JSON object")

    def _reply_to(self, state: _ChatState, p: _Params) -> int | None:
        params = p.get_json("reply_parameters")
        target = p.get_int("reply_to_message_id")
        if isinstance(params, dict):
            target = params.get("message_id")
            allow = params.get("allow_sending_without_reply")
        else:
            allow = p.get_bool("allow_sending_without_reply")
        if target is None:
            return None
        if state.find(int(target)) is None:
            if allow:
                return None
            raise _bad("message to be replied not found")
        return int(target)

    def _caption(self, p: _Params) -> tuple[str | None, list[dict[str, Any]]]:
        caption = p.get_str("caption")
        if not caption:
            return None, []
        plain, entities = render_text(
            caption, p.get_str("parse_mode"), p.get_json("caption_entities")
        )
        if utf16_len(plain) > MAX_CAPTION:
            raise _bad("message caption is too long")
        return plain or None, entities

    # ---- methods: bot identity ---------------------------------------------------------------

    async def _m_get_me(self, p: _Params) -> dict[str, Any]:
        return self.bot_user

    async def _m_log_out(self, p: _Params) -> bool:
        return True

    async def _m_close(self, p: _Params) -> bool:
        return True

    async def _m_leave_chat(self, p: _Params) -> bool:
        self._chat(p)
        return True

    # ---- methods: sending --------------------------------------------------------------------

    async def _m_send_message(self, p: _Params) -> dict[str, Any]:
        state = self._chat_to_send(p)
        source = p.get_str("text")
        if not source:
            raise _bad("message text is empty")
        plain, entities = render_text(source, p.get_str("parse_mode"), p.get_json("entities"))
        if not plain:
            raise _bad("message text is empty")
        if utf16_len(plain) > MAX_TEXT:
            raise _bad("message is too long")
        reply_to = self._reply_to(state, p)
        markup = self._reply_markup(state, p)
        msg = self._add_message(
            state,
            from_bot=True,
            kind="text",
            text=plain,
            entities=entities,
            source=source,
            parse_mode=p.get_str("parse_mode"),
            reply_markup=markup,
            reply_to=reply_to,
        )
        return self.message_json(msg)

    def _input_file(self, p: _Params, name: str) -> tuple[bytes, str | None, str | None] | str:
        """Uploaded bytes (data, file name, content type), or an existing file_id."""
        value = p.raw(name)
        part_name = name
        if isinstance(value, str) and value.startswith("attach://"):
            part_name = value[len("attach://") :]
        part = p.files.get(part_name)
        if part is not None:
            part.file.seek(0)
            return part.file.read(), part.filename, part.content_type
        if isinstance(value, str) and value:
            if value.startswith(("http://", "https://")):
                raise _bad("failed to get HTTP URL content")
            if value not in self.files:
                raise _bad("wrong file identifier/HTTP URL specified")
            return value
        raise _bad(f"there is no {name} in the request")

    def _store(
        self, data: bytes, folder: str, ext: str, mime: str | None, file_name: str | None = None
    ) -> StoredFile:
        n = len(self.files) + 1
        stored = StoredFile(
            file_id="AgAC" + secrets.token_urlsafe(30),
            file_unique_id="AQAD" + secrets.token_urlsafe(9),
            data=data,
            file_path=f"{folder}/file_{n}.{ext}",
            mime_type=mime,
            file_name=file_name,
        )
        self.files[stored.file_id] = stored
        self._files_by_path[stored.file_path] = stored
        return stored

    def store_photo(
        self,
        data: bytes,
        *,
        lenient: bool = False,
        variants: list[tuple[bytes, int, int]] | None = None,
    ) -> list[dict[str, Any]]:
        """Keep a photo at several sizes like Telegram; returns the PhotoSize list, smallest first.

        lenient: accept bytes that do not decode (a corrupt JPEG a client still sent) as one
        1280x960 size, so the bot's own decoding is what refuses it.
        """
        try:
            variants = variants or photo_variants(data)
        except ValueError:
            if not lenient:
                raise _bad("IMAGE_PROCESS_FAILED") from None
            variants = [(data, 1280, 960)]
        sizes = []
        for blob, width, height in variants:
            stored = self._store(blob, "photos", "jpg", "image/jpeg")
            sizes.append(
                {
                    "file_id": stored.file_id,
                    "file_unique_id": stored.file_unique_id,
                    "file_size": stored.size,
                    "width": width,
                    "height": height,
                }
            )
        for size in sizes:
            self._photo_sets[size["file_id"]] = sizes
        return sizes

    def store_document(
        self,
        data: bytes,
        file_name: str | None,
        mime_type: str | None,
    ) -> dict[str, Any]:
        mime = mime_type or (mimetypes.guess_type(file_name or "")[0]) or "application/octet-stream"
        ext = (file_name or "").rpartition(".")[2] if "." in (file_name or "") else "bin"
        stored = self._store(data, "documents", ext, mime, file_name)
        doc: dict[str, Any] = {
            "file_id": stored.file_id,
            "file_unique_id": stored.file_unique_id,
            "file_size": stored.size,
            "mime_type": mime,
        }
        if file_name:
            doc["file_name"] = file_name
        return doc

    async def _photo_from(
        self, p: _Params, name: str = "photo"
    ) -> tuple[list[dict[str, Any]], bytes]:
        src = self._input_file(p, name)
        if isinstance(src, str):
            sizes = self._photo_sets.get(src)
            if sizes is None:
                raise _bad("wrong file identifier/HTTP URL specified")
        else:
            data = src[0]
            if len(data) > 10 * 1024 * 1024:
                raise _bad("PHOTO_INVALID_DIMENSIONS")
            try:
                variants = await asyncio.to_thread(photo_variants, data)
            except ValueError:
                raise _bad("IMAGE_PROCESS_FAILED") from None
            sizes = self.store_photo(data, variants=variants)
        return sizes, self.files[sizes[-1]["file_id"]].data

    def _document_from(self, p: _Params, name: str = "document") -> tuple[dict[str, Any], bytes]:
        src = self._input_file(p, name)
        if isinstance(src, str):
            stored = self.files[src]
            doc = {
                "file_id": stored.file_id,
                "file_unique_id": stored.file_unique_id,
                "file_size": stored.size,
                "mime_type": stored.mime_type or "application/octet-stream",
            }
            if stored.file_name:
                doc["file_name"] = stored.file_name
            return doc, stored.data
        data, file_name, content_type = src
        if len(data) > MAX_UPLOAD:
            raise ApiError(413, "Request Entity Too Large")
        file_name = p.get_str("filename") or file_name
        if content_type in (None, "application/octet-stream"):
            content_type = None
        return self.store_document(data, file_name, content_type), data

    async def _m_send_photo(self, p: _Params) -> dict[str, Any]:
        state = self._chat_to_send(p)
        caption, entities = self._caption(p)
        sizes, data = await self._photo_from(p)
        reply_to = self._reply_to(state, p)
        markup = self._reply_markup(state, p)
        msg = self._add_message(
            state,
            from_bot=True,
            kind="photo",
            caption=caption,
            entities=entities,
            source=p.get_str("caption"),
            parse_mode=p.get_str("parse_mode"),
            media=sizes,
            data=data,
            mime_type="image/jpeg",
            reply_markup=markup,
            reply_to=reply_to,
        )
        return self.message_json(msg)

    async def _m_send_document(self, p: _Params) -> dict[str, Any]:
        state = self._chat_to_send(p)
        caption, entities = self._caption(p)
        doc, data = self._document_from(p)
        reply_to = self._reply_to(state, p)
        markup = self._reply_markup(state, p)
        msg = self._add_message(
            state,
            from_bot=True,
            kind="document",
            caption=caption,
            entities=entities,
            source=p.get_str("caption"),
            parse_mode=p.get_str("parse_mode"),
            media=doc,
            data=data,
            file_name=doc.get("file_name"),
            mime_type=doc["mime_type"],
            reply_markup=markup,
            reply_to=reply_to,
        )
        return self.message_json(msg)

    async def _m_send_media_group(self, p: _Params) -> list[dict[str, Any]]:
        state = self._chat_to_send(p)
        media = p.get_json("media")
        if not isinstance(media, list) or not 2 <= len(media) <= 10:
            raise _bad("wrong number of media in the album; must be between 2 and 10")
        reply_to = self._reply_to(state, p)
        out = []
        for item in media:
            sub = _Params({**item, "parse_mode": item.get("parse_mode")}, p.files)
            caption, entities = self._caption(sub)
            if item.get("type") == "photo":
                sizes, data = await self._photo_from(sub, "media")
                fields: dict[str, Any] = {
                    "kind": "photo",
                    "media": sizes,
                    "data": data,
                    "mime_type": "image/jpeg",
                }
            elif item.get("type") == "document":
                doc, data = self._document_from(sub, "media")
                fields = {
                    "kind": "document",
                    "media": doc,
                    "data": data,
                    "file_name": doc.get("file_name"),
                    "mime_type": doc["mime_type"],
                }
            else:
                raise _bad(f"unsupported media type {item.get('type')!r} in the stand-in")
            msg = self._add_message(
                state,
                from_bot=True,
                caption=caption,
                entities=entities,
                source=item.get("caption"),
                parse_mode=item.get("parse_mode"),
                reply_to=reply_to,
                **fields,
            )
            out.append(self.message_json(msg))
        return out

    async def _m_send_chat_action(self, p: _Params) -> bool:
        state = self._chat_to_send(p)
        action = p.get_str("action", required=True)
        if action not in CHAT_ACTIONS:
            raise _bad("wrong parameter action in request")
        self._emit(state, "action", detail=action)
        return True

    # ---- methods: editing --------------------------------------------------------------------

    def _message_to_edit(self, p: _Params) -> tuple[_ChatState, ChatMessage]:
        if p.get_str("inline_message_id"):
            raise _bad("inline messages are not supported by the stand-in")
        state = self._chat(p)
        msg = state.find(p.get_int("message_id", required=True) or 0)
        if msg is None:
            raise _bad("message to edit not found")
        if not msg.from_bot:
            raise _bad("message can't be edited")
        return state, msg

    def _edited(self, state: _ChatState, msg: ChatMessage, before: tuple[Any, ...]) -> dict:
        if before == (msg.content, msg.entities, msg.inline_keyboard):
            raise _bad(
                "message is not modified: specified new message content and reply markup are "
                "exactly the same as a current content and reply markup of the message"
            )
        msg.edit_date = int(time.time())
        self._emit(state, "edit", msg)
        return self.message_json(msg)

    async def _m_edit_message_text(self, p: _Params) -> dict[str, Any]:
        state, msg = self._message_to_edit(p)
        if msg.kind != "text":
            raise _bad("there is no text in the message to edit")
        source = p.get_str("text")
        if not source:
            raise _bad("message text is empty")
        plain, entities = render_text(source, p.get_str("parse_mode"), p.get_json("entities"))
        if not plain:
            raise _bad("message text is empty")
        if utf16_len(plain) > MAX_TEXT:
            raise _bad("message is too long")
        markup = self._reply_markup(state, p, edit=True)
        before = (msg.content, msg.entities, msg.inline_keyboard)
        # Like Telegram, an edit without reply_markup removes the inline keyboard.
        msg.text, msg.entities, msg.source = plain, entities, source
        msg.parse_mode, msg.reply_markup = p.get_str("parse_mode"), markup
        return self._edited(state, msg, before)

    async def _m_edit_message_caption(self, p: _Params) -> dict[str, Any]:
        state, msg = self._message_to_edit(p)
        if msg.kind == "text":
            raise _bad("there is no caption in the message to edit")
        caption, entities = self._caption(p)
        markup = self._reply_markup(state, p, edit=True)
        before = (msg.content, msg.entities, msg.inline_keyboard)
        msg.caption, msg.entities, msg.source = caption, entities, p.get_str("caption")
        msg.reply_markup = markup
        return self._edited(state, msg, before)

    async def _m_edit_message_reply_markup(self, p: _Params) -> dict[str, Any]:
        state, msg = self._message_to_edit(p)
        markup = self._reply_markup(state, p, edit=True)
        before = (msg.content, msg.entities, msg.inline_keyboard)
        msg.reply_markup = markup
        return self._edited(state, msg, before)

    async def _m_delete_message(self, p: _Params) -> bool:
        state = self._chat(p)
        msg = state.find(p.get_int("message_id", required=True) or 0)
        if msg is None:
            raise _bad("message to delete not found")
        msg.deleted = True
        self._emit(state, "delete", msg)
        return True

    async def _m_delete_messages(self, p: _Params) -> bool:
        state = self._chat(p)
        for message_id in p.get_json("message_ids") or []:
            msg = state.find(int(message_id))
            if msg is not None:
                msg.deleted = True
                self._emit(state, "delete", msg)
        return True

    # ---- methods: callbacks and files --------------------------------------------------------

    async def _m_answer_callback_query(self, p: _Params) -> bool:
        query_id = p.get_str("callback_query_id", required=True) or ""
        if query_id not in self.callback_answers or self.callback_answers[query_id] is not None:
            raise _bad("query is too old and response timeout expired or query ID is invalid")
        answer = {
            "text": p.get_str("text"),
            "show_alert": p.get_bool("show_alert"),
            "url": p.get_str("url"),
        }
        self.callback_answers[query_id] = answer
        state = self._query_chats.get(query_id)
        if state is not None:
            self._emit(state, "answer", detail=answer["text"] or "")
        return True

    async def _m_get_file(self, p: _Params) -> dict[str, Any]:
        file_id = p.get_str("file_id", required=True) or ""
        stored = self.files.get(file_id)
        if stored is None:
            raise _bad("wrong file_id or the file is temporarily unavailable")
        if stored.size > MAX_DOWNLOAD:
            raise _bad("file is too big")
        return {
            "file_id": stored.file_id,
            "file_unique_id": stored.file_unique_id,
            "file_size": stored.size,
            "file_path": stored.file_path,
        }

    # ---- methods: commands, menu button, names -----------------------------------------------

    async def _m_set_my_commands(self, p: _Params) -> bool:
        commands = p.get_json("commands")
        if not isinstance(commands, list) or len(commands) > 100:
            raise _bad("commands must be an array of at most 100 BotCommand")
        for c in commands:
            if not re.fullmatch(r"[a-z0-9_]{1,32}", str(c.get("command", ""))):
                raise _bad("BOT_COMMAND_INVALID")
            if not 1 <= len(str(c.get("description", ""))) <= 256:
                raise _bad("BOT_COMMAND_DESCRIPTION_INVALID")
        lang = p.get_str("language_code") or ""
        self._commands[(_scope_key(p.get_json("scope")), lang)] = [
            {"command": c["command"], "description": c["description"]} for c in commands
        ]
        return True

    async def _m_get_my_commands(self, p: _Params) -> list[dict[str, Any]]:
        return self.commands(p.get_str("language_code") or "", p.get_json("scope"))

    async def _m_delete_my_commands(self, p: _Params) -> bool:
        key = (_scope_key(p.get_json("scope")), p.get_str("language_code") or "")
        self._commands.pop(key, None)
        return True

    async def _m_set_chat_menu_button(self, p: _Params) -> bool:
        button = p.get_json("menu_button") or {"type": "default"}
        if p.raw("chat_id") is None:
            self._default_menu_button = button
        else:
            self._chat(p).menu_button = button
        return True

    async def _m_get_chat_menu_button(self, p: _Params) -> dict[str, Any]:
        if p.raw("chat_id") is None:
            return self._default_menu_button
        return self._chat(p).menu_button or self._default_menu_button

    async def _set_text(self, kind: str, p: _Params) -> bool:
        self._bot_texts[(kind, p.get_str("language_code") or "")] = p.get_str(kind) or ""
        return True

    def _get_text(self, kind: str, p: _Params) -> dict[str, str]:
        lang = p.get_str("language_code") or ""
        default = self.bot_user["first_name"] if kind == "name" else ""
        return {kind: self._bot_texts.get((kind, lang), self._bot_texts.get((kind, ""), default))}

    async def _m_set_my_description(self, p: _Params) -> bool:
        return await self._set_text("description", p)

    async def _m_get_my_description(self, p: _Params) -> dict[str, str]:
        return self._get_text("description", p)

    async def _m_set_my_short_description(self, p: _Params) -> bool:
        return await self._set_text("short_description", p)

    async def _m_get_my_short_description(self, p: _Params) -> dict[str, str]:
        return self._get_text("short_description", p)

    async def _m_set_my_name(self, p: _Params) -> bool:
        return await self._set_text("name", p)

    async def _m_get_my_name(self, p: _Params) -> dict[str, str]:
        return self._get_text("name", p)


_DESCRIPTIONS = {"setwebhook": "Webhook was set", "deletewebhook": "Webhook was deleted"}


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)([A-Z])", r"_\1", name).lower()


def _scope_key(scope: Any) -> str:
    if not scope:
        scope = {"type": "default"}
    return json.dumps(scope, sort_keys=True)


def _check_inline_button(button: Any) -> None:
    if not isinstance(button, dict) or not button.get("text"):
        raise _bad(
            "can't parse inline keyboard button: Text buttons are unallowed in the inline keyboard"
        )
    actions = [a for a in INLINE_ACTIONS if a in button]
    if len(actions) != 1:
        raise _bad(
            "can't parse inline keyboard button: Text buttons are unallowed in the inline keyboard"
        )
    if "callback_data" in button:
        data = button["callback_data"]
        if not isinstance(data, str) or not 1 <= len(data.encode("utf-8")) <= 64:
            raise _bad("BUTTON_DATA_INVALID")
    if "url" in button and not re.match(r"^(https?|tg)://\S+$", str(button["url"])):
        raise _bad(f"inline keyboard button URL '{button['url']}' is invalid: Wrong HTTP URL")


def _field_size(part: FileField) -> int:
    part.file.seek(0, io.SEEK_END)
    size = part.file.tell()
    part.file.seek(0)
    return size


async def _read_params(request: web.Request) -> _Params:
    values: dict[str, Any] = dict(request.query)
    files: dict[str, FileField] = {}
    if request.method == "POST" and request.can_read_body:
        ctype = request.content_type
        if ctype == "application/json":
            try:
                body = await request.json()
            except json.JSONDecodeError:
                raise _bad("can't parse JSON request body") from None
            if isinstance(body, dict):
                values.update(body)
        elif ctype in ("application/x-www-form-urlencoded", "multipart/form-data"):
            form = await request.post()
            for key, value in form.items():
                if isinstance(value, FileField):
                    files[key] = value
                else:
                    values[key] = value
    return _Params(values, files)


# --------------------------------------------------------------------------------------------
# Simulated users
# --------------------------------------------------------------------------------------------


class SimulatedUser:
    """A person in one chat: sends what a Telegram client would send, reads what the bot sent.

    Waits are event-driven and read forward from a cursor: each wait consumes what it returns,
    so `send ...; wait ...` pairs read the bot's replies in order.
    """

    def __init__(self, standin: BotAPIStandIn, person: dict[str, Any], state: _ChatState):
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
                found = self.standin._commands.get((_scope_key(scope), lang))
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
            "text", text=text, entities=_command_entities(text), reply_to=reply_to
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

    async def _wait(self, check: Callable[[], T], timeout: float, what: str) -> T:
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
            try:
                await self._state.changed.wait_for(
                    lambda seen=seen: len(self._state.events) > seen or self.standin._closing,
                    min(quiet, max(0.0, deadline - loop.time())),
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


# --------------------------------------------------------------------------------------------
# Running a PTB Application against it
# --------------------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def serve_polling(
    application: Any,
    *,
    poll_timeout: float = 10.0,
    drop_pending_updates: bool = False,
    allowed_updates: list[str] | None = None,
) -> AsyncIterator[Any]:
    """Run a telegram.ext.Application with polling as run_polling() does (post_init included),
    on the current event loop; stop it (post_stop, post_shutdown) on exit."""
    import datetime as dt

    await application.initialize()
    try:
        if application.post_init:
            await application.post_init(application)
        await application.updater.start_polling(
            timeout=dt.timedelta(seconds=poll_timeout),
            drop_pending_updates=drop_pending_updates,
            allowed_updates=allowed_updates,
        )
        await application.start()
        try:
            yield application
        finally:
            if application.updater.running:
                await application.updater.stop()
            if application.running:
                await application.stop()
                if application.post_stop:
                    await application.post_stop(application)
    finally:
        await application.shutdown()
        if application.post_shutdown:
            await application.post_shutdown(application)
