"""WHO 2024 cut-offs as data, the severity band of an estimate, and the referral rule.

The rule is sensitivity-first: a screening miss costs more than an extra blood test.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources

from .modelcard import Calibration, ModelCard
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
    group: str,
    margin: float,
    *,
    danger_signs: bool = False,
) -> Referral:
    """Urgent for the severe band or danger signs; a blood test whenever the estimate is
    below the group's cut-off + `margin` (g/dL, >= 0: the model card's operating margin, or
    the 80% interval's half-width where the model is not validated); routine care otherwise."""
    c = cutoffs_for(group)
    if danger_signs or hb_g_dl < c.severe_below:
        return "urgent"
    if hb_g_dl < c.anaemia_below + max(margin, 0.0):
        return "blood_test"
    return "routine"


def referral_margin(
    calibration: Calibration, validated: bool, population: str | None = None
) -> float:
    """The operating margin of the person's population (Mondrian calibration in the card;
    the pooled one for a card without it) where the model is validated for the group;
    elsewhere the wider of it and that population's 80% half-width (sensitivity first when
    unsure)."""
    cal = calibration.for_population(population)
    op = cal.referral_margin
    if op is None:
        return cal.q80
    return op if validated else max(op, cal.q80)


@dataclass(frozen=True)
class GroupCalibration:
    """What the card says for one WHO group: the population it is screened as, whether the
    model is validated for it, the interval half-widths and the referral margin to use."""

    group: str
    population: str | None
    validated: bool
    q80: float
    q95: float
    margin: float


def group_calibration(card: ModelCard, group: str) -> GroupCalibration:
    """Per-group figures from the regression card (validated_groups, group_input and the
    per-population calibration); the bot and the CLI word their answer from this."""
    cutoffs_for(group)
    cal = card.calibration
    if cal is None:
        raise ValueError("the regression model card has no calibration")
    population = card.population_for(group)
    validated = group in card.validated_groups
    pc = cal.for_population(population)
    return GroupCalibration(
        group=group,
        population=population,
        validated=validated,
        q80=pc.q80,
        q95=pc.q95,
        margin=referral_margin(cal, validated, population),
    )
