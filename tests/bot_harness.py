"""Helpers for the bot's end-to-end tests: settings against the stand-in, a running bot, a real
worker on the Redis queue, synthetic eyelid photos, and a user who taps by callback data."""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
from PIL import Image

from hbscreen.bot.app import build_application, serve
from hbscreen.bot.storage import KeyRing, make_store
from hbscreen.compose import queue_config, queue_sealer, wire_submitter
from hbscreen.settings import Settings
from hbscreen.standin import BotAPIStandIn, ChatMessage, SimulatedUser, serve_polling
from tests.redis_server import QUEUE_KEY
from tests.synthetic import synthetic_jpeg

HASH_KEY = "test-hash-key-not-a-secret"


def bot_settings(standin: BotAPIStandIn, redis_url: str | None, **overrides) -> Settings:
    values = {
        "telegram_bot_token": standin.token,
        "telegram_api_base_url": standin.base_url,
        "telegram_file_base_url": standin.base_file_url,
        "hash_key": HASH_KEY,
        "queue_key": QUEUE_KEY,
        "redis_url": redis_url,
        "admin_ids": [900],
        "status_update_s": 30.0,
        "reminder_check_s": 0.2,
        "job_deadline_s": 60.0,
        "models_dir": None,
    }
    values.update(overrides)
    return Settings(**values)


@contextlib.asynccontextmanager
async def running_bot(settings: Settings) -> AsyncIterator[dict]:
    """The bot as `hbscreen bot` builds it (queue as the "bot" submitter, store from
    REDIS_URL), polling the stand-in; yields {"app", "queue", "store"}."""
    wiring = wire_submitter(settings, submitter="bot", start_workers=False)
    queue = wiring.queue
    sealer = KeyRing(settings.hash_key.get_secret_value().encode()).records  # as the bot's own
    store = make_store(settings.redis_url, prefix=f"{settings.redis_prefix}:bot:", sealer=sealer)
    app = build_application(settings, queue, store=store)
    try:
        async with serve_polling(app, poll_timeout=1.0):
            yield {"app": app, "queue": queue, "store": store}
    finally:
        await wiring.close()
        await store.close()


@contextlib.asynccontextmanager
async def real_worker(settings: Settings, models_dir: Path | None) -> AsyncIterator[None]:
    """A worker with the real pipeline (ONNX models from models_dir) on the Redis queue, in
    this event loop (the models run in its thread pool)."""
    from hbscreen.inference.queue.redis_streams import RedisJobSource
    from hbscreen.inference.worker import pipeline_process, serve

    if os.environ.get("HBSCREEN_TEST_FAKE_PIPELINE"):  # bot development only, never in CI
        process = _fake_process
    else:
        process = await asyncio.get_running_loop().run_in_executor(
            None, pipeline_process, models_dir, 1
        )
    assert settings.redis_url
    queue = RedisJobSource(
        settings.redis_url, queue_config(settings), sealer=queue_sealer(settings)
    )
    stop = asyncio.Event()
    task = asyncio.create_task(serve(queue, process, stop=stop, consumer="test-worker", grace_s=2))
    try:
        yield
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 10)
        await queue.close()


def _fake_process(image: bytes, job):
    from tests.redis_server import fake_result

    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 40, 40)).save(buf, "JPEG")
    result = fake_result(job)
    result.interval_80, result.interval_95, result.category = (10.5, 12.5), (9.5, 13.5), "none"
    result.danger_signs = job.danger_signs
    result.validated_for_group = job.group in ("child-6-23m", "child-24-59m")
    result.referral = "urgent" if job.danger_signs else "routine"
    return result, buf.getvalue()


synthetic_photo = synthetic_jpeg  # bot tests send bytes


def buttons_of(message: ChatMessage) -> list[str]:
    return [b.get("callback_data", "") for b in message.buttons]


