"""Real annotated eye photos as segmentation training samples: framing and light augmentation.

The 65 Eyes-defy-anemia photos all come from one macro device (the conjunctiva fills 2-11% of a
portrait 3:4 frame, LED light). Users' phones frame the eyelid from close-ups to arm's length,
in either orientation and any light, so each draw re-frames a photo: a window around the
conjunctiva (zoomed in until it fills up to ~60% of the frame, or out to ~2% with the photo
padded by its own border), any phone aspect, rotation, flips; then white balance, exposure,
contrast, saturation, blur, noise and JPEG. Every draw is one affine warp from a pre-built
pyramid level (never downscaling by more than 2x in the warp, so no aliasing) straight to the
model's input size, squashed exactly as `segmentation_input` squashes a photo.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

# phone frames as (height / width) of the crop before the squash to a square input
ASPECTS = (4 / 3, 3 / 4, 16 / 9, 9 / 16, 1.0, 0.45, 0.33)  # the last: pass-2 crops of the band
# target share of the frame taken by the conjunctiva, drawn log-uniformly
FILL_RANGE = (0.02, 0.6)
PALLOR_P = 0.3  # share of draws whose conjunctiva is made pale (_pallor)


@dataclass
class RealPhoto:
    """One annotated photo at a few scales (long side 1024, 512, 256): a pyramid for warps."""

    patient: str
    levels: list[np.ndarray]  # RGB uint8, level 0 the largest
    masks: list[np.ndarray]  # float32 [0, 1] at the same sizes
    fill: float  # mask share of the full frame

    @classmethod
    def build(cls, patient: str, rgb: np.ndarray, mask: np.ndarray) -> RealPhoto:
        levels, masks = [rgb], [mask.astype(np.float32)]
        while max(levels[-1].shape[:2]) > 300:
            levels.append(cv2.pyrDown(levels[-1]))
            masks.append(cv2.pyrDown(masks[-1]))
        return cls(patient, levels, masks, float((mask > 0.5).mean()))


def _pallor(rng: np.random.Generator, img: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Make the conjunctiva and the tissue around it pale, as in severe anaemia.

    The 65 photos are mostly well-perfused; without this the model learns "red band" and
    misses the pale conjunctiva that matters most (it marked the red lid rim of the committed
    pale example instead). Saturation falls and lightness rises inside a soft, dilated mask.
    """
    size = img.shape[0]
    k = max(3, int(size * rng.uniform(0.02, 0.06)) | 1)
    soft = cv2.dilate((mask > 0.3).astype(np.float32), np.ones((k, k), np.uint8))
    soft = cv2.GaussianBlur(soft, (0, 0), max(1.0, k / 3))[..., None]
    x = img.astype(np.float32)
    grey = x.mean(axis=2, keepdims=True)
    pale = grey + (x - grey) * rng.uniform(0.1, 0.5)
    pale = pale * rng.uniform(1.0, 1.3) + np.array([8, 0, 0], np.float32) * rng.uniform(0, 1)
    a = soft * rng.uniform(0.6, 1.0)
    return np.clip(x * (1 - a) + pale * a, 0, 255).astype(np.uint8)


def _photometric(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    """Light and camera: white balance, exposure, contrast, gamma, saturation, blur, noise."""
    x = img.astype(np.float32) / 255.0
    warm = rng.uniform(-1, 1)  # warm tungsten .. cool LED / daylight
    gains = np.array([1 + 0.18 * warm, 1.0, 1 - 0.18 * warm], np.float32)
    gains *= rng.uniform(0.9, 1.1, 3).astype(np.float32)  # phone white balance error
    x = x * gains * rng.uniform(0.55, 1.35)  # exposure
    mean = x.mean()
    x = (x - mean) * rng.uniform(0.75, 1.25) + mean  # contrast
    grey = x.mean(axis=2, keepdims=True)
    x = grey + (x - grey) * rng.uniform(0.7, 1.3)  # saturation
    x = np.clip(x, 0, 1) ** rng.uniform(0.8, 1.25)  # gamma / tone curve
    if rng.random() < 0.3:
        x = cv2.GaussianBlur(x, (0, 0), rng.uniform(0.5, 2.0))
    if rng.random() < 0.5:
        x = x + rng.normal(0, rng.uniform(0.005, 0.03), x.shape).astype(np.float32)
    out = np.clip(x * 255 + 0.5, 0, 255).astype(np.uint8)
    if rng.random() < 0.5:
        ok, buf = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(30, 95))])
        if ok:
            out = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    return out


