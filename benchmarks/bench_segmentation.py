"""Benchmark the shipped segmentation model: latency per photo and accuracy on held-out renderings.

Latency covers what the worker does per photo: segmentation_input (resize of a 1280x960
photo), onnxruntime, and segmentation_mask (sigmoid, largest component). It compares the
shipped weights with the other precision: if fp32 is shipped, an int8 model is quantised here
with the training's calibration; if int8 is shipped, pass the fp32 file (`--keep-fp32` in training).

    python benchmarks/bench_segmentation.py --data ../shared/data/cp-anemic [--fp32 PATH]

Without --data, accuracy uses procedural conjunctivas (no dataset needed). It also prints the
ceiling that the model's output resolution sets: the true masks, reduced to that resolution
and put through the serving post-processing, scored against themselves.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import cv2
import numpy as np

from hbscreen.inference.modelcard import MODELS_DIR, load_card
from hbscreen.inference.preprocess import segmentation_mask
from hbscreen.training.render import render_example
from hbscreen.training.segmentation import (
    evaluate_onnx,
    iou_dice,
    latency_ms,
    load_cutouts,
    quantise_int8,
    render_set,
    split_by_group,
    synthetic_cutouts,
)


def resolution_ceiling(samples, out_hw: tuple[int, int], threshold: float) -> float:
    """Mean IoU of perfect logits at the model's output resolution after segmentation_mask."""
    ious = []
    for photo, mask in samples:
        truth = mask > (127 if mask.dtype == np.uint8 else 0.5)
        small = cv2.resize(truth.astype(np.float32), out_hw[::-1], interpolation=cv2.INTER_AREA)
        p = np.clip(small, 1e-4, 1 - 1e-4)
        logits = np.log(p / (1 - p))[None, None]
        pred = segmentation_mask(logits, photo.shape[:2], threshold) >= threshold
        ious.append(iou_dice(pred, truth)[0])
    return float(np.mean(ious))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, help="CP-AnemiC folder (held-out groups as in training)")
    ap.add_argument("--models", type=Path, default=MODELS_DIR)
    ap.add_argument("--fp32", type=Path, help="fp32 ONNX to compare against (and quantise)")
    ap.add_argument("--n-eval", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()

    card = load_card("segmentation", a.models)
    pre = card.preprocessing
    shipped = a.models / card.file
    weights = card.model_extra.get("weights", "fp32")
    fp32 = shipped if weights == "fp32" else a.fp32
    variants = {f"shipped ({weights})": shipped}
    if a.data is not None:
        train, held = split_by_group(load_cutouts(a.data), a.seed)
        source = f"{len(held)} held-out CP-AnemiC cut-out groups"
    else:
        train, held = synthetic_cutouts(16, a.seed), synthetic_cutouts(16, a.seed + 1)
        source = "procedural conjunctivas"
    # render before any onnxruntime session exists: forking after one can deadlock
    samples = render_set(
        [c.rgba for c in held],
        a.n_eval,
        seed=a.seed,
        stream=2,
        size=pre.size[0],
        train=False,
        workers=2,
    )
    with tempfile.TemporaryDirectory() as tmp:
        if weights != "fp32" and a.fp32 is not None:
            variants["fp32"] = a.fp32
        if fp32 is not None and weights == "fp32":
            # the same calibration as training: 64 renderings of training cut-outs
            calib = render_set(
                [c.rgba for c in train],
                64,
                seed=a.seed,
                stream=4,
                size=pre.size[0],
                train=False,
                workers=2,
            )
            q = Path(tmp) / "int8.onnx"
            quantise_int8(fp32, q, [p for p, _ in calib], pre)
            variants["int8 (quantised here)"] = q

        photo, _ = render_example("eyelid")  # 1280x960
        print(f"latency per 1280x960 photo, ms (cores: {os.cpu_count()}):")
        for name, path in variants.items():
            for threads in (1, 2):
                lat = latency_ms(path, pre, photo, threads=threads, repeats=a.repeats)
                print(
                    f"  {name:28s} threads={threads}: median {lat['median']:6.2f}  "
                    f"p95 {lat['p95']:6.2f}"
                )

        print(f"accuracy on {len(samples)} renderings of {source}:")
        for name, path in variants.items():
            m = evaluate_onnx(path, pre, samples, card.threshold or 0.5)
            print(
                f"  {name:28s} IoU mean {m['iou_mean']:.4f} median {m['iou_median']:.4f}  "
                f"Dice mean {m['dice_mean']:.4f}  IoU>=0.7: {m['share_iou_ge_0.7']:.1%}"
            )
        import onnxruntime as ort

        out_hw = tuple(ort.InferenceSession(str(shipped)).get_outputs()[0].shape[-2:])
        ceiling = resolution_ceiling(samples, out_hw, card.threshold or 0.5)
        print(f"  ceiling of the {out_hw[0]}x{out_hw[1]} output resolution: IoU mean {ceiling:.4f}")
    return 0


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    raise SystemExit(main())
