"""`hbscreen bot` as it runs in production (webhook + health endpoints) and in development
(polling, no Redis: the in-process queue and worker), against the stand-in over real HTTP."""

from __future__ import annotations

import pytest

from hbscreen.bot.i18n import t
from tests.bot_harness import (
    bot_settings,
    buttons_of,
    self_screening_until_photo,
    served,
    synthetic_photo,
)
from tests.redis_server import free_port

SECRET = "s3cret-Token_for-tests"


@pytest.mark.redis
async def test_webhook_mode_with_health_endpoints(standin, redis_url):
    port = free_port()
    settings = bot_settings(
        standin,
        redis_url,
        webhook_url=f"http://127.0.0.1:{port}/tg/hook",
        webhook_secret=SECRET,
        listen_host="127.0.0.1",
        listen_port=port,
    )
    async with served(settings) as (http, base):
        assert standin.webhook_url == f"{base}/tg/hook"
        # A person talks to the bot: updates arrive through the webhook.
        user = standin.user(301, language_code="fr")
        await user.send_command("/start")
        await user.wait_for(lambda m: "consent:yes" in buttons_of(m), 15, "the consent")
        await user.tap_button("lang:en")
        await user.wait_for(lambda m: "✓ English" in m.button_texts, 15, "the card in English")
        assert standin.webhook_deliveries
        # Telegram's secret header is required, compared exactly.
        update = {
            "update_id": 1,
            "message": {
                "message_id": 1,
                "date": 0,
                "chat": {"id": 1, "type": "private"},
                "text": "x",
            },
        }
        async with http.post(base + "/tg/hook", json=update) as resp:
            assert resp.status == 403
        async with http.post(
            base + "/tg/hook", json=update, headers={"X-Telegram-Bot-Api-Secret-Token": "wrong"}
        ) as resp:
            assert resp.status == 403
        headers = {"X-Telegram-Bot-Api-Secret-Token": SECRET}
        async with http.post(base + "/tg/hook", data=b"not json", headers=headers) as resp:
            assert resp.status == 400
        async with http.post(
            base + "/tg/hook", data=b"{" + b" " * (2 * 1024 * 1024) + b"}", headers=headers
        ) as resp:
            assert resp.status == 413
        # Health, readiness, metrics; everything else is refused.
        async with http.get(base + "/healthz") as resp:
            assert resp.status == 200
        async with http.get(base + "/readyz") as resp:
            assert resp.status == 200
        async with http.get(base + "/metrics") as resp:
            body = await resp.text()
            assert resp.status == 200 and "hbscreen_bot_updates_total" in body
            assert "hbscreen_bot_webhook_refused_total" in body
            # No label carries the chat id (a bare "301" can occur inside a timestamp).
            assert '="301"' not in body and "chat_id" not in body
        async with http.get(base + "/tg/hook") as resp:
            assert resp.status == 405
        async with http.get(base + "/admin") as resp:
            assert resp.status == 404
        async with http.post(base + "/", json=update, headers=headers) as resp:
            assert resp.status in (404, 405)


async def test_polling_without_redis_uses_the_in_process_queue(standin, tmp_path):
    from tests.tiny_models import build_tiny_models

    port = free_port()
    settings = bot_settings(
        standin,
        None,
        listen_host="127.0.0.1",
        listen_port=port,
        models_dir=build_tiny_models(tmp_path / "models"),
    )
    async with served(settings) as (http, base):
        user = standin.user(302, language_code="en")
        await self_screening_until_photo(user, "en", "child-6-23m")
        await user.send_photo(synthetic_photo())
        result = await user.wait_for(lambda m: "after:done" in buttons_of(m), 60, "the result")
        assert t("en", "Group: {group}.", group=t("en", "Child, 6 to 23 months")) in result.content
        async with http.get(base + "/healthz") as resp:
            assert resp.status == 200
        async with http.post(base + "/telegram", json={}) as resp:
            assert resp.status in (404, 405)  # no webhook route in polling mode
