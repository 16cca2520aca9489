"""The readable inference/models/MODEL_CARD.md, written by `hbscreen train` from its numbers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hbscreen.inference.modelcard import ModelCard

from .card_sections import LICENCE_HEADING

LABELS = {"child": "children (Ghana)", "woman": "adult women", "man": "adult men"}
QUALITY_GATE = Path("reports") / "quality_gate.json"  # by quality_calibration --record


def _f(v: Any) -> str:
    return f"{v:.2f}" if isinstance(v, float) else str(v)


def _population_rows(card: ModelCard) -> list[str]:
    cv = card.metrics.get("cv_per_population", {})
    cal = card.calibration
    assert cal is not None
    rows = [
        "| population | n | MAE | r [95% CI] | AUC (WHO cut-off) | bias | 80% / 95% coverage |"
        " sens / spec | margin | 80% half-width | validated |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for p in ("child", "woman", "man", "adult", "india", "italy"):
        f = cv.get(p)
        if not f:
            continue
        pc = cal.per_population.get(p)
        ci = f.get("pearson_r_ci95") or [None, None]
        rows.append(
            f"| {LABELS.get(p, p)} | {f['n']} | {_f(f['mae'])} | {_f(f['pearson_r'])} "
            f"[{_f(ci[0])}, {_f(ci[1])}] | {_f(f['auc'])} | {_f(f['bias'])} | "
            f"{_f(f.get('coverage_80'))} / {_f(f.get('coverage_95'))} | "
            f"{_f(f.get('sensitivity'))} / {_f(f.get('specificity'))} | "
            f"{_f(pc.referral_margin) if pc else '-'} | {_f(pc.q80) if pc else '-'} | "
            f"{('yes' if pc.validated else 'no') if pc else '-'} |"
        )
    return rows


def write_model_card_md(
    path: Path,
    card: ModelCard,
    wall_s: float,
    report: dict | None = None,
) -> None:
    extra = card.model_dump(mode="json")
    seg_card = path.parent / "segmentation.json"
    seg = json.loads(seg_card.read_text("utf-8")) if seg_card.is_file() else None
    m = card.metrics
    loso = (report or {}).get("loso", {})
    lines = [
        "# hbscreen model card",
        "",
        "Two ONNX models with JSON cards beside them (the contract inference reads):",
        "`segmentation.onnx` (conjunctiva mask) and `regression.onnx` (haemoglobin, g/dL, with",
        "an in-graph heatmap). Both are produced by `hbscreen train --data CP-AnemiC --eyes",
        "Eyes-defy-anemia --seed 0`.",
        "",
        "## Intended use and limits",
        "",
        "- **Screening, not diagnosis.** The estimate comes with an interval; only a blood test",
        "  (HemoCue or laboratory) confirms anaemia.",
        "- **One model for children and adults.** The person's group (asked by the bot) is an",
        "  input: it selects the population (child / woman / man) whose Hb level and capture",
        "  domain the estimate starts from.",
        "- **Validated groups** (card `validated_groups`, decided by the cross-validated figures",
        "  below against targets fixed in advance): "
        + (", ".join(card.validated_groups) or "none")
        + ".",
        "- **Pregnancy:** " + str(extra.get("pregnancy", "")) + ". The bot says so first.",
        "- Children 5-14 years are screened as children and are not validated.",
        "- **Capture setup:** the children's photos are phone photos (Ghana), the adults' come",
        "  from an LED macro device (India, Italy). A new setup shifts colour: see the",
        "  leave-one-site-out figures (a new site's Hb level is not predicted, only its ranking).",
        "",
        "## Data",
        "",
        *[f"- {src}" for src in card.training_data.get("sources", [])],
        f"- Label policy: {card.training_data.get('label_policy', '')}.",
        "- Eyes-defy cut-outs come from a JPEG copy: near-black ringing pixels inside the mask",
        f"  (max RGB < {card.preprocessing.model_extra.get('dark_exclude')}) are dropped from the"
        " mask by the preprocessing, in training and serving alike.",
        "- CP-AnemiC duplicates: pixel-identical files are one item with their mean Hb; every",
        "  split is by content group (issue 3; labels of the same picture differ by SD ~1.3 g/dL).",
        "",
        "## Haemoglobin regressor",
        "",
        f"Architecture: {extra.get('architecture', '')}.",
        f"Variant chosen by inner group-CV: `{extra.get('model_variant')}` "
        f"(inner scores {extra.get('inner_cv_score')}). Input: the mask's bounding box (+8%)",
        f"resized to {card.preprocessing.size[0]}x{card.preprocessing.size[1]}, colour space "
        f"`{card.preprocessing.colour}`, glare and near-black pixels excluded from the mask, mask",
        "as the last channel; the population one-hot as the second input `group`.",
        "",
        f"### Metrics: {m.get('split', '')}",
        "",
        *_population_rows(card),
        "",
        "Intervals are Mondrian split-conformal: half-widths from each population's own",
        "out-of-fold residuals (card `calibration.per_population`). The referral margin of each",
        "population was chosen on out-of-fold predictions of the training items so that",
        "sensitivity 0.85 holds at the lower end of the 80% bootstrap interval of that",
        "sensitivity (the same rule for every population); groups the model is not validated",
        "for use the wider of the margin and the population's 80% half-width.",
        "",
    ]
    if loso:
        lines += ["### Leave-one-site-out (reports/report.md)", ""]
        for v, rows in loso.items():
            cells = "; ".join(
                f"{s}: MAE {_f(r['mae'])}, r {_f(r['pearson_r'])}, bias {_f(r['bias'])}"
                for s, r in rows.items()
            )
            lines.append(f"- {v}: {cells}")
        lines.append("")
    lines += [
        f"Training wall time of this step (CV + final model): {wall_s:.0f} s.",
        "",
        str(extra.get("limits", "")),
    ]
    if seg:
        from .segmentation import card_section_md

        lines += ["", *_trimmed(card_section_md(seg))]
    if QUALITY_GATE.is_file():  # measured by quality_calibration --record, carried over
        lines += ["", *_trimmed(gate_section_md(json.loads(QUALITY_GATE.read_text("utf-8"))))]
    lines += [
        "",
        LICENCE_HEADING,
        "",
        card.licence,
        "Cite them wherever these models are used:",
        "",
        *[f"- {c}" for c in card.citation],
        "",
        "Method: Kato et al., Machine/deep learning-assisted hemoglobin level prediction using",
        "palpebral conjunctival images, Br J Haematol 2024, doi:10.1111/bjh.19621.",
        "",
    ]
    path.write_text("\n".join(lines), "utf-8")


def _trimmed(section: list[str]) -> list[str]:
    """A section without its trailing blank lines: one blank line between sections, as
    card_sections.replace_section leaves them (so re-measuring one section changes only it)."""
    while section and not section[-1]:
        section = section[:-1]
    return section


def gate_section_md(record: dict) -> list[str]:
    """The "Quality gate" section from quality_calibration's record (reports/quality_gate.json)."""
    halves = [k for k in record["rows"][0] if k not in ("item", "expected")]
    lines = [
        "## Quality gate",
        "",
        "Photo-mode thresholds (`inference/quality.py` RULES) chosen on the calibration half (by",
        "patient) of the 65 real Eyes-defy-anemia photos, each photo judged on the mask the served",
        f"segmentation {record['segmentation']} gives it; the other half only reported. Good",
        "photos and harmless variants: accepted; degraded ones: caught with the expected code.",
        f"Measured {record['measured_on']} with `{record['command']}` ("
        + ", ".join(f"{k} {v}" for k, v in record.get("libraries", {}).items())
        + (f"; CPU: {record['cpu']}" if "cpu" in record else "")
        + "). The int8 segmentation's sums are exact on every x86 CPU (where VNNI is missing the",
        "pipeline asks onnxruntime for session.x64quantprecision: the default kernels saturate",
        "there and moved a few photos per row), so these masks, and this table, are the same on",
        "any of them.",
        "",
        "| item | expected code | " + " | ".join(halves) + " |",
        "|---|---|" + "---|" * len(halves),
    ]
    for r in record["rows"]:
        cells = " | ".join(f"{r[h][0]}/{r[h][1]} ({r[h][0] / r[h][1]:.0%})" for h in halves)
        lines.append(f"| {r['item']} | {r['expected']} | {cells} |")
    return [*lines, ""]
