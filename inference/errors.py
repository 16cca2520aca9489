"""Typed refusals with stable codes, so the bot can translate them and scripts can match them."""

from __future__ import annotations

from enum import Enum


class ErrorCode(str, Enum):
    """Stable machine-readable codes; never rename one, only add."""

    NOT_AN_IMAGE = "not_an_image"
    UNSUPPORTED_FORMAT = "unsupported_format"
    TOO_LARGE = "too_large"  # bytes or pixels over the limit
    TOO_SMALL = "too_small"  # too few pixels to judge
    CORRUPT = "corrupt"  # looks like an image but cannot be decoded
    ANIMATED = "animated"  # several frames: we cannot know which one to judge
    NO_ALPHA = "no_alpha"  # --cutout given but the image has no mask in alpha
    MODEL_FAILED = "model_failed"  # the models raised; the job may be retried


class ScreeningError(Exception):
    """A refusal the person can be told about in their language."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = ErrorCode(code)
        self.message = message

    def __repr__(self) -> str:
        return f"ScreeningError({self.code.value!r}, {self.message!r})"


class IntakeError(ScreeningError):
    """The upload was refused before any model ran."""
