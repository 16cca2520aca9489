"""Delivery of job outcomes to chats, exactly once: heatmap photo, result text, hints, apologies.

Two loops run beside the bot:

- *Intake* reads `queue.outcomes()` and writes each outcome into the delivery book (in Redis
  with the bot's store, else in memory) before the queue acknowledges it: from then on the
  book, not the stream, owns it. Accepting is idempotent (an outcome read twice after a crash
  is booked once; one already sent is not booked again).
- *Dispatch* takes due entries from the book under a **lease** (a Redis key with an expiry,
  renewed while the attempt runs; a bot killed mid-delivery loses it after
  `delivery_lease_s` and the next bot process resumes). An attempt sends the result messages
  that are not yet marked sent, marking each one only after Telegram confirmed it; so a
  retry never repeats a message that went out, and the heatmap and the text are retried
  together until both are there. On 429 (respecting retry_after), 5xx, timeouts and network
  errors the entry is rescheduled with exponential backoff, for as long as the job's deadline
  (+ `delivery_grace_s`) allows; then, or when Telegram refuses for good (blocked bot, bad
  request), it is counted in `hbscreen_bot_deliveries_lost{reason}` and logged by job id
  only.

The routing ticket (sealed chat id, language, status message) stays in the store until the
delivery ends: a job whose ticket is gone was cancelled (/cancel, /stop) or its person deleted
(/delete), and nothing more is sent. What is sent is decided in one place,
`result_messages()`: a list of named steps (edit the status, the heatmap photo, the text).

Known limit of the Bot API: a request that reached Telegram but whose answer was lost (a
timeout *after* Telegram accepted it) cannot be told apart from one that never arrived; it
is retried and the person may see that one message twice. Everything else is exactly once.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import json
import logging
import os
import random
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Protocol

from telegram import Bot
from telegram.error import BadRequest, Forbidden, RetryAfter, TelegramError
from telegram.ext import ExtBot

from hbscreen.inference.aio import cancel_and_wait
from hbscreen.inference.crypto import Sealer
from hbscreen.inference.queue.protocol import JobOutcome
from hbscreen.inference.result import ScreeningResult

from . import metrics
from .replies import Reply, outcome_replies, send_reply
from .services import BotApplication, Services, now

log = logging.getLogger(__name__)

BACKOFF_BASE_S = 0.5
BACKOFF_CAP_S = 30.0
DONE_TTL_S = 2 * 24 * 3600  # "already delivered" markers: longer than any outcome lives
# Deliveries in flight per bot process: Telegram allows ~30 messages a second, and one chat's
# delivery may wait up to a second for its own per-chat pace (bot/concurrency.py).
MAX_PARALLEL = 64
STOP_S = 5.0  # at shutdown: how long the intake and the attempts in flight get to stop


# ---------------------------------------------------------------------------------------------
# What one delivery is


@dataclass
class Pending:
    """One outcome to deliver. `outcome` holds health data: the Redis book seals it."""

    job_id: str
    ticket: str
    outcome: JobOutcome
    deadline: float
    attempts: int = 0
    done: set[str] = field(default_factory=set)  # names of steps Telegram confirmed
    fails: int | None = None  # the retake counter, fixed when the record step ran

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "job_id": self.job_id,
                "ticket": self.ticket,
                "outcome": self.outcome.model_dump_json(exclude={"heatmap_jpeg"}),
                "heatmap": base64.b64encode(self.outcome.heatmap_jpeg or b"").decode(),
                "deadline": self.deadline,
            }
        ).encode()

    @classmethod
    def from_json(cls, raw: bytes, *, attempts: int, done: set[str], fails: int | None) -> Pending:
        d = json.loads(raw)
        outcome = JobOutcome.model_validate_json(d["outcome"])
        outcome.heatmap_jpeg = base64.b64decode(d["heatmap"]) or None
        return cls(
            d["job_id"],
            d["ticket"],
            outcome,
            float(d["deadline"]),
            attempts,
            done,
            fails,
        )


class Book(Protocol):
    """Where outcomes wait until they are delivered (see the module docstring)."""

    async def accept(self, p: Pending) -> bool:
        """Book it unless it is booked or was delivered already; True if new."""

    async def due(self, at: float, n: int) -> list[str]:
        """Up to n job ids whose next attempt is due at `at`."""

    async def lease(self, job_id: str, owner: str, ttl_s: float) -> Pending | None:
        """Claim an entry for one attempt (None: someone else holds it, or it is gone)."""

    async def renew(self, job_id: str, owner: str, ttl_s: float) -> bool: ...

    async def step_done(self, job_id: str, owner: str, step: str, fails: int | None) -> None:
        """Telegram confirmed this step: never send it again."""

    async def reschedule(self, job_id: str, owner: str, at: float, attempts: int) -> None:
        """Release the lease; the next attempt is due at `at`."""

    async def close_entry(self, job_id: str, owner: str, state: str) -> None:
        """The delivery ended ("sent", "lost", "dropped"): forget the outcome."""

    async def count(self) -> int: ...


class MemoryBook:
    """The book for a bot without Redis (its in-process queue dies with it anyway)."""

    def __init__(self) -> None:
        self.items: dict[str, Pending] = {}
        self.due_at: dict[str, float] = {}
        self.leases: dict[str, tuple[str, float]] = {}
        self.closed: dict[str, str] = {}

    async def accept(self, p: Pending) -> bool:
        if p.job_id in self.items or p.job_id in self.closed:
            return False
        self.items[p.job_id], self.due_at[p.job_id] = p, time.time()
        return True

    async def due(self, at: float, n: int) -> list[str]:
        ready = [j for j, d in self.due_at.items() if d <= at]
        return sorted(ready, key=self.due_at.__getitem__)[:n]

    async def lease(self, job_id: str, owner: str, ttl_s: float) -> Pending | None:
        held = self.leases.get(job_id)
        if job_id not in self.items or (held and held[0] != owner and held[1] > time.time()):
            return None
        self.leases[job_id] = (owner, time.time() + ttl_s)
        p = self.items[job_id]
        return Pending(p.job_id, p.ticket, p.outcome, p.deadline, p.attempts, set(p.done), p.fails)

    async def renew(self, job_id: str, owner: str, ttl_s: float) -> bool:
        held = self.leases.get(job_id)
        if not held or held[0] != owner:
            return False
        self.leases[job_id] = (owner, time.time() + ttl_s)
        return True

    async def step_done(self, job_id: str, owner: str, step: str, fails: int | None) -> None:
        if job_id in self.items:
            self.items[job_id].done.add(step)
            if fails is not None:
                self.items[job_id].fails = fails

    async def reschedule(self, job_id: str, owner: str, at: float, attempts: int) -> None:
        if job_id in self.items:
            self.items[job_id].attempts = attempts
            self.due_at[job_id] = at
        if self.leases.get(job_id, ("",))[0] == owner:
            self.leases.pop(job_id, None)

    async def close_entry(self, job_id: str, owner: str, state: str) -> None:
        self.items.pop(job_id, None)
        self.due_at.pop(job_id, None)
        self.leases.pop(job_id, None)
        self.closed[job_id] = state

    async def count(self) -> int:
        return len(self.items)


_ACCEPT = """
if redis.call('EXISTS', KEYS[1]) == 1 or redis.call('EXISTS', KEYS[3]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'data', ARGV[1], 'attempts', 0, 'done', '')
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[4])
return 1
"""
_LEASE = """
if redis.call('EXISTS', KEYS[1]) == 0 then redis.call('ZREM', KEYS[3], ARGV[3]); return false end
local holder = redis.call('GET', KEYS[2])
if holder and holder ~= ARGV[1] then return false end
redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
return redis.call('HMGET', KEYS[1], 'data', 'attempts', 'done', 'fails')
"""
_RENEW = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
return redis.call('PEXPIRE', KEYS[1], ARGV[2])
"""
_RESCHEDULE = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('HSET', KEYS[1], 'attempts', ARGV[3])
  redis.call('ZADD', KEYS[3], ARGV[2], ARGV[4])
