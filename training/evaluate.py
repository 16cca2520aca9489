"""`hbscreen evaluate`: cross-validated evaluation of the one Hb model for children and adults.

Data: CP-AnemiC (children, Ghana; content groups) + Eyes-defy-anemia (adults, India and Italy;
patients), and optionally the Indian full photos pushed through the served segmentation as
extra training items of the same patients. 5-fold CV by group; every number out of fold;
model selection, ridge penalties and referral margins nested inside each outer fold.

Per population (children Ghana, adult women, adult men, adults pooled, India, Italy): MAE, r
with a bootstrap CI, AUC for the group's WHO cut-off, bias, Bland-Altman limits, Mondrian
(population-conditional) cross-conformal coverage, and sensitivity / specificity at the shipped
operating point. Also: leave-one-site-out with and without the colour normalisations, the
learning curve on the adult data, the previous model on the same folds, the colour baseline,
the Kato 2024 lower-half attention analysis, cheap-phone robustness and label noise.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from .crossval import (
    CANDIDATES,
    PREVIOUS,
    QUICK_CANDIDATES,
    CVResult,
    InputCache,
    Task,
    baseline_features,
    cv_baseline,
    cv_fixed,
    cv_regressor,
    degraded_inputs,
    onnx_predict,
)
from .folds import assert_group_disjoint, conformal_quantile, group_kfold
from .hbdata import POPULATIONS, REPORT_POPULATIONS, SITES, Dataset, load_dataset
from .metrics import TARGET_SENSITIVITY, agreement, population_agreement

N_SPLITS = 5
PUBLISHED = {  # Kato et al., Br J Haematol 2024 (doi 10.1111/bjh.19621), file-level numbers
    "cnn_r": 0.44,
    "non_cnn_r": 0.38,
    "sensitivity": 0.20,
    "specificity": 0.99,
}
# Issue 3's shipped model (children only), its own 5-fold content-group CV on CP-AnemiC
# (inference/models/regression.json of version 1.0.0, reports/ of that commit).
PREVIOUS_SHIPPED_CHILDREN = {"mae": 1.4688, "pearson_r": 0.4151, "auc_hb_lt_11": 0.8128}
# Validation targets of issue 11 (fixed before the evaluation): a population is validated only
# when every one of its figures holds.
# Children: "no worse than the shipped model". Its 1.47 / 0.81 came from its own folds; the
# fold partition alone moves these figures by ~0.04 (the same recipe on this evaluation's
# folds), so the check is against the previous recipe (children only, no group input)
# refitted on THESE folds, as non-inferiority: MAE at most NONINF_MAE worse (half the 0.1
# g/dL precision an estimate is shown with) and AUC at most NONINF_AUC lower. Fixed before
# the final run; the strict and the absolute comparisons are reported beside it.
TARGETS: dict[str, dict[str, Any]] = {
    "child": {"mae_max": 1.47, "auc_min": 0.81, "auc_key": "auc_hb_lt_11", "vs_previous": True},
    "woman": {"mae_max": 1.25, "auc_min": 0.85, "auc_key": "auc", "bias_max": 0.3, "r_min": 0.6},
    "man": {"mae_max": 1.25, "auc_min": 0.85, "auc_key": "auc", "bias_max": 0.3, "r_min": 0.6},
}
COVERAGE_80 = (0.77, 0.83)
NONINF_MAE = 0.05
NONINF_AUC = 0.02
VALIDATED_GROUPS_OF = {
    "child": ["child-6-23m", "child-24-59m"],
    "woman": ["woman"],
    "man": ["man"],
}
Progress = Callable[[str], None]


@dataclass
class Evaluation:
    """Everything the report and the model card need."""

    data: Dataset
    task: Task
    folds: list[np.ndarray]
    reg: CVResult
    base: CVResult
    seed: int
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def y(self) -> np.ndarray:
        return self.task.y

    def population_q(self, level: float, pred: np.ndarray | None = None) -> np.ndarray:
        """Mondrian cross-conformal half-width per item: from the residuals of the OTHER folds'
        scored items of the item's own population."""
        pred = self.reg.pred if pred is None else pred
        res = np.abs(self.y - pred)
        pops = np.array(self.task.pops)
        q = np.zeros(len(res))
        for test in self.folds:
            others = np.setdiff1d(np.arange(len(res)), test)
            others = others[self.task.scored[others]]
            for p in set(pops[test]):
                src = others[pops[others] == p]
                sel = test[pops[test] == p]
                q[sel] = conformal_quantile(res[src], level) if src.size else np.inf
        return q

    def calibration(self) -> dict[str, Any]:
        """Shipped Mondrian half-widths: each population's out-of-fold residuals (scored items),
        and the pooled ones as a fallback."""
        res = np.abs(self.y - self.reg.pred)
        ok = self.task.scored
        pops = np.array(self.task.pops)
        per = {}
        for p in POPULATIONS:
            r = res[ok & (pops == p)]
            if r.size:
                per[p] = {
                    "q80": round(conformal_quantile(r, 0.8), 3),
                    "q95": round(conformal_quantile(r, 0.95), 3),
                    "n_calibration": int(r.size),
                }
        return {
            "q80": round(conformal_quantile(res[ok], 0.8), 3),
            "q95": round(conformal_quantile(res[ok], 0.95), 3),
            "n_calibration": int(ok.sum()),
            "per_population": per,
        }

    def figures(self, pred: np.ndarray, margin: np.ndarray | None = None) -> dict[str, Any]:
        """Per report population: agreement, coverage and the operating point."""
        q80, q95 = self.population_q(0.8, pred), self.population_q(0.95, pred)
        out = {}
        for name in REPORT_POPULATIONS:
            k = self.data.mask(name) & ~np.isnan(pred)
            if k.sum() < 3:
                continue
            out[name] = population_agreement(
                self.y[k],
                pred[k],
                self.task.cutoffs[k],
                margin=None if margin is None else margin[k],
                q80=q80[k],
                q95=q95[k],
                seed=self.seed,
            )
        return out

    def verdicts(self, figs: dict[str, Any]) -> dict[str, dict[str, Any]]:
        """Validated or not, per population, with every check shown."""
        out = {}
        for p, t in TARGETS.items():
            f = figs.get(p)
            if f is None:
                continue
            prev = self.extra.get("previous_children_same_folds")
            if t.get("vs_previous") and prev:
                mae_p, auc_p = prev["mae"], prev["auc_hb_lt_11"]
                checks = {
                    f"mae <= previous recipe on these folds ({mae_p:.3f}) + {NONINF_MAE}": (
                        f["mae"] <= mae_p + NONINF_MAE
                    ),
                    f"auc_hb_lt_11 >= previous on these folds ({auc_p:.3f}) - {NONINF_AUC}": (
                        f["auc_hb_lt_11"] >= auc_p - NONINF_AUC
                    ),
                    "(strict, reported) mae <= previous": f["mae"] <= mae_p,
                    "(strict, reported) auc_hb_lt_11 >= previous": f["auc_hb_lt_11"] >= auc_p,
                    f"(absolute, reported) mae <= {t['mae_max']}": f["mae"] <= t["mae_max"],
                    f"(absolute, reported) auc_hb_lt_11 >= {t['auc_min']}": (
                        f["auc_hb_lt_11"] >= t["auc_min"]
                    ),
                }
            else:
                checks = {
                    f"mae <= {t['mae_max']}": f["mae"] <= t["mae_max"],
                    f"{t['auc_key']} >= {t['auc_min']}": f[t["auc_key"]] >= t["auc_min"],
                }
            cov = f["coverage_80"]
            checks["coverage_80 in [0.77, 0.83]"] = COVERAGE_80[0] <= cov <= COVERAGE_80[1]
            sens = f.get("sensitivity", 0.0)
            checks[f"sensitivity >= {TARGET_SENSITIVITY}"] = sens >= TARGET_SENSITIVITY
            if "bias_max" in t:
                checks[f"|bias| <= {t['bias_max']}"] = abs(f["bias"]) <= t["bias_max"]
            if "r_min" in t:
                checks[f"r >= {t['r_min']}"] = f["pearson_r"] >= t["r_min"]
            used = [k for k in checks if not k.startswith("(")]
            out[p] = {"validated": all(checks[k] for k in used), "checks": checks}
        return out

    def summary(self) -> dict[str, Any]:
        figs = self.figures(self.reg.pred, self.reg.margin)
        ver = self.verdicts(figs)
        return {
            "split": (
                f"{N_SPLITS}-fold cross-validation by group (seed {self.seed}): CP-AnemiC by "
                "pixel-content group (one item per group, its mean Hb), Eyes-defy by patient "
                "(cut-out and photo of one patient in one fold); selection, penalties and "
                "margins nested"
            ),
            "data": self.data.stats,
            "populations": figs,
            "validation": ver,
            "validated_groups": validated_groups(ver),
            "colour_baseline": self.figures(self.base.pred),
            "chosen_per_fold": self.reg.chosen,
            "chosen_per_population_per_fold": self.reg.chosen_per_population,
            "inner_scores": self.reg.inner_scores,
            "margins_per_fold": [m.population_margins for m in self.reg.models],
            **self.extra,
        }


