"""The HTTP server: an aiohttp app on 127.0.0.1 that answers like api.telegram.org for one bot."""

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
from collections.abc import Callable
from typing import Any

from aiohttp import ClientError, ClientSession, ClientTimeout, web
from aiohttp.web_request import FileField

from hbscreen.inference.limits import MAX_BYTES

from .entities import render_text, utf16_len
from .errors import ApiError, bad_request
from .limits import FloodControl
from .state import (
    ApiCall,
    ChangeSignal,
    ChatEvent,
    ChatMessage,
    ChatState,
    StoredFile,
    photo_variants,
    scope_key,
)
from .user import SimulatedUser

log = logging.getLogger(__name__)

DEFAULT_TOKEN = "123456789:STANDIN-not-a-secret-token"
MAX_TEXT = 4096
MAX_CAPTION = 1024
MAX_DOWNLOAD = MAX_BYTES  # getFile refuses bigger files, like Telegram's cloud API
MAX_UPLOAD = 50 * 1024 * 1024
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


class Params:
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
                raise bad_request(f"{name} is empty")
            return None
        return v if isinstance(v, str) else json.dumps(v)

    def get_int(
        self, name: str, *, required: bool = False, default: int | None = None
    ) -> int | None:
        v = self.values.get(name)
        if v is None or v == "":
            if required:
                raise bad_request(f"{name} is empty")
            return default
        try:
            return int(v)
        except (TypeError, ValueError):
            raise bad_request(f"invalid {name} specified") from None

    def get_float(self, name: str, default: float = 0.0) -> float:
        v = self.values.get(name)
        if v is None or v == "":
            return default
        try:
            return float(v)
        except (TypeError, ValueError):
            raise bad_request(f"invalid {name} specified") from None

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
                raise bad_request(f"can't parse {name} JSON object") from None
        return v


