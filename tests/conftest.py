"""Shared pytest fixtures. Keep this file fixture-only; helpers live in their own modules."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from hbscreen.standin import BotAPIStandIn
from tests.redis_server import RedisServer, redis_server  # noqa: F401  (a fixture, re-exported)

pytest_plugins = ["tests.timeout_dump"]  # on a timeout, every asyncio task's stack


@pytest.fixture
async def standin() -> AsyncIterator[BotAPIStandIn]:
    """A local Telegram Bot API stand-in on a free port, started and stopped per test."""
    async with BotAPIStandIn() as server:
        yield server


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:  # noqa: F811  (the fixture above)
    """The URL of a throwaway redis-server of this test's own (never the shared one)."""
    return redis_server.url


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models folder with the tiny ONNX test models (real onnxruntime, simple colour rules)."""
    from tests.tiny_models import build_tiny_models

    return build_tiny_models(tmp_path_factory.mktemp("tiny-models"))


EXAMPLE_PHOTO = Path(__file__).resolve().parent.parent / "examples" / "eyelid.jpg"


@pytest.fixture(scope="session")
def models_dir() -> None:
    """The shipped models (None = inference/models): the journeys run on the real ones."""
    return None


@pytest.fixture(scope="session")
def photo() -> bytes:
    """The committed synthetic example photo, which the shipped models screen."""
    return EXAMPLE_PHOTO.read_bytes()
