"""Job queue: the only channel between the bot (or a batch CLI) and the workers."""

from .base import Job, JobOutcome, JobQueue, OutcomeStatus, QueueBusy

__all__ = ["Job", "JobOutcome", "JobQueue", "OutcomeStatus", "QueueBusy"]