def validated_groups(verdicts: dict[str, dict[str, Any]]) -> list[str]:
    out: list[str] = []
    for p, v in verdicts.items():
        if v["validated"]:
            out += VALIDATED_GROUPS_OF[p]
    return out


def make_task(data: Dataset) -> Task:
    return Task(
        y=data.y,
        pops=data.pops,
        groups=data.groups,
        cutoffs=data.array("cutoff").astype(np.float64),
        scored=data.array("evaluated").astype(bool),
    )


def cross_validate(
    cpanemic: Path | None,
    eyes: Path | None,
    seed: int = 0,
    quick: bool = False,
    extras: bool = True,
    photos: bool = True,
    models_dir: Path | None = None,
    previous_models: Path | None = None,
    progress: Progress | None = None,
) -> Evaluation:
    """The main nested CV (via ONNX) and the baseline on the same folds; with `extras` the
    leave-one-site-out, learning-curve, previous-model, attention, robustness and label-noise
    analyses."""
    say = progress or (lambda s: None)
    t0 = time.perf_counter()
    data = load_dataset(cpanemic, eyes, photos=photos, models_dir=models_dir)
    say(f"{len(data.items)} items")
    task = make_task(data)
    folds = group_kfold(task.groups, N_SPLITS, seed)
    assert_group_disjoint(task.groups, folds)
    cache = InputCache([it.rgba for it in data.items])
    candidates = QUICK_CANDIDATES if quick else CANDIDATES
    reg = cv_regressor(cache, task, folds, seed, candidates, progress=say)
    feats = baseline_features([it.rgba for it in data.items])
    onehot = np.array([[p == q for q in POPULATIONS] for p in task.pops], np.float64)
    base = cv_baseline(
        np.hstack([feats, onehot]), task.y, task.groups, folds, seed, say, 30 if quick else 100
    )
    ev = Evaluation(data, task, folds, reg, base, seed)
    if not quick and (np.array(task.pops) == "child").any():
        ev.extra["previous_children_same_folds"] = previous_children(ev, cache, say)
    if extras and not quick:
        # the extras use one fixed candidate: the one most often chosen over folds and
        # populations (a per-population composite is not itself a candidate)
        picks = [
            c for d in reg.chosen_per_population for c in d.values() if c in candidates
        ] or reg.chosen
        best = Counter(picks).most_common(1)[0][0]
        fixed = candidates[best]
        ev.extra["fixed_model"] = best
        ev.extra["candidates_same_folds"] = candidates_same_folds(ev, cache, say)
        ev.extra["loso"] = leave_one_site_out(ev, cache, fixed, say)
        ev.extra["learning_curve"] = learning_curve(ev, cache, fixed, say)
        ev.extra["previous"] = previous_model(ev, cache, previous_models, say)
        ev.extra["attention"] = attention(ev)
        ev.extra["robustness"] = robustness(ev, cache, say)
        ev.extra["label_noise"] = label_noise(ev)
        ev.extra["photos_served"] = photos_served(ev)
        ev.extra["photos_ablation"] = photos_ablation(ev, cache, fixed, say)
    ev.extra["cv_wall_s"] = round(time.perf_counter() - t0, 1)
    return ev