def augment(rng: np.random.Generator, photo: RealPhoto, size: int) -> tuple[np.ndarray, np.ndarray]:
    """One re-framed, re-lit draw of `photo` at size x size: (RGB uint8, mask uint8 0-255)."""
    m0 = photo.masks[0] > 0.5
    ys, xs = np.nonzero(m0)
    cy, cx = ys.mean(), xs.mean()
    # crop window (in level-0 pixels) giving the drawn fill: fill = mask_area / window_area
    fill = math.exp(rng.uniform(math.log(FILL_RANGE[0]), math.log(FILL_RANGE[1])))
    aspect = ASPECTS[int(rng.integers(len(ASPECTS)))]
    area = m0.sum() / fill
    win_w = math.sqrt(area / aspect)
    win_h = win_w * aspect
    # keep (nearly) all of the conjunctiva in view; close-ups may cut its corners a little
    span_x = (xs.max() - xs.min()) * rng.uniform(0.8, 1.05)
    if win_w < span_x:
        win_w, win_h = span_x, span_x * aspect
    theta = rng.uniform(-30, 30)
    # window centre: the conjunctiva's centre, shifted by up to a third of the free room
    free_x, free_y = max(0.0, win_w - span_x), max(0.0, win_h - (ys.max() - ys.min()))
    ccx = cx + rng.uniform(-0.35, 0.35) * free_x
    ccy = cy + rng.uniform(-0.35, 0.35) * free_y
    scale = size / win_w  # level-0 px -> output px along x (y squashed below)
    level = 0
    while level + 1 < len(photo.levels) and scale * (2 ** (level + 1)) <= 1.0 / 1.0:
        level += 1  # never shrink by more than 2x inside the warp
    f = 2**level
    img, msk = photo.levels[level], photo.masks[level]
    # affine: level px -> output px; rotate about the window centre, then squash to a square
    a = math.radians(theta)
    sx, sy = size / win_w * f, size / win_h * f
    c, s = math.cos(a), math.sin(a)
    px, py = ccx / f, ccy / f
    M = np.array(
        [[sx * c, sx * s, 0.0], [-sy * s, sy * c, 0.0]],
        np.float64,
    )
    M[:, 2] = np.array([size / 2, size / 2]) - M[:, :2] @ np.array([px, py])
    border = cv2.BORDER_REFLECT_101 if rng.random() < 0.5 else cv2.BORDER_REPLICATE
    out = cv2.warpAffine(img, M, (size, size), flags=cv2.INTER_LINEAR, borderMode=border)
    om = cv2.warpAffine(msk, M, (size, size), flags=cv2.INTER_LINEAR, borderValue=0.0)
    if border == cv2.BORDER_REFLECT_101:
        # the padding must not hold mirrored conjunctiva that the mask does not mark
        inside = cv2.warpAffine(
            np.ones(img.shape[:2], np.float32), M, (size, size), flags=cv2.INTER_NEAREST
        )
        if (inside < 0.5).any():
            fillc = np.median(img.reshape(-1, 3), axis=0)
            out[inside < 0.5] = (0.35 * fillc).astype(np.uint8)
    return _flip_and_relight(rng, out, om)


