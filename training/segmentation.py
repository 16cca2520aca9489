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
from hbscreen.inference.preprocess import (
    segment_two_pass,
    segmentation_input,
)

from .card_sections import replace_section
from .render import procedural_conjunctiva, render_eye_photo

MODEL_NAME = "segmentation"
VERSION = "1.1.0"  # the recipe of REAL_RECIPE
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
CV_FOLDS = 5
# the worker decodes photos to this long side (inference/pipeline.py WORK_LONG_SIDE)
SERVE_LONG_SIDE = 1280
# real photos per batch of 16 (the rest: renderings) and renderings kept when photos are given
REAL_PER_BATCH = 12
RENDERINGS = 800
FINETUNE_LR = 1e-3
# serving runs the model twice: the whole frame, then a crop around pass 1's mask widened by
# this share of its size (card `refine_margin`). Chosen on CV folds 0 and 1 of the first recipe
# (mean IoU 0.687 -> 0.704 and 0.573 -> 0.620 with no retraining; margin 0.15: 0.693, 0.618).
REFINE_MARGIN = 0.3
# the renderings-only model (1.0.0) that fine-tuning on real photos starts from
INIT_RENDERINGS = Path(__file__).with_name("init") / "segmentation-renderings-1.0.0.onnx"
# The shipped recipe when real photos are available (`hbscreen train`, `--cv`): sized to
# ~10 min per run on one shared core; see the card for the evidence.
REAL_RECIPE: dict[str, Any] = {
    "steps": 900,
    "size": 192,
    "batch": 12,
    "real_per_batch": 10,
    "init": INIT_RENDERINGS,
    # Not "guided" (--guided 8,0.001,320): +0.019 CV IoU, but the Hb estimated through its
    # masks is worse (photo minus cut-out 0.32 -> 0.46 g/dL): the card's what_limits says so.
}
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
EYES_DEFY_LICENCE = (
    "Real photos: Eyes-defy-anemia (Dimauro et al., IEEE DataPort; Roboflow copy, CC BY 4.0), "
    "65 Indian full eye photos with expert palpebral masks; no dataset pixels are shipped."
)
EYES_DEFY_CITATIONS = [
    "Dimauro G, Maglietta R, et al. Eyes-defy-anemia: a public dataset of eye pictures (Italy "
    "and India) taken with a device that removes ambient light. IEEE DataPort. CC BY 4.0.",
    "Dimauro G, Camporeale MG, Dipalma A, Guarini A, Maglietta R. Anaemia detection based on "
    "sclera and blood vessel colour estimation (2023).",
]
LIMITS_RENDERINGS = (
    "Validated on renderings only: no real full-eye photos with masks were available. "
    "Expects a close-up of a pulled-down lower eyelid."
)
LIMITS_REAL = (
    "Validated by 5-fold CV grouped by patient on 65 real photos from one macro device with its "
    "own LED light (Indian adults); other phones, light and children are covered only by "
    "augmentation and renderings. Marks the palpebral conjunctiva (the expert's band), not the "
    "fornix above it. Expects a pulled-down lower eyelid. The photos are mostly well perfused: "
    "how it finds a pale conjunctiva, and what a miss does to the Hb, is measured by "
    "benchmarks/seg_pallor.py (1.1.0 took in the red lid rim)."
)
# Photo shapes (height, width) the renderings take: phones shoot 4:3 / 16:9 in either
# orientation, messengers resend them smaller. The segmentation input squashes them all to the
# card's square size, exactly as the worker does.
_TRAIN_ASPECTS = (3 / 4, 4 / 3, 9 / 16, 16 / 9, 1.0)
# conjunctiva width / photo width of the renderings: usual framing, close-up, farther away
_EYE_SCALES = ((0.45, 0.85), (0.85, 0.98), (0.3, 0.45))
_EYE_SCALE_P = (0.5, 0.3, 0.2)


