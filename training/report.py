"""Markdown + PNG rendering of an Evaluation (see training/evaluate.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def _fmt(v: Any, nd: int = 2) -> str:
    return f"{v:.{nd}f}" if isinstance(v, (float, np.floating)) else str(v)


def _figures(ev, summary: dict, out: Path, roc_points) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    y, p, b = ev.y, ev.reg.pred, ev.base.pred
    figs = {}

    fig, axes = plt.subplots(1, 2, figsize=(10, 4.6), sharex=True, sharey=True)
    for ax, pred, name in ((axes[0], p, "Hb regressor (ONNX)"), (axes[1], b, "colour baseline")):
        r = np.corrcoef(pred, y)[0, 1]
        ax.scatter(y, pred, s=10, alpha=0.6)
        lo, hi = min(y.min(), pred.min()) - 0.5, max(y.max(), pred.max()) + 0.5
        ax.plot([lo, hi], [lo, hi], "k--", lw=1, label="identity")
        ax.axvline(11, color="r", lw=0.8, ls=":")
        ax.axhline(11, color="r", lw=0.8, ls=":")
        ax.set_title(f"{name}: r = {r:.2f}, MAE = {np.abs(pred - y).mean():.2f}")
        ax.set_xlabel("measured Hb (g/dL)")
        ax.legend(loc="upper left")
    axes[0].set_ylabel("predicted Hb (g/dL), out of fold")
    fig.suptitle("Predicted vs measured Hb, 5-fold CV by content group (cf. Kato 2024 Fig. 2)")
    fig.tight_layout()
    fig.savefig(out / "fig_pred_vs_measured.png", dpi=110)
    plt.close(fig)
    figs["pred"] = "fig_pred_vs_measured.png"

    ag = summary["regressor"]
    fig, ax = plt.subplots(figsize=(6, 4.4))
    mean, diff = (p + y) / 2, p - y
    ax.scatter(mean, diff, s=10, alpha=0.6)
    for v, ls in ((ag["bias"], "-"), (ag["loa_low"], "--"), (ag["loa_high"], "--")):
        ax.axhline(v, color="k", ls=ls, lw=1)
        ax.text(1.0, v, f" {v:+.2f}", va="center", transform=ax.get_yaxis_transform())
    ax.set_xlabel("mean of predicted and measured Hb (g/dL)")
    ax.set_ylabel("predicted - measured (g/dL)")
    ax.set_title("Bland-Altman: bias and 95% limits of agreement")
    fig.tight_layout()
    fig.savefig(out / "fig_bland_altman.png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    figs["ba"] = "fig_bland_altman.png"

    fig, ax = plt.subplots(figsize=(5.2, 5))
    for pred, name in ((p, "regressor"), (b, "colour baseline")):
        fpr, tpr = roc_points(y, pred)
        auc = summary["regressor" if name == "regressor" else "colour_baseline"]["auc_hb_lt_11"]
        ax.plot(fpr, tpr, label=f"{name} (AUC {auc:.2f})")
    for lvl, mk in (("80", "s"), ("95", "^")):
        op = summary["intervals"][lvl]
        ax.plot(1 - op["specificity"], op["sensitivity"], mk, ms=7, label=f"{lvl}% interval rule")
    op = summary["operating_point"]["regressor"]
    ax.plot(1 - op["specificity"], op["sensitivity"], "o", ms=9, label="shipped operating point")
    ax.plot(1 - 0.99, 0.20, "x", color="k", ms=9, label="Kato 2024 (file-level)")
    ax.plot([0, 1], [0, 1], "k:", lw=0.8)
    ax.set_xlabel("1 - specificity")
    ax.set_ylabel("sensitivity")
    ax.set_title("ROC for Hb < 11 g/dL (out of fold)")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "fig_roc.png", dpi=110)
    plt.close(fig)
    figs["roc"] = "fig_roc.png"

    if "_degraded_pred" in ev.extra:
        d = ev.extra["_degraded_pred"]
        fig, ax = plt.subplots(figsize=(5.2, 4.6))
        ax.scatter(p, d, s=10, alpha=0.6)
        lo, hi = min(p.min(), d.min()) - 0.2, max(p.max(), d.max()) + 0.2
        ax.plot([lo, hi], [lo, hi], "k--", lw=1)
        rb = summary["robustness"]
        ax.set_title(
            f"cheap-phone degradation: MAE {rb['mae_clean']:.2f} -> {rb['mae_degraded']:.2f}"
        )
        ax.set_xlabel("prediction on the clean cut-out (g/dL)")
        ax.set_ylabel("prediction on the degraded cut-out (g/dL)")
        fig.tight_layout()
        fig.savefig(out / "fig_robustness.png", dpi=110)
        plt.close(fig)
        figs["rob"] = "fig_robustness.png"

    if "_lower_share" in ev.extra:
        s = ev.extra["_lower_share"]
        err = np.abs(p - y)
        good, bad = (err <= 1.0) & ~np.isnan(s), (err > 2.0) & ~np.isnan(s)
        fig, ax = plt.subplots(figsize=(5.2, 4.4))
        ax.boxplot([s[good], s[bad]])
        ax.set_xticks([1, 2], [f"|error| <= 1 (n={good.sum()})", f"|error| > 2 (n={bad.sum()})"])
        ax.axhline(0.5, color="k", ls=":", lw=0.8)
        ax.set_ylabel("share of positive attention in the lower half")
        ax.set_title("Where the heatmap looks (cf. Kato 2024 Fig. 3)")
        fig.tight_layout()
        fig.savefig(out / "fig_attention.png", dpi=110)
        plt.close(fig)
        figs["att"] = "fig_attention.png"

    if "learning_curve" in summary:
        lc = summary["learning_curve"]
        fig, ax = plt.subplots(figsize=(5.2, 4))
        n = [row["n_train"] for row in lc]
        ax.plot(n, [row["mae"] for row in lc], "o-", label="MAE (g/dL)")
        ax.plot(n, [row["pearson_r"] for row in lc], "s-", label="Pearson r")
        ax.set_xlabel("training items per fold")
        ax.set_title("Learning curve (same test folds)")
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / "fig_learning_curve.png", dpi=110)
        plt.close(fig)
        figs["lc"] = "fig_learning_curve.png"
    return figs


def render_report(ev, summary: dict, out: Path, command: str, published: dict, roc_points) -> Path:
    figs = _figures(ev, summary, out, roc_points)
    r, b = summary["regressor"], summary["colour_baseline"]
    iv = summary["intervals"]
    ops = summary["operating_point"]
    st = ev.policy_stats
    L: list[str] = []
    add = L.append
    add("# hbscreen: evaluation of the haemoglobin regressor\n")
    add(f"Produced by `{command}`. Data: CP-AnemiC (children 6-59 months, Ghana).")
    add(
        f"{st['files']} files, {st['groups']} pixel-content groups ({st['duplicate_groups']} "
        f"with duplicates) -> {st['items']} items, one per group, labelled with the group's "
        "mean Hb."
    )
    add(f"Split: {summary['split']}. Every number below is out of fold.\n")
    add("## Main table (same folds)\n")
    add("| model | MAE | r | AUC Hb<11 | bias | 95% LoA | sens / spec (operating point) |")
    add("|---|---|---|---|---|---|---|")
    for name, a, op in (
        ("Hb regressor (shipped ONNX)", r, ops["regressor"]),
        ("colour baseline", b, ops["colour_baseline"]),
    ):
        add(
            f"| {name} | {_fmt(a['mae'])} | {_fmt(a['pearson_r'])} | {_fmt(a['auc_hb_lt_11'])} "
            f"| {_fmt(a['bias'])} | {_fmt(a['loa_low'])} to {_fmt(a['loa_high'])} | "
            f"{_fmt(op['sensitivity'])} / {_fmt(op['specificity'])} |"
        )
    add(
        f"| Kato 2024 CNN / non-CNN (published, file-level) | - | {published['cnn_r']} / "
        f"{published['non_cnn_r']} | - | - | - | {published['sensitivity']} / "
        f"{published['specificity']} |"
    )
    add(
        "\nColour variant chosen on inner folds per outer fold: "
        f"{summary['chosen_colour']}; baseline model chosen: {summary['chosen_baseline']}.\n"
    )
    add(f"![predicted vs measured]({figs['pred']})\n")
    add(f"![Bland-Altman]({figs['ba']})\n")
    add("## The referral rule and the intervals\n")
    rop, bop = ops["regressor"], ops["colour_baseline"]
    add(
        "The shipped rule (inference/advice.py `referral_for`): a blood test when the estimate "
        "is below the cut-off + a margin, the margin chosen for sensitivity "
        f"{ops['target_sensitivity']} (fixed in advance) on out-of-fold predictions of the "
        "training items only: for the regressor, each outer fold's margin comes from its "
        "model's inner folds (nested); for the baseline, from the other outer folds. Margins "
        f"per fold (g/dL): regressor {rop['margins']}, baseline {bop['margins']}. Out of fold, "
        f"the rule refers {_fmt(rop['referred_share'])} of children (sensitivity "
        f"{_fmt(rop['sensitivity'])}, specificity {_fmt(rop['specificity'])}); the baseline "
        f"{_fmt(bop['sensitivity'])} / {_fmt(bop['specificity'])}. Anything in the severe band "
        "is urgent whatever the margin.\n"
    )
    add(
        "Split-conformal half-widths; coverage is cross-conformal (each fold's half-width from "
        "the other folds' residuals). Using an interval's low end as the rule instead (the "
        "sensitivity-first rule for groups the model is not validated for):\n"
    )
    add("| interval | coverage | mean half-width | sensitivity | specificity | referred |")
    add("|---|---|---|---|---|---|")
    for lvl in ("80", "95"):
        o = iv[lvl]
        add(
            f"| {lvl}% | {_fmt(o['coverage'])} | {_fmt(o['mean_half_width'])} | "
            f"{_fmt(o['sensitivity'])} | {_fmt(o['specificity'])} | {_fmt(o['referred_share'])} |"
        )
    sp = summary["spec_at_sens_0.85"]
    add(
        "\nFor comparison, the best threshold on the estimate reaching sensitivity 0.85, read "
        "off the out-of-fold ROC with hindsight (not a deployable choice), gives specificity "
        f"{_fmt(sp['regressor'])} (regressor) / {_fmt(sp['colour_baseline'])} (baseline).\n"
    )
    add(f"\n![ROC]({figs['roc']})\n")
    if "robustness" in summary:
        rb = summary["robustness"]
        add("## Robustness to a cheap phone\n")
        add(
            f"{rb['degradation']}. MAE clean {_fmt(rb['mae_clean'])}, degraded "
            f"{_fmt(rb['mae_degraded'])} (change {rb['delta_mae']:+.2f}); r degraded "
            f"{_fmt(rb['r_degraded'])}, AUC degraded {_fmt(rb['auc_degraded'])}.\n"
        )
        add(f"![robustness]({figs['rob']})\n")
    if "attention" in summary:
        at = summary["attention"]
        add("## Where the heatmap looks (Kato 2024 Fig. 3)\n")
        add(
            f"Share of positive in-graph heatmap ({at['definition']}): well-predicted "
            f"(|error| <= 1 g/dL, n={at['n_good']}) {_fmt(at['lower_share_good_mean'])}, "
            f"badly-predicted (|error| > 2, n={at['n_bad']}) "
            f"{_fmt(at['lower_share_bad_mean'])}.\n"
        )
        add(f"![attention]({figs['att']})\n")
    if "leakage" in summary:
        lk = summary["leakage"]
        add("## How leakage inflates the published kind of number\n")
        add("| split | model | MAE | r | AUC Hb<11 |")
        add("|---|---|---|---|---|")
        names = {
            "files_file_split": f"all {st['files']} files, split BY FILE (leaky)",
            "files_group_split": f"all {st['files']} files, split by content group",
            "items_near_duplicate_split": (
                "items, near-duplicate cut-outs merged "
                f"({lk['items_near_duplicate_split']['clusters']} clusters)"
            ),
        }
        for key, label in names.items():
            row = lk[key]
            for m, tag in (("cnn", "regressor"), ("base", "colour baseline")):
                add(
                    f"| {label} | {tag} | {_fmt(row[f'{m}_mae'])} | "
                    f"{_fmt(row[f'{m}_pearson_r'])} | {_fmt(row[f'{m}_auc_hb_lt_11'])} |"
                )
        add(
            "\nFiles carry their own (conflicting) Hb here, so MAE includes label noise. "
            "The near-duplicate split merges content groups whose standardised colour "
            "features are almost equal: CP-AnemiC holds the same photo cut out with different "
            "masks, which pixel hashing cannot see (see the model card).\n"
        )
    if "label_noise" in summary:
        ln = summary["label_noise"]
        add("## What limits the numbers\n")
        add(
            f"- Label noise: {ln['duplicate_groups']} groups of pixel-identical pictures "
            f"({ln['files_in_duplicate_groups']} files) carry different Hb values; within-group "
            f"SD {_fmt(ln['within_group_sd'])} g/dL, max spread {_fmt(ln['max_spread'])}; "
            f"predicting a file's Hb by the other labels of the SAME picture gives MAE "
            f"{_fmt(ln['same_picture_other_labels_mae'])} g/dL. Per-file MAE of the regressor "
            f"(own labels): {_fmt(ln['per_file_mae'])}."
        )
    if "feature_correlations" in summary:
        fc = summary["feature_correlations"]
        add(
            "- Weak colour signal: the strongest single colour features correlate with Hb at "
            "Spearman "
            + ", ".join(f"{k} {v:+.2f}" for k, v in fc.items())
            + ". What the forest adds beyond that comes largely from recognising near-duplicate "
            "cut-outs (compare the near-duplicate split above)."
        )
    if "label_policy" in summary:
        lp = summary["label_policy"]
        add(
            "- Label policy (same test items: groups with spread <= 2 g/dL): train on all "
            f"groups with mean labels MAE {_fmt(lp['mean_all_groups']['mae'])} r "
            f"{_fmt(lp['mean_all_groups']['pearson_r'])}; drop groups with spread > 2 MAE "
            f"{_fmt(lp['drop_spread_gt_2']['mae'])} r {_fmt(lp['drop_spread_gt_2']['pearson_r'])}."
        )
    if "learning_curve" in summary:
        lc = summary["learning_curve"]
        add(
            "- Learning curve: "
            + "; ".join(
                f"{row['n_train']} items MAE {_fmt(row['mae'])} r {_fmt(row['pearson_r'])}"
                for row in lc
            )
            + "."
        )
        add(f"\n![learning curve]({figs['lc']})\n")
    add(f"\nCV wall time: {summary.get('cv_wall_s', '?')} s.")
    path = out / "report.md"
    path.write_text("\n".join(L) + "\n", "utf-8")
    return path
