"""Train, evaluate, quantise and export the conjunctiva segmentation model.

Architecture (chosen by measurement on this 2-core machine, see MODEL_CARD / the report):
LR-ASPP on a MobileNetV3-small backbone (torchvision, random init: nothing can be downloaded),
with the low-level branch taken at stride 2 instead of 8 so that the thin crescent of the
conjunctiva keeps its edges; the graph outputs logits at 1/2 of the input resolution and
inference/preprocess.py `segmentation_mask` resizes them to the photo. A base-8 U-Net was
3-6x slower in onnxruntime at the same input size.

Data: no real eye photos with masks exist offline, so the model learns from renderings
(training/render.py) into which real CP-AnemiC conjunctiva cut-outs are placed; the cut-outs are
split by pixel-content group (identical images share a group) and ~20% of groups are held out:
the reported IoU/Dice come from renderings of held-out cut-outs only. Real annotated photos in
the Eyes-defy-anemia layout can be added with `photos=` (training/annotated_photos.py).

Train and serve share the pre/post-processing: `segmentation_input` turns every photo into the
input tensor and `segmentation_mask` (logits -> largest component -> photo size) turns the
output into the mask, in both
training evaluation and the worker.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from hbscreen.inference.modelcard import ModelCard, Preprocessing, TensorSpec
from hbscreen.inference.preprocess import segmentation_input, segmentation_mask, shrink

from .render import procedural_conjunctiva, render_eye_photo

MODEL_NAME = "segmentation"
VERSION = "1.0.0"
INPUT_NAME = "image"
OUTPUT_NAME = "logits"
THRESHOLD = 0.5
HOLDOUT_FRACTION = 0.2
# ~30 min on 2 cores. Held-out IoU by steps: 650 -> 0.75, 2000 -> 0.80 (loss still falling);
# the output resolution is not the limit (the true mask through it: IoU 0.98).
DEFAULT_STEPS = 4000
# int8 ships only when it is at least 10% faster than fp32 (measured on one core, with the
# serving pre- and post-processing) and mean IoU drops by at most 0.01.
INT8_MIN_SPEEDUP = 0.9
BATCH = 16
DATA_LICENCE = (
    "CC BY 4.0 data (CP-AnemiC, Mendeley Data doi:10.17632/m53vz6b7fx.1; the authors ask for "
    "academic reuse with citation). Model weights trained on renderings built from its "
    "conjunctiva cut-outs; no dataset pixels are shipped."
)
CITATIONS = [
    "Asare JW, Appiahene P, Donkoh ET. CP-AnemiC: a conjunctival pallor dataset for anemia "
    "detection in children. Mendeley Data, V1 (2023). doi:10.17632/m53vz6b7fx.1",
    "Appiahene P, Chaturvedi K, Asare JW, Donkoh ET, Prasad M. CP-AnemiC: a conjunctival pallor "
    "dataset and benchmark for anemia detection in children. Medicine in Novel Technology and "
    "Devices 18 (2023) 100244.",
]
# Photo shapes (height, width) the renderings take: phones shoot 4:3 / 16:9 in either
# orientation, messengers resend them smaller. The segmentation input squashes them all to the
# card's square size, exactly as the worker does.
_TRAIN_ASPECTS = (3 / 4, 4 / 3, 9 / 16, 16 / 9, 1.0)


def preprocessing(size: int = 256) -> Preprocessing:
    """The model card's preprocessing block (used for training, evaluation and serving)."""
    return Preprocessing(
        size=(size, size),
        colour="rgb",
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        resize="hbscreen.inference.preprocess.shrink (pyrDown while >= 2x, then cv2.INTER_AREA)",
    )


# ----------------------------------------------------------------------------------------------
# data


@dataclass
class Cutout:
    group: str
    rgba: np.ndarray  # HxWx4 uint8 RGBA, premultiplied, mask in alpha


