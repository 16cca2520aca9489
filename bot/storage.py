"""What the bot remembers about a person, keyed by a keyed hash of the chat id.

Nothing here holds a raw chat id, a name or a photo. The only way back from a stored record to
a chat is a *sealed* chat id (authenticated encryption with a key derived from
HBSCREEN_HASH_KEY), which the bot needs to deliver a result or a reminder later.

Two implementations with one interface: `RedisStore` (production, survives restarts and is
shared by bot processes) and `MemoryStore` (development without Redis, and unit tests).

Redis layout (prefix default "hb:bot:"):
  person:{h}            hash   profile fields (language, consent, group, ...), JSON values
  person:{h}:records    list   screenings (JSON): what /summary and /export show
  person:{h}:rate       zset   photo times, for the per-person rate limit
  person:{h}:tickets    set    tickets of this person's jobs in flight
  ticket:{ticket}       string routing of one job in flight (JSON, with a TTL)
  conv:{name}           hash   h -> conversation state (PTB persistence)
  reminders             zset   h -> due time
  stats:{day}           hash   "{campaign}|{referral}" -> count (no personal data)
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import os
import time
from collections import defaultdict
from typing import Any, Protocol

log = logging.getLogger(__name__)

STATS_TTL_S = 400 * 24 * 3600
MAX_RECORDS = 2000  # per person: a busy health worker's months, bounded


def derive_key(secret: bytes, purpose: str) -> bytes:
    """One key per purpose from the one configured secret."""
    return hmac.new(secret, b"hbscreen/" + purpose.encode(), hashlib.sha256).digest()


class KeyRing:
    """The keyed hash of chat ids and the sealing of chat ids for later delivery."""

    def __init__(self, secret: bytes) -> None:
        if not secret:
            raise ValueError("the hash key must not be empty")
        self._hash_key = derive_key(secret, "person")
        self._enc_key = derive_key(secret, "seal-enc")
        self._mac_key = derive_key(secret, "seal-mac")

    def person(self, chat_id: int) -> str:
        """A stable pseudonym for a chat: HMAC-SHA256, 32 hex characters."""
        return hmac.new(self._hash_key, str(int(chat_id)).encode(), hashlib.sha256).hexdigest()[:32]

    def _keystream(self, nonce: bytes, n: int) -> bytes:
        out = b""
        counter = 0
        while len(out) < n:
            block = nonce + counter.to_bytes(4, "big")
            out += hmac.new(self._enc_key, block, hashlib.sha256).digest()
            counter += 1
        return out[:n]

    def seal(self, chat_id: int) -> str:
        """Encrypt-then-MAC (HMAC-SHA256 as PRF in counter mode, then an HMAC tag)."""
        plain = int(chat_id).to_bytes(8, "big", signed=True)
        nonce = os.urandom(12)
        body = bytes(a ^ b for a, b in zip(plain, self._keystream(nonce, 8), strict=True))
        tag = hmac.new(self._mac_key, nonce + body, hashlib.sha256).digest()[:16]
        return base64.urlsafe_b64encode(nonce + body + tag).decode().rstrip("=")

    def open(self, token: str) -> int:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        nonce, body, tag = raw[:12], raw[12:20], raw[20:]
        want = hmac.new(self._mac_key, nonce + body, hashlib.sha256).digest()[:16]
        if len(raw) != 36 or not hmac.compare_digest(tag, want):
            raise ValueError("sealed chat id is not authentic")
        plain = bytes(a ^ b for a, b in zip(body, self._keystream(nonce, 8), strict=True))
        return int.from_bytes(plain, "big", signed=True)


class Store(Protocol):
    """The interface both stores implement (all methods are coroutines)."""

    async def get_profile(self, h: str) -> dict[str, Any]: ...
    async def update_profile(self, h: str, **fields: Any) -> None: ...
    async def clear_profile_fields(self, h: str, *names: str) -> None: ...
    async def add_record(self, h: str, record: dict[str, Any]) -> None: ...
    async def records(self, h: str) -> list[dict[str, Any]]: ...
    async def hit_rate(self, h: str, limit: int, window_s: float = 3600.0) -> bool: ...
    async def refund_rate(self, h: str) -> None: ...
    async def put_ticket(self, ticket: str, h: str, data: dict[str, Any], ttl_s: int) -> None: ...
    async def get_ticket(self, ticket: str) -> dict[str, Any] | None: ...
    async def update_ticket(self, ticket: str, **fields: Any) -> None: ...
    async def pop_ticket(self, ticket: str) -> dict[str, Any] | None: ...
    async def tickets_of(self, h: str) -> list[str]: ...
    async def set_reminder(self, h: str, due: float) -> None: ...
    async def cancel_reminder(self, h: str) -> None: ...
    async def due_reminders(self, now: float) -> list[str]: ...
    async def count_stat(self, day: str, campaign: str, referral: str) -> None: ...
    async def stats(self, days: list[str]) -> dict[str, dict[str, int]]: ...
    async def get_conversations(self, name: str) -> dict[str, object]: ...
    async def set_conversation(self, name: str, h: str, state: object | None) -> None: ...
    async def delete_person(self, h: str) -> None: ...
    async def ping(self) -> bool: ...
    async def close(self) -> None: ...


def _stat_field(campaign: str, referral: str) -> str:
    return f"{campaign}|{referral}"


class MemoryStore:
    """In-process store with the Redis store's behaviour (development, unit tests)."""

    def __init__(self) -> None:
        self.profiles: dict[str, dict[str, Any]] = {}
        self.record_lists: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.rates: dict[str, list[float]] = defaultdict(list)
        self.tickets: dict[str, tuple[float, str, dict[str, Any]]] = {}
        self.reminders: dict[str, float] = {}
        self.stat_counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        self.conversations: dict[str, dict[str, object]] = defaultdict(dict)

    async def get_profile(self, h: str) -> dict[str, Any]:
        return dict(self.profiles.get(h, {}))

    async def update_profile(self, h: str, **fields: Any) -> None:
        self.profiles.setdefault(h, {}).update(json.loads(json.dumps(fields)))

    async def clear_profile_fields(self, h: str, *names: str) -> None:
        for name in names:
            self.profiles.get(h, {}).pop(name, None)

    async def add_record(self, h: str, record: dict[str, Any]) -> None:
        self.record_lists[h].append(dict(record))
        del self.record_lists[h][:-MAX_RECORDS]

    async def records(self, h: str) -> list[dict[str, Any]]:
        return [dict(r) for r in self.record_lists.get(h, [])]

    async def hit_rate(self, h: str, limit: int, window_s: float = 3600.0) -> bool:
        now = time.time()
        times = [x for x in self.rates[h] if x > now - window_s]
        allowed = len(times) < limit
        if allowed:
            times.append(now)
        self.rates[h] = times
        return allowed

    async def refund_rate(self, h: str) -> None:
        """Take back the newest hit: a photo that failed, was refused or met a busy queue."""
        if self.rates.get(h):
            self.rates[h].pop()

    def _live(self, ticket: str) -> tuple[float, str, dict[str, Any]] | None:
        entry = self.tickets.get(ticket)
        if entry and entry[0] < time.time():
            self.tickets.pop(ticket, None)
            return None
        return entry

    async def put_ticket(self, ticket: str, h: str, data: dict[str, Any], ttl_s: int) -> None:
        self.tickets[ticket] = (time.time() + ttl_s, h, {**data, "h": h})

    async def get_ticket(self, ticket: str) -> dict[str, Any] | None:
        entry = self._live(ticket)
        return dict(entry[2]) if entry else None

    async def update_ticket(self, ticket: str, **fields: Any) -> None:
        entry = self._live(ticket)
        if entry:
            entry[2].update(fields)

    async def pop_ticket(self, ticket: str) -> dict[str, Any] | None:
        entry = self._live(ticket)
        self.tickets.pop(ticket, None)
        return dict(entry[2]) if entry else None

    async def tickets_of(self, h: str) -> list[str]:
        return [k for k, v in list(self.tickets.items()) if v[1] == h and self._live(k)]

    async def set_reminder(self, h: str, due: float) -> None:
        self.reminders[h] = due

    async def cancel_reminder(self, h: str) -> None:
        self.reminders.pop(h, None)

    async def due_reminders(self, now: float) -> list[str]:
        due = [h for h, at in self.reminders.items() if at <= now]
        for h in due:
            self.reminders.pop(h, None)
        return due

    async def count_stat(self, day: str, campaign: str, referral: str) -> None:
        self.stat_counts[day][_stat_field(campaign, referral)] += 1

    async def stats(self, days: list[str]) -> dict[str, dict[str, int]]:
        return {d: dict(self.stat_counts[d]) for d in days if self.stat_counts.get(d)}

    async def get_conversations(self, name: str) -> dict[str, object]:
        return dict(self.conversations[name])

    async def set_conversation(self, name: str, h: str, state: object | None) -> None:
        if state is None:
            self.conversations[name].pop(h, None)
        else:
            self.conversations[name][h] = state

    async def delete_person(self, h: str) -> None:
        self.profiles.pop(h, None)
        self.record_lists.pop(h, None)
        self.rates.pop(h, None)
        self.reminders.pop(h, None)
        for ticket in [k for k, v in self.tickets.items() if v[1] == h]:
            self.tickets.pop(ticket, None)
        for states in self.conversations.values():
            states.pop(h, None)

    async def ping(self) -> bool:
        return True

    async def close(self) -> None:
        return None


