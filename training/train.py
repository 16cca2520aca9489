"""`hbscreen train`: reproduce the shipped models from the two shared datasets.

Order: segmentation (training/segmentation.py), then the Hb regressor on CP-AnemiC (children)
+ Eyes-defy-anemia (adults; cut-outs, and the Indian full photos pushed through the served
segmentation): 5-fold nested CV by group (its out-of-fold residuals give the Mondrian
conformal half-widths per population, its figures decide `validated_groups`), a final model
on all items chosen by group-CV on all items (whose inner out-of-fold predictions give each
population's referral margin), ONNX export, the JSON card and MODEL_CARD.md.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from hbscreen.inference.modelcard import Calibration, GroupInput, PopulationCalibration

from . import crossval
from .cpanemic import CITATIONS, LICENCE
from .crossval import CANDIDATES, QUICK_CANDIDATES, InputCache, select_and_fit
from .evaluate import N_SPLITS, cross_validate, validated_groups
from .export import check_onnx, export_onnx, regression_card, write_card
from .eyes_defy import CITATIONS as EYES_CITATIONS
from .eyes_defy import LICENCE as EYES_LICENCE
from .hbdata import POPULATION_OF, POPULATIONS
from .model_card_md import write_model_card_md
from .regressor import renormalise

VERSION = "2.2.0"
REPORT_METRICS = Path("reports") / "metrics.json"  # where `hbscreen evaluate` writes by default


def train_regression(
    data_root: Path | None,
    out_dir: Path,
    seed: int = 0,
    quick: bool = False,
    progress: Callable[[str], None] | None = None,
    eyes_root: Path | None = None,
    photos: bool = True,
    segmentation_dir: Path | None = None,
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

    ev = cross_validate(
        data_root,
        eyes_root,
        seed=seed,
        quick=quick,
        extras=False,
        photos=photos,
        models_dir=segmentation_dir,
        progress=say,
    )
    task = ev.task
    cache = InputCache([it.rgba for it in ev.data.items])
    candidates = QUICK_CANDIDATES if quick else CANDIDATES
    name, scores, model = select_and_fit(
        cache, np.arange(len(task.y)), task, seed, candidates, inner_splits=N_SPLITS
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    onnx_path = out_dir / "regression.onnx"
    export_onnx(model, onnx_path)
    x = renormalise(cache.raw(model.cfg), model.cfg.mean, model.cfg.std)
    diff = check_onnx(model, onnx_path, x[:16])
    if diff > 1e-3:
        raise RuntimeError(f"ONNX and torch disagree by {diff:.2e} g/dL")
    say(f"final model: {name}")

    s = ev.summary()
    cal = ev.calibration()
    ver = s["validation"]
    per = {
        p: PopulationCalibration(
            **c,
            referral_margin=model.population_margins.get(p),
            validated=bool(ver.get(p, {}).get("validated", False)),
        )
        for p, c in cal["per_population"].items()
    }
    groups_ok = validated_groups(ver)
    metrics = {
        "split": s["split"],
        "cv_per_population": s["populations"],
        "validation": ver,
        "colour_baseline_same_folds": s["colour_baseline"],
        "chosen_per_fold": ev.reg.chosen,
        "chosen_per_population_per_fold": ev.reg.chosen_per_population,
        "final_chosen_per_population": model.chosen_per_population,
        "note": (
            "Out-of-fold predictions of per-fold ONNX graphs (nested selection and margins); "
            "the shipped graph is refitted on all items with the same procedure. See "
            "reports/report.md for leave-one-site-out, the learning curve and the rest."
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
            "sources": [
                "CP-AnemiC (Mendeley Data doi:10.17632/m53vz6b7fx.1), copy of 612/710: children "
                "6-59 months, Ghana, smartphone photos",
                "Eyes-defy-anemia (IEEE DataPort; Roboflow copy): adults 19-88 years, India and "
                "Italy, LED macro device; cut-outs, and Indian full photos through the served "
                "segmentation",
            ],
            "stats": s["data"],
            "items": len(task.y),
            "label_policy": (
                "CP-AnemiC: pixel-identical files form one item labelled with the mean Hb of "
                "its files, all groups kept; Eyes-defy: one cut-out per patient, the photo of "
                "an Indian patient is an extra item of the same patient (same fold)"
            ),
            "seed": seed,
            "quick": quick,
        },
        metrics=_round(metrics),
        licence=f"Training data: {LICENCE.removeprefix('Training data: ')} {EYES_LICENCE}",
        citation=CITATIONS + EYES_CITATIONS,
        validated_groups=groups_ok,
        calibration=Calibration(
            q80=cal["q80"],
            q95=cal["q95"],
            n_calibration=cal["n_calibration"],
            referral_margin=max(model.population_margins.values(), default=None),
            per_population=per,
        ),
        group_input=GroupInput(populations=list(POPULATIONS), population_of=dict(POPULATION_OF)),
        extra={
            "architecture": _architecture(model),
            "features": {
                "centres": model.net.features.n_centres,
                "per_domain_widths": model.net.features.quad is not None,
                "identity_channels": model.net.features.identity_channels,
                "sigma": model.cfg.sigma,
            },
            "model_variant": name,
            "inner_cv_score": {k: round(v, 4) for k, v in scores.items()},
            "operating_point": {
                "rule": (
                    "blood test when the estimate is below the person's WHO cut-off + the "
                    "population's margin (g/dL)"
                ),
                "target_sensitivity": 0.85,
                "margins_g_dl": model.population_margins,
                "margin_chosen_on": (
                    "5-fold out-of-fold predictions of all training items: the smallest margin "
                    "reaching the target at the lower end of the 80% bootstrap interval of "
                    "that sensitivity (90th percentile of the margins of 1000 resamples of "
                    "the anaemic items)"
                ),
                "population_choice": crossval.POPULATION_CHOICE,
                "unvalidated_groups": "margin = max(margin, the population's 80% half-width)",
            },
            "pregnancy": (
                "no pregnancy data: a pregnant woman is screened as an adult woman (the woman "
                "head and offset) against her trimester's WHO cut-off, and pregnancy is never "
                "in validated_groups"
            ),
            "heatmap_units": "g/dL contribution per pixel-average (signed)",
            "limits": (
                "Children 6-59 months in Ghana (phones) and adults in India and Italy (an LED "
                "macro device). A new capture setup shifts colour: leave-one-site-out figures "
                "in reports/report.md. Not validated in pregnancy or children over 5. "
                "Screening, not diagnosis."
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
        wall,
        json.loads(report.read_text("utf-8")) if report else None,
    )
    return {"card": card.model_dump(mode="json"), "wall_s": wall, "onnx_torch_max_diff": diff}


def _architecture(model) -> str:
    cfg = model.cfg
    hist = (
        f"{cfg.centres} Gaussian colour centres (k-means, CIELAB)"
        if cfg.centres
        else "no histogram"
    )
    ident = f" + the pooled {cfg.colour} channels (mean colour)" if cfg.identity else ""
    per_pop = getattr(model, "chosen_per_population", {}) or {}
    if len(set(per_pop.values())) > 1:
        heads = (
            "each population's head from the candidate its own inner folds chose ("
            + ", ".join(f"{p}: {c}" for p, c in per_pop.items())
            + "; children_only = the issue-3 recipe fitted on the children alone, its centres "
            "mapped into this card's colour units), zeros on the other candidates' centres"
        )
    else:
        heads = (
            "shared ridge weights + a penalised deviation per capture domain + a "
            "per-population offset"
        )
    return (
        f"frozen 1x1-conv colour features ({hist}{ident}) -> mask-weighted global average "
        "pooling -> the population's linear head (input `group`, one-hot child/woman/man; "
        f"{heads}; alpha {model.alpha:.3g}); heatmap = the head's weights applied per pixel, "
        "in the graph"
    )


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
    eyes_root: Path | None = None,
) -> dict[str, Any]:
    """Both models into out_dir: the segmentation first (with `photos`, real annotated eye
    photos, validated by CV by patient, then trained on all), then the regressor, whose photo
    items go through the segmentation this run trained (or the shipped one when skipped)."""
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
    seg_dir = out_dir if (out_dir / "segmentation.json").is_file() else None
    result["regression"] = train_regression(
        data_root, out_dir, seed=seed, quick=quick, eyes_root=eyes_root, segmentation_dir=seg_dir
    )
    result["total_wall_s"] = round(time.perf_counter() - t0, 1)
    return result
