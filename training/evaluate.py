"""`hbscreen evaluate`: cross-validated evaluation of the Hb regressor against the colour
baseline on the same content-group folds, written as Markdown + PNG figures.

Also the numbers `hbscreen train` stores in the model card (conformal half-widths from the
out-of-fold residuals, the referral operating point, the CV metrics).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .cpanemic import Sample, load_cpanemic
from .crossval import (
    CANDIDATES,
    QUICK_CANDIDATES,
    CVResult,
    InputCache,
    baseline_features,
    cv_baseline,
    cv_regressor,
    degraded_inputs,
    fit_config,
    onnx_predict,
)
from .folds import (
    MAX_GROUP_SPREAD,
    Item,
    apply_label_policy,
    assert_group_disjoint,
    conformal_quantile,
    file_kfold,
    group_kfold,
    near_duplicate_groups,
)
from .metrics import (
    TARGET_SENSITIVITY,
    agreement,
    interval_report,
    referral_margin,
    referral_operating_point,
    roc_points,
    specificity_at_sensitivity,
)

N_SPLITS = 5
PUBLISHED = {  # Kato et al., Br J Haematol 2024 (doi 10.1111/bjh.19621), file-level numbers
    "cnn_r": 0.44,
    "non_cnn_r": 0.38,
    "sensitivity": 0.20,
    "specificity": 0.99,
}
Progress = Callable[[str], None]


@dataclass
class Evaluation:
    """Everything the report and the model card need."""

    items: list[Item]
    y: np.ndarray
    groups: list[str]
    folds: list[np.ndarray]
    reg: CVResult
    base: CVResult
    policy_stats: dict[str, int]
    seed: int
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def residuals(self) -> np.ndarray:
        return np.abs(self.y - self.reg.pred)

    def calibration(self) -> dict[str, float]:
        """Split-conformal half-widths from all out-of-fold residuals (what ships)."""
        r = self.residuals
        return {
            "q80": round(conformal_quantile(r, 0.8), 3),
            "q95": round(conformal_quantile(r, 0.95), 3),
            "n_calibration": int(r.size),
        }

    def operating_points(self) -> dict[str, Any]:
        """The shipped referral rule (estimate below cut-off + margin) out of fold. Regressor:
        each fold's margin from its model's inner out-of-fold predictions (nested). Baseline:
        each fold's margin from the other folds' out-of-fold predictions (cross-fit)."""
        assert self.reg.margin is not None
        base_margin = np.zeros(len(self.y))
        for test in self.folds:
            others = np.setdiff1d(np.arange(len(self.y)), test)
            base_margin[test] = referral_margin(self.y[others], self.base.pred[others])
        return {
            "rule": "blood test when the estimate is below the cut-off + margin (g/dL)",
            "target_sensitivity": TARGET_SENSITIVITY,
            "regressor": {
                **referral_operating_point(self.y, self.reg.pred, self.reg.margin),
                "margins": [float(self.reg.margin[f[0]]) for f in self.folds],
            },
            "colour_baseline": {
                **referral_operating_point(self.y, self.base.pred, base_margin),
                "margins": [float(base_margin[f[0]]) for f in self.folds],
            },
        }

    def summary(self) -> dict[str, Any]:
        reg = agreement(self.y, self.reg.pred)
        base = agreement(self.y, self.base.pred)
        intervals = interval_report(self.y, self.reg.pred, self.folds)
        return {
            "split": (
                f"{N_SPLITS}-fold cross-validation by pixel-content group (seed {self.seed}); "
                "one item per group labelled with the group's mean Hb; selection nested"
            ),
            "regressor": reg,
            "colour_baseline": base,
            "baseline_intervals": interval_report(self.y, self.base.pred, self.folds),
            "intervals": intervals,
            "operating_point": self.operating_points(),
            "spec_at_sens_0.85": {
                "regressor": specificity_at_sensitivity(self.y, self.reg.pred),
                "colour_baseline": specificity_at_sensitivity(self.y, self.base.pred),
            },
            "chosen_colour": dict(Counter(self.reg.chosen)),
            "chosen_baseline": dict(Counter(self.base.chosen)),
            **self.extra,
        }


def prepare(data_root: Path) -> tuple[list[Sample], list[Item], dict[str, int]]:
    samples = load_cpanemic(data_root)
    items, stats = apply_label_policy(samples)
    return samples, items, stats


def cross_validate(
    data_root: Path,
    seed: int = 0,
    quick: bool = False,
    extras: bool = True,
    progress: Progress | None = None,
) -> Evaluation:
    """The main CV (regressor via ONNX and baseline on the same folds) and, with `extras`,
    the robustness, attention, leakage, label-noise and learning-curve analyses."""
    say = progress or (lambda s: None)
    t0 = time.perf_counter()
    samples, items, stats = prepare(data_root)
    say(f"{stats['files']} files, {stats['groups']} content groups -> {len(items)} items")
    y = np.array([it.hb for it in items])
    groups = [it.group_id for it in items]
    folds = group_kfold(groups, N_SPLITS, seed)
    assert_group_disjoint(groups, folds)
    rgbas = [it.sample.rgba for it in items]
    cache = InputCache(rgbas)
    candidates = QUICK_CANDIDATES if quick else CANDIDATES
    reg = cv_regressor(cache, y, groups, folds, seed, candidates, progress=say)
    feats = baseline_features(rgbas)
    base = cv_baseline(feats, y, groups, folds, seed, progress=say, trees=30 if quick else 200)
    ev = Evaluation(items, y, groups, folds, reg, base, stats, seed)
    if extras and not quick:
        fixed = {c: CANDIDATES[c] for c in [Counter(reg.chosen).most_common(1)[0][0]]}
        ev.extra["feature_correlations"] = feature_correlations(feats, y)
        ev.extra["robustness"] = robustness(ev, cache, say)
        ev.extra["attention"] = attention(ev)
        ev.extra["label_noise"] = label_noise(samples, items, ev)
        ev.extra["leakage"] = leakage(samples, feats, items, ev, fixed, say)
        ev.extra["learning_curve"] = learning_curve(ev, cache, fixed, say)
        ev.extra["label_policy"] = label_policy_comparison(ev, cache, fixed, say)
    ev.extra["cv_wall_s"] = round(time.perf_counter() - t0, 1)
    return ev


def feature_correlations(feats: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Spearman correlation of each colour feature with Hb: how much marginal signal exists."""
    from scipy.stats import spearmanr

    from .colour_features import FEATURE_NAMES

    rho = {n: float(spearmanr(f, y)[0]) for n, f in zip(FEATURE_NAMES, feats.T, strict=True)}
    top = sorted(rho, key=lambda n: -abs(rho[n]))[:5]
    return {n: rho[n] for n in top}