end
if redis.call('GET', KEYS[2]) == ARGV[1] then redis.call('DEL', KEYS[2]) end
return 1
"""
_CLOSE = """
redis.call('SET', KEYS[4], ARGV[2], 'EX', ARGV[3])
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[3], ARGV[4])
if redis.call('GET', KEYS[2]) == ARGV[1] then redis.call('DEL', KEYS[2]) end
return 1
"""


class RedisBook:
    """The book in the bot's Redis, under the store's prefix:
    `dlv:item:{id}` (hash: sealed outcome, attempts, steps done), `dlv:due` (zset id -> next
    attempt), `dlv:lease:{id}` (owner, with an expiry), `dlv:end:{id}` (how it ended; TTL)."""

    def __init__(self, redis: Any, prefix: str, seal: BookSealer) -> None:
        self.r = redis
        self.p = f"{prefix}dlv:"
        self.seal = seal
        self._accept = redis.register_script(_ACCEPT)
        self._lease = redis.register_script(_LEASE)
        self._renew = redis.register_script(_RENEW)
        self._reschedule = redis.register_script(_RESCHEDULE)
        self._close = redis.register_script(_CLOSE)

    def _keys(self, job_id: str) -> dict[str, str]:
        return {
            "item": f"{self.p}item:{job_id}",
            "lease": f"{self.p}lease:{job_id}",
            "due": f"{self.p}due",
            "end": f"{self.p}end:{job_id}",
        }

    async def accept(self, p: Pending) -> bool:
        k = self._keys(p.job_id)
        ttl = max(60, int(p.deadline - time.time()) + 3600)
        data = self.seal.seal(p.job_id, p.to_json())
        args = [data, time.time(), ttl, p.job_id]
        return bool(await self._accept(keys=[k["item"], k["due"], k["end"]], args=args))

    async def due(self, at: float, n: int) -> list[str]:
        ids = await self.r.zrangebyscore(f"{self.p}due", "-inf", at, start=0, num=n)
        return [i.decode() if isinstance(i, bytes) else i for i in ids]

    async def lease(self, job_id: str, owner: str, ttl_s: float) -> Pending | None:
        k = self._keys(job_id)
        res = await self._lease(
            keys=[k["item"], k["lease"], k["due"]], args=[owner, int(ttl_s * 1000), job_id]
        )
        if not res or res[0] is None:
            return None
        data, attempts, done, fails = res
        steps = {s for s in _text(done).split(",") if s}
        return Pending.from_json(
            self.seal.open(job_id, data),
            attempts=int(attempts or 0),
            done=steps,
            fails=int(fails) if fails not in (None, b"", "") else None,
        )

    async def renew(self, job_id: str, owner: str, ttl_s: float) -> bool:
        k = self._keys(job_id)
        return bool(await self._renew(keys=[k["lease"]], args=[owner, int(ttl_s * 1000)]))

    async def step_done(self, job_id: str, owner: str, step: str, fails: int | None) -> None:
        key = self._keys(job_id)["item"]
        done = {s for s in _text(await self.r.hget(key, "done")).split(",") if s} | {step}
        mapping: dict[str, Any] = {"done": ",".join(sorted(done))}
        if fails is not None:
            mapping["fails"] = fails
        await self.r.hset(key, mapping=mapping)

    async def reschedule(self, job_id: str, owner: str, at: float, attempts: int) -> None:
        k = self._keys(job_id)
        await self._reschedule(
            keys=[k["item"], k["lease"], k["due"]], args=[owner, at, attempts, job_id]
        )

    async def close_entry(self, job_id: str, owner: str, state: str) -> None:
        k = self._keys(job_id)
        await self._close(
            keys=[k["item"], k["lease"], k["due"], k["end"]],
            args=[owner, state, DONE_TTL_S, job_id],
        )

    async def count(self) -> int:
        return int(await self.r.zcard(f"{self.p}due"))


def _text(v: bytes | str | None) -> str:
    return v.decode() if isinstance(v, bytes) else (v or "")


class BookSealer:
    """Booked outcomes hold results and heatmaps: AES-GCM (`hbscreen.inference.crypto`) with a
    key of their own derived from HBSCREEN_HASH_KEY, bound to the job id; base64 text because
    the store's client decodes replies."""

    def __init__(self, secret: bytes) -> None:
        self._sealer = Sealer.from_secret(secret, "hbscreen/delivery-book/v1")

    def seal(self, job_id: str, plain: bytes) -> str:
        return base64.b64encode(self._sealer.seal(plain, job_id.encode())).decode()

    def open(self, job_id: str, sealed: bytes | str) -> bytes:
        raw = sealed.encode() if isinstance(sealed, str) else sealed
        return self._sealer.open(base64.b64decode(raw), job_id.encode())


