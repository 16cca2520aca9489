"""The Bot API stand-in, proven with a small real python-telegram-bot Application over HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import io
import time
from collections.abc import AsyncIterator

import pytest
from aiohttp import ClientSession, web
from PIL import Image
from telegram import (
    BotCommand,
    BotCommandScopeAllPrivateChats,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    InputFile,
    KeyboardButton,
    ReplyKeyboardMarkup,
    ReplyKeyboardRemove,
    Update,
)
from telegram.constants import ChatAction, ParseMode
from telegram.error import BadRequest, Conflict, EndPointNotFound, Forbidden, InvalidToken
from telegram.ext import (
    AIORateLimiter,
    Application,
    CallbackQueryHandler,
    CommandHandler,
    ContextTypes,
    MessageHandler,
    filters,
)

from hbscreen.standin import (
    BotAPIStandIn,
    ConversationTimeout,
    parse_html,
    parse_markdown,
    render_text,
    serve_polling,
)
from tests.redis_server import free_port


def jpeg(
    width: int = 1600, height: int = 1200, colour: tuple[int, int, int] = (180, 40, 60)
) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(buf, "JPEG", quality=90)
    return buf.getvalue()


# ------------------------------------------------------------------ a small bot, defined here
async def start(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    payload = " ".join(context.args or [])
    keyboard = InlineKeyboardMarkup(
        [
            [
                InlineKeyboardButton("Yes", callback_data="yes"),
                InlineKeyboardButton("No", callback_data="no"),
            ]
        ]
    )
    text = f"<b>Hello</b> {update.effective_user.first_name}! Ready?"
    if payload:
        text += f" (campaign {payload})"
    await update.effective_message.reply_text(
        text, reply_markup=keyboard, parse_mode=ParseMode.HTML
    )


async def tapped(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    query = update.callback_query
    await query.answer(f"you said {query.data}")
    await query.edit_message_text(f"You chose: {query.data}")


async def keyboard(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    markup = ReplyKeyboardMarkup([[KeyboardButton("Red"), "Blue"]], one_time_keyboard=True)
    await update.effective_message.reply_text("Pick a colour", reply_markup=markup)


async def text(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    await update.effective_message.reply_text(
        f"Got {update.effective_message.text}", reply_markup=ReplyKeyboardRemove()
    )


async def photo(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    await context.bot.send_chat_action(update.effective_chat.id, ChatAction.UPLOAD_PHOTO)
    status = await update.effective_message.reply_text("Checking…")
    largest = update.effective_message.photo[-1]
    data = bytes(await (await largest.get_file()).download_as_bytearray())
    image = Image.open(io.BytesIO(data))
    grey = io.BytesIO()
    image.convert("L").save(grey, "JPEG")
    await update.effective_message.reply_photo(
        InputFile(grey.getvalue(), filename="heat.jpg"),
        caption=f"{image.width}x{image.height}, {len(data)} bytes",
    )
    await status.edit_text("Done")


async def document(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    doc = update.effective_message.document
    try:
        data = bytes(await (await doc.get_file()).download_as_bytearray())
    except BadRequest as exc:
        await update.effective_message.reply_text(f"Too big: {exc.message}")
        return
    await update.effective_message.reply_document(
        InputFile(data[::-1], filename="reversed.bin"), caption=f"{doc.file_name} reversed"
    )


async def other(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    message = update.effective_message
    kind = "sticker" if message.sticker else "voice" if message.voice else "video"
    await message.reply_text(f"I cannot read a {kind}")


async def set_commands(application: Application) -> None:
    bot = application.bot
    await bot.set_my_commands([BotCommand("start", "Start"), BotCommand("help", "Help")])
    await bot.set_my_commands(
        [BotCommand("start", "Commencer")],
        language_code="fr",
        scope=BotCommandScopeAllPrivateChats(),
    )


def build_app(standin: BotAPIStandIn, *, rate_limiter: AIORateLimiter | None = None) -> Application:
    builder = (
        Application.builder()
        .token(standin.token)
        .base_url(standin.base_url)
        .base_file_url(standin.base_file_url)
        .post_init(set_commands)
    )
    if rate_limiter is not None:
        builder = builder.rate_limiter(rate_limiter)
    app = builder.build()
    app.add_handler(CommandHandler("start", start))
    app.add_handler(CommandHandler("keyboard", keyboard))
    app.add_handler(CallbackQueryHandler(tapped))
    app.add_handler(MessageHandler(filters.PHOTO, photo))
    app.add_handler(MessageHandler(filters.Document.ALL, document))
    app.add_handler(MessageHandler(filters.Sticker.ALL | filters.VOICE | filters.VIDEO, other))
    app.add_handler(MessageHandler(filters.TEXT & ~filters.COMMAND, text))
    return app


@pytest.fixture
async def running(standin: BotAPIStandIn) -> AsyncIterator[Application]:
    app = build_app(standin, rate_limiter=AIORateLimiter(max_retries=2))
    async with serve_polling(app, poll_timeout=5):
        yield app


# ------------------------------------------------------------------ journeys through PTB
async def test_start_tap_and_edit(standin: BotAPIStandIn, running: Application) -> None:
    user = standin.user(1001, first_name="Amina")
    await user.send_command("/start")
    (hello,) = await user.wait_for_messages(1)
    assert hello.text == "Hello Amina! Ready?"  # HTML parsed away, as a person sees it
    assert hello.entities == [{"type": "bold", "offset": 0, "length": 5}]
    assert hello.button_texts == ["Yes", "No"]

    query_id = await user.tap_button("Yes")
    assert await user.wait_for_answer(query_id) == {
        "text": "you said yes",
        "show_alert": False,
        "url": None,
    }
    assert standin.unanswered_queries == []
    edited = await user.wait_for_text("You chose: yes")
    assert edited.message_id == hello.message_id and edited.inline_keyboard == []
    assert [m.text for m in user.messages] == ["You chose: yes"]
    with pytest.raises(LookupError, match="no button"):
        await user.tap_button("No")  # the edit removed the keyboard, as in Telegram


async def test_deep_link_payload(standin: BotAPIStandIn, running: Application) -> None:
    user = standin.user(1002)
    await user.send_command("/start", payload="ngo-kisumu-2026")
    assert "(campaign ngo-kisumu-2026)" in (await user.wait_for_messages())[0].text


async def test_reply_keyboard_and_removal(standin: BotAPIStandIn, running: Application) -> None:
    user = standin.user(1003)
    await user.send_command("keyboard")
    await user.wait_for_text("Pick a colour")
    assert [b["text"] for b in user.reply_keyboard[0]] == ["Red", "Blue"]
    assert await user.tap_button("Blue") is None  # a reply keyboard sends the text
    reply = await user.wait_for_text("Got Blue")
    assert reply.reply_markup == {"remove_keyboard": True}
    assert user.reply_keyboard == []


async def test_photo_download_and_reply_photo(standin: BotAPIStandIn, running: Application) -> None:
    user = standin.user(1004)
    original = jpeg(1600, 1200)
    sent = await user.send_photo(original)
    assert [s["width"] for s in sent.media] == [90, 320, 800, 1280, 1600]
    assert standin.files[sent.media[-1]["file_id"]].data == original

    status, reply = await user.wait_for_messages(2, timeout=15)
    assert await user.wait_for_text("Done") is status  # edited after the photo was sent
    assert reply.kind == "photo" and reply.caption == f"1600x1200, {len(original)} bytes"
    assert Image.open(io.BytesIO(reply.data)).mode == "L"
    assert "upload_photo" in user.chat_actions
    assert standin.calls_to("getFile")[0].params["file_id"] == sent.media[-1]["file_id"]


async def test_document_round_trip_and_too_big(
    standin: BotAPIStandIn, running: Application
) -> None:
    user = standin.user(1005)
    await user.send_document(b"\x00\x01abc", "data.bin", "application/octet-stream")
    reply = await user.wait_for_document()
    assert reply.data == b"cba\x01\x00" and reply.file_name == "reversed.bin"
    assert reply.caption == "data.bin reversed"

    await user.send_document(bytes(25 * 1024 * 1024), "huge.jpg", "image/jpeg")
    too_big = await user.wait_for_text("Too big", timeout=20)
    assert too_big.text == "Too big: File is too big"


async def test_sticker_voice_video(standin: BotAPIStandIn, running: Application) -> None:
    user = standin.user(1006)
    await user.send_sticker()
    await user.wait_for_text("I cannot read a sticker")
    await user.send_voice()
    await user.wait_for_text("I cannot read a voice")
    await user.send_video()
    await user.wait_for_text("I cannot read a video")


async def test_group_chat_commands(standin: BotAPIStandIn, running: Application) -> None:
    alice = standin.user(2001, "Alice", chat_type="group", chat_id=-500)
    bob = standin.user(2002, "Bob", chat_type="group", chat_id=-500)
    await alice.send_command("/start")  # sent as /start@<bot username>, as clients do in groups
    hello = (await bob.wait_for_messages())[0]
    assert hello.chat_id == -500 and hello.text.startswith("Hello Alice")
    assert alice.messages == bob.messages


async def test_localised_command_menu(standin: BotAPIStandIn, running: Application) -> None:
    assert [c["command"] for c in standin.commands()] == ["start", "help"]
    french = standin.user(1007, language_code="fr")
    english = standin.user(1008, language_code="en")
    assert french.command_menu() == [{"command": "start", "description": "Commencer"}]
    assert [c["command"] for c in english.command_menu()] == ["start", "help"]
    got = await running.bot.get_my_commands(
        language_code="fr", scope=BotCommandScopeAllPrivateChats()
    )
    assert [c.description for c in got] == ["Commencer"]


async def test_flood_control_is_retried_by_aioratelimiter(
    standin: BotAPIStandIn, running: Application
) -> None:
    user = standin.user(1009)
    standin.fail_next("sendMessage", retry_after=1)
    started = time.monotonic()
    await user.send_command("/start")
    await user.wait_for_messages(timeout=15)
    assert time.monotonic() - started >= 1.0
    assert len(standin.calls_to("sendMessage")) == 2


async def test_restart_keeps_unconfirmed_updates(standin: BotAPIStandIn) -> None:
    user = standin.user(1010)
    async with serve_polling(build_app(standin), poll_timeout=5):
        await user.send_command("/start")
        await user.wait_for_messages()
    await user.send_command("/start", payload="while-down")  # the bot is stopped now
    assert len(standin.pending_updates) == 1
    async with serve_polling(build_app(standin), poll_timeout=5):
        assert "while-down" in (await user.wait_for_messages())[0].text


# ------------------------------------------------------------------ Telegram's refusals
async def test_refusals_like_telegram(standin: BotAPIStandIn, running: Application) -> None:
    bot = running.bot
    user = standin.user(1011)
    await user.send_text("hi")
    await user.wait_for_text("Got hi")
    with pytest.raises(BadRequest, match=r'(?i)can\'t parse entities: unsupported start tag "br"'):
        await bot.send_message(user.chat_id, "line<br>two", parse_mode=ParseMode.HTML)
    with pytest.raises(BadRequest, match=r"(?i)character '\.' is reserved"):
        await bot.send_message(user.chat_id, "Hb 11.5 g/dL", parse_mode=ParseMode.MARKDOWN_V2)
    with pytest.raises(BadRequest, match="Chat not found"):
        await bot.send_message(999999, "nobody")
    with pytest.raises(BadRequest, match=r"(?i)button_data_invalid"):
        await bot.send_message(
            user.chat_id,
            "x",
            reply_markup=InlineKeyboardMarkup.from_button(
                InlineKeyboardButton("long", callback_data="x" * 65)
            ),
        )
    sent = await bot.send_message(user.chat_id, "same")
    with pytest.raises(BadRequest, match=r"(?i)message is not modified"):
        await sent.edit_text("same")
    assert await sent.delete()
    with pytest.raises(BadRequest, match=r"(?i)message to delete not found"):
        await sent.delete()
    user.block()
    with pytest.raises(Forbidden, match="blocked"):
        await bot.send_message(user.chat_id, "hello?")
    with pytest.raises(EndPointNotFound):
        await bot.do_api_request("sendTelepathy", api_kwargs={"chat_id": user.chat_id})
    with pytest.raises(Conflict, match="webhook is active"):
        await bot.set_webhook("http://127.0.0.1:9/hook")
        await bot.get_updates()
    await bot.delete_webhook()


async def test_wrong_token_is_unauthorized(standin: BotAPIStandIn) -> None:
    app = Application.builder().token("42:wrong").base_url(standin.base_url).build()
    with pytest.raises(InvalidToken):
        await app.bot.get_me()
    await app.shutdown()


async def test_long_poll_wakes_when_an_update_arrives(standin: BotAPIStandIn) -> None:
    app = Application.builder().token(standin.token).base_url(standin.base_url).build()
    async with app:
        user = standin.user(1012)
        started = time.monotonic()
        poll = asyncio.create_task(app.bot.get_updates(timeout=20, read_timeout=25))
        await asyncio.sleep(0.2)
        await user.send_text("wake up")
        (update,) = await poll
        assert update.message.text == "wake up"
        assert time.monotonic() - started < 2
        assert await app.bot.get_updates(offset=update.update_id + 1, timeout=0) == ()

    # A newer long poll ends an older one with 409, as Telegram does (PTB's own pool for
    # getUpdates holds one connection, so two raw clients stand in for two bot instances).
    url = f"{standin.base_url}{standin.token}/getUpdates"
    async with ClientSession() as http:
        older = asyncio.create_task(http.post(url, data={"timeout": "20"}))
        await asyncio.sleep(0.2)
        async with http.post(url, data={"timeout": "0"}) as newer:
            assert await newer.json() == {"ok": True, "result": []}
        async with await older as resp:
            assert resp.status == 409
            assert "terminated by other getUpdates" in (await resp.json())["description"]


async def test_timeout_error_prints_the_conversation(
    standin: BotAPIStandIn, running: Application
) -> None:
    user = standin.user(1013)
    await user.send_command("/start")
    with pytest.raises(ConversationTimeout, match=r"(?s)waited 0.5s.*user #1 +/start.*Hello"):
        await user.wait_for_text("never said", timeout=0.5)


# ------------------------------------------------------------------ webhook mode
async def test_webhook_posts_with_secret_header(standin: BotAPIStandIn) -> None:
    received: list[tuple[str | None, dict]] = []
    arrived = asyncio.Event()

    async def hook(request: web.Request) -> web.Response:
        received.append(
            (request.headers.get("X-Telegram-Bot-Api-Secret-Token"), await request.json())
        )
        arrived.set()
        return web.Response()

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        async with ClientSession() as http:
            url = f"{standin.base_url}{standin.token}/setWebhook"
            async with http.post(
                url, json={"url": f"http://127.0.0.1:{port}/hook", "secret_token": "s3cr3t"}
            ) as resp:
                assert (await resp.json()) == {
                    "ok": True,
                    "result": True,
                    "description": "Webhook was set",
                }
        await standin.user(1014).send_text("via webhook")
        await asyncio.wait_for(arrived.wait(), 5)
        secret, update = received[0]
        assert secret == "s3cr3t" and update["message"]["text"] == "via webhook"
        assert standin.pending_updates == []
    finally:
        await runner.cleanup()


async def test_ptb_webhook_server_end_to_end(standin: BotAPIStandIn) -> None:
    app = build_app(standin)
    port = free_port()
    async with app:
        await app.updater.start_webhook(
            listen="127.0.0.1",
            port=port,
            url_path="tg",
            webhook_url=f"http://127.0.0.1:{port}/tg",
            secret_token="topsecret",
        )
        await app.start()
        try:
            assert standin.webhook_url == f"http://127.0.0.1:{port}/tg"
            user = standin.user(1015, first_name="Wanjiru")
            await user.send_command("/start")
            assert (await user.wait_for_messages(timeout=10))[0].text == "Hello Wanjiru! Ready?"
            await user.tap_button("No")
            await user.wait_for_text("You chose: no")
            info = await app.bot.get_webhook_info()
            assert info.pending_update_count == 0 and info.last_error_message is None
        finally:
            await app.updater.stop()
            await app.stop()


# ------------------------------------------------------------------ markup parsing
def test_html_entities_count_utf16() -> None:
    plain, entities = parse_html('🩸 <b>Hb 11,5</b> &lt;7 <a href="https://who.int">WHO</a>')
    assert plain == "🩸 Hb 11,5 <7 WHO"
    assert entities == [
        {"type": "bold", "offset": 3, "length": 7},
        {"type": "text_link", "offset": 14, "length": 3, "url": "https://who.int"},
    ]
    with pytest.raises(Exception, match="Can't find end tag"):
        parse_html("<i>open")
    with pytest.raises(Exception, match="unescaped '<'"):
        parse_html("Hb < 7")


def test_markdown_modes() -> None:
    assert parse_markdown(r"*bold* and \. done\!", v2=True) == (
        "bold and . done!",
        [{"type": "bold", "offset": 0, "length": 4}],
    )
    assert parse_markdown("[site](https://x.org) `a_b`", v2=True)[1] == [
        {"type": "text_link", "offset": 0, "length": 4, "url": "https://x.org"},
        {"type": "code", "offset": 5, "length": 3},
    ]
    assert parse_markdown("11.5 g/dL *ok*", v2=False)[0] == "11.5 g/dL ok"
    assert render_text("  <b>x</b>  ", "HTML") == (
        "x",
        [{"type": "bold", "offset": 0, "length": 1}],
    )


# ------------------------------------------------------------------ hbscreen demo-chat
@pytest.fixture
def eyelid_photo(tmp_path):
    from tests.synthetic import synthetic_photo
    from tests.test_pipeline import jpeg as encode

    path = tmp_path / "eyelid.jpg"
    path.write_bytes(encode(synthetic_photo()))
    return path


@pytest.mark.slow
async def test_demo_chat_scripted_journey(tiny_models, eyelid_photo, tmp_path) -> None:
    from hbscreen.standin.demo import DEFAULT_SCRIPT, parse_script, run_demo

    out = tmp_path / "demo-out"
    lines: list[str] = []
    script = parse_script(DEFAULT_SCRIPT.format(lang="fr", photo=eyelid_photo))
    code = await run_demo(
        out_dir=out, script=script, models_dir=tiny_models, language_code="fr",
        step_timeout=60, idle_s=0.2, echo=lines.append,
    )  # fmt: skip
    text = "\n".join(lines)
    assert code == 0, text
    assert "you  ▸ /start" in text and "] English" in text  # the first card offers languages
    assert "Hémoglobine (Hb)" in text and "g/dL" in text  # the result, in French
    assert "pas un diagnostic" in text
    saved = sorted(out.glob("*.jpg"))  # the photo guide's example (if any), then the heatmap
    assert saved and all(Image.open(p).format == "JPEG" for p in saved)
    heatmap = saved[-1]
    assert f"[photo saved to {heatmap}]" in text
    assert (out / "transcript.txt").read_text().strip() == text.strip()
    assert not list(out.glob("*eyelid*"))  # the person's own photo is never written


@pytest.mark.slow
async def test_demo_chat_interactive(tiny_models, tmp_path, monkeypatch) -> None:
    from hbscreen.standin.demo import run_demo

    monkeypatch.setattr("sys.stdin", io.StringIO("/start\n1\n9\n/photo /no/such.jpg\n/quit\n"))
    lines: list[str] = []
    code = await run_demo(
        out_dir=tmp_path, interactive=True, models_dir=tiny_models, idle_s=0.2,
        echo=lines.append,
    )  # fmt: skip
    text = "\n".join(lines)
    assert code == 0, text
    assert "you  ▸ (tap) Yes, I agree" in text  # "1" tapped the first button
    assert "(no button 9" in text and "No such file" in text


def test_demo_script_format() -> None:
    from hbscreen.standin.demo import parse_script

    steps = parse_script("# hi\n/start camp1\ntap?: danger:no\nphoto: a.jpg\nwait: text Hb\n")
    assert [(s.kind, s.arg) for s in steps] == [
        ("command", "/start camp1"), ("tap?", "danger:no"), ("photo", "a.jpg"),
        ("wait", "text Hb"),
    ]  # fmt: skip
    with pytest.raises(ValueError, match="line 1"):
        parse_script("dance: now")


async def test_the_bots_own_webhook_server(standin: BotAPIStandIn, tiny_models) -> None:
    """`hbscreen bot` in webhook mode (bot.app.serve) behind the stand-in: updates arrive by
    POST with the secret header; a POST without it is refused."""
    from hbscreen.bot.app import serve
    from hbscreen.settings import Settings

    port = free_port()
    settings = Settings(
        telegram_bot_token=standin.token,
        telegram_api_base_url=standin.base_url,
        telegram_file_base_url=standin.base_file_url,
        hash_key="test-hash-key-not-a-secret",
        redis_url=None,
        webhook_url=f"http://127.0.0.1:{port}/tg-hook",
        webhook_secret="hook-secret_1",
        listen_host="127.0.0.1",
        listen_port=port,
        models_dir=tiny_models,
    )
    stop = asyncio.Event()
    bot = asyncio.create_task(serve(settings, stop))
    try:
        await standin.wait_for_webhook(settings.webhook_url, timeout=20)
        # serve() sets the webhook before its server listens; Telegram would retry the first
        # deliveries with backoff. Wait for /healthz so this test reads no such retry.
        async with ClientSession() as http:
            for _ in range(200):
                with contextlib.suppress(OSError):
                    async with http.get(f"http://127.0.0.1:{port}/healthz") as resp:
                        if resp.status == 200:
                            break
                await asyncio.sleep(0.05)
        user = standin.user(1020, language_code="fr")
        await user.send_command("/start")
        choose = await user.wait_for(
            lambda m: "lang:fr" in [b.get("callback_data") for b in m.buttons], 15, "languages"
        )
        assert "✓ Français" in choose.button_texts  # the first card, in the app's language
        assert standin.webhook_deliveries[-1]["message"]["text"] == "/start"
        async with ClientSession() as http:
            forged = {
                "update_id": 1,
                "message": {
                    "message_id": 1,
                    "date": 0,
                    "text": "/start",
                    "chat": {"id": 1020, "type": "private"},
                },
            }
            async with http.post(settings.webhook_url, json=forged) as resp:
                assert resp.status == 403
        info = await standin_webhook_info(standin)
        assert info["pending_update_count"] == 0 and "last_error_message" not in info
    finally:
        stop.set()
        await asyncio.wait_for(bot, 20)


async def standin_webhook_info(standin: BotAPIStandIn) -> dict:
    async with (
        ClientSession() as http,
        http.get(f"{standin.base_url}{standin.token}/getWebhookInfo") as resp,
    ):
        return (await resp.json())["result"]


async def test_media_group_edit_caption_and_resend_by_file_id(
    standin: BotAPIStandIn, running: Application
) -> None:
    from telegram import InputMediaDocument, InputMediaPhoto

    bot = running.bot
    user = standin.user(1021)
    album = await bot.send_media_group(
        user.chat_id,
        [
            InputMediaPhoto(jpeg(640, 480), caption="<i>guide</i>", parse_mode=ParseMode.HTML),
            InputMediaPhoto(jpeg(400, 300, (10, 200, 10))),
        ],
    )
    first, second = await user.wait_for_messages(2)
    assert first.caption == "guide" and first.entities[0]["type"] == "italic"
    assert [p["width"] for p in first.media] == [90, 320, 640]
    assert second.kind == "photo" and album[1].photo[-1].width == 400
    again = await bot.send_photo(user.chat_id, album[0].photo[-1].file_id)  # cached file_id
    assert again.photo[-1].file_unique_id == album[0].photo[-1].file_unique_id
    edited = await again.edit_caption("now captioned")
    assert edited.caption == "now captioned"
    await bot.send_media_group(
        user.chat_id,
        [
            InputMediaDocument(b"a,b\n1,2\n", filename="a.csv"),
            InputMediaDocument(b"c\n", filename="c.csv"),
        ],
    )
    docs = [m for m in user.messages if m.kind == "document"]
    assert [(d.file_name, d.mime_type, d.data) for d in docs] == [
        ("a.csv", "text/csv", b"a,b\n1,2\n"),
        ("c.csv", "text/csv", b"c\n"),
    ]
    with pytest.raises(BadRequest, match=r"(?i)image_process_failed"):
        await bot.send_photo(user.chat_id, InputFile(b"not an image", filename="x.jpg"))


async def test_allowed_updates_and_dropping_pending(standin: BotAPIStandIn) -> None:
    app = Application.builder().token(standin.token).base_url(standin.base_url).build()
    async with app:
        bot = app.bot
        user = standin.user(1022)
        await bot.get_updates(timeout=0, allowed_updates=["callback_query"])
        await user.send_text("dropped: message updates are not allowed now")
        assert standin.pending_updates == [] and len(standin.dropped_updates) == 1
        await bot.send_message(
            user.chat_id, "tap", reply_markup=InlineKeyboardMarkup.from_button(
                InlineKeyboardButton("Go", callback_data="go")
            ),
        )  # fmt: skip
        await user.tap_button("go")
        (update,) = await bot.get_updates(timeout=0, allowed_updates=[])  # [] = all again
        assert update.callback_query.data == "go"
        await user.send_text("kept")
        assert len(standin.pending_updates) == 2  # the tap is not confirmed yet
        await bot.delete_webhook(drop_pending_updates=True)
        assert standin.pending_updates == []