def robustness(ev: Evaluation, cache: InputCache, say: Progress) -> dict[str, float]:
    """MAE of each fold's ONNX graph on its test cut-outs degraded like a cheap phone."""
    from .degrade import cheap_phone

    pred = np.zeros(len(ev.y))
    for k, test in enumerate(ev.folds):
        model = ev.reg.models[k]
        x = degraded_inputs([cache.rgbas[i] for i in test], model.cfg, ev.seed + k, cheap_phone)
        pred[test] = onnx_predict(ev.reg.onnx_paths[k], x)
    say("robustness done")
    clean = agreement(ev.y, ev.reg.pred)
    deg = agreement(ev.y, pred)
    ev.extra["_degraded_pred"] = pred
    return {
        "mae_clean": clean["mae"],
        "mae_degraded": deg["mae"],
        "delta_mae": deg["mae"] - clean["mae"],
        "r_degraded": deg["pearson_r"],
        "auc_degraded": deg["auc_hb_lt_11"],
        "degradation": "training/degrade.py cheap_phone: long side <= 640 px, blur sigma 0.8, "
        "brightness +-10%, JPEG quality 60 (alpha mask kept)",
    }


def attention(ev: Evaluation) -> dict[str, Any]:
    """Kato 2024 Fig. 3: share of positive heatmap (inside the mask) in the lower half of the
    conjunctiva, for well- (|error| <= 1 g/dL) and badly- (|error| > 2 g/dL) predicted images.
    Sign: the heatmap is in g/dL, so 'positive' means pushing the estimate up (redder)."""
    shares = np.full(len(ev.y), np.nan)
    for k, test in enumerate(ev.folds):
        model = ev.reg.models[k]
        raw = InputCache([ev.items[i].sample.rgba for i in test]).raw(model.cfg)
        from .regressor import renormalise

        x = renormalise(raw, model.cfg.mean, model.cfg.std)
        _, cams = onnx_predict(ev.reg.onnx_paths[k], x, with_heatmap=True)
        for j, i in enumerate(test):
            m = x[j, -1] > 0.5
            rows = np.nonzero(m)[0]
            if rows.size == 0:
                continue
            centre = rows.mean()
            pos = np.where(m, np.maximum(cams[j], 0), 0)
            lower = pos[int(np.ceil(centre)) :].sum()
            total = pos.sum()
            shares[i] = lower / total if total > 0 else np.nan
    err = np.abs(ev.reg.pred - ev.y)
    good, bad = err <= 1.0, err > 2.0
    ev.extra["_lower_share"] = shares
    return {
        "lower_share_good_mean": float(np.nanmean(shares[good])),
        "lower_share_bad_mean": float(np.nanmean(shares[bad])),
        "n_good": int(good.sum()),
        "n_bad": int(bad.sum()),
        "definition": "positive heatmap mass inside the mask below the mask's row centroid",
    }