async def tap(user: SimulatedUser, data: str, timeout: float = 15.0) -> ChatMessage:
    """Wait for the next message offering the button with this callback data, and tap it."""
    msg = await user.wait_for(lambda m: data in buttons_of(m), timeout, f"button {data}")
    await user.tap_button(data, message=msg)
    return msg


async def press(user: SimulatedUser, data: str) -> None:
    """Tap the button with this callback data on the newest message that has it, now."""
    await user.tap_button(data)


async def agree(user: SimulatedUser, lang: str) -> None:
    """The first card: consent with the languages. Tap the language unless the card is
    already in it (its button is marked ✓), then "Yes, I agree"."""
    card = await user.wait_for(lambda m: "consent:yes" in buttons_of(m), 15, "the consent card")
    button = next(b for b in card.buttons if b.get("callback_data") == f"lang:{lang}")
    if not button["text"].startswith("✓"):
        await user.tap_button(f"lang:{lang}", message=card)
        card = await user.wait_for(
            lambda m: m.message_id == card.message_id and f"✓ {button['text']}" in m.button_texts,
            15,
            f"the consent card in {lang}",
        )
    await user.tap_button("consent:yes", message=card)


GROUP_TAPS = {
    "pregnant-1": ["grp:pregnant", "grp:pregnant-1"],
    "pregnant-2": ["grp:pregnant", "grp:pregnant-2"],
    "pregnant-3": ["grp:pregnant", "grp:pregnant-3"],
    "child-6-23m": ["grp:child", "grp:child-6-23m"],
    "child-24-59m": ["grp:child", "grp:child-24-59m"],
    "child-5-11y": ["grp:child", "grp:child-5-11y"],
    "child-12-14y": ["grp:child", "grp:child-12-14y"],
    "woman": ["grp:woman"],
    "man": ["grp:man"],
}


async def choose_group(
    user: SimulatedUser, group: str, *, danger: bool = False, flat: bool = False
) -> ChatMessage:
    """Answer the group and danger questions on the card; returns the photo guide (sent the
    first time only: call this for a person's first screening). `flat`: the health worker's
    one-tap group keyboard."""
    for data in [f"grp:{group}"] if flat else GROUP_TAPS[group]:
        await tap(user, data)
    await tap(user, "danger:yes" if danger else "danger:no")
    if danger:  # the urgent referral comes first; the photo only if still wanted
        await tap(user, "danger:photo")
    return await user.wait_for(lambda m: m.kind == "photo" or "1." in m.content, 15, "the guide")


def shown(user: SimulatedUser) -> list[str]:
    """Everything the bot showed in this chat, in order: each message, and each edit of a
    card, as it read at the time (a card edited in place keeps only its last text)."""
    return [
        e.snapshot.content
        for e in user.events
        if e.kind in ("message", "edit") and e.snapshot is not None and e.snapshot.from_bot
    ]


async def self_screening_until_photo(
    user: SimulatedUser,
    lang: str,
    group: str,
    *,
    campaign: str | None = None,
    who: str = "me",
    danger: bool = False,
) -> ChatMessage:
    """/start -> language -> consent -> who -> group -> danger -> the photo guide."""
    await user.send_command("/start", campaign)
    await agree(user, lang)
    await tap(user, f"who:{who}")  # for someone else, choosing the group says they agreed
    return await choose_group(user, group, danger=danger)


@contextlib.asynccontextmanager
async def served(settings: Settings) -> AsyncIterator[tuple[aiohttp.ClientSession, str]]:
    """`hbscreen bot` as served (webhook, /healthz, /readyz) until the block ends; yields an HTTP
    client and the base URL once /readyz answers 200."""
    stop = asyncio.Event()
    task = asyncio.create_task(serve(settings, stop))
    base = f"http://127.0.0.1:{settings.listen_port}"
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(200):
                if task.done():
                    task.result()
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.get(base + "/readyz") as resp:
                        if resp.status == 200:
                            break
                await asyncio.sleep(0.05)
            yield http, base
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
