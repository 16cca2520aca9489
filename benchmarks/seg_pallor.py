"""How the served segmentation finds a pale conjunctiva, and what a miss does to the estimate:
the real annotated photos made pale on purpose, for one or more models folders side by side.

    OMP_NUM_THREADS=1 python benchmarks/seg_pallor.py [--photos ../shared/data/eyes-defy-anemia]
        [--models inference/models OTHER_DIR ...] [--amounts 0 0.3 0.6]

Pallor is what is screened for, and the 65 annotated photos are mostly well perfused, so each
photo is made pale the way the gate's calibration does it (`quality_calibration.pallor`: the
tissue's local colour moved that share of the way to the white of the eye, texture kept). Per
amount it prints, over the photos the gate accepts: the served mask's mean IoU against the
expert's, how many overlap it by less than 0.3 (the model measured other tissue: the lid rim,
the fold), and the Hb estimated through the served mask minus the Hb estimated through the
expert's mask on the same pale photo (positive: the miss makes a pale person look less
anaemic). A models folder needs both models (copy a regressor beside a new segmentation).
The photos are training photos of the shipped models: read the figures as a comparison of
models, not as held-out accuracy. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from hbscreen.inference import quality
from hbscreen.inference.pipeline import Pipeline
from hbscreen.training.annotated_photos import load_annotated_photos
from hbscreen.training.eyes_defy import load_photos
from hbscreen.training.quality_calibration import pallor
from hbscreen.training.segmentation import SERVE_LONG_SIDE, iou_dice


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--photos", type=Path, default=Path("../shared/data/eyes-defy-anemia"))
    ap.add_argument("--models", type=Path, nargs="+", default=[Path("inference/models")])
    ap.add_argument("--amounts", type=float, nargs="+", default=[0.0, 0.3, 0.6])
    a = ap.parse_args()
    cv2.setNumThreads(1)
    group = {ph.path.name: ph.population for ph in load_photos(a.photos)}
    items = load_annotated_photos(a.photos)
    photos = [(group[it.photo_path.name], *it.load(long_side=SERVE_LONG_SIDE)) for it in items]
    print(f"{len(photos)} photos at long side {SERVE_LONG_SIDE} px")
    for d in a.models:
        p = Pipeline(d, 1)
        for amount in a.amounts:
            ious, shifts = [], []
            for g, rgb, m in photos:
                x = pallor(rgb, m, amount) if amount else rgb
                served = p.segment(x)
                if not quality.assess(x, served).ok:
                    continue
                ious.append(iou_dice(served > 0.5, m > 0.5)[0])
                shifts.append(p.estimate(x, served, g)[0] - p.estimate(x, m, g)[0])
            s = np.array(shifts)
            print(
                f"{d} (segmentation {p.segmenter.card.version}), pallor {amount:g}: accepted "
                f"{len(ious)}/{len(photos)}; mean IoU {np.mean(ious):.3f}, IoU < 0.3 "
                f"{sum(i < 0.3 for i in ious)}; Hb served - expert mask: mean {s.mean():+.2f}, "
                f"mean |.| {np.abs(s).mean():.2f}, >= +1 g/dL {int((s >= 1).sum())}"
            )


if __name__ == "__main__":
    main()
