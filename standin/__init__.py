"""A local stand-in for the Telegram Bot API, simulated users who talk to a bot through it, and
`hbscreen demo-chat`. Tooling for tests and demonstrations, not part of the runtime bot.

Why: the bot is tested and demonstrated over real HTTP with unmodified python-telegram-bot,
without a token or the internet. The server keeps what Telegram keeps (chats, messages, files,
pending updates, the webhook, command menus) and refuses what Telegram refuses (a wrong token,
markup it cannot parse, an edit that changes nothing, a file too big to download, a button with
too much callback data), so such bugs show up here and not in production.

    async with BotAPIStandIn() as standin:
        app = Application.builder().token(standin.token).base_url(standin.base_url)
              .base_file_url(standin.base_file_url).build()
        async with serve_polling(app):
            user = standin.user(42, first_name="Amina", language_code="sw")
            await user.send_command("/start")
            reply = await user.wait_for_messages(1)

Everything runs on the caller's event loop; nothing is written to disk.

Modules, one concern each:
    errors    ApiError: Telegram's error answer
    entities  HTML / Markdown parse modes -> plain text + entities; UTF-16 lengths
    state     what the server keeps: chats, messages, events, files, calls
    server    BotAPIStandIn, the aiohttp server that answers like api.telegram.org
    user      SimulatedUser, a person in a chat; ConversationTimeout
    limits    FloodControl: Telegram-like 429s past 30/s per bot, ~1/s per chat, 20/min per group
    polling   serve_polling: run a PTB Application against the stand-in
    demo      `hbscreen demo-chat` (imports the bot; not imported here)
"""

from .entities import parse_html, parse_markdown, render_text, utf16_len
from .errors import ApiError
from .limits import CHAT_BOUND_METHODS, FloodControl
from .polling import serve_polling
from .server import (
    CHAT_ACTIONS,
    DEFAULT_TOKEN,
    INLINE_ACTIONS,
    MAX_CAPTION,
    MAX_DOWNLOAD,
    MAX_TEXT,
    MAX_UPLOAD,
    OPT_IN_UPDATES,
    BotAPIStandIn,
)
from .state import PHOTO_SIDES, ApiCall, ChatEvent, ChatMessage, StoredFile, photo_variants
from .user import ConversationTimeout, SimulatedUser

__all__ = [
    "CHAT_ACTIONS",
    "CHAT_BOUND_METHODS",
    "DEFAULT_TOKEN",
    "INLINE_ACTIONS",
    "MAX_CAPTION",
    "MAX_DOWNLOAD",
    "MAX_TEXT",
    "MAX_UPLOAD",
    "OPT_IN_UPDATES",
    "PHOTO_SIDES",
    "ApiCall",
    "ApiError",
    "BotAPIStandIn",
    "ChatEvent",
    "ChatMessage",
    "ConversationTimeout",
    "FloodControl",
    "SimulatedUser",
    "StoredFile",
    "parse_html",
    "parse_markdown",
    "photo_variants",
    "render_text",
    "serve_polling",
    "utf16_len",
]