def label_noise(samples: list[Sample], items: list[Item], ev: Evaluation) -> dict[str, float]:
    """How far labels of the SAME picture disagree, and the per-file error of our predictions
    (each file scored against its own Hb, i.e. including that disagreement)."""
    dup = [it for it in items if it.n_files > 1]
    within = [np.std(it.file_hbs) for it in dup]
    loo = []  # each file's Hb predicted by the mean of the other files of its group
    for it in dup:
        h = np.array(it.file_hbs)
        for j in range(len(h)):
            loo.append(abs(h[j] - np.delete(h, j).mean()))
    file_err = []
    for i, it in enumerate(items):
        file_err += [abs(ev.reg.pred[i] - h) for h in it.file_hbs]
    return {
        "duplicate_groups": len(dup),
        "files_in_duplicate_groups": int(sum(it.n_files for it in dup)),
        "within_group_sd": float(np.sqrt(np.mean(np.square(within)))),
        "max_spread": float(max(it.spread for it in dup)),
        "groups_spread_gt_2": int(sum(it.spread > MAX_GROUP_SPREAD for it in dup)),
        "same_picture_other_labels_mae": float(np.mean(loo)),
        "per_file_mae": float(np.mean(file_err)),
    }


def leakage(
    samples: list[Sample],
    item_feats: np.ndarray,
    items: list[Item],
    ev: Evaluation,
    fixed: dict,
    say: Progress,
) -> dict[str, dict[str, float]]:
    """The same models with (a) a file-level split of all files with their own labels (the
    published kind of number), (b) the group split of the same files, (c) a stricter split
    that also merges near-duplicate cut-outs of one photo."""
    out: dict[str, dict[str, float]] = {}
    rgbas = [s.rgba for s in samples]
    y = np.array([s.hb for s in samples])
    g = [s.group_id for s in samples]
    feats = baseline_features(rgbas)
    cache = InputCache(rgbas)
    for name, folds in (
        ("files_file_split", file_kfold(len(samples), N_SPLITS, ev.seed)),
        ("files_group_split", group_kfold(g, N_SPLITS, ev.seed)),
    ):
        split_groups = [str(i) for i in range(len(samples))] if "file_split" in name else g
        r = cv_regressor(cache, y, split_groups, folds, ev.seed, fixed, with_margin=False)
        b = cv_baseline(feats, y, split_groups, folds, ev.seed)
        out[name] = {
            **{f"cnn_{k}": v for k, v in agreement(y, r.pred).items()},
            **{f"base_{k}": v for k, v in agreement(y, b.pred).items()},
        }
        say(f"leakage: {name}")
    strict = near_duplicate_groups(item_feats, ev.groups)
    folds = group_kfold(strict, N_SPLITS, ev.seed)
    r = cv_regressor(
        InputCache([it.sample.rgba for it in items]),
        ev.y,
        strict,
        folds,
        ev.seed,
        fixed,
        with_margin=False,
    )
    b = cv_baseline(item_feats, ev.y, strict, folds, ev.seed)
    out["items_near_duplicate_split"] = {
        "clusters": len(set(strict)),
        **{f"cnn_{k}": v for k, v in agreement(ev.y, r.pred).items()},
        **{f"base_{k}": v for k, v in agreement(ev.y, b.pred).items()},
    }
    say("leakage: near-duplicate split")
    return out