def _flip_and_relight(
    rng: np.random.Generator, out: np.ndarray, om: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The last steps of every draw: a mirror half the time, pallor, light; mask to uint8."""
    if rng.random() < 0.5:
        out, om = out[:, ::-1], om[:, ::-1]
    out, om = np.ascontiguousarray(out), np.ascontiguousarray(om)
    if rng.random() < PALLOR_P:
        out = _pallor(rng, out, om)
    out = _photometric(rng, out)
    return out, np.round(np.clip(om, 0, 1) * 255).astype(np.uint8)


# pass 2's crop (preprocess.segment_two_pass) is pass 1's box widened by refine_margin = 0.3 of
# its size on each side; pass 1's box is itself off by a little, so each side's margin is drawn
CROP_MARGIN = (0.05, 0.6)


def crop_draw(
    rng: np.random.Generator, photo: RealPhoto, size: int
) -> tuple[np.ndarray, np.ndarray]:
    """One draw of what pass 2 sees: the window around the TRUE mask, each side widened by a
    drawn share of the box (clipped to the frame, as serving clips), shrunk to size x size by
    the serving `shrink` (so the squash matches), then re-lit like `augment`'s draws."""
    from hbscreen.inference.preprocess import shrink

    level = 0 if rng.random() < 0.7 else min(1, len(photo.levels) - 1)  # 1024 or 512 px
    img, msk = photo.levels[level], photo.masks[level]
    ys, xs = np.nonzero(msk > 0.5)
    if len(ys) == 0:
        return augment(rng, photo, size)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    bh, bw = y1 - y0, x1 - x0
    lo, hi = CROP_MARGIN
    t, b, left, right = rng.uniform(lo, hi, 4)
    H, W = msk.shape
    cy0, cy1 = max(0, int(y0 - t * bh)), min(H, int(y1 + b * bh) + 1)
    cx0, cx1 = max(0, int(x0 - left * bw)), min(W, int(x1 + right * bw) + 1)
    out = shrink(np.ascontiguousarray(img[cy0:cy1, cx0:cx1]), size, size)
    om = cv2.resize(msk[cy0:cy1, cx0:cx1], (size, size), interpolation=cv2.INTER_AREA)
    return _flip_and_relight(rng, out, om)


__all__ = ["RealPhoto", "augment", "crop_draw"]


def warm_start(model, onnx_path) -> int:
    """Load the weights of a served segmentation graph (fp32 or int8 QDQ) into `model`.

    The export folded each BatchNorm into its convolution, so the folded kernel goes into the
    conv and the folded bias into the BatchNorm set to identity (mean 0, variance 1 - eps,
    scale 1); keep the BatchNorms in eval mode while fine-tuning (`freeze_batchnorm`), or their
    batch statistics would undo the fold. Returns the number of convolutions loaded.
    """
    from pathlib import Path

    import torch
    from onnx import numpy_helper

    from .dequantize import dequantized

    g = dequantized(Path(onnx_path)).graph
    inits = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    mods = dict(model.named_modules())
    n = 0
    with torch.no_grad():
        for node in g.node:
            if node.op_type != "Conv":
                continue
            name, last = "", ""
            for seg in node.name.strip("/").split("/")[:-1]:
                if name and last and seg.startswith(last + "."):
                    name += seg[len(last) :]
                else:
                    name = f"{name}.{seg}" if name else seg
                last = seg
            conv = mods[name]
            conv.weight.copy_(torch.from_numpy(inits[node.input[1]].copy()))
            bias = inits[node.input[2]] if len(node.input) > 2 else None
            if conv.bias is not None:
                conv.bias.copy_(torch.from_numpy(bias.copy()))
            elif bias is not None:
                bn = mods[name[: name.rfind(".")] + ".1"]
                bn.running_mean.zero_()
                bn.running_var.fill_(1.0 - bn.eps)
                bn.weight.fill_(1.0)
                bn.bias.copy_(torch.from_numpy(bias.copy()))
            n += 1
    return n


def freeze_batchnorm(model) -> None:
    """BatchNorms to eval mode (running statistics fixed; scale and shift still learn)."""
    import torch

    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.eval()
