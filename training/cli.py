"""`hbscreen train` and `hbscreen evaluate` subcommands (the lead wires them into hbscreen/cli).

torch and the training code are imported inside the commands, so `hbscreen --help` works
without the training extra.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from hbscreen.inference.modelcard import MODELS_DIR as DEFAULT_MODELS  # inside the package


def default_data() -> Path:
    """HBSCREEN_DATA, else ../shared/data/cp-anemic relative to the current folder."""
    env = os.environ.get("HBSCREEN_DATA")
    return Path(env) if env else Path("..") / "shared" / "data" / "cp-anemic"


def default_eyes() -> Path | None:
    """HBSCREEN_EYES_DATA, else ../shared/data/eyes-defy-anemia (relative to the current
    folder) if it exists: the adults' cut-outs for the regressor and the real photos with
    expert masks for the segmentation."""
    env = os.environ.get("HBSCREEN_EYES_DATA")
    if env:
        return Path(env)
    p = Path("..") / "shared" / "data" / "eyes-defy-anemia"
    return p if p.is_dir() else None


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data",
        type=Path,
        default=None,
        help="CP-AnemiC folder as distributed (default: $HBSCREEN_DATA or "
        "../shared/data/cp-anemic)",
    )
    p.add_argument(
        "--eyes",
        type=Path,
        default=None,
        help="Eyes-defy-anemia folder with cutouts.csv (and photos.csv) for the adults "
        "(default: $HBSCREEN_EYES_DATA or ../shared/data/eyes-defy-anemia when present)",
    )
    p.add_argument(
        "--no-eyes", action="store_true", help="children only (CP-AnemiC), as in version 1"
    )
    p.add_argument(
        "--population-choice",
        choices=("keep_children", "children", "joint", "all"),  # crossval.POPULATION_CHOICES
        default="keep_children",
        help="how each population's Hb head is chosen: 'keep_children' (default) the inner "
        "folds' joint winner for adults, the children-only recipe (the one shipped before "
        "adults) for children; 'children' (2.1.0) for children the joint winner or the "
        "children-only recipe, by inner MAE; 'joint' one variant for all (2.0.0); 'all' every "
        "variant per population (the reports/per-population experiment)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed for splits and models (default 0)")
    p.add_argument(
        "--threads", type=int, default=2, help="torch/BLAS threads (default 2, the core count)"
    )


def add_train_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train",
        help="train the segmentation and Hb models from CP-AnemiC",
        description="Train both models (segmentation, then the Hb regressor with 5-fold CV by "
        "content group for its conformal intervals) and write ONNX files, JSON cards and "
        "MODEL_CARD.md.",
    )
    _common(p)
    p.add_argument("--out", type=Path, default=DEFAULT_MODELS, help="output folder")
    p.add_argument("--quick", action="store_true", help="a few steps only (smoke test)")
    p.add_argument("--skip-segmentation", action="store_true", help="train the Hb regressor only")
    p.add_argument(
        "--photos",
        type=Path,
        default=default_eyes(),
        help="real eye photos with expert masks for the segmentation (Eyes-defy-anemia layout; "
        "default: ../shared/data/eyes-defy-anemia when present; 'none' for renderings only)",
    )
    p.set_defaults(func=run_train)


def add_evaluate_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "evaluate",
        help="cross-validated evaluation report (Markdown + PNG)",
        description="5-fold CV by content group of the Hb regressor (as ONNX) and the colour "
        "baseline on the same folds, with intervals, robustness, attention and leakage analyses.",
    )
    _common(p)
    p.add_argument("--out", type=Path, default=Path("reports"), help="report folder")
    p.add_argument("--quick", action="store_true", help="main table only, one colour variant")
    p.add_argument(
        "--previous-models",
        type=Path,
        default=None,
        help="folder with a previously shipped regression.{onnx,json} to score on the adults",
    )
    p.set_defaults(func=run_evaluate)


def _setup(args: argparse.Namespace) -> Path:
    from . import crossval

    crossval.POPULATION_CHOICE = args.population_choice
    import torch

    torch.set_num_threads(max(1, args.threads))
    data = args.data or default_data()
    if not data.is_dir():
        raise SystemExit(
            f"hbscreen: dataset folder {data} not found; pass --data PATH or set HBSCREEN_DATA "
            "(download CP-AnemiC from Mendeley Data, doi 10.17632/m53vz6b7fx.1)"
        )
    return data


def _eyes(args: argparse.Namespace) -> Path | None:
    if getattr(args, "no_eyes", False):
        return None
    eyes = args.eyes or default_eyes()
    if eyes is not None and not (eyes / "cutouts.csv").is_file():
        raise SystemExit(
            f"hbscreen: {eyes} has no cutouts.csv; pass --eyes PATH to an Eyes-defy-anemia "
            "folder (cutouts/ + cutouts.csv) or --no-eyes"
        )
    return eyes


def run_train(args: argparse.Namespace) -> int:
    data = _setup(args)
    from .cpanemic import DatasetError
    from .train import train_all

    if args.quick and args.out.resolve() == DEFAULT_MODELS.resolve():
        print(
            "hbscreen train: --quick makes throw-away models; pass --out DIR so the shipped "
            "models in inference/models are not overwritten",
            file=sys.stderr,
        )
        return 2

    try:
        res = train_all(
            data,
            args.out,
            seed=args.seed,
            quick=args.quick,
            skip_segmentation=args.skip_segmentation,
            photos=None if str(args.photos).lower() == "none" else args.photos,
            eyes_root=_eyes(args),
        )
    except DatasetError as e:
        print(f"hbscreen train: {e}", file=sys.stderr)
        return 2
    card = res["regression"]["card"]
    cv = {
        p: {k: f.get(k) for k in ("n", "mae", "pearson_r", "auc", "bias", "coverage_80")}
        for p, f in card["metrics"]["cv_per_population"].items()
    }
    print(
        json.dumps(
            {
                "regression_cv": cv,
                "validated_groups": card["validated_groups"],
                "total_wall_s": res["total_wall_s"],
            }
        )
    )
    print(f"wrote {args.out}/regression.onnx, regression.json, MODEL_CARD.md")
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
    from .evaluate import previous_models_problem

    if args.previous_models and (problem := previous_models_problem(args.previous_models)):
        print(f"hbscreen evaluate: --previous-models: {problem}", file=sys.stderr)
        return 2  # before the data and the long run, not after it
    data = _setup(args)
    from tqdm import tqdm

    from .cpanemic import DatasetError
    from .evaluate import cross_validate, write_report

    bar = tqdm(desc="evaluate", unit="step")

    def say(msg: str) -> None:
        bar.set_postfix_str(msg[:60])
        bar.update(1)

    try:
        ev = cross_validate(
            data,
            _eyes(args),
            seed=args.seed,
            quick=args.quick,
            previous_models=args.previous_models,
            progress=say,
        )
    except DatasetError as e:
        print(f"hbscreen evaluate: {e}", file=sys.stderr)
        return 2
    bar.close()
    cmd = "hbscreen evaluate" + (" --quick" if args.quick else "") + f" --seed {args.seed}"
    if args.population_choice != "keep_children":
        cmd += f" --population-choice {args.population_choice}"
    if args.previous_models:
        cmd += " --previous-models DIR (the version-1 regression model)"
    path = write_report(ev, args.out, cmd)
    print(f"wrote {path}")
    return 0