def make_book(store: object, secret: bytes) -> Book:
    """Redis when the store is Redis (shared by bot processes, survives restarts)."""
    redis = getattr(store, "r", None)
    if redis is None:
        return MemoryBook()
    return RedisBook(redis, getattr(store, "p", "hb:bot:"), BookSealer(secret))


# ---------------------------------------------------------------------------------------------
# The loops


class Deliverer:
    """Intake and dispatch for one bot process (see the module docstring)."""

    def __init__(self, application: BotApplication, book: Book | None = None) -> None:
        from .services import hash_secret

        self.app = application
        self.svc: Services = application.bot_data.services
        self.book = book or make_book(self.svc.store, hash_secret(self.svc.settings))
        self.owner = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.lease_s = float(getattr(self.svc.settings, "delivery_lease_s", 10.0))
        self.grace_s = float(getattr(self.svc.settings, "delivery_grace_s", 120.0))
        self.wake = asyncio.Event()
        self.running: dict[str, asyncio.Task[None]] = {}

    async def run(self) -> None:
        intake = asyncio.create_task(self._intake_forever(), name="hbscreen-delivery-intake")
        try:
            await self._dispatch_forever()
        finally:
            # Not gather(): a cancel lost in redis-py would leave the intake running and this
            # waiting forever (hbscreen.inference.aio). An attempt cut short keeps its steps.
            left = await cancel_and_wait([intake, *self.running.values()], STOP_S)
            if left:
                log.error("delivery tasks did not stop", extra={"count": len(left)})

    # -- intake
    async def _intake_forever(self) -> None:
        while True:
            try:
                async for outcome in self.svc.queue.outcomes():
                    await self.intake(outcome)  # booked before the stream acknowledges it
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.error("outcome stream failed, reconnecting: %s", type(e).__name__)
                await asyncio.sleep(1.0)

    async def intake(self, outcome: JobOutcome) -> None:
        """Book one outcome; raises (and the stream keeps it) if the book cannot be written."""
        ticket = outcome.job.reply_to.get("ticket")
        if not ticket:
            return  # not submitted by the bot
        if outcome.status == "cancelled":
            await self.svc.store.pop_ticket(ticket)
            return
        if await self.svc.store.get_ticket(ticket) is None:
            metrics.DELIVERIES.labels("dropped").inc()  # cancelled or deleted meanwhile
            return
        deadline = max(outcome.job.deadline_at, time.time()) + self.grace_s
        if await self.book.accept(Pending(outcome.job.id, ticket, outcome, deadline)):
            self.wake.set()

    # -- dispatch
    async def _dispatch_forever(self) -> None:
        next_gauge = 0.0
        while True:
            try:
                if time.monotonic() >= next_gauge:
                    next_gauge = time.monotonic() + 5.0
                    metrics.DELIVERIES_PENDING.set(await self.book.count())
                free = MAX_PARALLEL - len(self.running)
                ids = await self.book.due(time.time(), max(free, 0)) if free > 0 else []
                for job_id in ids:
                    if job_id not in self.running:
                        task = asyncio.create_task(self.attempt(job_id))
                        self.running[job_id] = task
                        task.add_done_callback(functools.partial(self._forget, job_id))
            except asyncio.CancelledError:
                raise
            except Exception as e:  # Redis down: try again shortly
                log.warning("delivery book unavailable: %s", type(e).__name__)
            self.wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), 0.25)

    def _forget(self, job_id: str, _task: asyncio.Task[None]) -> None:
        self.running.pop(job_id, None)

    async def attempt(self, job_id: str) -> None:
        """One attempt at one delivery, under the lease; never raises."""
        try:
            p = await self.book.lease(job_id, self.owner, self.lease_s)
        except Exception as e:
            log.warning("delivery lease unavailable: %s", type(e).__name__)
            return
        if p is None:
            return
        renewer = asyncio.create_task(self._renew(job_id))
        try:
            state = await self._send_all(p)
        except asyncio.CancelledError:
            raise  # shutting down: the lease expires and another attempt resumes
        except Forbidden:
            state = "lost:blocked"
        except BadRequest as e:
            log.warning("delivery refused by Telegram: %s", e.message[:80])
            state = "lost:refused"
        except Exception as e:  # 429, 5xx, timeouts, network, Redis: try again later
            state = await self._retry_later(p, e)
        finally:
            renewer.cancel()
        if state == "retry":
            return
        with contextlib.suppress(Exception):
            await self._end(p, state)

    async def _renew(self, job_id: str) -> None:
        """Until cancelled, or until the lease is no longer ours (the attempt ended and
        released it): then a renewer that missed its cancel stops by itself."""
        while True:
            await asyncio.sleep(self.lease_s / 3)
            try:
                if not await self.book.renew(job_id, self.owner, self.lease_s):
                    return
            except Exception:  # Redis unavailable: try again at the next tick
                continue

    async def _retry_later(self, p: Pending, e: Exception) -> str:
        reason = _reason(e)
        metrics.DELIVERY_ATTEMPTS.labels(reason).inc()
        p.attempts += 1
        delay = min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2 ** (p.attempts - 1))
        delay *= random.uniform(0.8, 1.2)
        if isinstance(e, RetryAfter):
            wait = e.retry_after
            seconds = wait.total_seconds() if hasattr(wait, "total_seconds") else wait
            delay = max(delay, float(seconds))
        at = time.time() + delay
        if at > p.deadline:
            return f"lost:{reason}"
        log.info(
            "delivery will be retried",
            extra={"job": p.job_id, "reason": reason, "attempt": p.attempts, "in_s": delay},
        )
        with contextlib.suppress(Exception):  # else the lease expires; the entry is due anyway
            await self.book.reschedule(p.job_id, self.owner, at, p.attempts)
        return "retry"

    async def _end(self, p: Pending, state: str) -> None:
        kind, _, reason = state.partition(":")
        await self.book.close_entry(p.job_id, self.owner, kind)
        if kind == "lost":
            metrics.DELIVERIES_LOST.labels(reason).inc()
            log.warning(
                "a result could not be delivered",
                extra={"job": p.job_id, "reason": reason, "attempts": p.attempts + 1},
            )
        if kind in ("sent", "lost", "dropped"):
            await self.svc.store.pop_ticket(p.ticket)

    async def _send_all(self, p: Pending) -> str:
        """Send what is not yet confirmed; return the final state (raises to retry)."""
        route = await self.svc.store.get_ticket(p.ticket)
        if route is None:
            metrics.DELIVERIES.labels("dropped").inc()
            return "dropped"  # /cancel, /stop or /delete while it waited
        kind = outcome_kind(p.outcome)
        if "record" not in p.done:
            fails = await _record_once(self.svc, route, kind, p.outcome)
            if kind != "result":  # refused, failed or expired: not counted against the limit
                await self.svc.store.refund_rate(route["h"])
            await self.book.step_done(p.job_id, self.owner, "record", fails)
            p.done.add("record")
            p.fails = fails
        chat_id = self.svc.keyring.open(route["chat"])
        lang = route.get("lang") or "en"
        for step in result_messages(p.outcome, route, lang, kind, p.fails or 0):
            if step.name in p.done:
                continue
            try:
                await step.send(self.app.bot, chat_id)
            except Forbidden:
                raise
            except TelegramError as e:
                if not step.best_effort or (_transient(e) and not step.skip_on_transient):
                    raise
                log.info("skipped %s: %s", step.name, type(e).__name__)
            await self.book.step_done(p.job_id, self.owner, step.name, None)
            p.done.add(step.name)
        metrics.DELIVERIES.labels(kind).inc()
        return "sent"


