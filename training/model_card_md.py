"""The readable inference/models/MODEL_CARD.md, written by `hbscreen train` from its numbers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hbscreen.inference.modelcard import ModelCard


def _f(v: Any) -> str:
    return f"{v:.2f}" if isinstance(v, float) else str(v)


TARGETS = "MAE <= 1.25, r >= 0.60, AUC >= 0.85, sensitivity >= 0.85 with specificity >= 0.60"


def _limits(cv: dict, op: dict, report: dict | None) -> list[str]:
    """What the numbers mean for the product, from this training's CV and (if present) the
    last `hbscreen evaluate` report's analyses."""
    met = (
        cv["mae"] <= 1.25
        and cv["pearson_r"] >= 0.60
        and cv["auc_hb_lt_11"] >= 0.85
        and op.get("sensitivity", 0) >= 0.85
        and op.get("specificity", 0) >= 0.60
    )
    out = ["", f"Targets ({TARGETS}): {'met' if met else 'NOT met'}."]
    if report and "label_noise" in report:
        ln, lk = report["label_noise"], report["leakage"]
        fc = report.get("feature_correlations", {})
        strict = lk["items_near_duplicate_split"]
        out += [
            "What limits them (reports/report.md): label noise (labels of the SAME picture "
            f"differ by MAE {ln['same_picture_other_labels_mae']:.2f} g/dL), a weak colour "
            f"signal (strongest single feature |rho| {max(map(abs, fc.values()), default=0):.2f}), "
            "and near-duplicate cut-outs of one photo that flatter a forest (baseline r "
            f"{report['colour_baseline']['pearson_r']:.2f} by content group, "
            f"{strict['base_pearson_r']:.2f} with near-duplicates grouped; regressor "
            f"{strict['cnn_pearson_r']:.2f})."
        ]
    out += [
        f"At the operating point {op.get('referred_share', 0):.0%} of children are referred for "
        "a blood test: the estimate triages, it does not replace the test.",
    ]
    return out


def _policy(report: dict | None) -> list[str]:
    if not report or "label_policy" not in report:
        return ["(run `hbscreen evaluate` for the comparison)."]
    a, b = report["label_policy"]["mean_all_groups"], report["label_policy"]["drop_spread_gt_2"]
    return [
        f"mean label, all groups: MAE {a['mae']:.2f}, r {a['pearson_r']:.2f}; dropping: MAE "
        f"{b['mae']:.2f}, r {b['pearson_r']:.2f} - no clear gain for 10% fewer distinct",
        "pictures, so every group is kept with its mean label.",
    ]