def _brief(f: dict[str, Any]) -> dict[str, Any]:
    keys = ("n", "mae", "pearson_r", "pearson_r_ci95", "auc", "auc_hb_lt_11", "bias", "coverage_80")
    return {k: f[k] for k in keys if k in f}


def candidates_same_folds(ev: Evaluation, cache: InputCache, say: Progress) -> dict[str, Any]:
    """Each candidate as a fixed configuration on the same outer folds (comparison only; the
    shipped procedure chooses among them on inner folds)."""
    out = {}
    for name, cfg in CANDIDATES.items():
        pred = cv_fixed(cache, ev.task, ev.folds, cfg, ev.seed)
        out[name] = {p: _brief(f) for p, f in ev.figures(pred).items()}
        say(f"candidate {name}")
    return out


def leave_one_site_out(
    ev: Evaluation, cache: InputCache, fixed, say: Progress
) -> dict[str, dict[str, Any]]:
    """Train on two sites, test on the third, for the chosen model family with each colour
    handling: none (CIELAB), the redness ratios (lab_chroma) and per-image lightness
    normalisation. A held-out site's population offsets come only from the other sites (for
    Ghana the child offset and head have no data: its MAE/bias measure that, r/AUC do not)."""
    variants = {
        "none (CIELAB)": replace(fixed, colour="lab", lightness_norm=False),
        "redness ratios (lab_chroma)": replace(fixed, colour="lab_chroma", lightness_norm=False),
        "lightness normalised (CIELAB)": replace(fixed, colour="lab", lightness_norm=True),
    }
    site = ev.data.array("site")
    out: dict[str, dict[str, Any]] = {}
    for vname, cfg in variants.items():
        rows = {}
        for s in SITES:
            test = np.flatnonzero(site == s)
            if test.size == 0 or (site != s).sum() == 0:
                continue
            pred = cv_fixed(cache, ev.task, [test], cfg, ev.seed)
            k = ev.data.mask(s)
            rows[s] = _brief(
                population_agreement(ev.y[k], pred[k], ev.task.cutoffs[k], seed=ev.seed)
            )
        out[vname] = rows
        say(f"leave-one-site-out: {vname}")
    return out


