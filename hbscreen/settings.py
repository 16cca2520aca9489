"""The one settings object, read from the environment (and an optional .env file).

Names follow what operators already know: TELEGRAM_BOT_TOKEN, REDIS_URL, ...; the rest use the
HBSCREEN_ prefix. Secrets are SecretStr so they never print.
"""

from __future__ import annotations

from datetime import tzinfo
from functools import cache
from pathlib import Path
from typing import Annotated

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


def _env(name: str) -> AliasChoices:
    return AliasChoices(name, f"HBSCREEN_{name}")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="HBSCREEN_", env_file=".env", extra="ignore", populate_by_name=True
    )

    # Telegram
    telegram_bot_token: SecretStr | None = Field(None, validation_alias=_env("TELEGRAM_BOT_TOKEN"))
    telegram_api_base_url: str = Field(
        "https://api.telegram.org/bot", validation_alias=_env("TELEGRAM_API_BASE_URL")
    )
    telegram_file_base_url: str = Field(
        "https://api.telegram.org/file/bot", validation_alias=_env("TELEGRAM_FILE_BASE_URL")
    )
    webhook_url: str | None = None  # HBSCREEN_WEBHOOK_URL: set it to use a webhook
    webhook_secret: SecretStr | None = None
    listen_host: str = "0.0.0.0"
    listen_port: int = 8080
    # HBSCREEN_ADMIN_IDS=1,2: Telegram user ids allowed to see /stats
    admin_ids: Annotated[list[int], NoDecode] = Field(default_factory=list)
    hash_key: SecretStr | None = None  # keyed hash of chat ids; required in production
    record_ttl_s: int = 400 * 24 * 3600  # a person's stored data expires after their last visit
    rate_limit_per_hour: int = 20  # photos per hour for a person screening herself or family
    # ... and for a health worker (10 patients x 2 eyes an hour, with retakes, has room)
    worker_rate_limit_per_hour: int = 200
    consent_policy_version: str = "2026-11"
    reminder_weeks: int = 4  # opt-in "screen again" reminder; 0 turns the offer off
    reminder_check_s: float = 60.0  # how often the bot looks for due reminders
    status_update_s: float = 20.0  # edit the status message if a job takes longer than this
    # IANA zone for times shown to health workers (/summary), e.g. Africa/Nairobi
    timezone: str = "UTC"

    # Queue
    redis_url: str | None = Field(None, validation_alias=_env("REDIS_URL"))
    queue_max_depth: int = 200
    # ... and at most this many MiB of images queued: keep it under Redis's maxmemory minus
    # what the bot's records need (deploy/: maxmemory 768 MiB, 400 MiB of images)
    queue_max_mb: int = 400
    job_deadline_s: float = 120.0
    image_ttl_s: int = 600
    max_tries: int = 3
    redis_prefix: str = "hbscreen"  # key prefix, so one Redis can serve several deployments
    claim_idle_s: float = 30.0  # a job untouched this long belongs to a dead worker: reclaim it
    heartbeat_s: float = 5.0  # worker heartbeat period (key TTL: 3 periods)
    shutdown_grace_s: float = 20.0  # on SIGTERM, finish jobs in hand this long, then hand back
    results_ttl_s: int = 24 * 3600  # outcomes, delivery markers, dead letters expire after this
    # Delivery to the chat (bot/delivery.py): retried on 429/5xx/timeouts until the job's
    # deadline plus this grace (< 600 s, the routing ticket's margin); a lease held this long
    # by a bot that died is taken over by the next one.
    delivery_grace_s: float = 120.0
    delivery_lease_s: float = 10.0
    # Shared by the bot and the workers: photos, jobs, results and heatmaps are encrypted in
    # Redis with a key derived from it (AES-GCM). Required with REDIS_URL.
    queue_key: SecretStr | None = None
    # Rewrite Redis's append-only file this often (and soon after a /delete), so deleted and
    # expired data leave the disk too; 0 turns it off (a Redis without AOF, or managed).
    aof_rewrite_s: float = 3600.0

    # Workers and models
    models_dir: Path | None = None  # default: the models shipped in inference/models
    ort_threads: int = 1
    worker_concurrency: int = 1
    metrics_port: int = 9100

    log_level: str = "INFO"

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, v: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"unknown time zone {v!r}; use an IANA name like Africa/Nairobi"
            ) from None
        return v

    @property
    def tz(self) -> tzinfo:
        from zoneinfo import ZoneInfo

        return ZoneInfo(self.timezone)

    @field_validator("admin_ids", mode="before")
    @classmethod
    def _split_ids(cls, v: object) -> object:
        if isinstance(v, str):
            return [int(x) for x in v.replace(" ", "").split(",") if x]
        if isinstance(v, int):
            return [v]
        return v


@cache
def get_settings() -> Settings:
    return Settings()
