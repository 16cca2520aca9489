"""The custom python-telegram-bot context: handlers and jobs reach the services as
`context.services` (typed) instead of a string key in bot_data."""

from __future__ import annotations

import asyncio

import pytest
from telegram import Update
from telegram.ext import CommandHandler

from hbscreen.bot.app import build_application
from hbscreen.bot.services import BotContext, BotData, Services
from hbscreen.bot.storage import make_store
from hbscreen.inference.queue.memory import MemoryQueue
from hbscreen.standin import BotAPIStandIn, serve_polling
from tests.bot_harness import bot_settings


def test_bot_data_without_services_says_how_to_get_them() -> None:
    with pytest.raises(RuntimeError, match="build_application"):
        _ = BotData().services


async def test_handlers_and_jobs_get_the_typed_context(standin: BotAPIStandIn) -> None:
    settings = bot_settings(standin, None)
    store = make_store(None)
    application = build_application(settings, MemoryQueue(), store=store)
    assert isinstance(application.bot_data, BotData)
    seen: dict[str, object] = {}
    job_ran = asyncio.Event()

    async def probe(update: Update, context: BotContext) -> None:
        seen["handler"] = context.services

        async def job(context: BotContext) -> None:
            seen["job"] = context.services
            job_ran.set()

        assert context.job_queue is not None
        context.job_queue.run_once(job, 0)  # type: ignore[arg-type]

    application.add_handler(CommandHandler("probe", probe), group=-5)
    async with serve_polling(application, poll_timeout=1):
        await standin.user(77).send_command("/probe")
        await asyncio.wait_for(job_ran.wait(), 10)
    services = application.bot_data.services
    assert isinstance(services, Services) and services.store is store
    assert seen == {"handler": services, "job": services}
