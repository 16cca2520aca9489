"""Agreement, screening and interval metrics, computed the way the product decides."""

from __future__ import annotations

import numpy as np
from scipy.stats import binom, pearsonr
from sklearn.metrics import roc_auc_score, roc_curve

from .folds import cross_conformal_coverage

ANAEMIA_CUTOFF = 11.0  # Hb < 11 g/dL (the dataset's and the paper's definition)
TARGET_SENSITIVITY = 0.85  # the operating point's design goal, fixed before any evaluation
MARGIN_STEP = 0.1  # g/dL: estimates are shown, classified and referred at HemoCue precision


def agreement(
    y: np.ndarray, pred: np.ndarray, cutoff: float | None = ANAEMIA_CUTOFF
) -> dict[str, float]:
    """MAE, Pearson r, AUC for Hb < cutoff and Bland-Altman bias / 95% limits (g/dL)."""
    d = pred - y
    bias, sd = float(d.mean()), float(d.std(ddof=1))
    out = {
        "n": len(y),
        "mae": float(np.abs(d).mean()),
        "pearson_r": float(pearsonr(pred, y)[0]),
        "bias": bias,
        "loa_low": bias - 1.96 * sd,
        "loa_high": bias + 1.96 * sd,
    }
    if cutoff is not None:
        out["auc_hb_lt_11"] = _auc(y < cutoff, -pred)
    return out


def _auc(pos: np.ndarray, score: np.ndarray) -> float:
    return float(roc_auc_score(pos, score)) if 0 < pos.sum() < len(pos) else float("nan")


def bootstrap_r(
    y: np.ndarray, pred: np.ndarray, seed: int = 0, n_boot: int = 1000
) -> tuple[float, float]:
    """Percentile 95% bootstrap interval of Pearson r (resampling items)."""
    rng = np.random.default_rng(seed)
    n = len(y)
    rs = []
    for _ in range(n_boot):
        i = rng.integers(0, n, n)
        if np.std(y[i]) > 0 and np.std(pred[i]) > 0:
            rs.append(np.corrcoef(y[i], pred[i])[0, 1])
    lo, hi = np.percentile(rs, [2.5, 97.5])
    return float(lo), float(hi)


def population_agreement(
    y: np.ndarray,
    pred: np.ndarray,
    cutoffs: np.ndarray,
    *,
    margin: np.ndarray | None = None,
    q80: np.ndarray | None = None,
    q95: np.ndarray | None = None,
    seed: int = 0,
) -> dict[str, float]:
    """One population's figures: agreement (with r's bootstrap CI), AUC for each item's own
    WHO cut-off (and for Hb < 11, the children's dataset definition), coverage of the given
    half-widths and sensitivity / specificity of the referral rule with the given margins."""
    out = agreement(y, pred, cutoff=None)
    out["pearson_r_ci95"] = list(bootstrap_r(y, pred, seed))
    pos = y < cutoffs
    out["auc"] = _auc(pos, -(pred - cutoffs))
    out["auc_hb_lt_11"] = _auc(y < ANAEMIA_CUTOFF, -pred)
    out["prevalence"] = float(pos.mean())
    if q80 is not None:
        out["coverage_80"] = float(np.mean(np.abs(y - pred) <= q80))
        out["half_width_80"] = float(np.mean(q80))
        out["coverage_80_if_exact"] = coverage_sampling_range(len(y), 0.80)
    if q95 is not None:
        out["coverage_95"] = float(np.mean(np.abs(y - pred) <= q95))
        out["half_width_95"] = float(np.mean(q95))
    if margin is not None:
        flagged = np.round(pred, 1) < cutoffs + np.asarray(margin)
        out["sensitivity"] = float((flagged & pos).sum() / max(pos.sum(), 1))
        out["specificity"] = float((~flagged & ~pos).sum() / max((~pos).sum(), 1))
        out["referred_share"] = float(flagged.mean())
        out["margin_mean"] = float(np.mean(margin))
    return out


def coverage_sampling_range(n: int, level: float, p: float = 0.95) -> list[float]:
    """Where the observed coverage of n items falls with probability p (binomial) when the
    interval's true coverage is exactly `level`: the sampling noise a coverage target must
    allow for (n = 68: 0.71-0.90 for 80% intervals, wider than a 0.77-0.83 target)."""
    lo, hi = binom.ppf([(1 - p) / 2, (1 + p) / 2], n, level)
    return [float(lo / n), float(hi / n)]