def load_cutouts(data_root: Path) -> list[Cutout]:
    """One cut-out per pixel-content group of a CP-AnemiC folder (duplicates collapse)."""
    from .cpanemic import load_cpanemic

    seen: dict[str, Cutout] = {}
    for s in load_cpanemic(Path(data_root)):
        seen.setdefault(s.group_id, Cutout(s.group_id, s.rgba))
    return [seen[g] for g in sorted(seen)]


def synthetic_cutouts(n: int, seed: int = 0) -> list[Cutout]:
    """Procedural cut-outs (for smoke runs and tests without the dataset)."""
    rng = np.random.default_rng([seed, 77])
    return [
        Cutout(f"synthetic-{i:03d}", procedural_conjunctiva(rng, rng.uniform(0, 1)))
        for i in range(n)
    ]


def split_by_group(
    cutouts: list[Cutout], seed: int, holdout: float = HOLDOUT_FRACTION
) -> tuple[list[Cutout], list[Cutout]]:
    """(train, held-out) with whole content groups on one side only."""
    groups = sorted({c.group for c in cutouts})
    rng = np.random.default_rng([seed, 11])
    order = rng.permutation(len(groups))
    n_hold = max(1, round(holdout * len(groups))) if len(groups) > 1 else 0
    held = {groups[i] for i in order[:n_hold]}
    return [c for c in cutouts if c.group not in held], [c for c in cutouts if c.group in held]


_POOL_CUTOUTS: list[np.ndarray] = []


def _pool_init(cutouts: list[np.ndarray]) -> None:
    global _POOL_CUTOUTS
    _POOL_CUTOUTS = cutouts
    cv2.setNumThreads(1)


def _render_one(args: tuple[int, int, int, int, bool]) -> tuple[np.ndarray, np.ndarray]:
    """Rendering number i of a stream, sized for training (resized to the input) or kept at
    photo size for evaluation. Deterministic in (seed, stream, i) whatever the worker."""
    seed, stream, i, size, train = args
    rng = np.random.default_rng([seed, stream, i])
    rgba = _POOL_CUTOUTS[int(rng.integers(len(_POOL_CUTOUTS)))]
    aspect = _TRAIN_ASPECTS[int(rng.integers(len(_TRAIN_ASPECTS)))]
    if train:  # longer side at input size: the squash to a square then stretches, not shrinks
        h, w = (round(size / aspect), size) if aspect >= 1 else (size, round(size * aspect))
    else:
        short = int(rng.choice([360, 480]))
        h, w = (short, round(short * aspect)) if aspect >= 1 else (round(short / aspect), short)
    photo, mask = render_eye_photo(rng, rgba, size=(h, w))
    if train:  # store at input size to save memory; the same resize as segmentation_input
        photo = cv2.resize(photo, (size, size), interpolation=cv2.INTER_AREA)
        mask = cv2.resize(mask, (size, size), interpolation=cv2.INTER_AREA)
        return photo, np.round(mask * 255).astype(np.uint8)
    return photo, mask