def write_model_card_md(
    path: Path,
    card: ModelCard,
    ev: Any,
    stats: dict[str, int],
    wall_s: float,
    report: dict | None = None,
) -> None:
    m = card.metrics
    cv, base = m["cv"], m["colour_baseline_same_folds"]
    iv = m["intervals"]
    extra = card.model_dump(mode="json")
    shipped = extra.get("operating_point", {})
    op = shipped.get("nested_cv", {})
    seg_card = path.parent / "segmentation.json"
    seg = json.loads(seg_card.read_text("utf-8")) if seg_card.is_file() else None
    cal = card.calibration
    assert cal is not None
    lines = [
        "# hbscreen model card",
        "",
        "Two ONNX models with JSON cards beside them (the contract inference reads):",
        "`segmentation.onnx` (conjunctiva mask) and `regression.onnx` (haemoglobin, g/dL, with",
        "an in-graph heatmap). Both are produced by `hbscreen train --data PATH --seed 0`.",
        "",
        "## Intended use and limits",
        "",
        "- **Screening, not diagnosis.** The estimate comes with an interval; only a blood test",
        "  (HemoCue or laboratory) confirms anaemia.",
        "- **Validated population:** children 6-59 months at hospitals in Ghana, photographed",
        "  with one capture protocol (CP-AnemiC). Card `validated_groups`: "
        + ", ".join(card.validated_groups)
        + ".",
        "- **Not validated** in pregnancy, in adults or in older children, nor on other phones,",
        "  light or capture protocols. The bot must say so to those groups.",
        "- The accuracy below is modest (see the numbers): a single estimate is not reliable;",
        "  the referral rule refers well above the cut-off (sensitivity first).",
        "",
        "## Data",
        "",
        f"CP-AnemiC working copy: {stats['files']} files of 710 (98 reserved elsewhere), "
        f"{stats['groups']} pixel-content groups, {stats['duplicate_groups']} of them with",
        "pixel-identical copies. Conjunctiva cut-outs (RGBA, mask in alpha) with Hb measured on",
        "the same day.",
        "",
        "### Label policy for duplicates",
        "",
        "Files with identical pixels form one item labelled with the **mean** Hb of its files;",
        "every group is kept, and every split is by group. Evidence: the same picture carries",
        "labels with a within-group SD of about 1.3 g/dL (spread up to 7 g/dL), so these are",
        "labelling errors, not repeat measurements; a mean is the least-noisy label. Dropping",
        "the groups whose spread exceeds 2 g/dL (40 groups, 180 files) was compared on the same",
        "test items:",
        *_policy(report),
        "",
        "The data holds more leakage than pixel hashing sees: the same photo cut out with",
        "slightly different masks (different pixels, near-identical colour). The report shows",
        "the numbers again with such near-duplicates merged into one group.",
        "",
        "## Haemoglobin regressor",
        "",
        f"Architecture: {extra.get('architecture', '')}. Input: the mask's bounding box (+8%)",
        f"resized to {card.preprocessing.size[0]}x{card.preprocessing.size[1]} with no "
        f"letterbox, colour space `{card.preprocessing.colour}`, glare excluded from the mask,",
        "mask as the last channel; every key in the card's `preprocessing`.",
        "Why: the signal is colour and ~400 distinct pictures are too few for a fine-tuned",
        "backbone (EfficientNet-Lite0: MAE 1.72, r 0.31); a small trained 1x1-conv network",
        "underfit here (training r 0.21 after 30 epochs on 2 shared cores). Frozen colour",
        "features with a closed-form linear head fit in seconds and keep Grad-CAM = CAM exact.",
        "The colour variant (CIELAB, CIELAB with lightness normalisation, RGB) is chosen by",
        "inner group-CV, the ridge penalty by leave-one-out inside the training data; the",
        "number and width of the colour centres were fixed on inner folds of outer fold 0's",
        "training part (256 centres, sigma 0.2: MAE 1.57, r 0.37 there, vs 64 centres 1.68,",
        "0.26). No outer test fold is used for any choice made per fold.",
        "",
        f"### Metrics: {m['split']}",
        "",
        "| model | MAE (g/dL) | Pearson r | AUC Hb<11 | bias | 95% limits |",
        "|---|---|---|---|---|---|",
        f"| regressor (ONNX) | {_f(cv['mae'])} | {_f(cv['pearson_r'])} | "
        f"{_f(cv['auc_hb_lt_11'])} | {_f(cv['bias'])} | {_f(cv['loa_low'])} to "
        f"{_f(cv['loa_high'])} |",
        f"| colour baseline, same folds | {_f(base['mae'])} | {_f(base['pearson_r'])} | "
        f"{_f(base['auc_hb_lt_11'])} | {_f(base['bias'])} | {_f(base['loa_low'])} to "
        f"{_f(base['loa_high'])} |",
        "| Kato 2024 CNN / non-CNN (file-level) | - | 0.44 / 0.38 | - | - | - |",
        "",
        f"Conformal half-widths from {cal.n_calibration} out-of-fold residuals: 80% "
        f"+-{cal.q80:.2f} g/dL, 95% +-{cal.q95:.2f} g/dL. Cross-conformal coverage: 80% "
        f"{_f(iv['80']['coverage'])}, 95% {_f(iv['95']['coverage'])}.",
        "",
        "Operating point (card `calibration.referral_margin`): a blood test when the estimate",
        f"is below the group's cut-off + {_f(shipped.get('margin_g_dl'))} g/dL, the margin "
        f"chosen for sensitivity {shipped.get('target_sensitivity')} on out-of-fold",
        "predictions of the training items. Nested CV (each fold's margin from its own inner",
        f"folds), Hb < 11: sensitivity {_f(op.get('sensitivity'))}, specificity "
        f"{_f(op.get('specificity'))}. Groups the model is not validated for use the wider of",
        "the margin and the 80% half-width. The 80% interval rule alone would give "
        f"{_f(iv['80']['sensitivity'])} / {_f(iv['80']['specificity'])}. Kato 2024 reported",
        "0.20 / 0.99.",
        "",
        f"Training wall time of this step (CV + final model): {wall_s:.0f} s.",
        "",
        *_limits(cv, op, report),
    ]
    if seg:
        from .segmentation import card_section_md

        lines += ["", *card_section_md(seg)]
    lines += [
        "",
        "## Licence and citation",
        "",
        card.licence,
        "Cite both wherever these models are used:",
        "",
        *[f"- {c}" for c in card.citation],
        "",
        "Method: Kato et al., Machine/deep learning-assisted hemoglobin level prediction using",
        "palpebral conjunctival images, Br J Haematol 2024, doi:10.1111/bjh.19621.",
        "",
    ]
    path.write_text("\n".join(lines), "utf-8")
