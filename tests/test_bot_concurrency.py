"""Telegram's limits without head-of-line blocking, end to end through the stand-in with its
flood control on: one chat in 429 retries never delays another; one chat's updates stay in
order; the bot's own pacing keeps it under the stand-in's limits. Plus the start-up errors:
one line and exit status 2, not a traceback."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time

import pytest

from hbscreen.standin import BotAPIStandIn, FloodControl
from tests.bot_harness import HASH_KEY, bot_settings, buttons_of, running_bot
from tests.redis_server import free_port

pytestmark = [pytest.mark.redis, pytest.mark.slow]


async def _step(user, data: str, expect: str, timeout: float = 30.0) -> float:
    """Tap `data` on the newest card that offers it; seconds until the card offers `expect`."""
    card = next(m for m in reversed(user.messages) if data in buttons_of(m))
    t0 = time.monotonic()
    await user.tap_button(data, message=card)
    await user.wait_for(
        lambda m: m.message_id == card.message_id and expect in buttons_of(m), timeout, expect
    )
    return time.monotonic() - t0


async def test_a_chat_in_429_retries_does_not_delay_another(redis_url):
    flood = FloodControl()
    async with BotAPIStandIn(flood_control=flood) as standin:
        settings = bot_settings(standin, redis_url)
        async with running_bot(settings):
            a = standin.user(401, language_code="en")
            b = standin.user(402, language_code="en")
            for user in (a, b):
                await user.send_command("/start")
                await user.wait_for(lambda m: "consent:yes" in buttons_of(m), 15, "the card")
            # Telegram throttles A's chat: its next three sends get 429 retry_after 3 s.
            flood.flood_chat(a.chat_id, retry_after=3, count=3)
            t0 = time.monotonic()
            a_done = asyncio.create_task(_step(a, "consent:yes", "who:me", timeout=40))
            await asyncio.sleep(0.3)  # A's edit is now waiting out its first retry_after
            latencies = []
            for data, expect in [
                ("consent:yes", "who:me"),
                ("who:me", "grp:woman"),
                ("grp:woman", "danger:no"),
            ]:
                latencies.append(await _step(b, data, expect))
                await asyncio.sleep(0.5)  # a person reads the card before tapping
            assert not a_done.done(), "A's chat should still be in its retries"
            b_time = time.monotonic() - t0
            a_latency = await a_done
            steps = ", ".join(f"{x:.2f}" for x in latencies)
            print(f"B's steps while A waits out 429s: {steps} s; A's step {a_latency:.1f} s")
            assert max(latencies) < 1.0, latencies
            assert b_time < a_latency
            assert a_latency >= 9.0  # three retry_after of 3 s, then served (max_retries=3)
            assert flood.refused_chat == 3 and flood.refused_overall == 0


async def test_one_chats_updates_stay_in_order(redis_url):
    async with BotAPIStandIn(flood_control=FloodControl()) as standin:
        settings = bot_settings(standin, redis_url)
        async with running_bot(settings):
            user = standin.user(403, language_code="en")
            await user.send_command("/start")
            card = await user.wait_for(lambda m: "consent:yes" in buttons_of(m), 15, "the card")
            # Three taps at once, as a person tapping fast (before the card changed): handled
            # one after the other, in order, so the last answer wins as it should.
            for data in ("consent:yes", "who:me", "grp:man"):
                await user._tap_inline(card, {"text": data, "callback_data": data})
            await user.wait_for(lambda m: "danger:no" in buttons_of(m), 15, "the danger card")
            await user.wait_idle(0.5)
            assert not standin.unanswered_queries


async def test_the_bots_pacing_keeps_under_the_limits(redis_url):
    """Twenty people send /help within a second, each twice: 40 messages, more than one a
    second per chat and more than Telegram's burst; all are answered, and the bot's own
    limiter (not the stand-in's 429s) did the pacing."""
    flood = FloodControl()
    async with BotAPIStandIn(flood_control=flood) as standin:
        settings = bot_settings(standin, redis_url)
        async with running_bot(settings):
            users = [standin.user(500 + i, language_code="en") for i in range(20)]
            for _ in range(2):
                for user in users:
                    await user.send_command("/help")
            for user in users:
                await user.wait_for(lambda m: "/worker" in m.content, 20, "help")
                await user.wait_for(lambda m: "/worker" in m.content, 20, "help again")
            assert flood.refused_overall == 0


def _run_bot(env_overrides: dict[str, str], timeout: float = 60.0) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HBSCREEN_", "TELEGRAM_"))}
    env.pop("REDIS_URL", None)
    env.update({"HBSCREEN_HASH_KEY": HASH_KEY, "HBSCREEN_LISTEN_PORT": str(free_port())})
    env.update(env_overrides)
    return subprocess.run(
        [sys.executable, "-m", "hbscreen.cli", "bot"],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _one_clear_line(proc: subprocess.CompletedProcess, *words: str) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if line.startswith("hbscreen bot:")]
    assert len(lines) == 1, proc.stderr[-2000:]
    for word in words:
        assert word in lines[0], lines[0]


async def test_start_up_with_a_wrong_token_says_so(tmp_path):
    async with BotAPIStandIn() as standin:
        proc = await asyncio.to_thread(
            _run_bot,
            {
                "TELEGRAM_BOT_TOKEN": "123:wrong-token",
                "TELEGRAM_API_BASE_URL": standin.base_url,
                "TELEGRAM_FILE_BASE_URL": standin.base_file_url,
            },
        )
    _one_clear_line(proc, "TELEGRAM_BOT_TOKEN", "wrong")
    assert "wrong-token" not in proc.stderr  # the token is never printed


async def test_start_up_with_an_unreachable_bot_api_says_so():
    port = free_port()  # nothing listens there
    proc = await asyncio.to_thread(
        _run_bot,
        {
            "TELEGRAM_BOT_TOKEN": "123:some-token",
            "TELEGRAM_API_BASE_URL": f"http://127.0.0.1:{port}/bot",
            "TELEGRAM_FILE_BASE_URL": f"http://127.0.0.1:{port}/file/bot",
        },
    )
    _one_clear_line(proc, "cannot reach the Bot API", f"127.0.0.1:{port}")


@pytest.mark.parametrize("url_kind", ["closed-port", "malformed"])
async def test_start_up_with_a_bad_redis_url_says_so(url_kind):
    async with BotAPIStandIn() as standin:
        url = f"redis://127.0.0.1:{free_port()}/0" if url_kind == "closed-port" else "redis//oops"
        proc = await asyncio.to_thread(
            _run_bot,
            {
                "TELEGRAM_BOT_TOKEN": standin.token,
                "TELEGRAM_API_BASE_URL": standin.base_url,
                "TELEGRAM_FILE_BASE_URL": standin.base_file_url,
                "REDIS_URL": url,
            },
        )
    _one_clear_line(proc, "REDIS_URL")
