"""Telegram-like flood control for the stand-in: 429 with `retry_after` past the limits.

Telegram does not publish its exact algorithm; its FAQ (core.telegram.org/bots/faq, "My bot is
hitting limits") says: avoid more than one message a second in one chat (short bursts pass),
no more than 20 a minute in one group, and about 30 a second in all. Modelled here as token
buckets: per bot `per_bot_per_s` with a burst of the same size, per private chat
`per_chat_per_s` with a burst of `chat_burst`, per group `per_group_per_min` a minute. Only
chat-bound methods count (what posts into or changes a chat); answerCallbackQuery, getFile,
getUpdates and the like do not. A refused call does not use up a token. `retry_after` is whole
seconds, as Telegram sends it.

    standin = BotAPIStandIn(flood_control=FloodControl())
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

from .errors import ApiError

CHAT_BOUND_METHODS = frozenset(
    {
        "sendmessage",
        "sendphoto",
        "senddocument",
        "sendmediagroup",
        "sendchataction",
        "sendsticker",
        "sendvoice",
        "sendaudio",
        "sendvideo",
        "sendanimation",
        "editmessagetext",
        "editmessagecaption",
        "editmessagereplymarkup",
        "editmessagemedia",
        "deletemessage",
        "deletemessages",
    }
)


@dataclass
class _Bucket:
    capacity: float
    per_s: float
    tokens: float = -1.0
    at: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        if self.tokens < 0:
            self.tokens = self.capacity

    def _refill(self, now: float) -> None:
        self.tokens = min(self.capacity, self.tokens + (now - self.at) * self.per_s)
        self.at = now

    def wait_s(self, now: float) -> float:
        """0 if a token is there now, else the seconds until one is."""
        self._refill(now)
        return 0.0 if self.tokens >= 1.0 else (1.0 - self.tokens) / self.per_s

    def take(self) -> None:
        self.tokens -= 1.0


class FloodControl:
    """The limits, and what they refused (`refused_overall`, `refused_chat`)."""

    def __init__(
        self,
        *,
        per_bot_per_s: float = 30.0,
        per_chat_per_s: float = 1.0,
        chat_burst: int = 3,
        per_group_per_min: float = 20.0,
    ) -> None:
        self.per_bot_per_s = per_bot_per_s
        self.per_chat_per_s = per_chat_per_s
        self.chat_burst = chat_burst
        self.per_group_per_min = per_group_per_min
        self._bot = _Bucket(per_bot_per_s, per_bot_per_s)
        self._chats: dict[str, _Bucket] = {}
        self._forced: dict[str, list[int]] = {}
        self.refused_overall = 0
        self.refused_chat = 0
        self.counted = 0

    def flood_chat(self, chat_id: int | str, *, retry_after: int = 3, count: int = 3) -> None:
        """The next `count` chat-bound calls to this chat get 429 retry_after (as a chat that
        Telegram throttles harder, e.g. after a burst), whatever the buckets say."""
        self._forced.setdefault(str(chat_id), []).extend([retry_after] * count)

    def _chat_bucket(self, chat: str) -> _Bucket:
        bucket = self._chats.get(chat)
        if bucket is None:
            group = chat.startswith("-") or chat.startswith("@")
            if group:
                bucket = _Bucket(self.per_group_per_min, self.per_group_per_min / 60.0)
            else:
                bucket = _Bucket(float(self.chat_burst), self.per_chat_per_s)
            self._chats[chat] = bucket
        return bucket

    def check(self, method: str, params: dict[str, Any]) -> ApiError | None:
        """None if this call may go through now (its tokens are taken), else the 429."""
        if method.lower() not in CHAT_BOUND_METHODS:
            return None
        chat = params.get("chat_id")
        chat = None if chat is None else str(chat)
        if chat is not None and self._forced.get(chat):
            self.refused_chat += 1
            return _too_many(self._forced[chat].pop(0))
        now = time.monotonic()
        bucket = self._chat_bucket(chat) if chat is not None else None
        chat_wait = bucket.wait_s(now) if bucket is not None else 0.0
        bot_wait = self._bot.wait_s(now)
        if chat_wait > 0:
            self.refused_chat += 1
            return _too_many(chat_wait)
        if bot_wait > 0:
            self.refused_overall += 1
            return _too_many(bot_wait)
        self._bot.take()
        if bucket is not None:
            bucket.take()
        self.counted += 1
        return None


def _too_many(wait_s: float) -> ApiError:
    retry_after = max(1, math.ceil(wait_s))
    return ApiError(
        429, f"Too Many Requests: retry after {retry_after}", {"retry_after": retry_after}
    )