@dataclasses.dataclass
class Fault:
    """One injected fault (see BotAPIStandIn.inject_fault)."""

    method: str | None
    status: int | None
    remaining: int
    delay_s: float
    retry_after: int | None
    skip: int
    reply_lost: bool
    chat_id: int | None = None

    def matches(self, method: str, chat_id: object = None) -> bool:
        if self.chat_id is not None and str(chat_id) != str(self.chat_id):
            return False
        if self.method is None:
            return method.startswith(("send", "edit"))
        return self.method == method

    def error(self) -> ApiError:
        code = self.status or 500
        if code == 429:
            wait = 1 if self.retry_after is None else self.retry_after
            return ApiError(429, f"Too Many Requests: retry after {wait}", {"retry_after": wait})
        words = {500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable"}
        return ApiError(code, words.get(code, "Gateway Timeout" if code == 504 else "Error"))


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
        flood_control: FloodControl | None = None,
    ) -> None:
        self.token = token
        self.flood = flood_control  # Telegram-like 429s past the limits (standin/limits.py)
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
        self._chats: dict[int, ChatState] = {}
        self._query_chats: dict[str, ChatState] = {}
        self._files_by_path: dict[str, StoredFile] = {}
        self._photo_sets: dict[str, list[dict[str, Any]]] = {}
        self._pending: list[dict[str, Any]] = []
        self._next_update_id = 100_001
        self._updates_changed = ChangeSignal()
        self._poll_generation = 0
        self._allowed_updates: list[str] = []
        self._webhook: dict[str, Any] | None = None
        self._webhook_error: tuple[int, str] | None = None
        self._webhook_task: asyncio.Task[None] | None = None
        self._commands: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self._bot_texts: dict[tuple[str, str], str] = {}
        self._default_menu_button: dict[str, Any] = {"type": "commands"}
        self._failures: list[tuple[str | None, ApiError]] = []
        self._faults: list[Fault] = []
        self.fault_log: list[tuple[str, str]] = []  # (method, what the fault did), for tests
        self._seq = 0
        self._closing = False
        self._runner: web.AppRunner | None = None
        self._methods: dict[str, Callable[[Params], Any]] = {
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
            chat: dict[str, Any] = {"id": user_id, "type": "private", "first_name": first_name}
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
            state = self._chats[chat["id"]] = ChatState(chat)
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

    def inject_fault(
        self,
        method: str | None = None,
        *,
        status: int | None = None,
        count: int = 1,
        delay_s: float = 0.0,
        retry_after: int | None = None,
        after: int = 0,
        reply_lost: bool = False,
        chat_id: int | None = None,
    ) -> Fault:
        """Fault injection, per method (None: any send/edit method), for the next `count`
        matching calls once `after` of them went through normally:

        - `status`: answer with this HTTP status and Telegram's JSON error shape (429 gets
          parameters.retry_after, default 1; 500, 502, 503, 504 read as server errors);
        - `delay_s`: hold the call that long first. If the client gave up meanwhile (its
          timeout), the call is dropped unprocessed: it never reached Telegram;
        - `reply_lost`: process the call (the message IS delivered), then hold the answer
          `delay_s` and answer an error or nothing: the one case where a client cannot know;
        - `chat_id`: only calls for this chat (faults for several people at once).

        Faults of one method apply in the order they were injected; `fault_log` records what
        each did. Returns the Fault (its `remaining` counts down)."""
        fault = Fault(
            method.lower() if method else None,
            status,
            count,
            delay_s,
            retry_after,
            after,
            reply_lost,
            chat_id,
        )
        self._faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        self._faults.clear()

    def calls_to(self, method: str) -> list[ApiCall]:
        return [c for c in self.calls if c.method.lower() == method.lower()]

    def commands(
        self, language_code: str = "", scope: dict[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        """The command list set for exactly this scope and language (what getMyCommands says)."""
        return list(self._commands.get((scope_key(scope), language_code or ""), []))

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
            if self.flood is not None:
                refusal = self.flood.check(name, params.values)
                if refusal is not None:
                    raise refusal
            fault = self._take_fault(name.lower(), params.values.get("chat_id"))
            if fault is not None and not fault.reply_lost:
                if fault.delay_s:
                    await asyncio.sleep(fault.delay_s)
                    if request.transport is None or request.transport.is_closing():
                        self.fault_log.append((name, "dropped after the client gave up"))
                        return web.Response(status=504)  # nobody reads it
                if fault.status:
                    self.fault_log.append((name, f"answered {fault.status}"))
                    raise fault.error()
                self.fault_log.append((name, f"slow ({fault.delay_s:g} s)"))
            result = await handler(params)
            if fault is not None and fault.reply_lost:
                self.fault_log.append((name, "processed, answer lost"))
                await asyncio.sleep(fault.delay_s)
                raise fault.error() if fault.status else ApiError(504, "Gateway Timeout")
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

    def _take_fault(self, method: str, chat_id: object = None) -> Fault | None:
        for fault in self._faults:
            if fault.remaining <= 0 or not fault.matches(method, chat_id):
                continue
            if fault.skip > 0:
                fault.skip -= 1
                return None
            fault.remaining -= 1
            return fault
        return None

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

    async def _m_get_updates(self, p: Params) -> list[dict[str, Any]]:
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

    async def _m_set_webhook(self, p: Params) -> bool:
        url = p.get_str("url") or ""
        if p.get_bool("drop_pending_updates"):
            self._pending.clear()
        if not url:
            return await self._m_delete_webhook(p)
        if not re.match(r"^https://|^http://(127\.\d+\.\d+\.\d+|localhost|\[::1\])[:/]", url):
            raise bad_request("bad webhook: An HTTPS URL must be provided for webhook")
        secret = p.get_str("secret_token")
        if secret is not None and not re.fullmatch(r"[A-Za-z0-9_-]{1,256}", secret):
            raise bad_request("secret token contains unallowed characters")
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

    async def _m_delete_webhook(self, p: Params) -> bool:
        if p.get_bool("drop_pending_updates"):
            self._pending.clear()
        self._webhook = None
        self._updates_changed.fire()
        return True

    async def _m_get_webhook_info(self, p: Params) -> dict[str, Any]:
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
        state: ChatState,
        kind: str,
        message: ChatMessage | None = None,
        detail: str | None = None,
    ) -> None:
        self._seq += 1
        snapshot = dataclasses.replace(message) if message is not None else None
        state.events.append(ChatEvent(self._seq, kind, message, detail, snapshot))
        state.changed.fire()

    def _chat(self, p: Params) -> ChatState:
        raw = p.raw("chat_id")
        if raw is None or raw == "":
            raise bad_request("chat_id is empty")
        state = None
        if isinstance(raw, str) and raw.startswith("@"):
            state = next(
                (s for s in self._chats.values() if s.chat.get("username") == raw[1:]), None
            )
        else:
            with contextlib.suppress(TypeError, ValueError):
                state = self._chats.get(int(raw))
        if state is None:
            raise bad_request("chat not found")
        return state

    def _chat_to_send(self, p: Params) -> ChatState:
        state = self._chat(p)
        if state.blocked:
            raise ApiError(403, "Forbidden: bot was blocked by the user")
        return state

    def _add_message(self, state: ChatState, **fields: Any) -> ChatMessage:
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

    def _reply_markup(self, state: ChatState, p: Params, *, edit: bool = False) -> Any:
        markup = p.get_json("reply_markup")
        if markup is None:
            return None
        if not isinstance(markup, dict):
            raise bad_request("can't parse reply keyboard markup JSON object")
        if "inline_keyboard" in markup:
            rows = markup["inline_keyboard"]
            if not isinstance(rows, list) or not all(isinstance(r, list) for r in rows):
                raise bad_request(
                    'can\'t parse inline keyboard button: field "inline_keyboard" of '
                    "the InlineKeyboardMarkup must be an Array of Arrays"
                )
            for row in rows:
                for button in row:
                    _check_inline_button(button)
            return {"inline_keyboard": rows}
        if edit:
            raise bad_request("inline keyboard expected")
        if "keyboard" in markup:
            rows = [
                [{"text": b} if isinstance(b, str) else b for b in row]
                for row in markup["keyboard"]
            ]
            if not rows or not all(b.get("text") for row in rows for b in row):
                raise bad_request("keyboard button text is empty")
            normal = {**markup, "keyboard": rows}
            state.reply_keyboard = normal
            return normal
        if markup.get("remove_keyboard"):
            state.reply_keyboard = None
            return markup
        if markup.get("force_reply"):
            return markup
        raise bad_request("can't parse reply keyboard markup JSON object")

    def _reply_to(self, state: ChatState, p: Params) -> int | None:
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
            raise bad_request("message to be replied not found")
        return int(target)

    def _caption(self, p: Params) -> tuple[str | None, list[dict[str, Any]]]:
        caption = p.get_str("caption")
        if not caption:
            return None, []
        plain, entities = render_text(
            caption, p.get_str("parse_mode"), p.get_json("caption_entities")
        )
        if utf16_len(plain) > MAX_CAPTION:
            raise bad_request("message caption is too long")
        return plain or None, entities

    # ---- methods: bot identity ---------------------------------------------------------------

    async def _m_get_me(self, p: Params) -> dict[str, Any]:
        return self.bot_user

    async def _m_log_out(self, p: Params) -> bool:
        return True

    async def _m_close(self, p: Params) -> bool:
        return True

    async def _m_leave_chat(self, p: Params) -> bool:
        self._chat(p)
        return True

    # ---- methods: sending --------------------------------------------------------------------

    @staticmethod
    def _message_text(p: Params) -> tuple[str, str, list[dict[str, Any]]]:
        """`text` as sent, as a person sees it, and its entities; refused as Telegram does."""
        source = p.get_str("text")
        if not source:
            raise bad_request("message text is empty")
        plain, entities = render_text(source, p.get_str("parse_mode"), p.get_json("entities"))
        if not plain:
            raise bad_request("message text is empty")
        if utf16_len(plain) > MAX_TEXT:
            raise bad_request("message is too long")
        return source, plain, entities

    async def _m_send_message(self, p: Params) -> dict[str, Any]:
        state = self._chat_to_send(p)
        source, plain, entities = self._message_text(p)
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

    def _input_file(self, p: Params, name: str) -> tuple[bytes, str | None, str | None] | str:
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
                raise bad_request("failed to get HTTP URL content")
            if value not in self.files:
                raise bad_request("wrong file identifier/HTTP URL specified")
            return value
        raise bad_request(f"there is no {name} in the request")

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
                raise bad_request("IMAGE_PROCESS_FAILED") from None
            variants = [(data, 1280, 960)]
        sizes: list[dict[str, Any]] = []
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
        self, p: Params, name: str = "photo"
    ) -> tuple[list[dict[str, Any]], bytes]:
        src = self._input_file(p, name)
        if isinstance(src, str):
            sizes = self._photo_sets.get(src)
            if sizes is None:
                raise bad_request("wrong file identifier/HTTP URL specified")
        else:
            data = src[0]
            if len(data) > 10 * 1024 * 1024:
                raise bad_request("PHOTO_INVALID_DIMENSIONS")
            try:
                variants = await asyncio.to_thread(photo_variants, data)
            except ValueError:
                raise bad_request("IMAGE_PROCESS_FAILED") from None
            sizes = self.store_photo(data, variants=variants)
        return sizes, self.files[sizes[-1]["file_id"]].data

    def _document_from(self, p: Params, name: str = "document") -> tuple[dict[str, Any], bytes]:
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

    async def _m_send_photo(self, p: Params) -> dict[str, Any]:
        state = self._chat_to_send(p)
        caption = self._caption(p)
        sizes, data = await self._photo_from(p)
        return self._send_media(
            state, p, caption, kind="photo", media=sizes, data=data, mime_type="image/jpeg"
        )

    async def _m_send_document(self, p: Params) -> dict[str, Any]:
        state = self._chat_to_send(p)
        caption = self._caption(p)
        doc, data = self._document_from(p)
        return self._send_media(
            state,
            p,
            caption,
            kind="document",
            media=doc,
            data=data,
            file_name=doc.get("file_name"),
            mime_type=doc["mime_type"],
        )

    def _send_media(
        self,
        state: ChatState,
        p: Params,
        caption: tuple[str | None, list[dict[str, Any]]],
        **fields: Any,
    ) -> dict[str, Any]:
        """The bot's photo or document message, checked in the order Telegram checks."""
        reply_to = self._reply_to(state, p)
        markup = self._reply_markup(state, p)
        msg = self._add_message(
            state,
            from_bot=True,
            caption=caption[0],
            entities=caption[1],
            source=p.get_str("caption"),
            parse_mode=p.get_str("parse_mode"),
            reply_markup=markup,
            reply_to=reply_to,
            **fields,
        )
        return self.message_json(msg)

    async def _m_send_media_group(self, p: Params) -> list[dict[str, Any]]:
        state = self._chat_to_send(p)
        media = p.get_json("media")
        if not isinstance(media, list) or not 2 <= len(media) <= 10:
            raise bad_request("wrong number of media in the album; must be between 2 and 10")
        reply_to = self._reply_to(state, p)
        out = []
        for item in media:
            sub = Params({**item, "parse_mode": item.get("parse_mode")}, p.files)
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
                raise bad_request(f"unsupported media type {item.get('type')!r} in the stand-in")
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

    async def _m_send_chat_action(self, p: Params) -> bool:
        state = self._chat_to_send(p)
        action = p.get_str("action", required=True)
        if action not in CHAT_ACTIONS:
            raise bad_request("wrong parameter action in request")
        self._emit(state, "action", detail=action)
        return True

    # ---- methods: editing --------------------------------------------------------------------

    def _message_to_edit(self, p: Params) -> tuple[ChatState, ChatMessage]:
        if p.get_str("inline_message_id"):
            raise bad_request("inline messages are not supported by the stand-in")
        state = self._chat(p)
        msg = state.find(p.get_int("message_id", required=True) or 0)
        if msg is None:
            raise bad_request("message to edit not found")
        if not msg.from_bot:
            raise bad_request("message can't be edited")
        return state, msg

    def _edited(self, state: ChatState, msg: ChatMessage, before: tuple[Any, ...]) -> dict:
        if before == (msg.content, msg.entities, msg.inline_keyboard):
            raise bad_request(
                "message is not modified: specified new message content and reply markup are "
                "exactly the same as a current content and reply markup of the message"
            )
        msg.edit_date = int(time.time())
        self._emit(state, "edit", msg)
        return self.message_json(msg)

    async def _m_edit_message_text(self, p: Params) -> dict[str, Any]:
        state, msg = self._message_to_edit(p)
        if msg.kind != "text":
            raise bad_request("there is no text in the message to edit")
        source, plain, entities = self._message_text(p)
        markup = self._reply_markup(state, p, edit=True)
        before = (msg.content, msg.entities, msg.inline_keyboard)
        # Like Telegram, an edit without reply_markup removes the inline keyboard.
        msg.text, msg.entities, msg.source = plain, entities, source
        msg.parse_mode, msg.reply_markup = p.get_str("parse_mode"), markup
        return self._edited(state, msg, before)

    async def _m_edit_message_caption(self, p: Params) -> dict[str, Any]:
        state, msg = self._message_to_edit(p)
        if msg.kind == "text":
            raise bad_request("there is no caption in the message to edit")
        caption, entities = self._caption(p)
        markup = self._reply_markup(state, p, edit=True)
        before = (msg.content, msg.entities, msg.inline_keyboard)
        msg.caption, msg.entities, msg.source = caption, entities, p.get_str("caption")
        msg.reply_markup = markup
        return self._edited(state, msg, before)

    async def _m_edit_message_reply_markup(self, p: Params) -> dict[str, Any]:
        state, msg = self._message_to_edit(p)
        markup = self._reply_markup(state, p, edit=True)
        before = (msg.content, msg.entities, msg.inline_keyboard)
        msg.reply_markup = markup
        return self._edited(state, msg, before)

    async def _m_delete_message(self, p: Params) -> bool:
        state = self._chat(p)
        msg = state.find(p.get_int("message_id", required=True) or 0)
        if msg is None:
            raise bad_request("message to delete not found")
        msg.deleted = True
        self._emit(state, "delete", msg)
        return True

    async def _m_delete_messages(self, p: Params) -> bool:
        state = self._chat(p)
        for message_id in p.get_json("message_ids") or []:
            msg = state.find(int(message_id))
            if msg is not None:
                msg.deleted = True
                self._emit(state, "delete", msg)
        return True

    # ---- methods: callbacks and files --------------------------------------------------------

    async def _m_answer_callback_query(self, p: Params) -> bool:
        query_id = p.get_str("callback_query_id", required=True) or ""
        if query_id not in self.callback_answers or self.callback_answers[query_id] is not None:
            raise bad_request(
                "query is too old and response timeout expired or query ID is invalid"
            )
        answer: dict[str, Any] = {
            "text": p.get_str("text"),
            "show_alert": p.get_bool("show_alert"),
            "url": p.get_str("url"),
        }
        self.callback_answers[query_id] = answer
        state = self._query_chats.get(query_id)
        if state is not None:
            self._emit(state, "answer", detail=answer["text"] or "")
        return True

    async def _m_get_file(self, p: Params) -> dict[str, Any]:
        file_id = p.get_str("file_id", required=True) or ""
        stored = self.files.get(file_id)
        if stored is None:
            raise bad_request("wrong file_id or the file is temporarily unavailable")
        if stored.size > MAX_DOWNLOAD:
            raise bad_request("file is too big")
        return {
            "file_id": stored.file_id,
            "file_unique_id": stored.file_unique_id,
            "file_size": stored.size,
            "file_path": stored.file_path,
        }

    # ---- methods: commands, menu button, names -----------------------------------------------

    async def _m_set_my_commands(self, p: Params) -> bool:
        commands = p.get_json("commands")
        if not isinstance(commands, list) or len(commands) > 100:
            raise bad_request("commands must be an array of at most 100 BotCommand")
        for c in commands:
            if not re.fullmatch(r"[a-z0-9_]{1,32}", str(c.get("command", ""))):
                raise bad_request("BOT_COMMAND_INVALID")
            if not 1 <= len(str(c.get("description", ""))) <= 256:
                raise bad_request("BOT_COMMAND_DESCRIPTION_INVALID")
        lang = p.get_str("language_code") or ""
        self._commands[(scope_key(p.get_json("scope")), lang)] = [
            {"command": c["command"], "description": c["description"]} for c in commands
        ]
        return True

    async def _m_get_my_commands(self, p: Params) -> list[dict[str, Any]]:
        return self.commands(p.get_str("language_code") or "", p.get_json("scope"))

    async def _m_delete_my_commands(self, p: Params) -> bool:
        key = (scope_key(p.get_json("scope")), p.get_str("language_code") or "")
        self._commands.pop(key, None)
        return True

    async def _m_set_chat_menu_button(self, p: Params) -> bool:
        button = p.get_json("menu_button") or {"type": "default"}
        if p.raw("chat_id") is None:
            self._default_menu_button = button
        else:
            self._chat(p).menu_button = button
        return True

    async def _m_get_chat_menu_button(self, p: Params) -> dict[str, Any]:
        if p.raw("chat_id") is None:
            return self._default_menu_button
        return self._chat(p).menu_button or self._default_menu_button

    async def _set_text(self, kind: str, p: Params) -> bool:
        self._bot_texts[(kind, p.get_str("language_code") or "")] = p.get_str(kind) or ""
        return True

    def _get_text(self, kind: str, p: Params) -> dict[str, str]:
        lang = p.get_str("language_code") or ""
        default = self.bot_user["first_name"] if kind == "name" else ""
        return {kind: self._bot_texts.get((kind, lang), self._bot_texts.get((kind, ""), default))}

    async def _m_set_my_description(self, p: Params) -> bool:
        return await self._set_text("description", p)

    async def _m_get_my_description(self, p: Params) -> dict[str, str]:
        return self._get_text("description", p)

    async def _m_set_my_short_description(self, p: Params) -> bool:
        return await self._set_text("short_description", p)

    async def _m_get_my_short_description(self, p: Params) -> dict[str, str]:
        return self._get_text("short_description", p)

    async def _m_set_my_name(self, p: Params) -> bool:
        return await self._set_text("name", p)

    async def _m_get_my_name(self, p: Params) -> dict[str, str]:
        return self._get_text("name", p)


_DESCRIPTIONS = {"setwebhook": "Webhook was set", "deletewebhook": "Webhook was deleted"}


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)([A-Z])", r"_\1", name).lower()


