"""Cross-validation of the Hb regressor and the colour baseline on the same group folds.

Selection is nested: for each outer fold the colour variant is chosen by inner group-CV on
that fold's training part only, the ridge penalty by leave-one-out inside it; the test fold is
touched once, by the exported ONNX graph (the artefact that ships).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from hbscreen.inference.preprocess import regression_input

from .colour_features import colour_features, fit_baseline
from .export import INPUT_NAME, export_onnx
from .folds import group_kfold
from .metrics import referral_margin
from .regressor import (
    RegressorConfig,
    TrainedRegressor,
    build_inputs,
    cutout_crop,
    masked_colour_stats,
    renormalise,
    train_regressor,
)

# Colour variants the inner folds choose from: CIELAB as is, CIELAB with the lightness
# normalisation (exposure-invariant), and plain RGB.
CANDIDATES: dict[str, RegressorConfig] = {
    "lab": RegressorConfig(colour="lab", lightness_norm=False),
    "lab_lightnorm": RegressorConfig(colour="lab", lightness_norm=True),
    "rgb": RegressorConfig(colour="rgb", lightness_norm=False),
}
# --quick (smoke runs, CI): one small variant.
QUICK_CANDIDATES: dict[str, RegressorConfig] = {"lab": RegressorConfig(centres=32, sigma=0.35)}

Progress = Callable[[str], None]


@dataclass
class CVResult:
    pred: np.ndarray
    folds: list[np.ndarray]
    chosen: list[str] = field(default_factory=list)
    inner_scores: list[dict[str, float]] = field(default_factory=list)
    models: list[TrainedRegressor] = field(default_factory=list)
    margin: np.ndarray | None = None  # per item: its fold model's referral margin (g/dL)
    onnx_paths: list[Path] = field(default_factory=list)


class InputCache:
    """Un-normalised (mean 0 / std 1) inputs per colour variant, computed once."""

    def __init__(self, rgbas: list[np.ndarray]):
        self.rgbas = rgbas
        self._raw: dict[tuple, np.ndarray] = {}

    def raw(self, cfg: RegressorConfig) -> np.ndarray:
        key = (cfg.colour, cfg.lightness_norm, cfg.glare_exclude, tuple(cfg.size))
        if key not in self._raw:
            base = replace(cfg, mean=[], std=[])
            self._raw[key] = build_inputs(self.rgbas, base)
        return self._raw[key]


def fit_config(
    cache: InputCache, idx: np.ndarray, y: np.ndarray, cfg: RegressorConfig, seed: int
) -> tuple[TrainedRegressor, np.ndarray]:
    """Fit on items `idx` with colour statistics from those items only; returns the model and
    the normalised inputs of ALL items (the same tensors regression_input makes with them)."""
    raw = cache.raw(cfg)
    mean, std = masked_colour_stats(raw[idx])
    cfg = replace(cfg, mean=mean, std=std)
    x = renormalise(raw, mean, std)
    return train_regressor(x[idx], y[idx], cfg, seed), x


def select_and_fit(
    cache: InputCache,
    idx: np.ndarray,
    y: np.ndarray,
    groups: list[str],
    seed: int,
    candidates: dict[str, RegressorConfig] | None = None,
    inner_splits: int = 3,
    with_margin: bool = True,
) -> tuple[str, dict[str, float], TrainedRegressor]:
    """Choose the colour variant by inner group-CV MAE on `idx` only, refit on `idx`, and set
    the referral margin from the chosen variant's inner out-of-fold predictions."""
    candidates = candidates or CANDIDATES
    if len(candidates) == 1 and not with_margin:
        name, cfg = next(iter(candidates.items()))
        return name, {}, fit_config(cache, idx, y, cfg, seed)[0]
    inner = group_kfold([groups[i] for i in idx], inner_splits, seed + 1)
    scores: dict[str, float] = {}
    inner_pred: dict[str, np.ndarray] = {}
    for name, cfg in candidates.items():
        pred = np.zeros(len(idx))
        for test in inner:
            tr = np.setdiff1d(np.arange(len(idx)), test)
            model, x = fit_config(cache, idx[tr], y, cfg, seed)
            pred[test] = model.predict(x[idx[test]])
        scores[name] = float(np.abs(pred - y[idx]).mean())
        inner_pred[name] = pred
    best = min(scores, key=scores.get)
    model, _ = fit_config(cache, idx, y, candidates[best], seed)
    model.referral_margin = referral_margin(y[idx], inner_pred[best])
    return best, scores, model


