"""Telegram's limits, per chat: updates of different chats are handled concurrently, one chat's
in order; sends are paced to Telegram's documented limits, and a 429 pauses only its chat.

Why not PTB's `AIORateLimiter`: on any 429 it pauses every request of the bot (one shared
event), and it paces group chats only. Telegram's limits (core.telegram.org/bots/faq, "My bot
is hitting limits"): about 30 messages a second in all, about one a second in one chat (short
bursts pass), 20 a minute in one group. A 429 whose chat is known pauses that chat alone; one
without a chat (setMyCommands and the like) pauses the bot.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import warnings
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from aiolimiter import AsyncLimiter
from telegram.error import RetryAfter
from telegram.ext import BaseRateLimiter, BaseUpdateProcessor
from telegram.warnings import PTBDeprecationWarning

log = logging.getLogger(__name__)

OVERALL_PER_S = 29.0  # Telegram: ~30/s; a little under, so the bot is never the one at fault
CHAT_BURST = 3  # Telegram lets a private chat have a short burst, then ~1/s
CHAT_PER_S = 0.95
GROUP_PER_MIN = 19.0  # Telegram: 20/min in a group
RETRY_MARGIN_S = 0.05

Callback = Callable[..., Coroutine[Any, Any, Any]]


class _Chat:
    """One chat's pacing and its pause after a 429."""

    __slots__ = ("limiter", "paused_until", "users")

    def __init__(self, limiter: AsyncLimiter) -> None:
        self.limiter = limiter
        self.paused_until = 0.0
        self.users = 0


class PerChatRateLimiter(BaseRateLimiter[int]):
    """Overall, per-chat and per-group pacing; a RetryAfter pauses only the chat it hit, and the
    request is retried up to `max_retries` times (the bot's own sends wait, others do not)."""

    def __init__(
        self,
        *,
        overall_per_s: float = OVERALL_PER_S,
        chat_burst: int = CHAT_BURST,
        chat_per_s: float = CHAT_PER_S,
        group_per_min: float = GROUP_PER_MIN,
        max_retries: int = 3,
    ) -> None:
        self._overall = AsyncLimiter(overall_per_s, 1.0) if overall_per_s else None
        self._chat_burst, self._chat_per_s = chat_burst, chat_per_s
        self._group_per_min = group_per_min
        self._max_retries = max_retries
        self._chats: dict[int | str, _Chat] = {}
        self._paused_until = 0.0  # the whole bot, after a 429 with no chat

    async def initialize(self) -> None:
        """Nothing to set up."""

    async def shutdown(self) -> None:
        """Nothing to release."""

    def _limiter_for(self, chat_id: int | str) -> AsyncLimiter:
        group = isinstance(chat_id, str) or chat_id < 0
        if group:
            return AsyncLimiter(self._group_per_min, 60.0)
        return AsyncLimiter(self._chat_burst, self._chat_burst / self._chat_per_s)

    @contextlib.asynccontextmanager
    async def _chat(self, chat_id: int | str | None):
        if chat_id is None:
            yield None
            return
        chat = self._chats.get(chat_id)
        if chat is None:
            chat = self._chats[chat_id] = _Chat(self._limiter_for(chat_id))
        chat.users += 1
        try:
            yield chat
        finally:
            chat.users -= 1
            idle = not chat.users and chat.paused_until < time.monotonic()
            # Forget idle chats whose bucket has drained (bounded memory at campaign scale).
            if idle and chat.limiter.has_capacity(chat.limiter.max_rate):
                self._chats.pop(chat_id, None)

    async def _wait_pauses(self, chat: _Chat | None) -> None:
        while True:
            until = max(self._paused_until, chat.paused_until if chat else 0.0)
            delay = until - time.monotonic()
            if delay <= 0:
                return
            await asyncio.sleep(delay)

    async def process_request(
        self,
        callback: Callback,
        args: Any,
        kwargs: dict[str, Any],
        endpoint: str,
        data: dict[str, Any],
        rate_limit_args: int | None,
    ) -> bool | dict[str, Any] | list[dict[str, Any]]:
        max_retries = self._max_retries if rate_limit_args is None else rate_limit_args
        chat_id: int | str | None = data.get("chat_id")
        with contextlib.suppress(TypeError, ValueError):
            chat_id = int(chat_id)  # type: ignore[arg-type]
        async with self._chat(chat_id) as chat:
            for attempt in range(max_retries + 1):
                await self._wait_pauses(chat)
                try:
                    if chat is None:  # getUpdates, answerCallbackQuery, getFile...: not paced
                        return await callback(*args, **kwargs)
                    async with chat.limiter:
                        if self._overall is not None:
                            async with self._overall:
                                return await callback(*args, **kwargs)
                        return await callback(*args, **kwargs)
                except RetryAfter as exc:
                    if attempt >= max_retries:
                        raise
                    seconds = _seconds(exc)
                    until = time.monotonic() + float(seconds) + RETRY_MARGIN_S
                    if chat is not None:
                        chat.paused_until = max(chat.paused_until, until)
                    else:
                        self._paused_until = max(self._paused_until, until)
                    log.info("flood control (%s): retrying in %.1f s", endpoint, float(seconds))
        raise AssertionError("unreachable")  # pragma: no cover


def _seconds(exc: RetryAfter) -> float:
    """retry_after in seconds (PTB 22 warns that it becomes a timedelta: accept both)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PTBDeprecationWarning)
        wait = exc.retry_after
    return float(wait.total_seconds() if hasattr(wait, "total_seconds") else wait)


def update_chat_key(update: object) -> object:
    """What orders updates: the chat, else the user, else nothing (runs unordered)."""
    for attr in ("effective_chat", "effective_user"):
        who = getattr(update, attr, None)
        if who is not None:
            return (attr, who.id)
    return None


class PerChatUpdateProcessor(BaseUpdateProcessor):
    """Concurrent updates, each chat's in arrival order: one chat waiting (a 429, a slow
    download) never delays another, and a conversation never sees its updates reordered.

    The chat's lock is taken before the concurrency slot, so a chat with many queued updates
    holds one slot, not many."""

    def __init__(self, max_concurrent_updates: int = 256) -> None:
        super().__init__(max_concurrent_updates)
        self._locks: dict[object, tuple[asyncio.Lock, int]] = {}

    # PTB marks process_update final; it is overridden on purpose: the base takes the slot
    # first, and then one chat flooding the bot with updates would hold every slot while its
    # updates wait for the chat's lock, blocking all other chats.
    async def process_update(  # type: ignore[misc]
        self, update: object, coroutine: Awaitable[Any]
    ) -> None:
        key = update_chat_key(update)
        if key is None:
            async with self._semaphore:
                await coroutine
            return
        lock, users = self._locks.get(key, (None, 0))
        if lock is None:
            lock = asyncio.Lock()
        self._locks[key] = (lock, users + 1)
        try:
            async with lock, self._semaphore:
                await coroutine
        finally:
            lock, users = self._locks[key]
            if users <= 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)

    async def do_process_update(self, update: object, coroutine: Awaitable[Any]) -> None:
        await coroutine

    async def initialize(self) -> None:
        """Nothing to set up."""

    async def shutdown(self) -> None:
        """Nothing to release."""
