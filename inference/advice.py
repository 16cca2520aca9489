"""WHO 2024 cut-offs as data, the severity band of an estimate, and the referral rule.

The rule is sensitivity-first: a screening miss costs more than an extra blood test.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources

from .result import Category, Referral

TABLE_FILE = "who_anaemia_2024.json"


@dataclass(frozen=True)
class GroupCutoffs:
    group: str
    label: str
    anaemia_below: float
    moderate_below: float
    severe_below: float


@cache
def who_table() -> dict[str, GroupCutoffs]:
    """The nine WHO groups, read from the one JSON table a programme can correct."""
    raw = json.loads(resources.files(__package__).joinpath(TABLE_FILE).read_text("utf-8"))
    return {
        name: GroupCutoffs(
            group=name,
            label=row["label"],
            anaemia_below=float(row["anaemia_below"]),
            moderate_below=float(row["moderate_below"]),
            severe_below=float(row["severe_below"]),
        )
        for name, row in raw["groups"].items()
    }


GROUPS: tuple[str, ...] = tuple(who_table())


def cutoffs_for(group: str) -> GroupCutoffs:
    try:
        return who_table()[group]
    except KeyError:
        raise ValueError(f"unknown group {group!r}; choose one of: {', '.join(GROUPS)}") from None


def category_for(hb_g_dl: float, group: str) -> Category:
    """WHO severity band of a haemoglobin value (no rounding here; callers round first)."""
    c = cutoffs_for(group)
    if hb_g_dl >= c.anaemia_below:
        return "none"
    if hb_g_dl >= c.moderate_below:
        return "mild"
    if hb_g_dl >= c.severe_below:
        return "moderate"
    return "severe"


def referral_for(
    hb_g_dl: float,
    interval: tuple[float, float],
    group: str,
    *,
    danger_signs: bool = False,
) -> Referral:
    """Urgent for the severe band or danger signs; a blood test whenever the interval reaches
    below the group's cut-off; routine care otherwise."""
    c = cutoffs_for(group)
    if danger_signs or hb_g_dl < c.severe_below:
        return "urgent"
    if min(interval) < c.anaemia_below:
        return "blood_test"
    return "routine"


DISCLAIMER_EN = (
    "This is a screening estimate from a photo, not a diagnosis. "
    "Only a blood test can confirm anaemia."
)