def _transient(e: BaseException) -> bool:
    return not isinstance(e, BadRequest | Forbidden)


def _reason(e: BaseException) -> str:
    """A metric label and log word for why an attempt failed (never the message text)."""
    from telegram.error import NetworkError, TimedOut

    if isinstance(e, RetryAfter):
        return "flood"
    if isinstance(e, TimedOut):
        return "timeout"
    if isinstance(e, NetworkError):
        return "network"  # 5xx from the Bot API arrive as NetworkError too
    if isinstance(e, TelegramError):
        return "telegram"
    if isinstance(e, ConnectionError | OSError) or type(e).__module__.startswith("redis"):
        return "store"  # Redis unreachable: the book or the ticket could not be read
    return "internal"


async def run_delivery(application: BotApplication) -> None:
    """Deliver outcomes until cancelled (app.py starts this as a task)."""
    await Deliverer(application).run()


# ---------------------------------------------------------------------------------------------
# What is sent


def outcome_kind(outcome: JobOutcome) -> str:
    result = outcome.result
    if outcome.status != "done" or result is None:
        return outcome.status  # dead, expired
    if result.ok and result.hb_g_dl is not None:
        return "result"
    if result.referral == "retake" and result.quality is not None and result.error is None:
        return "retake"
    return "refused"


