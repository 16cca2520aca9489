"""Measure colour-guided refinement of the served segmentation map on real photos (no training).

For each CV fold's model (FOLDS_DIR/fold<k>/segmentation.onnx, trained with those patients held
out), the two-pass probability map of each photo (preprocess.segment_two_pass, as served) is
refined as served with the card key `guided_refine` (preprocess.guided_refine: a guided filter,
He et al. 2013, six box filters in plain OpenCV, whose guide is the grey photo), then
thresholded. The filter's radius and eps are chosen on the fold's TRAINING photos
and scored on its held-out patients, so the figure is not tuned on the test split.

    python benchmarks/seg_refine.py --photos ../shared/data/eyes-defy-anemia --folds-dir DIR \\
        --folds 0 1
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort

from hbscreen.inference.modelcard import load_card
from hbscreen.inference.preprocess import segment_two_pass
from hbscreen.training.segmentation import (
    CV_FOLDS,
    SERVE_LONG_SIDE,
    cv_folds,
    iou_dice,
    load_real_photos,
    parse_guided,
)

RADII = (4, 8, 16, 24, 32)  # px at the working scale
EPS = (1e-4, 1e-3, 1e-2)
LONG_SIDES = (320, 640)  # working scale: the photo's long side (1280: never chosen, 5x slower)


class Replay:
    """The model's outputs for one photo, recorded on the first served call and replayed for
    every filter setting (the crop of pass 2 does not depend on the filter)."""

    def __init__(self, session: ort.InferenceSession) -> None:
        self.session, self.name, self.outs, self.i = session, session.get_inputs()[0].name, [], 0

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if self.i == len(self.outs):
            self.outs.append(self.session.run(None, {self.name: x})[0])
        self.i += 1
        return self.outs[self.i - 1]


def photo_runs(session: ort.InferenceSession, items) -> list[tuple]:
    """(rgb, truth, Replay) at the served resolution for each photo."""
    out = []
    for _, it in items:
        rgb, mask = it.load(long_side=SERVE_LONG_SIDE)
        out.append((rgb, mask > 0.5, Replay(session)))
    return out


def mean_iou(runs, card, guided) -> float:
    ious = []
    for rgb, truth, replay in runs:
        replay.i = 0
        prob = segment_two_pass(
            replay, rgb, card.preprocessing, card.threshold, card.refine_margin, guided
        )
        ious.append(iou_dice(prob >= card.threshold, truth)[0])
    return float(np.mean(ious))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--photos", type=Path, required=True)
    ap.add_argument("--folds-dir", type=Path, required=True)
    ap.add_argument("--folds", type=int, nargs="+", default=list(range(CV_FOLDS)))
    ap.add_argument("--n-tune", type=int, default=20, help="training photos used to tune")
    ap.add_argument(
        "--guided",
        metavar="RADIUS,EPS,LONG_SIDE",
        help="also score this one setting (e.g. the one chosen on the pooled training photos)",
    )
    a = ap.parse_args()
    fixed = parse_guided(a.guided)
    cv2.setNumThreads(1)
    items = load_real_photos(a.photos)
    folds = cv_folds([p for p, _ in items], CV_FOLDS, 0)
    for k in a.folds:
        d = a.folds_dir / f"fold{k}"
        card = load_card("segmentation", d)
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        sess = ort.InferenceSession(str(d / card.file), so, providers=["CPUExecutionProvider"])
        held = set(folds[k])
        train = [x for x in items if x[0] not in held][:: max(1, (len(items) - 13) // a.n_tune)]
        tune = photo_runs(sess, train)
        grid = [None] + [
            {"radius": r, "eps": e, "long_side": n}
            for r, e, n in itertools.product(RADII, EPS, LONG_SIDES)
        ]
        scores = [mean_iou(tune, card, g) for g in grid]
        best = grid[int(np.argmax(scores))]
        test = photo_runs(sess, [x for x in items if x[0] in held])
        report = {
            "tuned_on_train_photos": len(tune),
            "best_params": best,
            "train_iou_plain": round(scores[0], 4),
            "train_iou_best": round(max(scores), 4),
            "held_out_iou_plain": round(mean_iou(test, card, None), 4),
            "held_out_iou_refined": round(mean_iou(test, card, best), 4),
            "train_grid": [[g, round(v, 4)] for g, v in zip(grid, scores, strict=True)],
        }
        if fixed:
            report["fixed_params"] = fixed
            report["train_iou_fixed"] = round(mean_iou(tune, card, fixed), 4)
            report["held_out_iou_fixed"] = round(mean_iou(test, card, fixed), 4)
        print(json.dumps({k: report}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
