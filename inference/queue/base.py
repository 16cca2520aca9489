"""The queue interface shared by the Redis Streams queue and the in-process queue.

Data flows one way: submit (bot/CLI) -> worker -> outcome (bot/CLI). The image blob travels
beside the job, never inside the result.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Literal, Protocol, runtime_checkable

from pydantic import BaseModel, Field

from ..result import ScreeningResult

OutcomeStatus = Literal["done", "dead", "expired", "cancelled"]


class QueueBusy(Exception):
    """The queue is at its depth limit: tell the person to try again in a few minutes."""


class Job(BaseModel):
    """What a worker needs besides the image bytes. No names, no raw chat ids."""

    id: str = ""  # assigned by submit()
    group: str
    cutout: bool = False
    danger_signs: bool = False
    # Opaque routing data for the submitter (e.g. the bot's chat key, language, message id);
    # workers copy it to the outcome untouched.
    reply_to: dict[str, str] = Field(default_factory=dict)
    submitted_at: float = 0.0
    deadline_at: float = 0.0
    tries: int = 0


class JobOutcome(BaseModel):
    job: Job
    status: OutcomeStatus
    result: ScreeningResult | None = None
    # The heatmap JPEG travels beside the result; base64 when serialised.
    heatmap_jpeg: bytes | None = None


@runtime_checkable
class JobQueue(Protocol):
    async def submit(self, image: bytes, job: Job) -> str:
        """Store the image and enqueue the job; return its id. Raises QueueBusy when full."""

    async def cancel(self, job_id: str) -> bool:
        """Make sure no result of this job is delivered; True if it was still pending."""

    async def wait(self, job_id: str, timeout: float) -> JobOutcome:
        """Await one job's outcome (batch CLI). Raises TimeoutError."""

    def outcomes(self) -> AsyncIterator[JobOutcome]:
        """Stream outcomes of all jobs for the submitting service (the bot)."""

    async def claim_delivery(self, job_id: str) -> bool:
        """True exactly once per job: makes delivery to the chat idempotent."""

    async def depth(self) -> int:
        """Jobs waiting or in flight."""

    async def close(self) -> None: ...