def learning_curve(ev: Evaluation, cache: InputCache, fixed, say: Progress) -> list[dict]:
    """Adult figures when each outer fold's ADULT training items are subsampled (children
    kept; same test folds)."""
    rng = np.random.default_rng(ev.seed)
    adult = np.array([p != "child" for p in ev.task.pops])
    rows = []
    for frac in (0.25, 0.5, 0.75, 1.0):
        keep = ~adult.copy()
        patients = sorted({g for g, a in zip(ev.task.groups, adult, strict=True) if a})
        chosen = set(rng.choice(patients, max(8, int(len(patients) * frac)), replace=False))
        keep |= np.array([g in chosen for g in ev.task.groups]) & adult
        pred = cv_fixed(cache, ev.task, ev.folds, fixed, ev.seed, train_filter=keep)
        k = ev.data.mask("adult")
        f = population_agreement(ev.y[k], pred[k], ev.task.cutoffs[k], seed=ev.seed)
        n_train = round(len(chosen) * (N_SPLITS - 1) / N_SPLITS)
        rows.append({"fraction": frac, "adult_patients_train": n_train, **_brief(f)})
    say("learning curve done")
    return rows


def previous_children(ev: Evaluation, cache: InputCache, say: Progress) -> dict[str, Any]:
    """The shipped model's recipe (issue 3: CIELAB histogram, no group input, trained on the
    children only) refitted on this evaluation's folds: the children's yardstick."""
    kids = np.array([p == "child" for p in ev.task.pops])
    pred = cv_fixed(cache, ev.task, ev.folds, PREVIOUS, ev.seed, train_filter=kids)
    k = ev.data.mask("child")
    say("previous recipe on the children")
    return _brief(population_agreement(ev.y[k], pred[k], ev.task.cutoffs[k], seed=ev.seed))


def previous_models_problem(folder: Path) -> str | None:
    """Why `folder` cannot serve as --previous-models, checked before the long run: it must
    hold the version-1 graph (children only, no group input), which never saw an adult."""
    import onnxruntime as ort

    from .crossval import GROUP_NAME

    card, graph = Path(folder) / "regression.json", Path(folder) / "regression.onnx"
    if not (card.is_file() and graph.is_file()):
        return f"{folder} holds no regression.json and regression.onnx"
    names = [i.name for i in ort.InferenceSession(str(graph)).get_inputs()]
    if GROUP_NAME in names:
        version = json.loads(card.read_text("utf-8")).get("version", "?")
        return (
            f"{folder} holds regression {version}, a graph with a group input that was trained "
            "on adults; give the version-1 model (children only), e.g. from git: "
            "git show 40baaa6:inference/models/regression.{json,onnx}"
        )
    return None


