"""The colour-feature baseline (the paper's non-CNN model) on masked, glare-free pixels.

Features: RGB statistics, chromaticity, HSV with circular hue statistics (hue wraps at red),
CIELAB L*/a*/b*, erythema index, high-hue ratio and entropy. The model is the best of ridge,
SVR and a random forest, chosen by inner cross-validation on the training folds only.
"""

from __future__ import annotations

import cv2
import numpy as np
from sklearn.ensemble import RandomForestRegressor
from sklearn.linear_model import Ridge
from sklearn.model_selection import GridSearchCV, GroupKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVR

from hbscreen.inference.preprocess import glare_mask


def masked_pixels(rgb: np.ndarray, alpha01: np.ndarray) -> np.ndarray:
    """Nx3 uint8 pixels inside the mask (alpha > 0.5) and not glare."""
    keep = (alpha01 > 0.5) & ~glare_mask(rgb)
    if keep.sum() < 20:  # almost all glare: fall back to the mask alone
        keep = alpha01 > 0.5
    return rgb[keep]


def _entropy(values: np.ndarray, bins: int = 64, lo: float = 0, hi: float = 256) -> float:
    h, _ = np.histogram(values, bins=bins, range=(lo, hi))
    p = h[h > 0] / h.sum()
    return float(-(p * np.log2(p)).sum())


FEATURE_NAMES: list[str] = []


def colour_features(rgb: np.ndarray, alpha01: np.ndarray) -> np.ndarray:
    """One feature vector per cut-out (see module docstring)."""
    px = masked_pixels(rgb, alpha01)
    f = px.astype(np.float32)
    feats: dict[str, float] = {}
    for i, c in enumerate("RGB"):
        v = f[:, i]
        feats[f"{c}_mean"] = float(v.mean())
        feats[f"{c}_std"] = float(v.std())
        for q in (10, 50, 90):
            feats[f"{c}_p{q}"] = float(np.percentile(v, q))
    s = f.sum(axis=1) + 1e-6
    for i, c in enumerate("rgb"):
        feats[f"chroma_{c}"] = float((f[:, i] / s).mean())
    hsv = cv2.cvtColor(px[None], cv2.COLOR_RGB2HSV_FULL)[0].astype(np.float32)
    ang = hsv[:, 0] / 256.0 * 2 * np.pi  # hue wraps: circular statistics
    cs, sn = float(np.cos(ang).mean()), float(np.sin(ang).mean())
    resultant = float(np.hypot(cs, sn))
    feats["hue_cos"], feats["hue_sin"] = cs, sn
    feats["hue_circ_mean_deg"] = float(np.degrees(np.arctan2(sn, cs)))
    feats["hue_circ_std"] = float(np.sqrt(-2 * np.log(max(resultant, 1e-6))))
    feats["S_mean"], feats["S_std"] = float(hsv[:, 1].mean()), float(hsv[:, 1].std())
    feats["V_mean"], feats["V_std"] = float(hsv[:, 2].mean()), float(hsv[:, 2].std())
    # high hue ratio: share of pixels whose hue lies within 15 degrees of pure red
    deg = np.degrees(ang)
    feats["high_hue_ratio"] = float(np.mean((deg < 15) | (deg > 345)))
    lab = cv2.cvtColor((f / 255.0)[None], cv2.COLOR_RGB2Lab)[0]
    for i, c in enumerate("Lab"):
        feats[f"lab_{c}_mean"] = float(lab[:, i].mean())
        feats[f"lab_{c}_std"] = float(lab[:, i].std())
    feats["lab_a_p90"] = float(np.percentile(lab[:, 1], 90))
    ei = np.log(f[:, 0] + 1) - np.log(f[:, 1] + 1)  # erythema index (log R - log G)
    feats["erythema_mean"], feats["erythema_std"] = float(ei.mean()), float(ei.std())
    feats["erythema_p90"] = float(np.percentile(ei, 90))
    grey = f.mean(axis=1)
    feats["entropy_grey"] = _entropy(grey)
    feats["entropy_R"] = _entropy(f[:, 0])
    if not FEATURE_NAMES:
        FEATURE_NAMES.extend(feats)
    return np.array(list(feats.values()), dtype=np.float64)


def candidate_searches(
    groups_inner: int = 3, seed: int = 0, trees: int = 200
) -> dict[str, GridSearchCV]:
    """Ridge, SVR and forest, each with its own small grid searched on inner group folds."""
    cv = GroupKFold(n_splits=groups_inner)
    kw = {"cv": cv, "scoring": "neg_mean_absolute_error", "n_jobs": 1}
    return {
        "ridge": GridSearchCV(
            make_pipeline(StandardScaler(), Ridge()),
            {"ridge__alpha": [0.1, 1.0, 10.0, 100.0]},
            **kw,
        ),
        "svr": GridSearchCV(
            make_pipeline(StandardScaler(), SVR()),
            {"svr__C": [0.3, 1.0, 3.0], "svr__epsilon": [0.1, 0.5]},
            **kw,
        ),
        "forest": GridSearchCV(
            RandomForestRegressor(n_estimators=trees, random_state=seed, n_jobs=1),
            {"min_samples_leaf": [3, 10]},
            **kw,
        ),
    }


def fit_baseline(x: np.ndarray, y: np.ndarray, groups: list[str], seed: int = 0, trees: int = 200):
    """Best of ridge/SVR/forest by inner group-CV MAE on (x, y); refit on all of (x, y).

    Returns (fitted estimator, name, inner MAE per candidate)."""
    scores, fitted = {}, {}
    for name, search in candidate_searches(seed=seed, trees=trees).items():
        search.fit(x, y, groups=groups)
        scores[name] = -float(search.best_score_)
        fitted[name] = search.best_estimator_
    best = min(scores, key=scores.get)
    return fitted[best], best, scores
