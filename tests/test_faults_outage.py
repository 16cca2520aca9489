"""Outages and odd inputs from outside (issue 12 parts 2, 4, 5): Redis down during a
submission, a replayed webhook update, the 16-bit PNG through a worker process.

Real redis-server, the real bot (`serve`, as `hbscreen bot` runs it: polling or webhook, with
/readyz), workers as processes. Rows as in test_faults_delivery.py (`pytest -s`).
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import aiohttp
import pytest

from hbscreen.standin import BotAPIStandIn
from tests.bot_harness import (
    bot_settings,
    running_bot,
    self_screening_until_photo,
    served,
    synthetic_photo,
)
from tests.redis_server import RedisServer, free_port
from tests.test_faults_delivery import FAST, SENT_AT, mark, row, settle, worker_process

pytestmark = pytest.mark.redis


# ---------------------------------------------------------------------------------------------
# Redis down during a submission; a replayed update


async def _ready(http: aiohttp.ClientSession, base: str) -> int:
    async with http.get(base + "/readyz") as resp:
        return resp.status


async def test_redis_down_during_a_submission_is_answered_busy_then_recovers(
    standin: BotAPIStandIn, redis_server: RedisServer, tmp_path: Path
) -> None:
    port = free_port()
    settings = bot_settings(
        standin, redis_server.url, listen_host="127.0.0.1", listen_port=port, **FAST
    )
    async with served(settings) as (http, base):
        user = standin.user(5000, first_name="Person5000", language_code="fr-CA")
        await self_screening_until_photo(user, "fr", "woman")
        with worker_process(redis_server.url, tmp_path):
            await user.wait_idle(1.0)  # the last tap's handler has saved the conversation
            redis_server.stop(kill=True)
            t0 = time.monotonic()
            mark(user, await user.send_photo(synthetic_photo()))
            busy = await user.wait_for_text("dans quelques minutes", 15)  # French: from memory
            answered_s = time.monotonic() - t0
            assert await _ready(http, base) == 503
            redis_server.start()
            until = time.monotonic() + 15
            while await _ready(http, base) != 200 and time.monotonic() < until:
                await asyncio.sleep(0.2)
            assert await _ready(http, base) == 200
            await user.send_photo(synthetic_photo())  # first photo after recovery: no stale pool
            await settle([user], timeout=20)
    r = row("Redis down during a submission (then a new photo)", [user])
    r["busy_answered_s"] = round(answered_s, 2)
    print("FAULT-ROW-DETAIL " + json.dumps(r))
    assert busy.content and answered_s < 5
    busy_msgs = [m for m in user.messages if "dans quelques minutes" in m.content]
    assert len(busy_msgs) == 1, user.transcript()  # one apology, not one per failing handler
    assert r["delivered"] == 1 and r["duplicated"] == 0


async def test_replayed_webhook_update_is_ignored(
    standin: BotAPIStandIn, redis_server: RedisServer, tmp_path: Path
) -> None:
    port = free_port()
    secret = "replay-secret-for-tests"
    settings = bot_settings(
        standin,
        redis_server.url,
        webhook_url=f"http://127.0.0.1:{port}/tg/hook",
        webhook_secret=secret,
        listen_host="127.0.0.1",
        listen_port=port,
        **FAST,
    )
    async with served(settings) as (http, base):
        user = standin.user(6000, first_name="Person6000")
        await self_screening_until_photo(user, "en", "woman")
        with worker_process(redis_server.url, tmp_path):
            mark(user, await user.send_photo(synthetic_photo()))
            await settle([user], timeout=20, quiet=0.5)
            photo_update = next(
                d for d in reversed(standin.webhook_deliveries) if "photo" in d.get("message", {})
            )
            for _ in range(2):  # Telegram retries a webhook call it thinks failed
                async with http.post(
                    base + "/tg/hook",
                    json=photo_update,
                    headers={"X-Telegram-Bot-Api-Secret-Token": secret},
                ) as resp:
                    assert resp.status == 200
            await settle([user], timeout=3, quiet=2.0)
    r = row("replayed update (same update_id, twice)", [user])
    assert r["delivered"] == 1 and r["duplicated"] == 0
    after = [m for m in user.messages if m.message_id > SENT_AT[user.chat_id]]
    assert len(after) == 1, user.transcript()  # the result, once; no second "received"


# ---------------------------------------------------------------------------------------------
# The 16-bit PNG through the whole system


def _vm_hwm_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


async def test_16bit_png_is_answered_and_the_worker_stays_under_400_mb(
    standin: BotAPIStandIn, redis_server: RedisServer, tmp_path: Path
) -> None:
    """The issue's 381 KB 16-bit RGBA 7000x7000 PNG, sent as a file, through a worker process
    with the real pipeline: one clear answer, and the worker's peak RSS stays under 400 MB
    (it was 1.44 GB: three OOM kills, then a reply that invited resending it)."""
    from tests import malformed_files as mf

    data = mf.flat_png(7000, 7000, bit_depth=16, colour="RGBA")
    settings = bot_settings(standin, redis_server.url, job_deadline_s=60.0)
    async with running_bot(settings):
        user = standin.user(7000, first_name="Person7000")
        await self_screening_until_photo(user, "en", "woman")
        with worker_process(redis_server.url, tmp_path, process=None) as worker:
            # sent as a file; octet-stream so that the simulated client makes no thumbnail
            doc = await user.send_document(data, "eye.png", "application/octet-stream")
            answer = await user.wait_for(
                lambda m: m.message_id > doc.message_id and "received" not in m.content,
                90,
                "an answer to the PNG",
            )
            await asyncio.sleep(1.0)
            peak = _vm_hwm_mb(worker.pid)
    detail = {"fault": "16-bit RGBA PNG", "worker_peak_mb": peak, "answer": answer.content[:80]}
    print("FAULT-ROW-DETAIL " + json.dumps(detail))
    assert peak <= 400
    answers = [m for m in user.messages if m.message_id > doc.message_id]
    assert len(answers) == 1, user.transcript()  # one clear answer, not three crashes