def _check_inline_button(button: Any) -> None:
    if not isinstance(button, dict) or not button.get("text"):
        raise bad_request(
            "can't parse inline keyboard button: Text buttons are unallowed in the inline keyboard"
        )
    actions = [a for a in INLINE_ACTIONS if a in button]
    if len(actions) != 1:
        raise bad_request(
            "can't parse inline keyboard button: Text buttons are unallowed in the inline keyboard"
        )
    if "callback_data" in button:
        data = button["callback_data"]
        if not isinstance(data, str) or not 1 <= len(data.encode("utf-8")) <= 64:
            raise bad_request("BUTTON_DATA_INVALID")
    if "url" in button and not re.match(r"^(https?|tg)://\S+$", str(button["url"])):
        raise bad_request(
            f"inline keyboard button URL '{button['url']}' is invalid: Wrong HTTP URL"
        )


def _field_size(part: FileField) -> int:
    part.file.seek(0, io.SEEK_END)
    size = part.file.tell()
    part.file.seek(0)
    return size


async def _read_params(request: web.Request) -> Params:
    values: dict[str, Any] = dict(request.query)
    files: dict[str, FileField] = {}
    if request.method == "POST" and request.can_read_body:
        ctype = request.content_type
        if ctype == "application/json":
            try:
                body = await request.json()
            except json.JSONDecodeError:
                raise bad_request("can't parse JSON request body") from None
            if isinstance(body, dict):
                values.update(body)
        elif ctype in ("application/x-www-form-urlencoded", "multipart/form-data"):
            form = await request.post()
            for key, value in form.items():
                if isinstance(value, FileField):
                    files[key] = value
                else:
                    values[key] = value
    return Params(values, files)
