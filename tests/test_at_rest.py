"""No plaintext health data at rest: a real redis-server with AOF on (fsync always, as the
strictest case), the real bot through the Bot API stand-in, a real worker with the shipped
models. After a screening, and after /delete, Redis's persistence files (the AOF folder and an
RDB file if any) are scanned for the photo's bytes and the heatmap's bytes."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from hbscreen.bot.i18n import t
from hbscreen.standin.state import photo_variants
from tests.bot_harness import (
    bot_settings,
    buttons_of,
    real_worker,
    running_bot,
    self_screening_until_photo,
    tap,
)
from tests.redis_server import RedisServer

pytestmark = [pytest.mark.redis, pytest.mark.slow]


def disk_files(server: RedisServer) -> list[Path]:
    """Everything Redis wrote: the multi-part AOF (base, incr, manifest) and any RDB."""
    files = [p for p in server.dir.rglob("*") if p.is_file() and p.name != "redis.log"]
    assert any("appendonly" in p.name for p in files), files
    return files


def windows(data: bytes, n: int = 12, size: int = 48) -> list[bytes]:
    """Slices spread over the body of a file: any one of them found on disk means a leak."""
    step = max(1, (len(data) - size) // (n + 1))
    return [data[i : i + size] for i in range(step, len(data) - size, step)][:n]


def leaks(server: RedisServer, needles: dict[str, list[bytes]]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for f in disk_files(server):
        blob = f.read_bytes()
        for what, pieces in needles.items():
            if any(p in blob for p in pieces):
                found.setdefault(what, []).append(f.name)
    return found


async def strictest(r: aioredis.Redis) -> None:
    """Rewritten AOFs start with an RDB snapshot, whose LZF compression breaks long byte runs
    into 32-byte pieces: a naive scan could miss a plaintext photo there. Turn it off so the
    scan finds any byte run that is present (production keeps compression on; that only
    makes recovery slightly harder, not impossible)."""
    await r.config_set("rdbcompression", "no")


async def rewrite_done(r: aioredis.Redis, before: int, timeout: float = 20.0) -> None:
    """Wait until an AOF rewrite after `before` (a count of rewrites) has finished."""
    loop = asyncio.get_running_loop()
    until = loop.time() + timeout
    while loop.time() < until:
        info = await r.info("persistence")
        done = int(info.get("aof_rewrites", 0))
        busy = int(info["aof_rewrite_in_progress"]) or int(info.get("aof_rewrite_scheduled", 0))
        if done > before and not busy:
            return
        await asyncio.sleep(0.1)
    raise AssertionError("no AOF rewrite finished in time")


async def test_the_scan_finds_plaintext_and_a_rewrite_removes_deleted_data(
    redis_server: RedisServer, photo: bytes
) -> None:
    """The control: the scan is sensitive (a photo stored plainly is found), and deleted data
    stays in the AOF until it is rewritten — the reason the bot rewrites it after /delete."""
    r = aioredis.Redis.from_url(redis_server.url)
    try:
        await r.set("control", photo)
        assert leaks(redis_server, {"photo": windows(photo)}) == {
            "photo": ["appendonly.aof.1.incr.aof"]
        }
        await r.delete("control")
        assert "photo" in leaks(redis_server, {"photo": windows(photo)})  # DEL is not enough
        before = int((await r.info("persistence")).get("aof_rewrites", 0))
        await r.bgrewriteaof()
        await rewrite_done(r, before)
        assert leaks(redis_server, {"photo": windows(photo)}) == {}
    finally:
        await r.aclose()


async def test_no_photo_or_heatmap_bytes_on_disk_after_a_job_and_after_delete(
    standin, redis_server: RedisServer, photo: bytes
) -> None:
    settings = bot_settings(standin, redis_server.url)
    r = aioredis.Redis.from_url(redis_server.url)
    await strictest(r)
    try:
        async with running_bot(settings) as bot, real_worker(settings, None):
            user = standin.user(424242, "Neema", language_code="en")
            await self_screening_until_photo(user, "en", "pregnant-2")
            await user.send_photo(photo)
            # One message: the heatmap with the result as its caption and the buttons.
            result = await user.wait_for(lambda m: "after:done" in buttons_of(m), 60)
            heatmap = result
            assert heatmap.data and "g/dL" in result.content
            await user.wait_idle(0.5)

            h = bot["app"].bot_data.services.keyring.person(user.chat_id)
            assert len(await bot["store"].records(h)) == 1
            images = [photo] + [v for v, _, _ in photo_variants(photo)]
            needles = {
                "photo": [w for img in images for w in windows(img)],
                "heatmap": windows(heatmap.data),
                "record": [b'"hb_g_dl"', b"pregnant-2"],
            }
            # After the job: the photo, the heatmap and the result passed through Redis (and
            # its AOF) only sealed with AES-GCM; the stored record is sealed too.
            assert leaks(redis_server, needles) == {}
            assert leaks(redis_server, {"pseudonym": [h.encode()]}), "the scan sees key names"

            before = int((await r.info("persistence")).get("aof_rewrites", 0))
            await user.send_command("/delete")
            await tap(user, "del:yes")
            bye = "Everything about you is deleted. Send /start if you want to use the bot again."
            await user.wait_for_text(t("en", bye))
            # /delete asked for an AOF rewrite: afterwards not even the sealed records or the
            # pseudonym that keyed them are on disk.
            await rewrite_done(r, before)
            assert leaks(redis_server, {**needles, "pseudonym": [h.encode()]}) == {}
    finally:
        await r.aclose()