def referral_margin(
    y: np.ndarray,
    pred: np.ndarray,
    target: float = TARGET_SENSITIVITY,
    cutoff: float = ANAEMIA_CUTOFF,
) -> float:
    """The smallest margin m >= 0 (a multiple of MARGIN_STEP, g/dL) such that referring every
    estimate below cutoff + m refers at least `target` of the items with Hb < cutoff.
    Callers pass out-of-fold predictions of the training data only (never a test fold)."""
    pos = np.sort(np.round(np.asarray(pred)[np.asarray(y) < cutoff], 1))
    if pos.size == 0:
        return 0.0
    kth = pos[int(np.ceil(target * pos.size)) - 1]
    m = (np.floor((kth - cutoff) / MARGIN_STEP + 1e-6) + 1) * MARGIN_STEP
    return round(max(float(m), 0.0), 2)


# Issue 11: a margin chosen for exactly 0.85 on the ~20-40 anaemic training items of a
# population is itself a noisy estimate (the men's outer sensitivity fell to 0.78 with it).
# The margin is chosen so that the target still holds at the LOWER end of the 80% bootstrap
# interval of the inner sensitivity (the same 80% the product's interval shows): the 90th
# percentile of the margins of bootstrap resamples of the anaemic items. Fixed before any
# outer figure was seen; one rule for every population.
MARGIN_BOOTSTRAP_LEVEL = 0.9
MARGIN_BOOTSTRAP_N = 1000


def referral_margin_bootstrap(
    y: np.ndarray,
    pred: np.ndarray,
    target: float = TARGET_SENSITIVITY,
    cutoff: float = ANAEMIA_CUTOFF,
    level: float = MARGIN_BOOTSTRAP_LEVEL,
    n_boot: int = MARGIN_BOOTSTRAP_N,
    seed: int = 0,
) -> float:
    """The smallest margin (a multiple of MARGIN_STEP, >= 0) whose sensitivity reaches
    `target` in at least `level` of the bootstrap resamples of the items with Hb < cutoff,
    i.e. the `level` quantile of the resamples' `referral_margin` (sensitivity depends on the
    anaemic items only, each one patient or content group). Out-of-fold predictions of
    training items only."""
    y, pred = np.asarray(y, np.float64), np.asarray(pred, np.float64)
    pos = np.flatnonzero(y < cutoff)
    if pos.size == 0:
        return 0.0
    rng = np.random.default_rng(seed)
    ms = [
        referral_margin(y[i], pred[i], target, cutoff)
        for i in (rng.choice(pos, pos.size) for _ in range(n_boot))
    ]
    m = np.quantile(ms, level, method="higher")
    return round(float(m), 2)


def referral_operating_point(
    y: np.ndarray, pred: np.ndarray, margin: np.ndarray | float, cutoff: float = ANAEMIA_CUTOFF
) -> dict[str, float]:
    """Sensitivity/specificity for Hb < cutoff of inference/advice.referral_for's rule: a blood
    test (or urgent referral) whenever the shown estimate is below cutoff + margin. The 80%
    interval rule is the same with margin = its half-width."""
    flagged = np.round(pred, 1) < cutoff + np.asarray(margin)
    pos = y < cutoff
    return {
        "sensitivity": float((flagged & pos).sum() / max(pos.sum(), 1)),
        "specificity": float((~flagged & ~pos).sum() / max((~pos).sum(), 1)),
        "referred_share": float(flagged.mean()),
    }


def interval_report(
    y: np.ndarray, pred: np.ndarray, folds: list[np.ndarray], levels=(0.8, 0.95)
) -> dict[str, dict[str, float]]:
    """Cross-conformal coverage (each fold's half-width from the other folds' residuals) and
    the referral rule's operating point with that interval, per level."""
    out = {}
    for level in levels:
        cov, q = cross_conformal_coverage(y, pred, folds, level)
        op = referral_operating_point(y, pred, q)
        out[f"{round(level * 100)}"] = {
            "coverage": cov,
            "mean_half_width": float(q.mean()),
            **op,
        }
    return out


def roc_points(y: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    fpr, tpr, _ = roc_curve(y < ANAEMIA_CUTOFF, -pred)
    return fpr, tpr


def specificity_at_sensitivity(y: np.ndarray, pred: np.ndarray, sens: float = 0.85) -> float:
    """Best specificity of a plain threshold on the estimate that reaches `sens` (out of fold;
    shows what a referral knob on the estimate itself could give, not a tuned result)."""
    fpr, tpr = roc_points(y, pred)
    ok = tpr >= sens
    return float(1 - fpr[ok].min()) if ok.any() else 0.0