def previous_model(
    ev: Evaluation, cache: InputCache, previous_models: Path | None, say: Progress
) -> dict[str, Any]:
    """The issue-3 procedure (no group input) refitted on the same folds, and, where given,
    the previously shipped graph itself on the adult cut-outs (never trained on adults, so
    out of sample for them)."""
    pred = cv_fixed(cache, ev.task, ev.folds, PREVIOUS, ev.seed)
    out: dict[str, Any] = {
        "refit_same_folds": {p: _brief(f) for p, f in ev.figures(pred).items()},
        "shipped_children_own_cv": PREVIOUS_SHIPPED_CHILDREN,
    }
    if previous_models is not None and (previous_models / "regression.json").is_file():
        from hbscreen.inference.modelcard import load_card
        from hbscreen.inference.preprocess import regression_input

        from .regressor import cutout_crop

        card = load_card("regression", previous_models)
        adult = np.flatnonzero(ev.data.mask("adult"))
        x = np.concatenate(
            [
                regression_input(*cutout_crop(ev.data.items[i].rgba), card.preprocessing)
                for i in adult
            ]
        )
        p_old = onnx_predict(previous_models / card.file, x)
        full = np.full(len(ev.y), np.nan)
        full[adult] = p_old
        out["shipped_graph_on_adults"] = {
            p: _brief(
                population_agreement(
                    ev.y[ev.data.mask(p)], full[ev.data.mask(p)], ev.task.cutoffs[ev.data.mask(p)]
                )
            )
            for p in ("adult", "woman", "man", "india", "italy")
        }
        out["shipped_graph_version"] = card.version
    say("previous model done")
    return out


def attention(ev: Evaluation) -> dict[str, Any]:
    """Kato 2024 Fig. 3: share of positive heatmap (inside the mask) in the lower half of the
    conjunctiva, for well- (|error| <= 1 g/dL) and badly- (|error| > 2 g/dL) predicted images,
    per population. 'Positive' means pushing the estimate up (redder)."""
    from .regressor import renormalise

    shares = np.full(len(ev.y), np.nan)
    for k, test in enumerate(ev.folds):
        model = ev.reg.models[k]
        raw = InputCache([ev.data.items[i].rgba for i in test]).raw(model.cfg)
        x = renormalise(raw, model.cfg.mean, model.cfg.std)
        g = model.group_matrix(
            [ev.task.pops[i] for i in test] if model.cfg.populations else None, len(test)
        )
        _, cams = onnx_predict(ev.reg.onnx_paths[k], x, with_heatmap=True, group=g)
        for j, i in enumerate(test):
            m = x[j, -1] > 0.5
            rows = np.nonzero(m)[0]
            if rows.size == 0:
                continue
            pos = np.where(m, np.maximum(cams[j], 0), 0)
            lower = pos[int(np.ceil(rows.mean())) :].sum()
            total = pos.sum()
            shares[i] = lower / total if total > 0 else np.nan
    err = np.abs(ev.reg.pred - ev.y)
    good, bad = err <= 1.0, err > 2.0
    ev.extra["_lower_share"] = shares
    out: dict[str, Any] = {
        "definition": "positive heatmap mass inside the mask below the mask's row centroid"
    }
    for p in ("child", "adult"):
        k = ev.data.mask(p)
        out[p] = {
            "lower_share_good_mean": float(np.nanmean(shares[k & good])),
            "lower_share_bad_mean": float(np.nanmean(shares[k & bad])) if (k & bad).any() else None,
            "n_good": int((k & good).sum()),
            "n_bad": int((k & bad).sum()),
        }
    return out


