"""At DEBUG the bot logs no token, no name and no typed text (issue 12 part 4).

The whole bot at DEBUG (python-telegram-bot, httpx, httpcore, aiohttp, redis all at DEBUG)
against the stand-in, a health worker's session with a typed name, a label, a photo and its
result; every line written by the root handler is checked. The scrubbing is the Filter that
`hbscreen bot` installs on the root handlers (bot/logscrub.py).
"""

from __future__ import annotations

import asyncio
import io
import logging

import pytest

from hbscreen.bot import logscrub
from hbscreen.bot.app import build_application
from hbscreen.bot.storage import KeyRing, make_store
from hbscreen.compose import wire_submitter
from hbscreen.standin import BotAPIStandIn, serve_polling
from tests.bot_harness import _fake_process, bot_settings, synthetic_photo, tap

SECRETS = ("Zawadi", "Wanjiku", "zawadi_w", "Amina", "Mensah", "Q-7731")


@pytest.fixture
def debug_log() -> io.StringIO:
    root = logging.getLogger()
    buf = io.StringIO()
    handler = logging.StreamHandler(buf)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
    old_level, old_handlers = root.level, list(root.handlers)
    root.handlers = [handler]
    root.setLevel(logging.DEBUG)
    for name in ("telegram", "httpx", "httpcore", "aiohttp", "redis", "hbscreen", "asyncio"):
        logging.getLogger(name).setLevel(logging.DEBUG)
    yield buf
    root.handlers, root.level = old_handlers, old_level
    for name in ("telegram", "httpx", "httpcore", "aiohttp", "redis", "hbscreen", "asyncio"):
        logging.getLogger(name).setLevel(logging.NOTSET)


@pytest.mark.redis
async def test_debug_logs_keep_token_names_and_typed_text_out(
    standin: BotAPIStandIn, redis_url: str, debug_log: io.StringIO
) -> None:
    settings = bot_settings(standin, redis_url, log_level="DEBUG")
    logscrub.install(logscrub.secrets_of(settings))  # what run_bot does after basicConfig
    wiring = wire_submitter(settings, submitter="bot", start_workers=False)
    sealer = KeyRing(settings.hash_key.get_secret_value().encode()).records
    store = make_store(settings.redis_url, prefix=f"{settings.redis_prefix}:bot:", sealer=sealer)
    app = build_application(settings, wiring.queue, store=store)
    from hbscreen.compose import queue_config, queue_sealer
    from hbscreen.inference.queue.redis_streams import RedisJobSource
    from hbscreen.inference.worker import serve

    source = RedisJobSource(redis_url, queue_config(settings), sealer=queue_sealer(settings))
    stop = asyncio.Event()
    worker = asyncio.create_task(serve(source, _fake_process, stop=stop, block_s=0.1))
    try:
        async with serve_polling(app, poll_timeout=1.0):
            user = standin.user(
                8001, "Zawadi", last_name="Wanjiku", username="zawadi_w", language_code="sw"
            )
            await user.send_command("/worker")
            await tap(user, "lang:en")
            await tap(user, "consent:yes")
            await user.wait_for_text("P-12")
            await user.send_text("Amina Mensah")  # a name typed as a label
            await user.wait_for_text("looks like a name")
            await user.send_text("Q-7731")
            await tap(user, "grp:woman")  # one flat group keyboard in worker mode
            await tap(user, "danger:no")
            await user.wait_idle(0.3)
            await user.send_photo(synthetic_photo())
            result = await user.wait_for(lambda m: "Q-7731" in m.content, 30, "the result")
            assert result
            await user.wait_idle(0.5)
    finally:
        stop.set()
        await asyncio.wait_for(worker, 10)
        await source.close()
        await wiring.close()
        await store.close()
    text = debug_log.getvalue()
    assert len(text.splitlines()) > 100  # DEBUG really was on (PTB, httpx, redis...)
    assert "getUpdates" in text  # third-party lines kept their shape
    leaks = [s for s in (*SECRETS, standin.token, str(user.chat_id)) if s in text]
    assert not leaks, [line for line in text.splitlines() if any(s in line for s in leaks)][:5]


def test_filter_masks_own_lines_and_redacts_third_party_arguments() -> None:
    f = logscrub.ScrubFilter(["123456:SECRET-token-value-long-enough"])
    rec = logging.LogRecord(
        "telegram.ext.ExtBot",
        logging.DEBUG,
        __file__,
        1,
        "Calling Bot API endpoint `%s` with parameters `%s`",
        ("sendMessage", {"chat_id": 42, "text": "Amina Mensah"}),
        None,
    )
    assert f.filter(rec)
    assert rec.getMessage() == "Calling Bot API endpoint `sendMessage` with parameters `<redacted>`"
    own = logging.LogRecord(
        "hbscreen.bot.delivery",
        logging.ERROR,
        __file__,
        1,
        "failed: %s",
        ("https://api.telegram.org/bot123456:SECRET-token-value-long-enough/sendMessage",),
        None,
    )
    f.filter(own)
    assert "SECRET" not in own.getMessage() and "failed: https://api.telegram.org/bot" in (
        own.getMessage()
    )