@dataclass
class Step:
    """One message of a delivery. `name` is stable (progress is stored by it).

    best_effort: a refusal (BadRequest) skips the step instead of failing the delivery.
    skip_on_transient: transient errors skip it too (a cosmetic edit never delays a result).
    """

    name: str
    send: Callable[[Bot, int], Awaitable[object]]
    best_effort: bool = False
    skip_on_transient: bool = False


def result_messages(
    outcome: JobOutcome, route: dict[str, Any], lang: str, kind: str, fails: int
) -> list[Step]:
    """The messages that make up one answer, in order, as named steps. What they are is
    `replies.outcome_replies` (one message for a result: the heatmap with the result as its
    caption); the mechanism above delivers any list of steps once."""
    steps = []
    quote = True  # the first message quotes the person's photo
    for reply in outcome_replies(kind, outcome, route, lang, fails):
        if reply.edit_status:
            name = "status"
        elif reply.photo is not None:
            name = "photo" if reply.optional else "result"
        else:
            name = "text"

        async def send(bot: Bot, chat_id: int, reply: Reply = reply, quote: bool = quote) -> object:
            assert isinstance(bot, ExtBot)  # the Application's bot (rate_limit_args)
            return await send_reply(bot, chat_id, route, reply, quote=quote)

        steps.append(
            Step(
                name,
                send,
                best_effort=reply.optional,
                skip_on_transient=reply.optional and reply.edit_status,
            )
        )
        quote = quote and reply.edit_status  # an edited status does not quote
    return steps


