"""WHO 2024 boundaries and the sensitivity-first referral rule."""

import json
from pathlib import Path

import pytest

from inference.advice import GROUPS, category_for, cutoffs_for, referral_for, who_table

# (group, anaemia_below, moderate_below, severe_below) from shared/docs/who-anaemia-2024.md
WHO_2024 = [
    ("child-6-23m", 10.5, 9.5, 7.0),
    ("child-24-59m", 11.0, 10.0, 7.0),
    ("child-5-11y", 11.5, 11.0, 8.0),
    ("child-12-14y", 12.0, 11.0, 8.0),
    ("woman", 12.0, 11.0, 8.0),
    ("pregnant-1", 11.0, 10.0, 7.0),
    ("pregnant-2", 10.5, 9.5, 7.0),
    ("pregnant-3", 11.0, 10.0, 7.0),
    ("man", 13.0, 11.0, 8.0),
]


def test_all_nine_groups_and_the_source_is_named():
    assert set(GROUPS) == {g for g, *_ in WHO_2024}
    raw = json.loads(Path("inference/who_anaemia_2024.json").read_text())
    assert "WHO" in raw["source"] and "2024" in raw["source"]


@pytest.mark.parametrize(("group", "anaemia", "moderate", "severe"), WHO_2024)
def test_every_boundary(group, anaemia, moderate, severe):
    c = cutoffs_for(group)
    assert (c.anaemia_below, c.moderate_below, c.severe_below) == (anaemia, moderate, severe)
    eps = 0.01
    assert category_for(anaemia, group) == "none"
    assert category_for(anaemia - eps, group) == "mild"
    assert category_for(moderate, group) == "mild"
    assert category_for(moderate - eps, group) == "moderate"
    assert category_for(severe, group) == "moderate"
    assert category_for(severe - eps, group) == "severe"


def test_pregnant_first_trimester_example_from_the_issue():
    assert category_for(10.99, "pregnant-1") == "mild"
    assert category_for(11.0, "pregnant-1") == "none"


def test_unknown_group_is_a_clear_error():
    with pytest.raises(ValueError, match="choose one of"):
        cutoffs_for("pregnant")


@pytest.mark.parametrize(
    ("hb", "interval", "expected"),
    [
        (13.0, (11.5, 14.5), "routine"),  # whole interval above the cut-off
        (12.0, (10.9, 13.1), "blood_test"),  # interval reaches below 11.0
        (11.5, (11.0, 12.0), "routine"),  # the cut-off itself is not anaemia
        (9.0, (7.5, 10.5), "blood_test"),  # moderate
        (6.9, (5.4, 8.4), "urgent"),  # severe band
        (7.0, (5.5, 8.5), "blood_test"),  # 7.0 is moderate, not severe
    ],
)
def test_referral_rule_pregnant_1(hb, interval, expected):
    assert referral_for(hb, interval, "pregnant-1") == expected


def test_danger_signs_are_always_urgent():
    assert referral_for(14.0, (13.0, 15.0), "woman", danger_signs=True) == "urgent"


def test_table_is_the_single_source():
    assert len(who_table()) == 9
