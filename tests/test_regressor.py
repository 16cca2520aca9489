"""The Hb regressor: inputs come from inference's preprocessing, the ONNX graph matches torch,
the heatmap decomposes the prediction, and the colour normalisations behave as documented."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")

from hbscreen.inference.preprocess import regression_input  # noqa: E402
from hbscreen.training.export import INPUT_NAME, check_onnx, export_onnx  # noqa: E402
from hbscreen.training.regressor import (  # noqa: E402
    RegressorConfig,
    build_inputs,
    cutout_crop,
    masked_colour_stats,
    renormalise,
    train_regressor,
)

from .test_cpanemic import fake_cutout  # noqa: E402


@pytest.fixture(scope="module")
def data() -> tuple[list[np.ndarray], np.ndarray]:
    torch.set_num_threads(1)
    rng = np.random.default_rng(1)
    hb = rng.uniform(7, 14, 60)
    return [fake_cutout(rng, h) for h in hb], hb


def _fit(data, **kw):
    rgbas, hb = data
    cfg = RegressorConfig(centres=16, **kw)
    raw = build_inputs(rgbas, cfg)
    cfg.mean, cfg.std = masked_colour_stats(raw)
    x = build_inputs(rgbas, cfg)
    return train_regressor(x, hb, cfg, seed=0), x, raw


def test_cached_renormalisation_equals_regression_input(data) -> None:
    model, x, raw = _fit(data)
    assert np.abs(renormalise(raw, model.cfg.mean, model.cfg.std) - x).max() < 1e-4
    rgb, mask = cutout_crop(data[0][0])
    direct = regression_input(rgb, mask, model.cfg.preprocessing())
    assert np.array_equal(direct, x[:1])


def test_learns_the_colour_signal_and_exports(data, tmp_path: Path) -> None:
    model, x, _ = _fit(data)
    pred = model.predict(x)
    assert np.corrcoef(pred, data[1])[0, 1] > 0.8
    path = tmp_path / "r.onnx"
    export_onnx(model, path)
    assert check_onnx(model, path, x[:8]) < 1e-4
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    hb, cam = sess.run(["hb", "heatmap"], {INPUT_NAME: x[:1]})
    assert hb.shape in ((1,), (1, 1))
    assert cam.shape == (1, 1, *model.cfg.size)
    # the heatmap is the prediction spread over pixels: mean(cam) = hb - y_mean - bias * y_std
    bias = model.net.head_bias.item()
    assert cam.mean() == pytest.approx(hb.item() - model.y_mean - bias * model.y_std, abs=1e-4)
    assert cam.min() < 0 < cam.max() or abs(cam).max() < 1e-6  # signed map


def test_background_and_size_do_not_matter(data) -> None:
    model, _, _ = _fit(data)
    pre = model.cfg.preprocessing()
    rgb, mask = cutout_crop(data[0][0])
    a = model.predict(regression_input(rgb, mask, pre))
    padded_rgb = np.pad(rgb, ((10, 10), (30, 30), (0, 0)))
    padded_mask = np.pad(mask, ((10, 10), (30, 30)))
    b = model.predict(regression_input(padded_rgb, padded_mask, pre))
    assert abs(a - b).item() < 0.35  # only resampling differs


def test_lightness_norm_removes_exposure(data) -> None:
    rgb, mask = cutout_crop(data[0][0])
    cfg = RegressorConfig(colour="logchroma", lightness_norm=True)
    pre = cfg.preprocessing()
    darker = (rgb.astype(np.float32) * 0.8).astype(np.uint8)
    a, b = regression_input(rgb, mask, pre), regression_input(darker, mask, pre)
    m = a[0, -1] > 0.5
    assert np.abs(a[0, 2][m] - b[0, 2][m]).mean() < 0.02  # exposure gone from lightness
    lab = replace(cfg, colour="lab").preprocessing()
    assert regression_input(rgb, mask, lab).shape == (1, 4, *cfg.size)


def test_glare_is_excluded_from_the_mask() -> None:
    rgb = np.full((40, 100, 3), (150, 60, 60), np.uint8)
    rgb[10:20, 40:60] = 250
    mask = np.ones((40, 100), np.float32)
    pre = RegressorConfig(size=(40, 100), glare_exclude=True).preprocessing()
    x = regression_input(rgb, mask, pre)
    assert x[0, -1, 12:18, 45:55].max() == 0
    assert x[0, -1, 30, 10] == 1


def test_training_is_deterministic(data) -> None:
    a, x, _ = _fit(data)
    b, _, _ = _fit(data)
    assert np.array_equal(a.predict(x), b.predict(x))


def _fit_groups(data, **kw):
    """A two-population model (the product's child / adult split on fake data)."""
    rgbas, hb = data
    pops = ["child" if i % 2 else "man" for i in range(len(hb))]
    y = np.asarray(hb) + np.array([0.0 if p == "child" else 2.0 for p in pops])
    cfg = RegressorConfig(
        centres=16, populations=["child", "man"], heads=[0, 1], identity=True, **kw
    )
    raw = build_inputs(rgbas, cfg)
    cfg.mean, cfg.std = masked_colour_stats(raw)
    x = build_inputs(rgbas, cfg)
    return train_regressor(x, y, cfg, seed=0, pops=pops), x, y, pops


def test_group_input_moves_the_prior_and_exports(data, tmp_path: Path) -> None:
    from hbscreen.training.export import GROUP_NAME

    model, x, y, pops = _fit_groups(data, colour="lab_chroma")
    assert x.shape[1] == 7  # CIELAB + three redness ratios + mask
    pred = model.predict(x, pops)
    assert np.abs(pred - y).mean() < 1.0
    # same picture, other population: the estimate starts from that population's level
    as_man = model.predict(x, ["man"] * len(x))
    as_child = model.predict(x, ["child"] * len(x))
    assert (as_man - as_child).mean() > 1.0
    path = tmp_path / "g.onnx"
    export_onnx(model, path)
    assert check_onnx(model, path, x[:6]) < 1e-4
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == [INPUT_NAME, GROUP_NAME]
    g = model.group_matrix(["man"], 1)
    hb, cam = sess.run(["hb", "heatmap"], {INPUT_NAME: x[:1], GROUP_NAME: g})
    offset = model.net.head_bias[1].item()
    assert cam.mean() == pytest.approx(hb.item() - model.y_mean - offset * model.y_std, abs=1e-4)


def test_mean_colour_only_model(data) -> None:
    model = _fit_groups(data, colour="lab_chroma")[0]
    assert model.net.features.out_channels == 16 + 6
    rgbas, hb = data
    cfg = RegressorConfig(centres=0, identity=True, colour="lab_chroma")
    raw = build_inputs(rgbas, cfg)
    cfg.mean, cfg.std = masked_colour_stats(raw)
    xs = build_inputs(rgbas, cfg)
    m = train_regressor(xs, hb, cfg, seed=0)
    assert m.net.features.out_channels == 6
    assert np.corrcoef(m.predict(xs), hb)[0, 1] > 0.8


def test_redness_ratios_ignore_exposure(data) -> None:
    rgb, mask = cutout_crop(data[0][0])
    pre = RegressorConfig(colour="lab_chroma").preprocessing()
    darker = (rgb.astype(np.float32) * 0.8).astype(np.uint8)
    a, b = regression_input(rgb, mask, pre), regression_input(darker, mask, pre)
    m = a[0, -1] > 0.5
    # log(R/G) and R/(R+G+B) barely move with exposure; L* does
    assert np.abs(a[0, 4][m] - b[0, 4][m]).mean() < 0.03
    assert np.abs(a[0, 5][m] - b[0, 5][m]).mean() < 0.01
    assert np.abs(a[0, 0][m] - b[0, 0][m]).mean() > 3


def test_domain_features_give_each_domain_its_own_colour_scale(data, tmp_path: Path) -> None:
    model, x, y, pops = _fit_groups(data, colour="lab_chroma", domain_features=True)
    f = model.net.features
    assert f.n_centres == 32 and f.quad is not None  # 16 centres per domain
    w = model.net.head_weight.detach().numpy()
    # each population's head uses only its own domain's centres (+ the pooled channels)
    assert np.abs(w[0, 16:32]).max() == 0 and np.abs(w[1, :16]).max() == 0
    assert np.abs(model.predict(x, pops) - y).mean() < 1.0
    path = tmp_path / "d.onnx"
    export_onnx(model, path)
    assert check_onnx(model, path, x[:6]) < 1e-4


def test_per_population_heads_compose_into_one_graph(data, tmp_path: Path) -> None:
    """Issue 11: each population's head from its own candidate (here the children's from a
    children-only model in its own preprocessing), one graph; per population the composite
    predicts what its candidate predicts, and the ONNX graph what torch does."""
    from hbscreen.training.crossval import (
        PREVIOUS,
        InputCache,
        Task,
        compose_heads,
        fit_config,
        onnx_predict,
        predict,
    )

    rgbas, hb = data
    pops = ["child" if i % 2 else "man" for i in range(len(hb))]
    y = np.asarray(hb) + np.array([0.0 if p == "child" else 2.0 for p in pops])
    n = len(y)
    task = Task(y, pops, [str(i) for i in range(n)], np.full(n, 11.0), np.ones(n, bool))
    cache = InputCache(rgbas)
    idx = np.arange(n)
    pooled = RegressorConfig(
        colour="lab_chroma", identity=True, centres=16, populations=["child", "man"], heads=[0, 1]
    )
    a, x = fit_config(cache, idx, task, pooled, 0)
    kids = idx[np.array(pops) == "child"]
    k, _ = fit_config(cache, kids, task, replace(PREVIOUS, centres=16), 0)
    xk = renormalise(cache.raw(k.cfg), k.cfg.mean, k.cfg.std)
    model = compose_heads({"pooled": a, "kids": k}, {"child": "kids", "man": "pooled"}, "pooled")
    got = predict(model, x, task, idx)
    men = np.array(pops) == "man"
    assert np.abs(got[men] - a.predict(x[men], ["man"] * men.sum())).max() < 1e-4
    # the children's centres are mapped into the card's units: exact on fully masked pixels,
    # the soft mask edge moves the estimate by far less than its 0.1 g/dL display precision
    assert np.abs(got[kids] - k.predict(xk[kids])).max() < 0.02
    w = model.net.head_weight.detach().numpy()
    assert np.abs(w[0, -6:]).max() == 0  # the children-only head has no pooled channels
    path = tmp_path / "c.onnx"
    export_onnx(model, path)
    g = model.group_matrix(pops, n)
    assert np.abs(onnx_predict(path, x, group=g) - got).max() < 1e-4


@pytest.mark.parametrize("choice", ["children", "keep_children"])
def test_children_choice_keeps_the_joint_head_for_adults(data, monkeypatch, choice) -> None:
    """Issue 11 rules: the adults' heads are the joint winner's; the children's is the joint
    winner or the children-only recipe (whichever the inner folds prefer on children), or with
    keep_children always the children-only recipe; every population gets a margin."""
    from hbscreen.training import crossval
    from hbscreen.training.hbdata import HEADS, POPULATIONS

    rgbas, hb = data
    pops = [POPULATIONS[i % 3] for i in range(len(hb))]
    y = np.asarray(hb) + np.array([{"child": 0.0, "woman": 1.0, "man": 2.0}[p] for p in pops])
    cut = np.array([{"child": 11.0, "woman": 12.0, "man": 13.0}[p] for p in pops])
    n = len(y)
    task = crossval.Task(y, pops, [str(i) for i in range(n)], cut, np.ones(n, bool))
    pop = {"populations": list(POPULATIONS), "heads": list(HEADS)}
    small = {
        "hist": RegressorConfig(colour="lab_chroma", identity=True, centres=8, **pop),
        "mean": RegressorConfig(colour="lab_chroma", identity=True, centres=0, **pop),
    }
    monkeypatch.setattr(crossval, "CANDIDATES", small)
    monkeypatch.setattr(
        crossval,
        "POPULATION_ONLY",
        {"children_only": ("child", replace(crossval.PREVIOUS, centres=8))},
    )
    monkeypatch.setattr(crossval, "POPULATION_CHOICE", choice)
    cache = crossval.InputCache(rgbas)
    _, scores, model = crossval.select_and_fit(cache, np.arange(n), task, 0)
    best = min(scores, key=scores.get)
    per = model.chosen_per_population
    assert per["woman"] == per["man"] == best
    assert per["child"] in ((best, "children_only") if choice == "children" else ("children_only",))
    assert set(model.population_margins) == set(POPULATIONS)
    assert all(m >= 0 for m in model.population_margins.values())