def render_set(
    cutouts: list[np.ndarray],
    n: int,
    *,
    seed: int,
    stream: int,
    size: int,
    train: bool,
    workers: int = 2,
    progress: bool = False,
    desc: str = "render",
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Render n photos (in `workers` processes; results do not depend on the worker count)."""
    from tqdm import tqdm

    jobs = [(seed, stream, i, size, train) for i in range(n)]
    if workers <= 1:
        _pool_init(cutouts)
        it = map(_render_one, jobs)
        return list(tqdm(it, total=n, desc=desc, disable=not progress, leave=False))
    ctx = mp.get_context("fork")
    with ctx.Pool(workers, initializer=_pool_init, initargs=(cutouts,)) as pool:
        it = pool.imap(_render_one, jobs, chunksize=8)
        return list(tqdm(it, total=n, desc=desc, disable=not progress, leave=False))


def photo_samples(photos_root: Path, size: int, seed: int) -> tuple[list, list]:
    """(train, held-out) (photo, mask) pairs from a folder of real annotated photos, split by
    subject. Photos are shrunk to a long side of 640 px first (they are often 4000 px)."""
    from .annotated_photos import load_annotated_photos

    items = load_annotated_photos(Path(photos_root))
    subjects = sorted({it.subject for it in items})
    rng = np.random.default_rng([seed, 13])
    order = rng.permutation(len(subjects))
    held = {subjects[i] for i in order[: max(1, round(HOLDOUT_FRACTION * len(subjects)))]}
    train, test = [], []
    for it in items:
        rgb, mask = it.load(long_side=640)
        (test if it.subject in held else train).append((rgb, mask))
    return train, test


# ----------------------------------------------------------------------------------------------
# model


def build_model(inter_channels: int = 64):
    """LR-ASPP head on a MobileNetV3-small backbone, low-level features at stride 2."""
    import torch.nn as nn
    from torchvision.models import mobilenet_v3_small
    from torchvision.models._utils import IntermediateLayerGetter
    from torchvision.models.segmentation.lraspp import LRASPPHead

    class LRASPPSmall(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            features = mobilenet_v3_small(weights=None).features
            # features[0] ends at stride 2 (16 ch); the last block at stride 32 (576 ch)
            low, high = 0, len(features) - 1
            self.backbone = IntermediateLayerGetter(
                features, return_layers={str(low): "low", str(high): "high"}
            )
            self.head = LRASPPHead(
                features[low].out_channels, features[high].out_channels, 1, inter_channels
            )

        def forward(self, x):
            return self.head(self.backbone(x))  # logits at 1/2 resolution

    return LRASPPSmall()


def _batch(samples, idx, pre: Preprocessing, rng: np.random.Generator):
    """Stack rendered samples into tensors via the shared segmentation_input (plus flips)."""
    import torch

    xs, ys = [], []
    for i in idx:
        photo, mask = samples[i]
        if rng.random() < 0.5:
            photo, mask = photo[:, ::-1], mask[:, ::-1]
        xs.append(segmentation_input(np.ascontiguousarray(photo), pre)[0])
        m = mask.astype(np.float32) / (255.0 if mask.dtype == np.uint8 else 1.0)
        ys.append(cv2.resize(np.ascontiguousarray(m), pre.size[::-1]))
    return torch.from_numpy(np.stack(xs)), torch.from_numpy(np.stack(ys)[:, None])


def _loss(logits, target):
    import torch.nn.functional as F

    up = F.interpolate(logits, size=target.shape[-2:], mode="bilinear", align_corners=False)
    bce = F.binary_cross_entropy_with_logits(up, target)
    p = up.sigmoid()
    inter = (p * target).sum((1, 2, 3))
    dice = 1 - (2 * inter + 1) / (p.sum((1, 2, 3)) + target.sum((1, 2, 3)) + 1)
    return bce + dice.mean()


# ----------------------------------------------------------------------------------------------
# evaluation (shared post-processing, onnxruntime)


def predict_mask(session, card_pre: Preprocessing, rgb: np.ndarray, threshold: float) -> np.ndarray:
    """Binary mask of one photo exactly as the worker computes it."""
    x = segmentation_input(rgb, card_pre)
    logits = session.run(None, {session.get_inputs()[0].name: x})[0]
    return segmentation_mask(logits, rgb.shape[:2], threshold) >= threshold


def iou_dice(pred: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    inter = float(np.logical_and(pred, truth).sum())
    union = float(np.logical_or(pred, truth).sum())
    total = float(pred.sum() + truth.sum())
    return (inter / union if union else 1.0), (2 * inter / total if total else 1.0)


def evaluate_onnx(
    onnx_path: Path, pre: Preprocessing, samples, threshold: float = THRESHOLD
) -> dict[str, float]:
    """Mean/median IoU and Dice over (photo, mask) pairs, plus the share with IoU >= 0.7."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])
    ious, dices = [], []
    for photo, mask in samples:
        iou, dice = iou_dice(predict_mask(sess, pre, photo, threshold), mask > 0.5)
        ious.append(iou)
        dices.append(dice)
    a, d = np.asarray(ious), np.asarray(dices)
    return {
        "iou_mean": round(float(a.mean()), 4),
        "iou_median": round(float(np.median(a)), 4),
        "dice_mean": round(float(d.mean()), 4),
        "share_iou_ge_0.7": round(float((a >= 0.7).mean()), 4),
        "n_photos": len(samples),
    }


def latency_ms(
    onnx_path: Path, pre: Preprocessing, photo: np.ndarray, threads: int = 1, repeats: int = 30
) -> dict[str, float]:
    """Median/p95 ms per photo: shared preprocessing + onnxruntime + mask post-processing."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    sess = ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])
    for _ in range(3):
        predict_mask(sess, pre, photo, THRESHOLD)
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        predict_mask(sess, pre, photo, THRESHOLD)
        ts.append((time.perf_counter() - t0) * 1000)
    return {"median": round(float(np.median(ts)), 2), "p95": round(float(np.percentile(ts, 95)), 2)}


# ----------------------------------------------------------------------------------------------
# export and quantisation


def export_onnx(model, path: Path, size: int) -> None:
    import torch

    model = model.to(memory_format=torch.contiguous_format).eval()
    dummy = torch.zeros(1, 3, size, size)
    torch.onnx.export(
        model,
        dummy,
        str(path),
        input_names=[INPUT_NAME],
        output_names=[OUTPUT_NAME],
        opset_version=17,
        dynamo=False,
    )


class _Calibration:
    """onnxruntime CalibrationDataReader over renderings, through segmentation_input."""

    def __init__(self, photos: list[np.ndarray], pre: Preprocessing) -> None:
        self._it = iter([{INPUT_NAME: segmentation_input(p, pre)} for p in photos])

    def get_next(self):
        return next(self._it, None)


def quantise_int8(fp32: Path, out: Path, photos: list[np.ndarray], pre: Preprocessing) -> None:
    """Static int8 (QDQ, per-channel weights) calibrated on renderings."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepped = out.with_suffix(".prep.onnx")
    quant_pre_process(str(fp32), str(prepped), skip_symbolic_shape=True)
    quantize_static(
        str(prepped),
        str(out),
        _Calibration(photos, pre),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=CalibrationMethod.MinMax,
    )
    prepped.unlink(missing_ok=True)


# ----------------------------------------------------------------------------------------------
# training entry point


def train_segmentation(
    data_root: Path | None,
    out_dir: Path,
    *,
    seed: int = 0,
    steps: int | None = None,
    progress: bool = True,
    photos: Path | None = None,
    size: int = 256,
    threads: int = 1,
    workers: int = 2,
    n_train: int | None = None,
    n_eval: int | None = None,
    batch: int = BATCH,
    quantise: bool = True,
    keep_fp32: bool = False,
) -> dict[str, Any]:
    """Train on renderings of CP-AnemiC cut-outs (and optional real annotated photos), evaluate
    on renderings of held-out cut-out groups, export segmentation.onnx + segmentation.json into
    out_dir. data_root None uses procedural cut-outs (smoke runs/tests only). Returns metrics.
    """
    import torch
    from tqdm import tqdm

    t_start = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True, warn_only=True)
    cv2.setNumThreads(1)
    steps = DEFAULT_STEPS if steps is None else int(steps)
    pre = preprocessing(size)

    if data_root is None:
        cutouts = synthetic_cutouts(24, seed)
        source = "procedural cut-outs (smoke run; not for shipping)"
    else:
        cutouts = load_cutouts(Path(data_root))
        source = f"CP-AnemiC cut-outs from {Path(data_root).name}"
    train_c, held_c = split_by_group(cutouts, seed)
    photo_train, photo_eval = ([], [])
    if photos is not None:  # first, so that a broken folder fails before any rendering
        photo_train, photo_eval = photo_samples(Path(photos), size, seed)
    if n_train is None:
        n_train = min(2400, max(batch, steps * batch // 4))
    if n_eval is None:
        n_eval = 200 if steps >= 100 else 8

    train_set = render_set(
        [c.rgba for c in train_c],
        n_train,
        seed=seed,
        stream=1,
        size=size,
        train=True,
        workers=workers,
        progress=progress,
        desc="render train",
    )
    eval_set = render_set(
        [c.rgba for c in held_c],
        n_eval,
        seed=seed,
        stream=2,
        size=size,
        train=False,
        workers=workers,
        progress=progress,
        desc="render eval",
    )
    # rendered before any onnxruntime session exists: forking after one can deadlock
    calib = render_set(
        [c.rgba for c in train_c],
        64 if steps >= 100 else 4,
        seed=seed,
        stream=4,
        size=size,
        train=False,
        workers=workers,
    )
    for rgb, mask in photo_train:  # real photos enter at input size, like the renderings
        small = shrink(rgb, size, size)
        m = cv2.resize(mask.astype(np.float32), (size, size), interpolation=cv2.INTER_AREA)
        train_set.append((small, np.round(m * 255).astype(np.uint8)))
    t_render = time.perf_counter() - t_start

    model = build_model().to(memory_format=torch.channels_last)  # ~10x faster on CPU here
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=3e-3, total_steps=max(1, steps), pct_start=0.15
    )
    rng = np.random.default_rng([seed, 3])
    model.train()
    bar = tqdm(range(steps), desc="train segmentation", disable=not progress)
    ema = None
    for _ in bar:
        idx = rng.integers(0, len(train_set), batch)
        x, y = _batch(train_set, idx, pre, rng)
        x = x.contiguous(memory_format=torch.channels_last)
        loss = _loss(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        ema = loss.item() if ema is None else 0.95 * ema + 0.05 * loss.item()
        bar.set_postfix(loss=f"{ema:.3f}")
    t_train = time.perf_counter() - t_start - t_render

    onnx_path = out_dir / f"{MODEL_NAME}.onnx"
    fp32_path = out_dir / f"{MODEL_NAME}.fp32.onnx"
    export_onnx(model, fp32_path, size)
    metrics_fp32 = evaluate_onnx(fp32_path, pre, eval_set)
    chosen, quant_note = "fp32", "not attempted"
    metrics = metrics_fp32
    speed: dict[str, dict[str, float]] = {}
    if quantise:
        int8_path = out_dir / f"{MODEL_NAME}.int8.onnx"
        quantise_int8(fp32_path, int8_path, [p for p, _ in calib], pre)
        metrics_int8 = evaluate_onnx(int8_path, pre, eval_set)
        drop = metrics_fp32["iou_mean"] - metrics_int8["iou_mean"]
        photo = eval_set[0][0]
        speed = {
            "fp32": latency_ms(fp32_path, pre, photo),
            "int8": latency_ms(int8_path, pre, photo),
        }
        ratio = speed["int8"]["median"] / speed["fp32"]["median"]
        if drop <= 0.01 and ratio <= INT8_MIN_SPEEDUP:
            chosen, metrics = "int8", metrics_int8
            int8_path.replace(onnx_path)
            if not keep_fp32:  # (benchmarks/bench_segmentation.py compares with it)
                fp32_path.unlink()
            quant_note = (
                f"int8 static QDQ kept: mean IoU {drop:+.4f} below fp32 (limit 0.01), "
                f"{ratio:.2f}x fp32 latency (limit {INT8_MIN_SPEEDUP})"
            )
        else:
            fp32_path.replace(onnx_path)
            if not keep_fp32:
                int8_path.unlink()
            why = (
                f"mean IoU fell by {drop:.4f} (> 0.01)"
                if drop > 0.01
                else f"no speed gain: {ratio:.2f}x fp32 latency (limit {INT8_MIN_SPEEDUP})"
            )
            quant_note = f"int8 static QDQ rejected: {why}"
    else:
        fp32_path.replace(onnx_path)
        metrics_int8 = None

    result: dict[str, Any] = {
        "held_out_renderings": metrics,
        "held_out_renderings_fp32": metrics_fp32,
        "held_out_renderings_int8": metrics_int8,
        "weights": chosen,
        "quantisation": quant_note,
        "latency_ms_1_thread": speed,
        "split": (
            f"cut-outs grouped by pixel content; {len(held_c)} of {len(cutouts)} groups "
            f"(~{HOLDOUT_FRACTION:.0%}) held out (seed {seed}); metrics on {len(eval_set)} "
            "renderings built only from held-out cut-outs (photos 360/480 px on the short side), "
            "scored at photo resolution after the serving post-processing "
            "(preprocess.segmentation_mask, threshold)"
        ),
    }
    if photo_eval:
        result["held_out_real_photos"] = evaluate_onnx(onnx_path, pre, photo_eval)
    result["wall_time_s"] = {
        "render": round(t_render, 1),
        "train": round(t_train, 1),
        "total": round(time.perf_counter() - t_start, 1),
    }

    card = ModelCard(
        name=MODEL_NAME,
        version=VERSION,
        task="segmentation",
        file=onnx_path.name,
        inputs=[TensorSpec(name=INPUT_NAME, shape=[1, 3, size, size])],
        outputs={"logits": OUTPUT_NAME},
        preprocessing=pre,
        threshold=THRESHOLD,
        training_data={
            "source": source,
            "cutouts": len(cutouts),
            "train_groups": len(train_c),
            "held_out_groups": len(held_c),
            "train_renderings": n_train,
            "real_annotated_photos": len(photo_train),
            "renderer": "training/render.py (synthetic eye region, real conjunctiva cut-outs)",
            "seed": seed,
            "steps": steps,
            "batch": batch,
        },
        metrics=result,
        licence=DATA_LICENCE,
        citation=CITATIONS,
        architecture="LR-ASPP, MobileNetV3-small backbone (random init), low level at stride 2",
        output_stride=2,
        weights=chosen,
        limits=(
            "Validated on renderings only: no real full-eye photos with masks were available. "
            "Expects a close-up of a pulled-down lower eyelid."
        ),
    )
    (out_dir / f"{MODEL_NAME}.json").write_text(
        json.dumps(card.model_dump(mode="json"), indent=2) + "\n", "utf-8"
    )
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, help="CP-AnemiC folder (as distributed)")
    ap.add_argument("--photos", type=Path, help="optional Eyes-defy-anemia style photo folder")
    ap.add_argument("--out", type=Path, required=True, help="folder for segmentation.{onnx,json}")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (see docstring)")
    ap.add_argument("--workers", type=int, default=2, help="rendering processes")
    ap.add_argument("--no-quantise", action="store_true")
    ap.add_argument("--keep-fp32", action="store_true", help="also keep segmentation.fp32.onnx")
    ap.add_argument("--quiet", action="store_true")
    a = ap.parse_args(argv)
    if a.data is None and a.photos is None:
        ap.error("give --data (CP-AnemiC) and/or --photos")
    res = train_segmentation(
        a.data,
        a.out,
        seed=a.seed,
        steps=a.steps,
        progress=not a.quiet,
        photos=a.photos,
        threads=a.threads,
        workers=a.workers,
        quantise=not a.no_quantise,
        keep_fp32=a.keep_fp32,
    )
    print(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


__all__ = ["build_model", "load_cutouts", "split_by_group", "train_segmentation"]
