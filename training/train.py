"""`hbscreen train`: reproduce the shipped models from a CP-AnemiC download.

Order: segmentation (training/segmentation.py), then the Hb regressor: 5-fold CV by content
group (its out-of-fold residuals give the conformal half-widths and the card's metrics), a
final model on all items with the colour variant chosen by group-CV on all items, ONNX export,
the JSON card and MODEL_CARD.md.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .cpanemic import CITATIONS, LICENCE
from .crossval import CANDIDATES, QUICK_CANDIDATES, InputCache, select_and_fit
from .evaluate import N_SPLITS, cross_validate
from .export import check_onnx, export_onnx, regression_card, write_card
from .metrics import interval_report
from .model_card_md import write_model_card_md
from .regressor import renormalise

VERSION = "1.0.0"
VALIDATED_GROUPS = ["child-6-23m", "child-24-59m"]
REPORT_METRICS = Path("reports") / "metrics.json"  # where `hbscreen evaluate` writes by default


def train_regression(
    data_root: Path,
    out_dir: Path,
    seed: int = 0,
    quick: bool = False,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """CV, final fit, export and cards. Returns the card's metrics."""
    from tqdm import tqdm

    t0 = time.perf_counter()
    bar = tqdm(total=N_SPLITS * 2 + 2, desc="hb regressor", unit="step")

    def say(msg: str) -> None:
        bar.set_postfix_str(msg[:60])
        bar.update(1)
        if progress:
            progress(msg)

    ev = cross_validate(data_root, seed=seed, quick=quick, extras=False, progress=say)
    items, y, groups = ev.items, ev.y, ev.groups
    cache = InputCache([it.sample.rgba for it in items])
    candidates = QUICK_CANDIDATES if quick else CANDIDATES
    name, scores, model = select_and_fit(
        cache, np.arange(len(y)), y, groups, seed, candidates, inner_splits=N_SPLITS
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    onnx_path = out_dir / "regression.onnx"
    export_onnx(model, onnx_path)
    x = renormalise(cache.raw(model.cfg), model.cfg.mean, model.cfg.std)
    diff = check_onnx(model, onnx_path, x[:32])
    if diff > 1e-3:
        raise RuntimeError(f"ONNX and torch disagree by {diff:.2e} g/dL")
    say(f"final model: {name}")

    s = ev.summary()
    cal = ev.calibration()
    ivs = interval_report(y, ev.reg.pred, ev.folds)
    ops = ev.operating_points()
    stats = ev.policy_stats
    metrics = {
        "split": s["split"],
        "cv": s["regressor"],
        "colour_baseline_same_folds": s["colour_baseline"],
        "intervals": ivs,
        "chosen_colour_per_fold": ev.reg.chosen,
        "note": (
            "Out-of-fold predictions of per-fold ONNX graphs; the shipped graph is refitted on "
            "all items with the same procedure. See reports/report.md for the leakage, "
            "robustness, attention and label-noise analyses."
        ),
    }
    card = regression_card(
        model,
        file=onnx_path.name,
        version=VERSION,
        q80=cal["q80"],
        q95=cal["q95"],
        n_calibration=cal["n_calibration"],
        training_data={
            "source": "CP-AnemiC (Mendeley Data doi:10.17632/m53vz6b7fx.1), copy of 612/710",
            "population": "children 6-59 months, hospitals in Ghana, one capture protocol",
            "files": ev.policy_stats["files"],
            "content_groups": ev.policy_stats["groups"],
            "items": len(items),
            "label_policy": (
                "pixel-identical files form one item labelled with the mean Hb of its files; "
                "all groups kept (see MODEL_CARD.md for the evidence)"
            ),
            "seed": seed,
            "quick": quick,
        },
        metrics=_round(metrics),
        licence=LICENCE,
        citation=CITATIONS,
        validated_groups=VALIDATED_GROUPS,
        extra={
            "architecture": (
                f"frozen 1x1-conv colour features ({model.cfg.centres} Gaussian colour centres, "
                f"k-means) -> mask-weighted global average pooling -> linear head (ridge, "
                f"alpha {model.alpha:.3g}); heatmap = head weights applied per pixel (at input "
                "resolution), in the graph"
            ),
            "colour_variant": name,
            "inner_cv_mae": {k: round(v, 4) for k, v in scores.items()},
            "operating_point": _round(
                {
                    "rule": ops["rule"],
                    "margin_g_dl": model.referral_margin,
                    "target_sensitivity": ops["target_sensitivity"],
                    "margin_chosen_on": "5-fold out-of-fold predictions of all training items",
                    "cutoff_g_dl": 11.0,
                    "nested_cv": ops["regressor"],
                    "unvalidated_groups": "margin = max(margin, 80% half-width)",
                }
            ),
            "heatmap_units": "g/dL contribution per pixel-average (signed)",
            "limits": (
                "Children 6-59 months in Ghana, one capture protocol. Not validated in "
                "pregnancy, adults or older children. Screening, not diagnosis."
            ),
        },
    )
    write_card(card, out_dir / "regression.json")
    wall = round(time.perf_counter() - t0, 1)
    bar.close()
    report = REPORT_METRICS if REPORT_METRICS.is_file() else None
    write_model_card_md(
        out_dir / "MODEL_CARD.md",
        card,
        ev,
        stats,
        wall,
        json.loads(report.read_text("utf-8")) if report else None,
    )
    return {"card": card.model_dump(mode="json"), "wall_s": wall, "onnx_torch_max_diff": diff}


def _round(o: Any) -> Any:
    if isinstance(o, dict):
        return {k: _round(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_round(v) for v in o]
    if isinstance(o, (float, np.floating)):
        return round(float(o), 4)
    if isinstance(o, np.integer):
        return int(o)
    return o


def train_all(
    data_root: Path,
    out_dir: Path,
    seed: int = 0,
    quick: bool = False,
    skip_segmentation: bool = False,
    photos: Path | None = None,
) -> dict[str, Any]:
    """Both models into out_dir (segmentation first, then the regressor). With `photos` (real
    annotated eye photos) the segmentation is validated by CV by patient, then trained on all."""
    t0 = time.perf_counter()
    result: dict[str, Any] = {}
    if not skip_segmentation:
        from .segmentation import REAL_RECIPE, train_segmentation, train_with_cv

        steps = 20 if quick else None
        kw: dict[str, Any] = {"n_train": 16, "n_eval": 8} if quick else {}
        t = time.perf_counter()
        if photos is not None:
            recipe = {**REAL_RECIPE, **({"steps": steps} if quick else {})}
            result["segmentation"] = train_with_cv(
                data_root, out_dir, photos=photos, seed=seed, progress=True, **recipe, **kw
            )
        else:
            result["segmentation"] = train_segmentation(
                data_root, out_dir, seed=seed, steps=steps, progress=True, **kw
            )
        result["segmentation_wall_s"] = round(time.perf_counter() - t, 1)
    result["regression"] = train_regression(data_root, out_dir, seed=seed, quick=quick)
    result["total_wall_s"] = round(time.perf_counter() - t0, 1)
    return result
