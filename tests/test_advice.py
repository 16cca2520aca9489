"""WHO 2024 boundaries and the sensitivity-first referral rule."""

import json
from pathlib import Path

import pytest

from hbscreen.inference.advice import (
    GROUPS,
    category_for,
    cutoffs_for,
    referral_for,
    referral_margin,
    who_table,
)
from hbscreen.inference.modelcard import Calibration, PopulationCalibration

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
    ("hb", "margin", "expected"),
    [
        (13.0, 1.5, "routine"),  # above cut-off + margin
        (12.4, 1.5, "blood_test"),  # within the margin above 11.0
        (12.5, 1.5, "routine"),  # cut-off + margin itself is not referred
        (11.0, 0.0, "routine"),  # the cut-off itself is not anaemia
        (10.99, 0.0, "blood_test"),
        (11.0, -0.5, "routine"),  # a negative margin never refers less than the cut-off
        (9.0, 1.5, "blood_test"),  # moderate
        (6.9, 1.5, "urgent"),  # severe band
        (7.0, 1.5, "blood_test"),  # 7.0 is moderate, not severe
    ],
)
def test_referral_rule_pregnant_1(hb, margin, expected):
    assert referral_for(hb, "pregnant-1", margin) == expected


def test_danger_signs_are_always_urgent():
    assert referral_for(14.0, "woman", 0.0, danger_signs=True) == "urgent"


def test_margin_is_the_cards_where_validated_and_never_narrower_than_q80_elsewhere():
    tuned = Calibration(q80=2.3, q95=3.6, referral_margin=0.8)
    assert referral_margin(tuned, validated=True) == 0.8
    assert referral_margin(tuned, validated=False) == 2.3
    assert referral_margin(Calibration(q80=1.5, q95=2.6), validated=True) == 1.5


def test_margins_and_intervals_are_per_population():
    cal = Calibration(
        q80=2.0,
        q95=3.0,
        referral_margin=0.5,
        per_population={
            "child": PopulationCalibration(q80=2.3, q95=3.5, referral_margin=0.4, validated=True),
            "man": PopulationCalibration(q80=1.6, q95=2.4, referral_margin=0.7, validated=True),
        },
    )
    assert referral_margin(cal, True, "child") == 0.4
    assert referral_margin(cal, True, "man") == 0.7
    assert referral_margin(cal, False, "man") == 1.6  # unvalidated: never below the 80% half
    assert referral_margin(cal, True, "woman") == 0.5  # no own calibration: the pooled one
    assert referral_margin(cal, True, None) == 0.5


def test_group_calibration_follows_the_card():
    from hbscreen.inference.advice import group_calibration
    from hbscreen.inference.modelcard import GroupInput, ModelCard, Preprocessing, TensorSpec

    cal = Calibration(
        q80=2.0,
        q95=3.0,
        per_population={
            "woman": PopulationCalibration(q80=1.6, q95=2.5, referral_margin=0.3, validated=True)
        },
    )
    card = ModelCard(
        name="regression",
        version="x",
        task="regression",
        file="r.onnx",
        inputs=[TensorSpec(name="crop", shape=[1, 4, 8, 8])],
        outputs={"hb": "hb", "heatmap": "heatmap"},
        preprocessing=Preprocessing(size=(8, 8)),
        calibration=cal,
        validated_groups=["woman"],
        group_input=GroupInput(
            populations=["child", "woman", "man"],
            population_of={"woman": "woman", "pregnant-1": "woman", "man": "man"},
        ),
    )
    w = group_calibration(card, "woman")
    assert (w.population, w.validated, w.q80, w.margin) == ("woman", True, 1.6, 0.3)
    p = group_calibration(card, "pregnant-1")  # screened as a woman, never validated
    assert (p.population, p.validated, p.q80, p.margin) == ("woman", False, 1.6, 1.6)


def test_table_is_the_single_source():
    assert len(who_table()) == 9
