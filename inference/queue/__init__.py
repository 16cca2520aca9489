"""Job queue: the only channel between the bot (or a batch CLI) and the workers."""

from .protocol import (
    Delivery,
    Job,
    JobOutcome,
    JobQueue,
    JobSource,
    OutcomeStatus,
    Process,
    QueueBusy,
    QueueConfig,
)

__all__ = [
    "Delivery",
    "Job",
    "JobOutcome",
    "JobQueue",
    "JobSource",
    "OutcomeStatus",
    "Process",
    "QueueBusy",
    "QueueConfig",
]
