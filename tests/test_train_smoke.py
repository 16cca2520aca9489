"""A few-second run of the training code: valid ONNX + card, and `screen --cutout` through
inference gives the same estimate as the evaluation code path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

from hbscreen.inference.modelcard import load_card  # noqa: E402
from hbscreen.inference.pipeline import Pipeline  # noqa: E402
from hbscreen.training.crossval import onnx_predict  # noqa: E402
from hbscreen.training.regressor import build_inputs  # noqa: E402
from hbscreen.training.train import train_regression  # noqa: E402

from .test_cpanemic import make_fake_cpanemic  # noqa: E402
from .test_eyes_defy import make_fake_eyes  # noqa: E402
from .tiny_models import build_tiny_models  # noqa: E402


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp("smoke")
    data = make_fake_cpanemic(tmp / "cp", n=40, duplicates=4)
    eyes = make_fake_eyes(tmp / "eyes", n=30)
    models = build_tiny_models(tmp / "models")  # segmentation stand-in; regression replaced
    train_regression(data, models, seed=0, quick=True, eyes_root=eyes, segmentation_dir=models)
    return data, eyes, models


def test_smoke_training_writes_a_valid_model(trained) -> None:
    _, _, models = trained
    card = load_card("regression", models)
    assert card.task == "regression" and card.outputs == {"hb": "hb", "heatmap": "heatmap"}
    cal = card.calibration
    assert cal is not None and 0 < cal.q80 < cal.q95
    # one model for children and adults: the population is the second input
    assert [i.name for i in card.inputs] == ["crop", "group"]
    assert card.group_input is not None
    assert card.group_input.populations == ["child", "woman", "man"]
    assert card.population_for("pregnant-2") == "woman"
    # Mondrian calibration and a margin per population; validated_groups follows it
    assert set(cal.per_population) == {"child", "woman", "man"}
    for p, pc in cal.per_population.items():
        assert 0 < pc.q80 < pc.q95 and pc.referral_margin is not None, p
    validated = {p for p, pc in cal.per_population.items() if pc.validated}
    from hbscreen.training.evaluate import VALIDATED_GROUPS_OF

    assert card.validated_groups == [g for p in validated for g in VALIDATED_GROUPS_OF[p]]
    assert not any(g.startswith("pregnant") for g in card.validated_groups)
    assert len(card.citation) == 4 and "CC BY 4.0" in card.licence
    assert "group" in card.metrics["split"]
    assert set(card.metrics["validation"]) == {"child", "woman", "man"}
    text = (models / "MODEL_CARD.md").read_text()
    assert "Ghana" in text and "Pregnancy" in text


def test_screen_cutout_equals_evaluation_path(trained) -> None:
    data, eyes, models = trained
    card = load_card("regression", models)
    pipe = Pipeline(models)
    from hbscreen.training.cpanemic import load_cpanemic
    from hbscreen.training.eyes_defy import load_cutouts

    cases = [(s.path, s.rgba, "child-24-59m", "child") for s in load_cpanemic(data)[:3]]
    cases += [(s.path, s.rgba, s.population, s.population) for s in load_cutouts(eyes)[:4]]
    cfg = _cfg_from_card(card)
    for path, rgba, group, pop in cases:
        x = build_inputs([rgba], cfg)
        g = np.zeros((1, 3), np.float32)
        g[0, card.group_input.populations.index(pop)] = 1
        expected = onnx_predict(models / card.file, x, group=g)[0]
        result, jpeg = pipe.screen(path.read_bytes(), group, cutout=True)
        assert result.ok, result.error
        assert result.hb_g_dl == pytest.approx(round(expected, 1), abs=1e-6)
        pc = card.calibration.for_population(pop)
        assert result.interval_80 == (round(expected - pc.q80, 1), round(expected + pc.q80, 1))
        assert jpeg is not None
        from hbscreen.inference import intake

        img = intake.decode_image(path.read_bytes(), keep_alpha=True, min_side=24)
        hb, _cam, _ = pipe.estimate(img.rgb, img.alpha.astype(np.float32) / 255.0, group)
        assert hb == pytest.approx(expected, abs=1e-4)


def test_training_is_deterministic(trained, tmp_path: Path) -> None:
    data, eyes, models = trained
    again = build_tiny_models(tmp_path / "models")
    train_regression(data, again, seed=0, quick=True, eyes_root=eyes, segmentation_dir=again)
    assert (again / "regression.onnx").read_bytes() == (models / "regression.onnx").read_bytes()


def _cfg_from_card(card):
    from hbscreen.training.regressor import RegressorConfig

    pre = card.preprocessing
    return RegressorConfig(
        size=tuple(pre.size),
        colour=pre.colour,
        lightness_norm=bool(getattr(pre, "lightness_norm", False)),
        glare_exclude=bool(getattr(pre, "glare_exclude", False)),
        dark_exclude=getattr(pre, "dark_exclude", None),
        mean=list(pre.mean),
        std=list(pre.std),
    )


def test_referral_margin_reaches_the_target_sensitivity_on_the_data_it_is_chosen_on() -> None:
    from hbscreen.training.metrics import referral_margin, referral_operating_point

    rng = np.random.default_rng(0)
    y = rng.uniform(6, 15, 400)
    pred = y + rng.normal(0, 1.5, y.size)
    m = referral_margin(y, pred, target=0.85)
    assert m >= 0 and round(m * 10) == m * 10  # a multiple of 0.1 g/dL
    assert referral_operating_point(y, pred, m)["sensitivity"] >= 0.85
    assert referral_operating_point(y, pred, m - 0.1)["sensitivity"] < 0.85
    # a model that under-estimates everyone needs no margin, and never gets a negative one
    assert referral_margin(y, y - 3, target=0.85) == 0.0


def test_bootstrap_margin_holds_the_target_in_most_resamples() -> None:
    """Issue 11: the margin is the 90th percentile of the resamples' 0.85 margins, so on the
    data it is chosen on it reaches 0.85 in >= 90% of bootstrap resamples of the anaemic
    items, and is never below the plain 0.85 margin."""
    from hbscreen.training.metrics import (
        referral_margin,
        referral_margin_bootstrap,
        referral_operating_point,
    )

    rng = np.random.default_rng(1)
    y = rng.uniform(9, 15, 120)
    pred = y + rng.normal(0, 1.2, y.size)
    m = referral_margin_bootstrap(y, pred, target=0.85, cutoff=11.0)
    assert m >= referral_margin(y, pred, target=0.85, cutoff=11.0)
    assert round(m * 10) == round(m * 10, 6)
    pos = np.flatnonzero(y < 11.0)
    reached = [
        referral_operating_point(y[i], pred[i], m)["sensitivity"] >= 0.85
        for i in (rng.choice(pos, pos.size) for _ in range(500))
    ]
    assert np.mean(reached) >= 0.85  # 0.9 on the rule's own resamples, fresh ones here
    assert referral_margin_bootstrap(y, y - 3) == 0.0


def test_cli_parsers_register() -> None:
    import argparse

    from hbscreen.training.cli import add_evaluate_parser, add_train_parser

    p = argparse.ArgumentParser()
    sub = p.add_subparsers()
    add_train_parser(sub)
    add_evaluate_parser(sub)
    a = p.parse_args(["train", "--data", "x", "--eyes", "e", "--quick", "--seed", "3"])
    assert a.quick and a.seed == 3 and a.func.__name__ == "run_train" and str(a.eyes) == "e"
    b = p.parse_args(["evaluate", "--out", "r"])
    assert str(b.out) == "r" and b.func.__name__ == "run_evaluate"


REAL_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "cp-anemic"
SHIPPED = Path(__file__).resolve().parents[1] / "inference" / "models"


@pytest.mark.skipif(
    not (
        REAL_DATA.is_dir()
        and (SHIPPED / "regression.onnx").is_file()
        and (SHIPPED / "segmentation.onnx").is_file()
    ),
    reason="needs the CP-AnemiC copy and the shipped models",
)
def test_shipped_model_screen_cutout_equals_evaluation_on_real_cutouts() -> None:
    from hbscreen.training.cpanemic import load_cpanemic

    card = load_card("regression", SHIPPED)
    pipe = Pipeline(SHIPPED)
    samples = load_cpanemic(REAL_DATA)[::150]
    x = build_inputs([s.rgba for s in samples], _cfg_from_card(card))
    g = None
    if card.group_input is not None:
        g = np.zeros((len(samples), len(card.group_input.populations)), np.float32)
        g[:, card.group_input.populations.index("child")] = 1
    ours = onnx_predict(SHIPPED / card.file, x, group=g)
    for s, expected in zip(samples, ours, strict=True):
        result, _ = pipe.screen(s.path.read_bytes(), "child-24-59m", cutout=True)
        assert result.ok, result.error
        assert result.hb_g_dl == pytest.approx(round(expected, 1), abs=1e-6)
