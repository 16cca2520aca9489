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
from .tiny_models import build_tiny_models  # noqa: E402


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp("smoke")
    data = make_fake_cpanemic(tmp / "cp", n=40, duplicates=4)
    models = build_tiny_models(tmp / "models")  # segmentation stand-in; regression replaced
    train_regression(data, models, seed=0, quick=True)
    return data, models


def test_smoke_training_writes_a_valid_model(trained) -> None:
    _, models = trained
    card = load_card("regression", models)
    assert card.task == "regression" and card.outputs == {"hb": "hb", "heatmap": "heatmap"}
    assert card.calibration is not None and 0 < card.calibration.q80 < card.calibration.q95
    assert card.validated_groups == ["child-6-23m", "child-24-59m"]
    assert len(card.citation) == 2 and "CC BY 4.0" in card.licence
    op = card.model_dump()["operating_point"]
    assert card.calibration.referral_margin == op["margin_g_dl"] >= 0
    assert set(op["nested_cv"]) >= {"sensitivity", "specificity", "referred_share", "margins"}
    assert "group" in card.metrics["split"]
    assert (models / "MODEL_CARD.md").read_text().count("Ghana") >= 1


def test_screen_cutout_equals_evaluation_path(trained) -> None:
    data, models = trained
    card = load_card("regression", models)
    pipe = Pipeline(models)
    from hbscreen.training.cpanemic import load_cpanemic

    samples = load_cpanemic(data)[:5]
    x = build_inputs([s.rgba for s in samples], _cfg_from_card(card))
    ours = onnx_predict(models / card.file, x)
    for s, expected in zip(samples, ours, strict=True):
        result, jpeg = pipe.screen(s.path.read_bytes(), "child-24-59m", cutout=True)
        assert result.ok, result.error
        assert result.hb_g_dl == pytest.approx(round(expected, 1), abs=1e-6)
        assert jpeg is not None
        from hbscreen.inference import intake

        img = intake.decode_image(s.path.read_bytes(), keep_alpha=True, min_side=24)
        hb, _cam, _ = pipe.estimate(img.rgb, img.alpha.astype(np.float32) / 255.0)
        assert hb == pytest.approx(expected, abs=1e-4)


def _cfg_from_card(card):
    from hbscreen.training.regressor import RegressorConfig

    pre = card.preprocessing
    return RegressorConfig(
        size=tuple(pre.size),
        colour=pre.colour,
        lightness_norm=bool(getattr(pre, "lightness_norm", False)),
        glare_exclude=bool(getattr(pre, "glare_exclude", False)),
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


def test_cli_parsers_register() -> None:
    import argparse

    from hbscreen.training.cli import add_evaluate_parser, add_train_parser

    p = argparse.ArgumentParser()
    sub = p.add_subparsers()
    add_train_parser(sub)
    add_evaluate_parser(sub)
    a = p.parse_args(["train", "--data", "x", "--quick", "--seed", "3"])
    assert a.quick and a.seed == 3 and a.func.__name__ == "run_train"
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
    ours = onnx_predict(SHIPPED / card.file, x)
    for s, expected in zip(samples, ours, strict=True):
        result, _ = pipe.screen(s.path.read_bytes(), "child-24-59m", cutout=True)
        assert result.ok, result.error
        assert result.hb_g_dl == pytest.approx(round(expected, 1), abs=1e-6)