async def _record_once(
    svc: Services, route: dict[str, Any], kind: str, outcome: JobOutcome
) -> int | None:
    """Store the screening before answering (so /summary right after lists it); a person who
    deleted their data while the job ran gets no new record. Returns the retake counter."""
    h = route["h"]
    result = outcome.result
    if kind not in ("result", "retake") or result is None:
        return None
    profile = await svc.store.get_profile(h)
    if not profile:
        return None
    await _record(svc, h, route, result)
    fails = 0 if kind == "result" else int(profile.get("fails") or 0) + 1
    await svc.store.update_profile(h, fails=fails)
    return fails


async def _record(svc: Services, h: str, route: dict, result: ScreeningResult) -> None:
    interval = result.interval_95 or result.interval_80
    low, high = sorted(interval) if interval else (None, None)
    level = (95 if result.interval_95 else 80) if interval else None
    await svc.store.add_record(
        h,
        {
            "time": now(),
            "label": route.get("label") or "",
            "group": result.group,
            "hb": result.hb_g_dl,
            "low": low,
            "high": high,
            "level": level,
            "validated": result.validated_for_group,
            "danger": result.danger_signs,
            "category": result.category,
            "referral": result.referral,
        },
    )
    day = datetime.now(timezone.utc).date().isoformat()
    await svc.store.count_stat(day, route.get("campaign") or "", result.referral)
