"""The bot under stress and misuse, end to end through the stand-in with a real worker, real
models and a real Redis: wrong inputs, a 25 MB document, a corrupt JPEG, 30 photos in 10
seconds, /cancel while processing, a restart mid-conversation, /delete, group chats, logs."""

from __future__ import annotations

import asyncio
import logging

import pytest
import redis.asyncio as aioredis

from hbscreen.bot.i18n import t
from hbscreen.bot.messages import ERROR_TEXT
from tests.bot_harness import (
    HASH_KEY,
    agree,
    bot_settings,
    buttons_of,
    press,
    real_worker,
    running_bot,
    self_screening_until_photo,
    synthetic_photo,
    tap,
)

pytestmark = [pytest.mark.redis, pytest.mark.slow]

RESULT_WAIT = 60.0


def result_message(m) -> bool:
    return "after:done" in buttons_of(m)


async def _until_queued(queue, depth: int = 1, timeout: float = 15.0) -> None:
    """Until the bot has queued the photo (no status message says so for a short queue)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while await queue.depth() < depth:
        assert loop.time() < deadline, "the photo was never queued"
        await asyncio.sleep(0.05)


def replies_to(user, message_id: int) -> list:
    return [m for m in user.messages if m.reply_to == message_id]


@pytest.mark.parametrize("lang", ["en", "fr"])
async def test_wrong_inputs_get_kind_specific_answers(standin, redis_url, models_dir, lang):
    settings = bot_settings(standin, redis_url)
    async with running_bot(settings), real_worker(settings, models_dir):
        user = standin.user(201, language_code=lang)
        await self_screening_until_photo(user, lang, "woman")
        await user.send_sticker()
        await user.wait_for_text(
            t(lang, "Nice sticker! To check for anaemia, please send a photo of the eyelid.")
        )
        await user.send_voice()
        await user.wait_for_text(
            t(lang, "I cannot listen to voice messages. Please use the buttons or type.")
        )
        await user.send_video()
        await user.wait_for_text(t(lang, "Videos cannot be checked. Please send a photo."))
        not_a_photo = t(lang, "This file is not a photo. Please send a photo (JPG or PNG).")
        await user.send_document(b"%PDF-1.7\n1 0 obj\n<<>>\nendobj\n", "report.pdf")
        await user.wait_for_text(not_a_photo)
        await user.send_document(b"GIF89a" + bytes(100), "eye.gif", "image/gif")
        await user.wait_for_text(not_a_photo)
        await user.send_text("hello")
        await user.wait_for_text(t(lang, "Please send a photo of the inside of the lower eyelid."))
        # 25 MB: refused before any download, with a size hint.
        big = b"\xff\xd8\xff\xe0" + bytes(25 * 1024 * 1024)
        await user.send_document(big, "huge.jpg", "image/jpeg")
        await user.wait_for_text(
            t(lang, "This file is too big. Please send a photo under 20 MB."), timeout=30
        )
        # A corrupt JPEG reaches the worker and comes back as a specific refusal.
        corrupt = synthetic_photo()[:2000]
        await user.send_document(corrupt, "broken.jpg", "image/jpeg")
        reply = await user.wait_for(
            lambda m: (
                m.content in {t(lang, ERROR_TEXT["corrupt"]), t(lang, ERROR_TEXT["not_an_image"])}
            ),
            RESULT_WAIT,
            "the corrupt-file answer",
        )
        assert reply.content == t(lang, ERROR_TEXT["corrupt"])
        await user.wait_idle(0.5)
        assert not [m for m in user.messages if "Sorry, something went wrong" in m.content]


async def test_thirty_photos_in_ten_seconds(standin, redis_url, models_dir, photo):
    settings = bot_settings(standin, redis_url, rate_limit_per_hour=20)
    async with running_bot(settings), real_worker(settings, models_dir):
        user = standin.user(202, language_code="en")
        await self_screening_until_photo(user, "en", "child-24-59m")
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        sent = []
        for _ in range(30):
            sent.append(await user.send_photo(photo))
            await asyncio.sleep(0.05)
        assert loop.time() - t0 < 10
        limit_text = "You sent many photos in the last hour. You can send the next photo in 60"
        deadline = loop.time() + 240
        while loop.time() < deadline:
            results = [m for m in user.messages if result_message(m)]
            if len(results) >= 20 and all(replies_to(user, s.message_id) for s in sent):
                break
            await asyncio.sleep(0.5)
        await user.wait_idle(1.0, timeout=60)
        # Every photo got exactly one answer, quoting it: its result or the friendly limit.
        answers = [replies_to(user, s.message_id) for s in sent]
        assert all(len(a) == 1 for a in answers), user.transcript(last=40)
        # The limit says when she can go on: an hour after the first photo, in minutes.
        limited = [a[0] for a in answers if a[0].content.startswith(limit_text)]
        assert len(limited) == 10, [a[0].content for a in answers]
        assert [a[0].content.startswith(limit_text) for a in answers] == [False] * 20 + [True] * 10
        assert len([m for m in user.messages if result_message(m)]) == 20
        assert not [m for m in user.messages if "Sorry" in m.content]


async def test_cancel_while_processing_delivers_nothing(standin, redis_url, models_dir, photo):
    settings = bot_settings(standin, redis_url, status_update_s=0.5)
    async with running_bot(settings) as bot:
        user = standin.user(203, language_code="en")
        await self_screening_until_photo(user, "en", "woman")
        await user.send_photo(photo)
        # No status message for a short queue; one comes when the job takes long.
        await user.wait_for_text(t("en", "Still checking. Please wait a little more."), 10)
        for _ in range(100):  # and a chat action after a second without a result
            if "upload_photo" in user.chat_actions:
                break
            await asyncio.sleep(0.05)
        assert "upload_photo" in user.chat_actions
        for _ in range(100):  # no worker yet: the job waits in the queue
            if await bot["queue"].depth() == 1:
                break
            await asyncio.sleep(0.05)
        assert await bot["queue"].depth() == 1
        await user.send_command("/cancel")
        await user.wait_for_text(
            t("en", "Stopped. Your photo will not be checked. Send /start to begin again.")
        )
        async with real_worker(settings, models_dir):
            await asyncio.sleep(3)
            await user.wait_idle(1.0)
        assert not [
            m
            for m in user.messages
            if result_message(m) or (m.kind == "photo" and "White line" in m.content)
        ]
        assert await bot["queue"].depth() == 0


@pytest.mark.parametrize("lang", ["en", "sw"])
async def test_restart_in_the_middle_of_a_conversation(standin, redis_url, models_dir, photo, lang):
    settings = bot_settings(standin, redis_url)
    user = standin.user(204, language_code=lang)
    async with running_bot(settings):
        await user.send_command("/start", "clinic-7")
        await agree(user, lang)
        await tap(user, "who:me")
        await user.wait_for(lambda m: "grp:woman" in buttons_of(m), 15, "the group question")
    # The bot is down; the person answers anyway. A new process picks the update up.
    await press(user, "grp:woman")
    async with running_bot(settings) as bot:  # no worker: the job stays queued over the restart
        await tap(user, "danger:no")
        await user.wait_for(lambda m: m.kind == "photo" or "1." in m.content, 15, "the guide")
        await user.send_photo(photo)
        await _until_queued(bot["queue"])
    # Restarted again while the job was queued: the result still arrives, once.
    async with running_bot(settings) as bot, real_worker(settings, models_dir):
        result = await user.wait_for(result_message, RESULT_WAIT, "the result")
        assert t(lang, "Woman, not pregnant") in result.content
        await user.wait_idle(1.0)
        assert len([m for m in user.messages if result_message(m)]) == 1
        # The campaign from the deep link survived too.
        h = bot["app"].bot_data.services.keyring.person(user.chat_id)
        assert (await bot["store"].get_profile(h))["campaign"] == "clinic-7"
        # Conversation state is keyed by the pseudonym, never by the chat id.
        r = aioredis.Redis.from_url(redis_url, decode_responses=True)
        conv = await r.hgetall("hbscreen:bot:conv:screening")
        await r.aclose()
        assert h in conv and str(user.chat_id) not in str(conv)


async def _everything_in_redis(redis_url: str) -> str:
    """Every key and every value in the database, as one string."""
    r = aioredis.Redis.from_url(redis_url, decode_responses=False)
    out = []
    async for key in r.scan_iter(count=1000):
        kind = (await r.type(key)).decode()
        out.append(repr(key))
        if kind == "string":
            out.append(repr(await r.get(key)))
        elif kind == "hash":
            out.append(repr(await r.hgetall(key)))
        elif kind == "list":
            out.append(repr(await r.lrange(key, 0, -1)))
        elif kind == "set":
            out.append(repr(await r.smembers(key)))
        elif kind == "zset":
            out.append(repr(await r.zrange(key, 0, -1, withscores=True)))
        elif kind == "stream":
            out.append(repr(await r.xrange(key)))
    await r.aclose()
    return "\n".join(out)


@pytest.mark.parametrize("lang", ["en", "fr"])
async def test_delete_really_deletes(standin, redis_url, models_dir, photo, lang):
    settings = bot_settings(standin, redis_url)
    chat_id = 777_000_123
    async with running_bot(settings) as bot, real_worker(settings, models_dir):
        user = standin.user(chat_id, "Zawadi", language_code=lang)
        await self_screening_until_photo(user, lang, "pregnant-3", campaign="camp-del")
        await user.send_photo(photo)
        await user.wait_for(result_message, RESULT_WAIT, "the result")
        await press(user, "after:done")
        await tap(user, "remind:yes:4")
        await user.wait_idle(0.5)
        h = bot["app"].bot_data.services.keyring.person(chat_id)
        before = await _everything_in_redis(redis_url)
        assert h in before  # the person's data is there, under the pseudonym only
        assert str(chat_id) not in before and "Zawadi" not in before
        # /delete asks first; "No" keeps everything.
        await user.send_command("/delete")
        await tap(user, "del:no")
        await user.wait_for_text(t(lang, "OK. Nothing was deleted."))
        assert h in await _everything_in_redis(redis_url)
        await user.send_command("/delete")
        await tap(user, "del:yes")
        await user.wait_for_text(
            t(
                lang,
                "Everything about you is deleted. Send /start if you want to use the bot again.",
            )
        )
        await user.wait_idle(0.5)
        after = await _everything_in_redis(redis_url)
        assert h not in after
        assert ":img:" not in after  # the photos left Redis when their jobs ended
        assert str(chat_id) not in after and "Zawadi" not in after
        assert await bot["store"].records(h) == []
        # Aggregate campaign counts stay: they hold no personal data.
        assert "camp-del" in after


async def test_group_chats_are_pointed_to_a_private_chat(standin, redis_url):
    settings = bot_settings(standin, redis_url)
    async with running_bot(settings):
        member = standin.user(205, language_code="fr", chat_type="group")
        await member.send_command("/start")
        reply = await member.wait_for_text("https://t.me/hbscreen_standin_bot")
        assert reply.content == t(
            "fr",
            "For your privacy, please talk to me in a private chat: {link}",
            link="https://t.me/hbscreen_standin_bot",
        )
        await member.send_photo(synthetic_photo())
        await member.wait_for_text("https://t.me/hbscreen_standin_bot")


async def test_nothing_personal_or_secret_in_the_logs(
    standin, redis_url, models_dir, photo, caplog
):
    caplog.set_level(logging.INFO)
    settings = bot_settings(standin, redis_url)
    chat_id = 555_000_321
    async with running_bot(settings), real_worker(settings, models_dir):
        user = standin.user(chat_id, "Wanjiru", language_code="sw")
        await self_screening_until_photo(user, "sw", "pregnant-1")
        await user.send_photo(photo)
        await user.wait_for(result_message, RESULT_WAIT, "the result")
        await user.send_text("my name is Wanjiru")
    logged = "\n".join(r.getMessage() + str(r.args) for r in caplog.records)
    assert caplog.records  # the bot does log
    token_secret = standin.token.split(":", 1)[1]
    for secret in (token_secret, str(chat_id), "Wanjiru", HASH_KEY):
        assert secret not in logged, secret


@pytest.mark.parametrize("lang", ["en", "hi"])
async def test_a_bad_photo_gets_specific_retake_hints(standin, redis_url, models_dir, lang):
    from hbscreen.bot.messages import RETAKE_GENERIC, RETAKE_HINTS

    settings = bot_settings(standin, redis_url)
    async with running_bot(settings), real_worker(settings, models_dir):
        user = standin.user(206, language_code=lang)
        await self_screening_until_photo(user, lang, "woman")
        header = t(lang, "The photo could not be judged. Please take a new photo.")
        dark = synthetic_photo(brightness=0.15)
        for n in range(3):
            await user.send_photo(dark)
            reply = await user.wait_for_text(header, timeout=RESULT_WAIT)
            hints = [code for code, hint in RETAKE_HINTS.items() if t(lang, hint) in reply.content]
            assert hints, reply.content  # a specific hint, never a generic error alone
            assert t(lang, RETAKE_GENERIC) not in reply.content
            blood_test = t(
                lang,
                "The photos could not be judged several times. "
                "It is best to get a blood test at a health facility.",
            )
            assert (blood_test in reply.content) is (n == 2)


async def test_a_job_past_its_deadline_gets_a_could_not_process_answer(
    standin, redis_url, models_dir, photo
):
    settings = bot_settings(standin, redis_url, job_deadline_s=1.0)
    async with running_bot(settings) as bot:
        user = standin.user(207, language_code="fr")
        await self_screening_until_photo(user, "fr", "man")
        await user.send_photo(photo)
        await _until_queued(bot["queue"])
        await asyncio.sleep(1.5)  # no worker until the deadline has passed
        async with real_worker(settings, models_dir):
            await user.wait_for_text(
                t(
                    "fr",
                    "Sorry, we could not check your photo in time. Please send it again later.",
                ),
                timeout=30,
            )
        assert not [m for m in user.messages if result_message(m)]


async def test_flood_control_is_retried(standin, redis_url):
    settings = bot_settings(standin, redis_url)
    async with running_bot(settings):
        user = standin.user(208, language_code="en")
        standin.fail_next("sendMessage", error_code=429, retry_after=1)
        await user.send_command("/help")
        await user.wait_for_text("/worker", timeout=15)


async def test_a_full_queue_says_busy(standin, redis_url, photo):
    settings = bot_settings(standin, redis_url, queue_max_depth=1)
    async with running_bot(settings) as bot:  # no worker: the first job fills the queue
        user = standin.user(209, language_code="sw")
        await self_screening_until_photo(user, "sw", "woman")
        await user.send_photo(photo)
        await _until_queued(bot["queue"])
        second = await user.send_photo(photo)
        busy = t("sw", "Many people are using the service now. Please try again in a few minutes.")
        await user.wait_for(
            lambda m: m.reply_to == second.message_id and m.content == busy, 15, "busy"
        )
