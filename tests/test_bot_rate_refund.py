"""The hourly photo limit counts screened photos only: a photo the worker refused (corrupt, not
an image), one that met a full queue, or one that could not be downloaded is taken back, so
a person who struggles with the camera is never locked out by her own failed attempts."""

from __future__ import annotations

import pytest

from hbscreen.bot.i18n import t
from hbscreen.bot.messages import ERROR_TEXT
from tests.bot_harness import (
    bot_settings,
    buttons_of,
    real_worker,
    running_bot,
    self_screening_until_photo,
    synthetic_photo,
)

pytestmark = [pytest.mark.redis, pytest.mark.slow]

RESULT_WAIT = 60.0


def _results(user) -> int:
    return len([m for m in user.messages if "after:done" in buttons_of(m)])


async def test_refused_photos_do_not_count_against_the_limit(standin, redis_url, models_dir, photo):
    settings = bot_settings(standin, redis_url, rate_limit_per_hour=2)
    async with running_bot(settings) as bot, real_worker(settings, models_dir):
        user = standin.user(601, language_code="en")
        await self_screening_until_photo(user, "en", "woman")
        corrupt = synthetic_photo()[:2000]
        refused = {t("en", ERROR_TEXT["corrupt"]), t("en", ERROR_TEXT["not_an_image"])}
        for n in range(3):  # more refused photos than the limit allows
            sent = await user.send_document(corrupt, f"broken{n}.jpg", "image/jpeg")
            await user.wait_for(
                lambda m, i=sent.message_id: m.reply_to == i and m.content in refused,
                RESULT_WAIT,
                "the refusal",
            )
        for n in range(2):  # the limit still allows two screened photos
            await user.send_photo(photo)
            await user.wait_for(lambda _m, n=n: _results(user) > n, RESULT_WAIT, "a result")
        third = await user.send_photo(photo)  # and only two
        limited = await user.wait_for(lambda m: m.reply_to == third.message_id, 15, "the limit")
        assert limited.content.startswith("You sent many photos in the last hour.")
        h = bot["app"].bot_data.services.keyring.person(user.chat_id)
        assert not await bot["store"].hit_rate(h, 2)  # two in the window, no more


async def test_a_refused_photo_gives_back_only_its_own_hit(standin, redis_url, models_dir, photo):
    """A refusal after a screened photo takes back one hit, not the screened photo's too."""
    settings = bot_settings(standin, redis_url, rate_limit_per_hour=2)
    async with running_bot(settings) as bot, real_worker(settings, models_dir):
        user = standin.user(603, language_code="en")
        await self_screening_until_photo(user, "en", "woman")
        await user.send_photo(photo)
        await user.wait_for(lambda _m: _results(user) > 0, RESULT_WAIT, "a result")
        sent = await user.send_document(synthetic_photo()[:2000], "broken.jpg", "image/jpeg")
        refused = {t("en", ERROR_TEXT["corrupt"]), t("en", ERROR_TEXT["not_an_image"])}
        await user.wait_for(
            lambda m: m.reply_to == sent.message_id and m.content in refused,
            RESULT_WAIT,
            "the refusal",
        )
        await user.send_photo(photo)
        await user.wait_for(lambda _m: _results(user) > 1, RESULT_WAIT, "a second result")
        third = await user.send_photo(photo)
        limited = await user.wait_for(lambda m: m.reply_to == third.message_id, 15, "the limit")
        assert limited.content.startswith("You sent many photos in the last hour.")
        h = bot["app"].bot_data.services.keyring.person(user.chat_id)
        assert not await bot["store"].hit_rate(h, 2)


async def test_a_busy_queue_does_not_count_against_the_limit(standin, redis_url, photo):
    settings = bot_settings(standin, redis_url, queue_max_depth=1, rate_limit_per_hour=2)
    async with running_bot(settings) as bot:  # no worker: the first job fills the queue
        user = standin.user(602, language_code="en")
        await self_screening_until_photo(user, "en", "man")
        await user.send_photo(photo)
        busy = t("en", "Many people are using the service now. Please try again in a few minutes.")
        for _ in range(3):
            sent = await user.send_photo(photo)
            await user.wait_for(
                lambda m, i=sent.message_id: m.reply_to == i and m.content == busy, 15, "busy"
            )
        h = bot["app"].bot_data.services.keyring.person(user.chat_id)
        assert await bot["store"].hit_rate(h, 2)  # only the queued photo counted
