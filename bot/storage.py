"""What the bot remembers about a person, keyed by a keyed hash of the chat id.

Nothing here holds a raw chat id, a name or a photo. The only way back from a stored record to
a chat is a *sealed* chat id, which the bot needs to deliver a result or a reminder later.
All cryptography comes from `cryptography` (`hbscreen.inference.crypto`): keys derived from
HBSCREEN_HASH_KEY with HKDF, one per purpose (pseudonyms, sealed chat ids, stored records);
sealing is AES-256-GCM. In Redis, profile values, screening records and tickets are sealed
too (bound to their person and field), so neither Redis nor its AOF holds them in plaintext;
a record altered in Redis raises `TamperedError`, it is never misread. Person keys expire
`record_ttl_s` after their last write.

Two implementations with one interface: `RedisStore` (production, survives restarts and is
shared by bot processes) and `MemoryStore` (development without Redis, and unit tests).

Redis layout (prefix default "hb:bot:"):
  schema                string layout version ("2": AES-GCM; see `RedisStore.migrate`)
  person:{h}            hash   profile fields (language, consent, group, ...), sealed JSON
  person:{h}:records    list   screenings (sealed JSON): what /summary and /export show
  person:{h}:rate       zset   photo times, for the per-person rate limit
  person:{h}:tickets    set    tickets of this person's jobs in flight
  ticket:{ticket}       string routing of one job in flight (sealed JSON, with a TTL)
  conv:{name}           hash   h -> conversation state (PTB persistence)
  reminders             zset   h -> due time
  stats:{day}           hash   "{campaign}|{referral}" -> count (no personal data)
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import logging
import os
import time
from collections import defaultdict
from typing import Any, Protocol

from hbscreen.inference.crypto import Sealer, TamperedError, derive_key

log = logging.getLogger(__name__)

__all__ = ["KeyRing", "MemoryStore", "RedisStore", "Store", "TamperedError", "derive_key"]

STATS_TTL_S = 400 * 24 * 3600
RECORD_TTL_S = 400 * 24 * 3600  # a person's data expires this long after their last visit
MAX_RECORDS = 2000  # per person: a busy health worker's months, bounded
SCHEMA = "2"  # 1: HMAC-CTR seals, plaintext values; 2: HKDF + AES-GCM
COMPACT_MIN_INTERVAL_S = 10.0  # at most one AOF rewrite per this long (they are coalesced)


def _t(v: Any) -> str:
    """redis-py types replies as bytes | str; this client decodes them (decode_responses)."""
    return v.decode() if isinstance(v, bytes) else str(v)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (ValueError, TypeError):
        raise TamperedError("not a sealed value") from None


class KeyRing:
    """The keyed hash of chat ids, the sealing of chat ids for later delivery, and the key of
    stored records; three independent keys from one secret (HKDF, separate `info`)."""

    def __init__(self, secret: bytes) -> None:
        if not secret:
            raise ValueError("the hash key must not be empty")
        self._hash_key = derive_key(secret, "hbscreen/person-pseudonym/v2")
        self._chats = Sealer.from_secret(secret, "hbscreen/chat-seal/v2")
        self.records = Sealer.from_secret(secret, "hbscreen/stored-records/v2")

    def person(self, chat_id: int) -> str:
        """A stable pseudonym for a chat: HMAC-SHA256, 32 hex characters."""
        return hmac.new(self._hash_key, str(int(chat_id)).encode(), hashlib.sha256).hexdigest()[:32]

    def seal(self, chat_id: int) -> str:
        """The chat id, AES-GCM sealed (a fresh nonce each time: tokens cannot be linked)."""
        return _b64(self._chats.seal(int(chat_id).to_bytes(8, "big", signed=True), b"chat-id"))

    def open(self, token: str) -> int:
        """Raises `TamperedError` (a ValueError) when the token is not one of ours."""
        plain = self._chats.open(_unb64(token), b"chat-id")
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
    async def rate_free_at(self, h: str, limit: int, window_s: float = 3600.0) -> float: ...
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
    async def migrate(self) -> int: ...
    async def compact(self) -> bool: ...
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

    async def rate_free_at(self, h: str, limit: int, window_s: float = 3600.0) -> float:
        """When hit_rate will next allow one (now if it already does): what a refused person
        is told."""
        now = time.time()
        times = sorted(x for x in self.rates.get(h, []) if x > now - window_s)
        if len(times) < limit:
            return now
        return times[len(times) - limit] + window_s

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

    async def migrate(self) -> int:
        return 0

    async def compact(self) -> bool:
        return False  # nothing on disk

    async def ping(self) -> bool:
        return True

    async def close(self) -> None:
        return None


class RedisStore:
    """The production store (redis.asyncio). With `sealer` (the KeyRing's record key) every
    value that may say something about a person is sealed with AES-GCM; without it (unit
    tests) values are plain JSON."""

    def __init__(
        self,
        redis_url: str,
        prefix: str = "hb:bot:",
        *,
        sealer: Sealer | None = None,
        record_ttl_s: int = RECORD_TTL_S,
    ) -> None:
        import redis.asyncio as aioredis
        from redis.asyncio.retry import Retry
        from redis.backoff import ExponentialWithJitterBackoff
        from redis.exceptions import ConnectionError as RedisConnectionError
        from redis.exceptions import TimeoutError as RedisTimeoutError

        # A person is waiting: a dropped (stale) connection is retried at once on a fresh one,
        # Redis down fails within a second (the bot then says "busy"), a hung Redis within
        # ~8 s; health checks notice dead pooled connections before they are used.
        self.r = aioredis.Redis.from_url(
            redis_url,
            decode_responses=True,
            health_check_interval=10,
            socket_connect_timeout=2.0,
            socket_timeout=2.5,
            retry=Retry(ExponentialWithJitterBackoff(base=0.05, cap=0.5), 2),
            retry_on_error=[RedisConnectionError, RedisTimeoutError, ConnectionError, OSError],
        )
        self.p = prefix
        self.sealer = sealer
        self.record_ttl_s = record_ttl_s
        self._compactor: asyncio.Task[None] | None = None
        self._compact_again = False
        self._last_compaction = 0.0

    def _k(self, *parts: str) -> str:
        return self.p + ":".join(parts)

    def _enc(self, value: Any, where: str) -> str:
        text = json.dumps(value)
        if self.sealer is None:
            return text
        return _b64(self.sealer.seal(text.encode(), f"hbscreen-store/{where}".encode()))

    def _dec(self, raw: str, where: str) -> Any:
        if self.sealer is None:
            return json.loads(raw)
        try:
            plain = self.sealer.open(_unb64(raw), f"hbscreen-store/{where}".encode())
        except TamperedError:
            raise TamperedError(
                f"stored value {where.split('/', 1)[-1]!r} failed authentication: altered in "
                "Redis, or written with another HBSCREEN_HASH_KEY"
            ) from None
        return json.loads(plain)

    async def get_profile(self, h: str) -> dict[str, Any]:
        raw = await self.r.hgetall(self._k("person", h))
        return {_t(k): self._dec(_t(v), f"{h}/profile/{_t(k)}") for k, v in raw.items()}

    async def update_profile(self, h: str, **fields: Any) -> None:
        if fields:
            key = self._k("person", h)
            async with self.r.pipeline(transaction=True) as pipe:
                pipe.hset(
                    key, mapping={k: self._enc(v, f"{h}/profile/{k}") for k, v in fields.items()}
                )
                pipe.expire(key, self.record_ttl_s)
                await pipe.execute()

    async def clear_profile_fields(self, h: str, *names: str) -> None:
        if names:
            await self.r.hdel(self._k("person", h), *names)

    async def add_record(self, h: str, record: dict[str, Any]) -> None:
        key = self._k("person", h, "records")
        async with self.r.pipeline(transaction=True) as pipe:
            pipe.rpush(key, self._enc(record, f"{h}/records"))
            pipe.ltrim(key, -MAX_RECORDS, -1)
            pipe.expire(key, self.record_ttl_s)
            pipe.expire(self._k("person", h), self.record_ttl_s)
            await pipe.execute()

    async def records(self, h: str) -> list[dict[str, Any]]:
        raw = await self.r.lrange(self._k("person", h, "records"), 0, -1)
        return [self._dec(_t(x), f"{h}/records") for x in raw]

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

    async def rate_free_at(self, h: str, limit: int, window_s: float = 3600.0) -> float:
        """When hit_rate will next allow one (now if it already does)."""
        key = self._k("person", h, "rate")
        now = time.time()
        async with self.r.pipeline(transaction=True) as pipe:
            pipe.zremrangebyscore(key, "-inf", now - window_s)
            pipe.zcard(key)
            _, count = await pipe.execute()
        if count < limit:
            return now
        oldest = await self.r.zrange(key, count - limit, count - limit, withscores=True)
        return float(oldest[0][1]) + window_s if oldest else now

    async def put_ticket(self, ticket: str, h: str, data: dict[str, Any], ttl_s: int) -> None:
        async with self.r.pipeline(transaction=True) as pipe:
            value = self._enc({**data, "h": h}, f"ticket/{ticket}")
            pipe.set(self._k("ticket", ticket), value, ex=ttl_s)
            pipe.sadd(self._k("person", h, "tickets"), ticket)
            pipe.expire(self._k("person", h, "tickets"), ttl_s)
            await pipe.execute()

    async def get_ticket(self, ticket: str) -> dict[str, Any] | None:
        raw = await self.r.get(self._k("ticket", ticket))
        return self._dec(_t(raw), f"ticket/{ticket}") if raw else None

    async def update_ticket(self, ticket: str, **fields: Any) -> None:
        key = self._k("ticket", ticket)
        raw = await self.r.get(key)
        if raw:
            value = {**self._dec(_t(raw), f"ticket/{ticket}"), **fields}
            await self.r.set(key, self._enc(value, f"ticket/{ticket}"), keepttl=True)

    async def pop_ticket(self, ticket: str) -> dict[str, Any] | None:
        raw = await self.r.getdel(self._k("ticket", ticket))
        if not raw:
            return None
        data = self._dec(_t(raw), f"ticket/{ticket}")
        await self.r.srem(self._k("person", data["h"], "tickets"), ticket)
        return data

    async def tickets_of(self, h: str) -> list[str]:
        return sorted(_t(x) for x in await self.r.smembers(self._k("person", h, "tickets")))

    async def set_reminder(self, h: str, due: float) -> None:
        await self.r.zadd(self._k("reminders"), {h: due})

    async def cancel_reminder(self, h: str) -> None:
        await self.r.zrem(self._k("reminders"), h)

    async def due_reminders(self, now: float) -> list[str]:
        key = self._k("reminders")
        due = await self.r.zrangebyscore(key, "-inf", now)
        # ZREM returns 1 only for the process that removed it: each reminder is sent once.
        return [_t(h) for h in due if await self.r.zrem(key, _t(h))]

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
                out[day] = {_t(k): int(v) for k, v in raw.items()}
        return out

    async def get_conversations(self, name: str) -> dict[str, object]:
        raw = await self.r.hgetall(self._k("conv", name))
        return {_t(h): json.loads(v) for h, v in raw.items()}

    async def set_conversation(self, name: str, h: str, state: object | None) -> None:
        key = self._k("conv", name)
        if state is None:
            await self.r.hdel(key, h)
        else:
            await self.r.hset(key, h, json.dumps(state))

    async def delete_person(self, h: str) -> None:
        """Everything about this person goes, from memory now and from the AOF on disk at the
        rewrite this requests (seconds later)."""
        tickets = await self.tickets_of(h)
        keys = [self._k("person", h, *rest) for rest in ((), ("records",), ("rate",), ("tickets",))]
        keys += [self._k("ticket", x) for x in tickets]
        async with self.r.pipeline(transaction=True) as pipe:
            pipe.delete(*keys)
            pipe.zrem(self._k("reminders"), h)
            await pipe.execute()
        async for conv_key in self.r.scan_iter(match=self._k("conv", "*")):
            await self.r.hdel(conv_key, h)
        self.request_compaction()

    # ------------------------------------------------------------ data on disk
    def request_compaction(self) -> None:
        """Rewrite the AOF soon (coalesced: at most one rewrite per COMPACT_MIN_INTERVAL_S), so
        what was deleted is gone from the disk too, not only from memory."""
        self._compact_again = True
        if self._compactor is None or self._compactor.done():
            self._compactor = asyncio.create_task(self._compact_soon())

    async def _compact_soon(self) -> None:
        while self._compact_again:
            wait = self._last_compaction + COMPACT_MIN_INTERVAL_S - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            self._compact_again = False
            try:
                await self.compact()
            except Exception:
                log.warning("AOF rewrite failed; it is retried at the next deletion or hour")
                return

    async def compact(self) -> bool:
        """BGREWRITEAOF now (waiting for one already running to end first, since it may have
        forked before the latest deletion); True if a rewrite started. Also run on a schedule
        (HBSCREEN_AOF_REWRITE_S) so expired data leave the disk. Needs the ACL to allow INFO
        and BGREWRITEAOF (deploy/redis/users.acl)."""
        from redis.exceptions import ResponseError

        info = await self.r.info("persistence")
        if not int(info.get("aof_enabled", 0)):
            return False  # no AOF: nothing of ours on disk to rewrite
        self._last_compaction = time.monotonic()
        for _ in range(600):
            info = await self.r.info("persistence")
            if not int(info.get("aof_rewrite_in_progress", 0)) and not int(
                info.get("aof_rewrite_scheduled", 0)
            ):
                try:
                    await self.r.bgrewriteaof()
                    return True
                except ResponseError as e:
                    if "in progress" not in str(e):
                        raise
            await asyncio.sleep(0.1)
        return False

    async def migrate(self) -> int:
        """One-off, at start-up: records of the old scheme (HMAC-CTR seals, plaintext values,
        pseudonyms from another key derivation) cannot be read by this one, so they are
        deleted — people are asked for their language and consent again; daily counts
        (no personal data) stay. Returns the number of keys deleted."""
        if not await self.r.set(self._k("schema"), SCHEMA, nx=True):
            return 0  # already version 2 (or another bot process is migrating)
        n = 0
        for kind in ("person", "ticket", "conv"):
            batch: list[str] = []
            async for key in self.r.scan_iter(match=self._k(kind, "*"), count=500):
                batch.append(key)
                if len(batch) >= 500:
                    n += await self.r.delete(*batch)
                    batch = []
            if batch:
                n += await self.r.delete(*batch)
        n += await self.r.delete(self._k("reminders"))
        if n:
            log.warning("deleted records of the old storage scheme", extra={"keys": n})
            self.request_compaction()
        return n

    async def ping(self) -> bool:
        try:
            return bool(await self.r.ping())
        except Exception:
            return False

    async def close(self) -> None:
        if self._compactor is not None and not self._compactor.done():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._compactor, 5)
        await self.r.aclose()


def make_store(
    redis_url: str | None,
    prefix: str = "hb:bot:",
    *,
    sealer: Sealer | None = None,
    record_ttl_s: int = RECORD_TTL_S,
) -> Store:
    """Redis when configured (values sealed with `sealer`, the KeyRing's record key), else
    in-process memory."""
    if redis_url:
        return RedisStore(redis_url, prefix, sealer=sealer, record_ttl_s=record_ttl_s)
    return MemoryStore()
