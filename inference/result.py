"""The one result type that flows worker -> queue -> bot / CLI / CSV.

It is versioned and JSON-serialisable and never holds image bytes: the heatmap JPEG travels
as a separate artifact.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

SCHEMA_VERSION = 1

Referral = Literal["urgent", "blood_test", "routine", "retake"]
Category = Literal["none", "mild", "moderate", "severe"]


class QualityCheck(BaseModel):
    """One measured property of the photo against its threshold."""

    code: str
    passed: bool
    value: float | None = None
    threshold: float | None = None
    # "min": value must be >= threshold; "max": value must be <= threshold.
    direction: Literal["min", "max"] = "min"
    message: str = ""


class Quality(BaseModel):
    ok: bool
    checks: list[QualityCheck] = Field(default_factory=list)

    @property
    def failing(self) -> list[QualityCheck]:
        return [c for c in self.checks if not c.passed]

    @property
    def failing_codes(self) -> list[str]:
        return [c.code for c in self.failing]


class ErrorInfo(BaseModel):
    code: str
    message: str


class ScreeningResult(BaseModel):
    """Everything a reply, a CSV row or a JSON line needs about one screened photo."""

    schema_version: int = SCHEMA_VERSION
    path: str | None = None
    job_id: str | None = None
    group: str
    ok: bool
    hb_g_dl: float | None = None
    interval_80: tuple[float, float] | None = None
    interval_95: tuple[float, float] | None = None
    category: Category | None = None
    referral: Referral
    anaemia_below_g_dl: float | None = None
    validated_for_group: bool = False
    # The groups the regression model card says it was validated for (what a warning names).
    validated_groups: list[str] = Field(default_factory=list)
    danger_signs: bool = False
    quality: Quality | None = None
    error: ErrorInfo | None = None
    heatmap_path: str | None = None
    mask_path: str | None = None  # `hbscreen screen --masks`: the conjunctiva mask used
    model_versions: dict[str, str] = Field(default_factory=dict)
    timings_ms: dict[str, float] = Field(default_factory=dict)

    def to_json(self) -> str:
        return self.model_dump_json()