def preprocessing(size: int = 256) -> Preprocessing:
    """The model card's preprocessing block (used for training, evaluation and serving)."""
    return Preprocessing(
        size=(size, size),
        colour="rgb",
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        resize="hbscreen.inference.preprocess.shrink (pyrDown while >= 2x, then bilinear)",
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
    # framing as users shoot it: usual, close-up (the lid fills the frame), farther away
    eye_scale = _EYE_SCALES[int(rng.choice(len(_EYE_SCALES), p=_EYE_SCALE_P))]
    if train:  # longer side at input size: the squash to a square then stretches, not shrinks
        h, w = (round(size / aspect), size) if aspect >= 1 else (size, round(size * aspect))
    else:
        short = int(rng.choice([360, 480]))
        h, w = (short, round(short * aspect)) if aspect >= 1 else (round(short / aspect), short)
    photo, mask = render_eye_photo(rng, rgba, size=(h, w), eye_scale=eye_scale)
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
    """Render n photos (in `workers` processes; results do not depend on the worker count).

    With HBSCREEN_RENDER_CACHE set to a folder, a set already rendered from the same cut-outs
    and arguments is read back from there (cross-validation folds share their renderings).
    """
    import hashlib
    import os
    import pickle

    cache_dir = os.environ.get("HBSCREEN_RENDER_CACHE")
    cache_file = None
    if cache_dir:
        key = (n, seed, stream, size if train else None, train, _EYE_SCALES)  # eval: photo size
        h = hashlib.sha256(repr(key).encode())
        for c in cutouts:
            h.update(hashlib.sha256(np.ascontiguousarray(c).tobytes()).digest())
        cache_file = Path(cache_dir) / f"render-{h.hexdigest()[:20]}.pkl"
        if cache_file.is_file():
            return pickle.loads(cache_file.read_bytes())
    out = _render_set(cutouts, n, seed, stream, size, train, workers, progress, desc)
    if cache_file is not None:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_file.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_bytes(pickle.dumps(out, protocol=pickle.HIGHEST_PROTOCOL))
        tmp.replace(cache_file)
    return out


def _render_set(cutouts, n, seed, stream, size, train, workers, progress, desc):
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


def load_real_photos(photos_root: Path, long_side: int = 1280) -> list[tuple[str, Any]]:
    """(patient, AnnotatedPhoto) of a real annotated photo folder, any supported layout."""
    from .annotated_photos import load_annotated_photos

    return [(it.subject, it) for it in load_annotated_photos(Path(photos_root))]


def cv_folds(patients: list[str], k: int = CV_FOLDS, seed: int = 0) -> list[list[str]]:
    """k disjoint groups of patients (sorted, shuffled with the seed, dealt round-robin)."""
    uniq = sorted(set(patients))
    order = np.random.default_rng([seed, 13]).permutation(len(uniq))
    return [sorted(uniq[i] for i in order[f::k]) for f in range(k)]


# ----------------------------------------------------------------------------------------------
# model


def build_model(inter_channels: int = 64, decoder: bool = False):
    """LR-ASPP head on a MobileNetV3-small backbone, low-level features at stride 2.

    decoder: add a light U-Net-style decoder (stride 32 -> 8 -> 4 -> 2, depthwise-separable,
    skips from the backbone) whose output is ADDED to the LR-ASPP logits. The LR-ASPP head
    classifies each stride-2 pixel from 16 low-level channels alone, and on real photos ~80%
    of its wrong pixels lie within 1% of the long side of the expert's edge; the decoder lets
    the context reach the edge through finer skips. Its last convolution starts at zero, so a
    warm start from an LR-ASPP graph begins exactly at that graph.
    """
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
    from torchvision.models import mobilenet_v3_small
    from torchvision.models._utils import IntermediateLayerGetter
    from torchvision.models.segmentation.lraspp import LRASPPHead

    def sep(cin: int, cout: int) -> nn.Sequential:
        return nn.Sequential(
            nn.Conv2d(cin, cin, 3, padding=1, groups=cin),
            nn.ReLU(inplace=True),
            nn.Conv2d(cin, cout, 1),
            nn.ReLU(inplace=True),
        )

    def up(x, ref):
        return F.interpolate(x, size=ref.shape[-2:], mode="bilinear", align_corners=False)

    class EdgeDecoder(nn.Module):
        def __init__(self, c2: int, c4: int, c8: int, cctx: int) -> None:
            super().__init__()
            self.d8 = sep(cctx + c8, 32)
            self.d4 = sep(32 + c4, 24)
            self.d2 = sep(24 + c2, 16)
            self.out = nn.Conv2d(16, 1, 1)
            nn.init.zeros_(self.out.weight)
            nn.init.zeros_(self.out.bias)

        def forward(self, f, ctx):
            d = self.d8(torch.cat([up(ctx, f["s8"]), f["s8"]], 1))
            d = self.d4(torch.cat([up(d, f["s4"]), f["s4"]], 1))
            d = self.d2(torch.cat([up(d, f["low"]), f["low"]], 1))
            return self.out(d)

    class LRASPPSmall(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            features = mobilenet_v3_small(weights=None).features
            # features[0] ends at stride 2 (16 ch), [1] at 4 (16 ch), [3] at 8 (24 ch);
            # the last block at stride 32 (576 ch)
            low, high = 0, len(features) - 1
            layers = {str(low): "low", str(high): "high"}
            if decoder:
                layers.update({"1": "s4", "3": "s8"})
            self.backbone = IntermediateLayerGetter(features, return_layers=layers)
            self.head = LRASPPHead(
                features[low].out_channels, features[high].out_channels, 1, inter_channels
            )
            self.decoder = (
                EdgeDecoder(
                    features[0].out_channels,
                    features[1].out_channels,
                    features[3].out_channels,
                    inter_channels,
                )
                if decoder
                else None
            )

        def forward(self, x):
            f = self.backbone(x)
            if self.decoder is None:
                return self.head(f)  # logits at 1/2 resolution
            h = self.head
            ctx = h.cbr(f["high"]) * h.scale(f["high"])
            base = h.low_classifier(f["low"]) + h.high_classifier(up(ctx, f["low"]))
            return base + self.decoder(f, ctx)

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


def _loss(logits, target, boundary_weight: float = 0.0):
    """BCE + soft Dice at input resolution; with boundary_weight, BCE weighs the pixels within
    ~2 px (at input size) of the true edge (1 + boundary_weight) times: on real photos the
    error sits at the edge, which plain BCE + Dice treats like any other pixel."""
    import torch.nn.functional as F

    up = F.interpolate(logits, size=target.shape[-2:], mode="bilinear", align_corners=False)
    weight = None
    if boundary_weight:
        dil = F.max_pool2d(target, 5, 1, 2)
        ero = -F.max_pool2d(-target, 5, 1, 2)
        weight = 1.0 + boundary_weight * (dil - ero)
    bce = F.binary_cross_entropy_with_logits(up, target, weight=weight)
    p = up.sigmoid()
    inter = (p * target).sum((1, 2, 3))
    dice = 1 - (2 * inter + 1) / (p.sum((1, 2, 3)) + target.sum((1, 2, 3)) + 1)
    return bce + dice.mean()


# ----------------------------------------------------------------------------------------------
# evaluation (shared post-processing, onnxruntime)


def predict_mask(
    session,
    card_pre: Preprocessing,
    rgb: np.ndarray,
    threshold: float,
    refine_margin: float | None = REFINE_MARGIN,
    guided: dict[str, float] | None = None,
) -> np.ndarray:
    """Binary mask of one photo exactly as the worker computes it (both passes; `guided`: the
    card's guided_refine)."""
    name = session.get_inputs()[0].name
    prob = segment_two_pass(
        lambda x: session.run(None, {name: x})[0], rgb, card_pre, threshold, refine_margin, guided
    )
    return prob >= threshold


def iou_dice(pred: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    inter = float(np.logical_and(pred, truth).sum())
    union = float(np.logical_or(pred, truth).sum())
    total = float(pred.sum() + truth.sum())
    return (inter / union if union else 1.0), (2 * inter / total if total else 1.0)


def evaluate_onnx(
    onnx_path: Path,
    pre: Preprocessing,
    samples,
    threshold: float = THRESHOLD,
    guided: dict[str, float] | None = None,
) -> dict[str, float]:
    """Mean/median IoU and Dice over (photo, mask) pairs, plus the share with IoU >= 0.7."""
    from hbscreen.inference.pipeline import make_session

    sess = make_session(onnx_path, 1)  # as served, int8 kernels included
    ious, dices = [], []
    for photo, mask in samples:
        pred = predict_mask(sess, pre, photo, threshold, guided=guided)
        iou, dice = iou_dice(pred, mask > 0.5)
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
    onnx_path: Path,
    pre: Preprocessing,
    photo: np.ndarray,
    threads: int = 1,
    repeats: int = 30,
    guided: dict[str, float] | None = None,
) -> dict[str, float]:
    """Median/p95/min ms per photo: shared preprocessing + onnxruntime + mask post-processing.

    CPU time of this thread (one onnxruntime thread runs on the caller), not wall time: on a
    shared machine wall time mostly measures the neighbours (int8 0.74x-1.37x fp32 by wall
    time across folds; 0.78x by CPU time)."""
    from hbscreen.inference.pipeline import make_session

    sess = make_session(onnx_path, threads)
    for _ in range(3):
        predict_mask(sess, pre, photo, THRESHOLD, guided=guided)
    ts = []
    for _ in range(repeats):
        t0 = time.thread_time()
        predict_mask(sess, pre, photo, THRESHOLD, guided=guided)
        ts.append((time.thread_time() - t0) * 1000)
    return {
        "median": round(float(np.median(ts)), 2),
        "p95": round(float(np.percentile(ts, 95)), 2),
        "min": round(float(np.min(ts)), 2),
    }


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


def _fill_terciles(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean IoU/Dice per tercile of the conjunctiva's share of the frame."""
    if len(records) < 3:
        return {}
    fills = np.array([r["fill"] for r in records])
    cuts = np.quantile(fills, [1 / 3, 2 / 3])
    out = {}
    for k, name in enumerate(("small", "medium", "large")):
        lo = -np.inf if k == 0 else cuts[k - 1]
        hi = np.inf if k == 2 else cuts[k]
        sel = [r for r in records if lo < r["fill"] <= hi]
        if not sel:  # ties (e.g. equal masks) can leave a tercile empty
            continue
        out[name] = {
            "fill_range": [
                round(float(min(r["fill"] for r in sel)), 4),
                round(float(max(r["fill"] for r in sel)), 4),
            ],
            "iou_mean": round(float(np.mean([r["iou"] for r in sel])), 4),
            "dice_mean": round(float(np.mean([r["dice"] for r in sel])), 4),
            "n_photos": len(sel),
        }
    return out


def evaluate_photos(
    onnx_path: Path,
    pre: Preprocessing,
    photos: list[tuple[str, Any]],
    threshold: float = THRESHOLD,
    guided: dict[str, float] | None = None,
) -> list[dict[str, Any]]:
    """Per-photo IoU/Dice of real annotated photos at the served resolution (long side 1280,
    as the worker decodes them), after the serving post-processing."""
    from hbscreen.inference.pipeline import make_session

    sess = make_session(onnx_path, 1)  # as served, int8 kernels included
    out = []
    for patient, it in photos:
        rgb, mask = it.load(long_side=SERVE_LONG_SIDE)
        truth = mask > 0.5
        iou, dice = iou_dice(predict_mask(sess, pre, rgb, threshold, guided=guided), truth)
        out.append(
            {
                "patient": patient,
                "image": it.photo_path.name,
                "fill": round(float(truth.mean()), 5),
                "iou": round(iou, 4),
                "dice": round(dice, 4),
            }
        )
    return out


def summarise_photos(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean/median IoU and Dice of per-photo records, plus terciles of conjunctiva size."""
    a = np.array([r["iou"] for r in records])
    d = np.array([r["dice"] for r in records])
    return {
        "iou_mean": round(float(a.mean()), 4),
        "iou_median": round(float(np.median(a)), 4),
        "dice_mean": round(float(d.mean()), 4),
        "share_iou_ge_0.7": round(float((a >= 0.7).mean()), 4),
        "n_photos": len(records),
        "by_conjunctiva_share_of_frame": _fill_terciles(records),
    }


def train_segmentation(
    data_root: Path | None,
    out_dir: Path,
    *,
    seed: int = 0,
    steps: int | None = None,
    progress: bool = True,
    photos: Path | None = None,
    holdout_patients: list[str] | None = None,
    init: Path | None = None,
    real_per_batch: int | None = None,
    lr: float | None = None,
    size: int = 256,
    threads: int = 1,
    workers: int = 2,
    n_train: int | None = None,
    n_eval: int | None = None,
    batch: int = BATCH,
    quantise: bool = True,
    keep_fp32: bool = False,
    cv_summary: dict[str, Any] | None = None,
    commands: list[str] | None = None,
    decoder: bool = False,
    crop_share: float = 0.0,
    boundary_weight: float = 0.0,
    guided: dict[str, float] | None = None,
) -> dict[str, Any]:
    """Train on real annotated photos (`photos`, re-framed and re-lit each draw) together with
    renderings of CP-AnemiC cut-outs; export segmentation.onnx + segmentation.json into out_dir.

    holdout_patients: patients of `photos` kept out of training and scored (one CV fold);
    None trains on every photo (the shipped model). init: a served segmentation graph to
    start from (fp32 or int8; BatchNorms then stay frozen). Renderings of held-out cut-out
    groups are always scored. data_root None uses procedural cut-outs (smoke runs/tests).
    decoder: the finer decoder of `build_model`; crop_share: share of the real draws that are
    pass-2 crops around the true mask (seg_augment.crop_draw); boundary_weight: see `_loss`;
    guided: the card's `guided_refine` (preprocess.guided_refine), used in every evaluation.
    """
    import torch
    from tqdm import tqdm

    from .seg_augment import RealPhoto, augment, crop_draw, freeze_batchnorm, warm_start

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
    real_train: list[tuple[str, Any]] = []
    real_eval: list[tuple[str, Any]] = []
    if photos is not None:  # first, so that a broken folder fails before any rendering
        held = set(holdout_patients or [])
        for patient, it in load_real_photos(Path(photos)):
            (real_eval if patient in held else real_train).append((patient, it))
        if held and not real_eval:
            raise ValueError(f"none of the held-out patients {sorted(held)} is in {photos}")
    pool = [RealPhoto.build(p, *it.load(long_side=1024)) for p, it in real_train]
    if real_per_batch is None:
        real_per_batch = REAL_PER_BATCH if pool else 0
    real_per_batch = min(real_per_batch, batch) if pool else 0
    if n_train is None:
        n_render = (batch - real_per_batch) * steps // 4 if real_per_batch else steps * batch // 4
        n_train = min(RENDERINGS if pool else 2400, max(batch, n_render))
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
        32 if steps >= 100 else 4,
        seed=seed,
        stream=4,
        size=size,
        train=False,
        workers=workers,
    )
    calib_photos = [p for p, _ in calib]
    for _, it in real_train[:: max(1, len(real_train) // 32)]:  # real light in the ranges
        calib_photos.append(it.load(long_side=SERVE_LONG_SIDE)[0])
    t_render = time.perf_counter() - t_start

    # channels_last: ~10x faster on CPU here
    model = build_model(decoder=decoder).to(memory_format=torch.channels_last)
    n_init = 0
    if init is not None:
        n_init = warm_start(model, Path(init))
    lr = (FINETUNE_LR if init is not None else 3e-3) if lr is None else lr
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=lr, total_steps=max(1, steps), pct_start=0.15
    )
    rng = np.random.default_rng([seed, 3])
    aug_rng = np.random.default_rng([seed, 5])
    model.train()
    if init is not None:
        freeze_batchnorm(model)
    bar = tqdm(range(steps), desc="train segmentation", disable=not progress)
    ema = None
    for _ in bar:
        samples = [train_set[i] for i in rng.integers(0, len(train_set), batch - real_per_batch)]
        for _ in range(real_per_batch):
            draw = crop_draw if aug_rng.random() < crop_share else augment
            samples.append(draw(aug_rng, pool[int(aug_rng.integers(len(pool)))], size))
        x, y = _batch(samples, range(len(samples)), pre, rng)
        x = x.contiguous(memory_format=torch.channels_last)
        loss = _loss(model(x), y, boundary_weight)
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
    g = {"guided": guided}
    metrics_fp32 = evaluate_onnx(fp32_path, pre, eval_set, **g)
    photos_fp32 = evaluate_photos(fp32_path, pre, real_eval, **g) if real_eval else []
    chosen, quant_note = "fp32", "not attempted"
    metrics = metrics_fp32
    speed: dict[str, dict[str, float]] = {}
    photos_int8: list[dict[str, Any]] = []
    if quantise:
        int8_path = out_dir / f"{MODEL_NAME}.int8.onnx"
        quantise_int8(fp32_path, int8_path, calib_photos, pre)
        metrics_int8 = evaluate_onnx(int8_path, pre, eval_set, **g)
        photos_int8 = evaluate_photos(int8_path, pre, real_eval, **g) if real_eval else []
        drop = metrics_fp32["iou_mean"] - metrics_int8["iou_mean"]
        if photos_int8:  # judge the int8 loss where it matters: real photos
            drop = max(
                drop,
                float(np.mean([r["iou"] for r in photos_fp32]))
                - float(np.mean([r["iou"] for r in photos_int8])),
            )
        photo = calib_photos[-1] if real_train else eval_set[0][0]
        speed = {
            "fp32": latency_ms(fp32_path, pre, photo, **g),
            "int8": latency_ms(int8_path, pre, photo, **g),
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
            "(preprocess.segment_two_pass, threshold)"
        ),
    }
    if real_eval:
        served = photos_int8 if chosen == "int8" else photos_fp32
        result["held_out_real_photos"] = summarise_photos(served)
        result["held_out_real_photos_fp32"] = summarise_photos(photos_fp32)
        result["held_out_real_photos_records"] = served
    if cv_summary:  # the patient-grouped CV that validates this recipe (train_with_cv)
        result.update(cv_summary)
    if commands:
        result["commands"] = commands
    result["wall_time_s"] = {
        "render": round(t_render, 1),
        "train": round(t_train, 1),
        "total": round(time.perf_counter() - t_start, 1),
    }
    training_data: dict[str, Any] = {
        "source": source,
        "cutouts": len(cutouts),
        "train_groups": len(train_c),
        "held_out_groups": len(held_c),
        "train_renderings": n_train,
        "real_annotated_photos": len(real_train),
        "real_photos_source": (
            f"{Path(photos).name} ({len(real_train)} photos, {len({p for p, _ in real_train})} "
            "patients; re-framed and re-lit at every draw, training/seg_augment.py)"
            if real_train
            else None
        ),
        "real_per_batch": real_per_batch,
        "renderer": "training/render.py (synthetic eye region, real conjunctiva cut-outs)",
        "init": f"{Path(init).name} (renderings-only model; {n_init} convolutions)"
        if init is not None
        else "random",
        "seed": seed,
        "steps": steps,
        "batch": batch,
        "lr": lr,
        "crop_share": crop_share,
        "boundary_weight": boundary_weight,
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
        training_data=training_data,
        metrics=result,
        licence=DATA_LICENCE + (" " + EYES_DEFY_LICENCE if real_train else ""),
        citation=CITATIONS + (EYES_DEFY_CITATIONS if real_train else []),
        architecture="LR-ASPP, MobileNetV3-small backbone, low level at stride 2"
        + (
            ", plus a depthwise-separable U-Net decoder (skips at strides 8, 4, 2) added to its "
            "logits"
            if decoder
            else ""
        ),
        refine_margin=REFINE_MARGIN,
        passes=(
            "2: whole frame, then the crop around pass 1's mask widened by refine_margin "
            "(hbscreen.inference.preprocess.segment_two_pass)"
            + (", pass 2's map snapped to the photo's edges (guided_refine)" if guided else "")
        ),
        **({"guided_refine": guided} if guided else {}),
        output_stride=2,
        weights=chosen,
        limits=LIMITS_REAL if real_train else LIMITS_RENDERINGS,
    )
    (out_dir / f"{MODEL_NAME}.json").write_text(
        json.dumps(card.model_dump(mode="json"), indent=2) + "\n", "utf-8"
    )
    if holdout_patients:  # a CV fold: keep its per-photo records for train_with_cv
        (out_dir / "result.json").write_text(json.dumps(result, indent=2) + "\n", "utf-8")
    return result


def cross_validation_summary(fold_results: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-fold and pooled real-photo figures from the folds' results (`held_out_real_photos`)."""
    records = [r for f in fold_results for r in f["held_out_real_photos_records"]]
    per_fold = [
        {
            "fold": k,
            **{
                key: f["held_out_real_photos"][key] for key in ("iou_mean", "dice_mean", "n_photos")
            },
            "iou_mean_fp32": f["held_out_real_photos_fp32"]["iou_mean"],
            "weights": f["weights"],
        }
        for k, f in enumerate(fold_results)
    ]
    rend = [f["held_out_renderings"] for f in fold_results]
    return {
        "real_photos_cv": {
            **summarise_photos(records),
            "iou_mean_of_folds": round(float(np.mean([f["iou_mean"] for f in per_fold])), 4),
            "iou_sd_of_folds": round(float(np.std([f["iou_mean"] for f in per_fold])), 4),
            "dice_mean_of_folds": round(float(np.mean([f["dice_mean"] for f in per_fold])), 4),
            "folds": per_fold,
            "split": (
                f"{len(fold_results)}-fold CV grouped by patient (one photo per patient; "
                "training/segmentation.py cv_folds, seed 0); each fold's model scored on its "
                f"held-out patients at long side {SERVE_LONG_SIDE} px after the serving "
                "post-processing"
            ),
        },
        "held_out_renderings_cv": {
            "iou_mean": round(float(np.mean([r["iou_mean"] for r in rend])), 4),
            "dice_mean": round(float(np.mean([r["dice_mean"] for r in rend])), 4),
            "n_photos_per_fold": rend[0]["n_photos"],
        },
    }


def train_with_cv(
    data_root: Path | None,
    out_dir: Path,
    *,
    photos: Path,
    seed: int = 0,
    folds_dir: Path | None = None,
    progress: bool = True,
    **kw: Any,
) -> dict[str, Any]:
    """The shipped recipe end to end: 5-fold CV by patient on the real photos (each fold a
    full training run with its patients held out), then the final model on every photo, whose
    card carries the CV figures. Fold results already in `folds_dir` (fold<k>/result.json from
    `--fold k` runs, e.g. run in parallel) are reused instead of retrained."""
    folds_dir = Path(folds_dir) if folds_dir else Path(out_dir) / "cv"
    patients = [p for p, _ in load_real_photos(Path(photos))]
    results = []
    for k, held in enumerate(cv_folds(patients, CV_FOLDS, seed)):
        done = folds_dir / f"fold{k}" / "result.json"
        if not done.is_file():
            train_segmentation(
                data_root,
                done.parent,
                seed=seed,
                photos=photos,
                holdout_patients=held,
                progress=progress,
                **kw,
            )
        results.append(json.loads(done.read_text("utf-8")))
    summary = cross_validation_summary(results)
    return train_segmentation(
        data_root, out_dir, seed=seed, photos=photos, progress=progress, cv_summary=summary, **kw
    )


def rescore_fold(
    fold_dir: Path, photos: Path, held: list[str], guided: dict[str, float] | None = None
) -> dict[str, Any]:
    """A fold's result with its served model re-scored on its held-out patients by the
    current serving code (after a change of pre/post-processing, no retraining needed);
    `guided`: the served card's guided_refine. The fp32 graph, when kept, is re-scored too."""
    from hbscreen.inference.modelcard import load_card

    result = json.loads((Path(fold_dir) / "result.json").read_text("utf-8"))
    card = load_card(MODEL_NAME, Path(fold_dir))
    eval_items = [(p, it) for p, it in load_real_photos(Path(photos)) if p in set(held)]
    thr = card.threshold or THRESHOLD
    records = evaluate_photos(
        Path(fold_dir) / card.file, card.preprocessing, eval_items, thr, guided
    )
    result["held_out_real_photos"] = summarise_photos(records)
    result["held_out_real_photos_records"] = records
    fp32 = Path(fold_dir) / f"{MODEL_NAME}.fp32.onnx"
    if fp32.is_file():
        fp = evaluate_photos(fp32, card.preprocessing, eval_items, thr, guided)
        result["held_out_real_photos_fp32"] = summarise_photos(fp)
    elif result.get("weights") == "fp32":  # the served graph is the fp32 one
        result["held_out_real_photos_fp32"] = result["held_out_real_photos"]
    return result


def held_out_renderings(data_root: Path, seed: int = 0, n: int = 200) -> list:
    """The renderings every training run scores: built only from the held-out cut-out groups
    (the same set as train_segmentation's, read from HBSCREEN_RENDER_CACHE when set)."""
    _, held_c = split_by_group(load_cutouts(Path(data_root)), seed)
    return render_set([c.rgba for c in held_c], n, seed=seed, stream=2, size=0, train=False)


def _served_renderings(model_dir: Path, eval_set: list, guided: dict | None) -> dict[str, float]:
    from hbscreen.inference.modelcard import load_card

    card = load_card(MODEL_NAME, Path(model_dir))
    thr = card.threshold or THRESHOLD
    return evaluate_onnx(Path(model_dir) / card.file, card.preprocessing, eval_set, thr, guided)


def attach_cv(
    out_dir: Path,
    folds_dir: Path,
    extra: dict[str, Any] | None = None,
    photos: Path | None = None,
    seed: int = 0,
    data_root: Path | None = None,
) -> dict:
    """Put the CV summary of fold<k>/result.json in folds_dir into out_dir's card (the same
    card train_with_cv writes, for a final model trained in parallel with the last fold).
    With `photos`, each fold's model is first re-scored by the current serving code; with
    `data_root` too, the held-out renderings of the folds and of out_dir's model are re-scored
    the same way (after a change of the card's post-processing, e.g. guided_refine)."""
    card_path = Path(out_dir) / f"{MODEL_NAME}.json"
    card = json.loads(card_path.read_text("utf-8"))
    gain: dict[str, Any] = {}  # [without, with] the card's guided_refine, per fold
    if photos is not None:
        held = cv_folds([p for p, _ in load_real_photos(Path(photos))], CV_FOLDS, seed)
        guided = card.get("guided_refine")
        fold_dirs = [Path(folds_dir) / f"fold{k}" for k in range(CV_FOLDS)]
        folds = [rescore_fold(d, photos, held[k], guided) for k, d in enumerate(fold_dirs)]
        if guided:  # what the refinement adds, on the same folds' models
            plain = [rescore_fold(d, photos, held[k]) for k, d in enumerate(fold_dirs)]
            gain = {
                "real_iou_per_fold": [
                    [p["held_out_real_photos"]["iou_mean"], f["held_out_real_photos"]["iou_mean"]]
                    for p, f in zip(plain, folds, strict=True)
                ],
            }
        if data_root is not None:
            eval_set = held_out_renderings(data_root, seed)
            for d, f in zip(fold_dirs, folds, strict=True):
                f["held_out_renderings"] = _served_renderings(d, eval_set, guided)
                if guided:
                    without = _served_renderings(d, eval_set, None)["iou_mean"]
                    with_ = f["held_out_renderings"]["iou_mean"]
                    gain.setdefault("renderings_iou_per_fold", []).append([without, with_])
            metrics = card["metrics"]
            metrics["held_out_renderings"] = _served_renderings(Path(out_dir), eval_set, guided)
            for stale in ("held_out_renderings_fp32", "held_out_renderings_int8"):
                metrics.pop(stale, None)  # scored before this post-processing
            metrics["held_out_renderings_note"] = (
                "the served graph after the served post-processing (attach_cv)"
            )
    else:
        folds = [
            json.loads((Path(folds_dir) / f"fold{k}" / "result.json").read_text("utf-8"))
            for k in range(CV_FOLDS)
        ]
    card["metrics"].update(cross_validation_summary(folds))
    if gain:
        card["metrics"]["guided_refine_cv"] = {
            **gain,
            **{
                f"{k.split('_per_fold')[0]}_mean": [
                    round(float(np.mean([v[i] for v in gain[k]])), 4) for i in (0, 1)
                ]
                for k in gain
            },
            "reading": "[without, with] guided_refine, each fold's model on its held-out "
            "patients (real) and on the held-out renderings",
        }
    card["metrics"].update(extra or {})
    card_path.write_text(json.dumps(card, indent=2) + "\n", "utf-8")
    return card


def parse_guided(text: str | None) -> dict[str, float] | None:
    """'RADIUS,EPS,LONG_SIDE' (command line) -> the card's guided_refine; empty -> None."""
    if not text:
        return None
    r, eps, side = text.split(",")
    return {"radius": int(r), "eps": float(eps), "long_side": int(side)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, help="CP-AnemiC folder (as distributed)")
    ap.add_argument("--photos", type=Path, help="real annotated photos (Eyes-defy-anemia layout)")
    ap.add_argument("--out", type=Path, required=True, help="folder for segmentation.{onnx,json}")
    ap.add_argument(
        "--fold", type=int, default=None, help=f"train CV fold k of {CV_FOLDS} (by patient) only"
    )
    ap.add_argument(
        "--init",
        default="renderings",
        help="start from this served graph ('renderings': the committed renderings-only "
        "model; 'none': random init)",
    )
    ap.add_argument("--real-per-batch", type=int, default=None)
    ap.add_argument("--size", type=int, default=256, help="square input size (px)")
    ap.add_argument("--batch", type=int, default=BATCH)
    ap.add_argument("--lr", type=float, default=None)
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (see docstring)")
    ap.add_argument("--workers", type=int, default=2, help="rendering processes")
    ap.add_argument("--decoder", action="store_true", help="add the finer decoder")
    ap.add_argument("--crop-share", type=float, default=0.0, help="share of pass-2 crop draws")
    ap.add_argument("--boundary-weight", type=float, default=0.0, help="edge weight of the BCE")
    ap.add_argument(
        "--guided",
        metavar="RADIUS,EPS,LONG_SIDE",
        help="snap pass 2's map to the photo's edges (card guided_refine), e.g. 8,0.001,640",
    )
    ap.add_argument("--no-quantise", action="store_true")
    ap.add_argument("--keep-fp32", action="store_true", help="also keep segmentation.fp32.onnx")
    ap.add_argument("--quiet", action="store_true")
    ap.add_argument(
        "--cv",
        action="store_true",
        help=f"{CV_FOLDS}-fold CV by patient, then the final model with the CV in its card",
    )
    ap.add_argument("--folds-dir", type=Path, help="with --cv: reuse fold<k>/result.json here")
    ap.add_argument(
        "--attach-cv",
        type=Path,
        metavar="FOLDS_DIR",
        help="put the CV of FOLDS_DIR/fold<k>/result.json into OUT's card (no training)",
    )
    ap.add_argument(
        "--summarise",
        nargs="+",
        type=Path,
        default=None,
        help="fold result JSON files -> print the CV summary (no training)",
    )
    a = ap.parse_args(argv)
    if a.summarise:
        folds = [json.loads(p.read_text("utf-8")) for p in a.summarise]
        print(json.dumps(cross_validation_summary(folds), indent=2))
        return 0
    if a.attach_cv:
        attach_cv(a.out, a.attach_cv, photos=a.photos, seed=a.seed, data_root=a.data)
        if (a.out / "MODEL_CARD.md").is_file():
            update_model_card_md(a.out / "MODEL_CARD.md", a.out / f"{MODEL_NAME}.json")
        return 0
    if a.data is None and a.photos is None:
        ap.error("give --data (CP-AnemiC) and/or --photos")
    holdout = None
    if a.fold is not None:
        if a.photos is None:
            ap.error("--fold needs --photos")
        patients = [p for p, _ in load_real_photos(a.photos)]
        holdout = cv_folds(patients, CV_FOLDS, a.seed)[a.fold]
    init = {"renderings": INIT_RENDERINGS, "none": None}.get(a.init, a.init)
    if a.cv and (a.photos is None or a.fold is not None):
        ap.error("--cv needs --photos and no --fold")
    kw: dict[str, Any] = {"folds_dir": a.folds_dir} if a.cv else {"holdout_patients": holdout}
    res = (train_with_cv if a.cv else train_segmentation)(
        a.data,
        a.out,
        seed=a.seed,
        steps=a.steps,
        progress=not a.quiet,
        photos=a.photos,
        **kw,
        init=Path(init) if init else None,
        real_per_batch=a.real_per_batch,
        lr=a.lr,
        size=a.size,
        batch=a.batch,
        threads=a.threads,
        workers=a.workers,
        quantise=not a.no_quantise,
        keep_fp32=a.keep_fp32,
        decoder=a.decoder,
        crop_share=a.crop_share,
        boundary_weight=a.boundary_weight,
        guided=parse_guided(a.guided),
    )
    print(json.dumps({k: v for k, v in res.items() if not k.endswith("_records")}, indent=2))
    return 0


__all__ = ["build_model", "load_cutouts", "split_by_group", "train_segmentation"]


def card_section_md(seg: dict[str, Any]) -> list[str]:
    """The '## Segmentation' section of MODEL_CARD.md from segmentation.json (also used by
    training/model_card_md.py, so the regressor's card writer keeps it)."""
    m = seg.get("metrics", {})
    td = seg.get("training_data", {})
    rend = m.get("held_out_renderings", {})
    size = seg.get("preprocessing", {}).get("size", ["?"])[0]
    lines = [
        "## Segmentation",
        "",
        f"{seg.get('architecture', '')}; input {size}x{size} px (the photo squashed, as served), "
        f"weights {seg.get('weights', '?')} ({m.get('quantisation', '')}).",
    ]
    cv = m.get("real_photos_cv")
    if td.get("real_annotated_photos"):
        lines += [
            f"Trained on {td['real_annotated_photos']} real eye photos with expert masks "
            f"({td.get('real_photos_source', '')}) and {td.get('train_renderings')} renderings of "
            "CP-AnemiC cut-outs (training/render.py: usual framing, close-ups, farther away); "
            f"{td.get('real_per_batch')} real draws of {td.get('batch')} per batch, "
            f"{td.get('steps')} steps from {td.get('init')}"
            + (
                f"; {td['crop_share']:.0%} of the real draws are pass-2 crops around the true "
                "mask with drawn margins (seg_augment.crop_draw)"
                if td.get("crop_share")
                else ""
            )
            + (
                f"; BCE weighted {1 + td['boundary_weight']:g}x within 2 input px of the true edge"
                if td.get("boundary_weight")
                else ""
            )
            + ".",
        ]
    else:
        lines += ["Trained on renderings only (training/render.py)."]
    g = seg.get("guided_refine")
    if g:
        lines += [
            f"Pass 2's map is snapped to the photo's own edges by a guided filter (grey guide, "
            f"radius {g['radius']} px and eps {g['eps']:g} at long side {g['long_side']} px; "
            "preprocess.guided_refine).",
        ]
    if cv:
        lines += [
            "",
            f"### Real photos: {cv['split']}",
            "",
            "| fold | photos | IoU | Dice | IoU fp32 |",
            "|---|---|---|---|---|",
            *[
                f"| {f['fold']} | {f['n_photos']} | {f['iou_mean']:.3f} | {f['dice_mean']:.3f} "
                f"| {f['iou_mean_fp32']:.3f} |"
                for f in cv["folds"]
            ],
            f"| **all** | {cv['n_photos']} | **{cv['iou_mean']:.3f}** | **{cv['dice_mean']:.3f}** "
            f"| |",
            "",
            f"Mean of fold means: IoU {cv['iou_mean_of_folds']:.3f} "
            f"(SD {cv['iou_sd_of_folds']:.3f}), "
            f"Dice {cv['dice_mean_of_folds']:.3f}; median IoU {cv['iou_median']:.3f}; "
            f"share with IoU >= 0.7: {cv['share_iou_ge_0.7']:.2f}.",
            "",
            "By the conjunctiva's share of the frame (terciles of the held-out photos):",
            "",
            "| tercile | share of frame | photos | IoU | Dice |",
            "|---|---|---|---|---|",
            *[
                f"| {k} | {t['fill_range'][0]:.3f}-{t['fill_range'][1]:.3f} | {t['n_photos']} "
                f"| {t['iou_mean']:.3f} | {t['dice_mean']:.3f} |"
                for k, t in cv["by_conjunctiva_share_of_frame"].items()
            ],
        ]
        gr = m.get("guided_refine_cv")
        if gr and g:
            real = gr["real_iou_mean"]
            lines += [
                "",
                f"The guided filter, on the same folds: mean IoU {real[0]:.3f} without, "
                f"{real[1]:.3f} with; per fold "
                + ", ".join(f"{a:.3f} -> {b:.3f}" for a, b in gr["real_iou_per_fold"])
                + (
                    f". On the held-out renderings: {gr['renderings_iou_mean'][0]:.3f} -> "
                    f"{gr['renderings_iou_mean'][1]:.3f} (their mask is the renderer's, not an "
                    "expert's palpebral band)."
                    if "renderings_iou_mean" in gr
                    else "."
                ),
            ]
        prev = m.get("previous_model_on_real_photos")
        if prev:
            lines += ["", f"For comparison, {prev}."]
        met = cv["iou_mean"] >= 0.80
        lines += ["", f"Target (CV mean IoU >= 0.80 by patient): {'met' if met else 'NOT met'}."]
        lim = m.get("what_limits_real_photo_iou")
        if lim and not met:
            lines += [
                f"What limits it: {lim['reading']}.",
                "Evidence (folds 0 and 1 where not named; `iou_of_true_mask_eroded_by_px_at_1280` "
                "= IoU of the "
                "expert mask with itself shrunk by that many pixels): "
                + "; ".join(f"{k}: {json.dumps(v)}" for k, v in lim.items() if k != "reading")
                + ".",
            ]
    lines += [
        "",
        f"Held-out renderings (final model): IoU {rend.get('iou_mean', float('nan')):.3f}, "
        f"Dice {rend.get('dice_mean', float('nan')):.3f} on {rend.get('n_photos')} renderings. "
        f"Split: {m.get('split', '')}.",
    ]
    if m.get("held_out_renderings_cv"):
        r = m["held_out_renderings_cv"]
        lines += [f"Same renderings, mean over the CV folds' models: IoU {r['iou_mean']:.3f}."]
    if m.get("commands"):
        lines += ["", "Commands:", "", *[f"    {c}" for c in m["commands"]]]
    lines += ["", f"Limits: {seg.get('limits', '')}", ""]
    if td.get("real_annotated_photos"):
        lines += [
            "Segmentation data licence and citation: " + EYES_DEFY_LICENCE,
            "",
            *[f"- {c}" for c in EYES_DEFY_CITATIONS],
            "",
        ]
    return lines


def update_model_card_md(md_path: Path, seg_json: Path) -> None:
    """Replace the '## Segmentation' section of an existing MODEL_CARD.md in place."""
    text = Path(md_path).read_text("utf-8")
    seg = json.loads(Path(seg_json).read_text("utf-8"))
    new = replace_section(text, card_section_md(seg))
    Path(md_path).write_text(new, "utf-8")


if __name__ == "__main__":
    raise SystemExit(main())