def learning_curve(
    ev: Evaluation, cache: InputCache, fixed: dict, say: Progress
) -> list[dict[str, float]]:
    """Test MAE / r when each outer training fold is subsampled (same test folds)."""
    cfg = next(iter(fixed.values()))
    rng = np.random.default_rng(ev.seed)
    rows = []
    for frac in (0.25, 0.5, 0.75, 1.0):
        pred = np.zeros(len(ev.y))
        for test in ev.folds:
            train = np.setdiff1d(np.arange(len(ev.y)), test)
            sub = np.sort(rng.choice(train, max(20, int(len(train) * frac)), replace=False))
            model, x = fit_config(cache, sub, ev.y, cfg, ev.seed)
            pred[test] = model.predict(x[test])
        a = agreement(ev.y, pred)
        rows.append({"fraction": frac, "n_train": int(len(ev.y) * 0.8 * frac), **a})
    say("learning curve done")
    return rows


def label_policy_comparison(
    ev: Evaluation, cache: InputCache, fixed: dict, say: Progress
) -> dict[str, dict[str, float]]:
    """Train with all groups (mean label) vs without groups whose Hb spread > 2 g/dL; both
    scored on the same test items (the groups both policies keep)."""
    cfg = next(iter(fixed.values()))
    spread = np.array([it.spread for it in ev.items])
    keep = spread <= MAX_GROUP_SPREAD
    out = {}
    for name, allowed in (("mean_all_groups", np.ones_like(keep)), ("drop_spread_gt_2", keep)):
        pred = np.full(len(ev.y), np.nan)
        for test in ev.folds:
            train = np.setdiff1d(np.arange(len(ev.y)), test)
            train = train[allowed[train]]
            model, x = fit_config(cache, train, ev.y, cfg, ev.seed)
            pred[test] = model.predict(x[test])
        out[name] = agreement(ev.y[keep], pred[keep])
    say("label policy comparison done")
    return out


def _jsonable(o: Any) -> Any:
    if isinstance(o, dict):
        return {k: _jsonable(v) for k, v in o.items() if not str(k).startswith("_")}
    if isinstance(o, (list, tuple)):
        return [_jsonable(v) for v in o]
    if isinstance(o, (np.floating, float)):
        return round(float(o), 4)
    if isinstance(o, np.integer):
        return int(o)
    return o


def write_report(ev: Evaluation, out_dir: Path, command: str = "hbscreen evaluate") -> Path:
    """report.md + figures + metrics.json in out_dir."""
    from .report import render_report

    out_dir.mkdir(parents=True, exist_ok=True)
    summary = _jsonable(ev.summary())
    (out_dir / "metrics.json").write_text(json.dumps(summary, indent=2) + "\n", "utf-8")
    return render_report(ev, summary, out_dir, command, PUBLISHED, roc_points)