def onnx_predict(path: Path, x: np.ndarray, with_heatmap: bool = False):
    """Run the exported graph item by item (batch 1, as served)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    hb, cams = [], []
    for i in range(len(x)):
        h, cam = sess.run(["hb", "heatmap"], {INPUT_NAME: x[i : i + 1]})
        hb.append(float(np.asarray(h).reshape(-1)[0]))
        cams.append(cam[0, 0])
    return (np.array(hb), cams) if with_heatmap else np.array(hb)


def cv_regressor(
    cache: InputCache,
    y: np.ndarray,
    groups: list[str],
    folds: list[np.ndarray],
    seed: int = 0,
    candidates: dict[str, RegressorConfig] | None = None,
    workdir: Path | None = None,
    progress: Progress | None = None,
    with_margin: bool = True,
) -> CVResult:
    """Out-of-fold predictions of the exported ONNX graphs, one per outer fold."""
    workdir = Path(workdir or tempfile.mkdtemp(prefix="hbcv-"))
    res = CVResult(pred=np.zeros(len(y)), folds=folds, margin=np.zeros(len(y)))
    for k, test in enumerate(folds):
        train = np.setdiff1d(np.arange(len(y)), test)
        name, scores, model = select_and_fit(
            cache, train, y, groups, seed, candidates, with_margin=with_margin
        )
        path = workdir / f"fold{k}.onnx"
        export_onnx(model, path)
        x = renormalise(cache.raw(model.cfg), model.cfg.mean, model.cfg.std)
        res.pred[test] = onnx_predict(path, x[test])
        res.margin[test] = model.referral_margin or 0.0
        res.chosen.append(name)
        res.inner_scores.append(scores)
        res.models.append(model)
        res.onnx_paths.append(path)
        if progress:
            progress(f"regressor fold {k + 1}/{len(folds)}: {name}")
    return res


def cv_baseline(
    features: np.ndarray,
    y: np.ndarray,
    groups: list[str],
    folds: list[np.ndarray],
    seed: int = 0,
    progress: Progress | None = None,
    trees: int = 200,
) -> CVResult:
    """Out-of-fold predictions of the colour baseline (model chosen on inner folds)."""
    res = CVResult(pred=np.zeros(len(y)), folds=folds)
    for k, test in enumerate(folds):
        train = np.setdiff1d(np.arange(len(y)), test)
        est, name, scores = fit_baseline(
            features[train], y[train], [groups[i] for i in train], seed, trees
        )
        res.pred[test] = est.predict(features[test])
        res.chosen.append(name)
        res.inner_scores.append(scores)
        if progress:
            progress(f"baseline fold {k + 1}/{len(folds)}: {name}")
    return res


def baseline_features(rgbas: list[np.ndarray]) -> np.ndarray:
    return np.array(
        [colour_features(r[..., :3], r[..., 3].astype(np.float32) / 255) for r in rgbas]
    )


def degraded_inputs(
    rgbas: list[np.ndarray], cfg: RegressorConfig, seed: int, degrade: Callable
) -> np.ndarray:
    """Inputs from cut-outs whose RGB went through `degrade(rgb, rng)` (mask kept)."""
    rng = np.random.default_rng(seed)
    pre = cfg.preprocessing()
    out = []
    for rgba in rgbas:
        rgb, mask = cutout_crop(rgba)
        out.append(regression_input(degrade(np.ascontiguousarray(rgb), rng), mask, pre))
    return np.concatenate(out)