class RedisStore:
    """The production store (redis.asyncio)."""

    def __init__(self, redis_url: str, prefix: str = "hb:bot:") -> None:
        import redis.asyncio as aioredis

        self.r = aioredis.Redis.from_url(redis_url, decode_responses=True)
        self.p = prefix

    def _k(self, *parts: str) -> str:
        return self.p + ":".join(parts)

    async def get_profile(self, h: str) -> dict[str, Any]:
        raw = await self.r.hgetall(self._k("person", h))
        return {k: json.loads(v) for k, v in raw.items()}

    async def update_profile(self, h: str, **fields: Any) -> None:
        if fields:
            await self.r.hset(
                self._k("person", h), mapping={k: json.dumps(v) for k, v in fields.items()}
            )

    async def clear_profile_fields(self, h: str, *names: str) -> None:
        if names:
            await self.r.hdel(self._k("person", h), *names)

    async def add_record(self, h: str, record: dict[str, Any]) -> None:
        key = self._k("person", h, "records")
        async with self.r.pipeline(transaction=True) as pipe:
            pipe.rpush(key, json.dumps(record))
            pipe.ltrim(key, -MAX_RECORDS, -1)
            await pipe.execute()

    async def records(self, h: str) -> list[dict[str, Any]]:
        return [json.loads(x) for x in await self.r.lrange(self._k("person", h, "records"), 0, -1)]

    async def hit_rate(self, h: str, limit: int, window_s: float = 3600.0) -> bool:
        key = self._k("person", h, "rate")
        now = time.time()
        async with self.r.pipeline(transaction=True) as pipe:
            pipe.zremrangebyscore(key, "-inf", now - window_s)
            pipe.zcard(key)
            _, count = await pipe.execute()
        if count >= limit:
            return False
        async with self.r.pipeline(transaction=True) as pipe:
            pipe.zadd(key, {f"{now:.6f}:{os.urandom(3).hex()}": now})
            pipe.expire(key, int(window_s) + 60)
            await pipe.execute()
        return True

    async def refund_rate(self, h: str) -> None:
        """Take back the newest hit: a photo that failed, was refused or met a busy queue."""
        await self.r.zpopmax(self._k("person", h, "rate"))

    async def put_ticket(self, ticket: str, h: str, data: dict[str, Any], ttl_s: int) -> None:
        async with self.r.pipeline(transaction=True) as pipe:
            pipe.set(self._k("ticket", ticket), json.dumps({**data, "h": h}), ex=ttl_s)
            pipe.sadd(self._k("person", h, "tickets"), ticket)
            pipe.expire(self._k("person", h, "tickets"), ttl_s)
            await pipe.execute()

    async def get_ticket(self, ticket: str) -> dict[str, Any] | None:
        raw = await self.r.get(self._k("ticket", ticket))
        return json.loads(raw) if raw else None

    async def update_ticket(self, ticket: str, **fields: Any) -> None:
        key = self._k("ticket", ticket)
        raw = await self.r.get(key)
        if raw:
            await self.r.set(key, json.dumps({**json.loads(raw), **fields}), keepttl=True)

    async def pop_ticket(self, ticket: str) -> dict[str, Any] | None:
        raw = await self.r.getdel(self._k("ticket", ticket))
        if not raw:
            return None
        data = json.loads(raw)
        await self.r.srem(self._k("person", data["h"], "tickets"), ticket)
        return data

    async def tickets_of(self, h: str) -> list[str]:
        return sorted(await self.r.smembers(self._k("person", h, "tickets")))

    async def set_reminder(self, h: str, due: float) -> None:
        await self.r.zadd(self._k("reminders"), {h: due})

    async def cancel_reminder(self, h: str) -> None:
        await self.r.zrem(self._k("reminders"), h)

    async def due_reminders(self, now: float) -> list[str]:
        key = self._k("reminders")
        due = await self.r.zrangebyscore(key, "-inf", now)
        # ZREM returns 1 only for the process that removed it: each reminder is sent once.
        return [h for h in due if await self.r.zrem(key, h)]

    async def count_stat(self, day: str, campaign: str, referral: str) -> None:
        key = self._k("stats", day)
        async with self.r.pipeline(transaction=True) as pipe:
            pipe.hincrby(key, _stat_field(campaign, referral), 1)
            pipe.expire(key, STATS_TTL_S)
            await pipe.execute()

    async def stats(self, days: list[str]) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for day in days:
            raw = await self.r.hgetall(self._k("stats", day))
            if raw:
                out[day] = {k: int(v) for k, v in raw.items()}
        return out

    async def get_conversations(self, name: str) -> dict[str, object]:
        raw = await self.r.hgetall(self._k("conv", name))
        return {h: json.loads(v) for h, v in raw.items()}

    async def set_conversation(self, name: str, h: str, state: object | None) -> None:
        key = self._k("conv", name)
        if state is None:
            await self.r.hdel(key, h)
        else:
            await self.r.hset(key, h, json.dumps(state))

    async def delete_person(self, h: str) -> None:
        tickets = await self.tickets_of(h)
        keys = [self._k("person", h, *rest) for rest in ((), ("records",), ("rate",), ("tickets",))]
        keys += [self._k("ticket", x) for x in tickets]
        async with self.r.pipeline(transaction=True) as pipe:
            pipe.delete(*keys)
            pipe.zrem(self._k("reminders"), h)
            await pipe.execute()
        async for conv_key in self.r.scan_iter(match=self._k("conv", "*")):
            await self.r.hdel(conv_key, h)

    async def ping(self) -> bool:
        try:
            return bool(await self.r.ping())
        except Exception:
            return False

    async def close(self) -> None:
        await self.r.aclose()


def make_store(redis_url: str | None, prefix: str = "hb:bot:") -> Store:
    """Redis when configured, else in-process memory."""
    return RedisStore(redis_url, prefix) if redis_url else MemoryStore()
