"""Each Telegram update is handled once, even if it arrives twice.

Telegram re-sends a webhook update it did not see acknowledged (a slow answer, a dropped
connection), and after a crash getUpdates can hand back updates whose processing had begun. A
replayed photo would be screened and answered twice. The first handler group remembers
update_ids: in memory (this process) and in Redis (`SET NX` with a TTL, shared by replicas),
and stops a repeat before any other handler sees it.

With Redis down the memory check still works and the update goes on; its handlers then meet
the outage and the person hears "busy" (see handlers/misc.on_error).
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from typing import Any

from telegram import Update
from telegram.ext import Application, ApplicationHandlerStop, ContextTypes, TypeHandler

from . import metrics

log = logging.getLogger(__name__)

REPLAY_GROUP = -100  # before everything else, counting included
SEEN_TTL_S = 2 * 24 * 3600  # Telegram keeps an undelivered update for 24 hours


class ReplayGuard:
    """Remembers update_ids; `first_time(id)` is True once per id."""

    def __init__(
        self, redis: Any | None = None, key_prefix: str = "", *, ttl_s: int = SEEN_TTL_S
    ) -> None:
        self.r = redis
        self.key_prefix = key_prefix
        self.ttl_s = ttl_s
        self._seen: OrderedDict[int, None] = OrderedDict()

    async def first_time(self, update_id: int) -> bool:
        if update_id in self._seen:
            return False
        self._seen[update_id] = None
        while len(self._seen) > 50_000:
            self._seen.popitem(last=False)
        if self.r is None:
            return True
        try:
            key = f"{self.key_prefix}{update_id}"
            return bool(await asyncio.wait_for(self.r.set(key, "1", nx=True, ex=self.ttl_s), 2.0))
        except Exception as e:  # Redis down: memory only, let the handlers answer "busy"
            log.info("replay check without Redis: %s", type(e).__name__)
            return True


def guard_replays(application: Application, store: object) -> ReplayGuard:
    """Install the guard as the first handler group; Redis from the store when it has one.

    Keys carry the bot's id (the token's public part): update_ids are per bot."""
    redis = getattr(store, "r", None)
    bot_id = application.bot.token.split(":", 1)[0]
    prefix = f"{getattr(store, 'p', '')}update:{bot_id}:"
    guard = ReplayGuard(redis, prefix)

    async def check(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        if not await guard.first_time(update.update_id):
            metrics.REPLAYED_UPDATES.inc()
            log.info("ignored a replayed update")
            raise ApplicationHandlerStop

    application.add_handler(TypeHandler(Update, check), group=REPLAY_GROUP)
    return guard