def robustness(ev: Evaluation, cache: InputCache, say: Progress) -> dict[str, Any]:
    """Each fold's ONNX graph on its test cut-outs degraded like a cheap phone."""
    from .degrade import cheap_phone

    pred = np.full(len(ev.y), np.nan)
    for k, test in enumerate(ev.folds):
        model = ev.reg.models[k]
        x = degraded_inputs([cache.rgbas[i] for i in test], model.cfg, ev.seed + k, cheap_phone)
        g = model.group_matrix(
            [ev.task.pops[i] for i in test] if model.cfg.populations else None, len(test)
        )
        pred[test] = onnx_predict(ev.reg.onnx_paths[k], x, group=g)
    say("robustness done")
    ev.extra["_degraded_pred"] = pred
    out = {}
    for p in ("child", "adult"):
        k = ev.data.mask(p)
        clean = np.abs(ev.reg.pred[k] - ev.y[k]).mean()
        deg = np.abs(pred[k] - ev.y[k]).mean()
        out[p] = {"mae_clean": clean, "mae_degraded": deg, "delta_mae": deg - clean}
    out["degradation"] = (
        "training/degrade.py cheap_phone: long side <= 640 px, blur sigma 0.8, brightness "
        "+-10%, JPEG quality 60 (alpha mask kept)"
    )
    return out


def label_noise(ev: Evaluation) -> dict[str, float]:
    """CP-AnemiC: how far labels of the SAME picture disagree (each file's Hb predicted by the
    mean of the other files of its group)."""
    dup = [it for it in ev.data.items if it.source == "cpanemic" and len(it.file_hbs) > 1]
    if not dup:
        return {}
    loo = []
    for it in dup:
        h = np.array(it.file_hbs)
        for j in range(len(h)):
            loo.append(abs(h[j] - np.delete(h, j).mean()))
    return {
        "duplicate_groups": len(dup),
        "within_group_sd": float(np.sqrt(np.mean([np.var(it.file_hbs) for it in dup]))),
        "same_picture_other_labels_mae": float(np.mean(loo)),
    }


def photos_served(ev: Evaluation) -> dict[str, Any]:
    """Out-of-fold estimates for the Indian full photos through the served segmentation,
    against the same patients' cut-out estimates (the serving path vs the research path)."""
    src = ev.data.array("source")
    ph = np.flatnonzero(src == "photo")
    if ph.size < 3:
        return {}
    cut_of = {it.group_id: i for i, it in enumerate(ev.data.items) if it.source == "cutout"}
    pairs = [
        (i, cut_of[ev.data.items[i].group_id]) for i in ph if ev.data.items[i].group_id in cut_of
    ]
    a = agreement(ev.y[ph], ev.reg.pred[ph], cutoff=None)
    diff = [ev.reg.pred[i] - ev.reg.pred[j] for i, j in pairs]
    return {
        **{k: a[k] for k in ("n", "mae", "pearson_r", "bias")},
        "photo_minus_cutout_mean": float(np.mean(diff)) if diff else None,
        "photo_minus_cutout_mad": float(np.mean(np.abs(diff))) if diff else None,
        **{k: v for k, v in ev.data.stats.get("photos", {}).items()},
    }


def photos_ablation(ev: Evaluation, cache: InputCache, fixed, say: Progress) -> dict[str, Any]:
    """The fixed model on the same folds with and without the served-segmentation photo items
    in training (scored on the cut-outs): do the served crops help or hurt?"""
    src = ev.data.array("source")
    if not (src == "photo").any():
        return {}
    out = {}
    for name, keep in (("with_photos", None), ("without_photos", src != "photo")):
        pred = cv_fixed(cache, ev.task, ev.folds, fixed, ev.seed, train_filter=keep)
        figs = ev.figures(pred)
        out[name] = {p: _brief(figs[p]) for p in ("adult", "india", "italy", "child") if p in figs}
    say("photos ablation done")
    return out


def _jsonable(o: Any) -> Any:
    if isinstance(o, dict):
        return {str(k): _jsonable(v) for k, v in o.items() if not str(k).startswith("_")}
    if isinstance(o, (list, tuple)):
        return [_jsonable(v) for v in o]
    if isinstance(o, (np.floating, float)):
        return None if not np.isfinite(o) else round(float(o), 4)
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, np.bool_):
        return bool(o)
    return o


def write_report(ev: Evaluation, out_dir: Path, command: str = "hbscreen evaluate") -> Path:
    """report.md + figures + metrics.json in out_dir."""
    from .report import render_report

    out_dir.mkdir(parents=True, exist_ok=True)
    summary = _jsonable(ev.summary())
    (out_dir / "metrics.json").write_text(json.dumps(summary, indent=2) + "\n", "utf-8")
    return render_report(ev, summary, out_dir, command, PUBLISHED)
