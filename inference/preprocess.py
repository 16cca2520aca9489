"""Image -> tensor steps shared by serving and training, so the two cannot drift.

training/ imports these functions; do not reimplement them there.
Invariant the heatmap relies on: a regression input is the crop resized to the card's
(height, width) with no letterbox, so the in-graph heatmap maps back by a plain resize.
"""

from __future__ import annotations

import cv2
import numpy as np

from .modelcard import Preprocessing


def _normalise(rgb: np.ndarray, pre: Preprocessing) -> np.ndarray:
    x = rgb.astype(np.float32)
    mean = np.asarray(pre.mean, dtype=np.float32)
    std = np.asarray(pre.std, dtype=np.float32)
    return (x - mean) / std


def segmentation_input(rgb: np.ndarray, pre: Preprocessing) -> np.ndarray:
    """uint8 HxWx3 RGB photo -> float32 1x3xHxW tensor for the segmentation model."""
    h, w = pre.size
    small = cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(_normalise(small, pre).transpose(2, 0, 1)[None])


def mask_from_logits(logits: np.ndarray, out_hw: tuple[int, int]) -> np.ndarray:
    """Segmentation logits (any leading singleton dims) -> float32 probability map at out_hw."""
    z = np.asarray(logits, dtype=np.float32).reshape(logits.shape[-2:])
    prob = 1.0 / (1.0 + np.exp(-np.clip(z, -30, 30)))
    return cv2.resize(prob, (out_hw[1], out_hw[0]), interpolation=cv2.INTER_LINEAR)


def crop_box(mask: np.ndarray, margin: float = 0.08) -> tuple[int, int, int, int]:
    """(y0, y1, x0, x1) around the mask's support, widened by `margin` of its size."""
    ys, xs = np.nonzero(mask > 0.5)
    if ys.size == 0:
        raise ValueError("empty mask")
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    my, mx = int(round((y1 - y0) * margin)), int(round((x1 - x0) * margin))
    h, w = mask.shape[:2]
    return max(0, y0 - my), min(h, y1 + my), max(0, x0 - mx), min(w, x1 + mx)


def regression_input(rgb: np.ndarray, mask: np.ndarray, pre: Preprocessing) -> np.ndarray:
    """uint8 HxWx3 crop + float mask in [0, 1] -> float32 1xCxHxW tensor for the regressor.

    Pixels outside the mask are zeroed after normalisation. Model-specific colour handling is
    switched on by keys in the card's preprocessing (see training/ for what each one does).
    """
    h, w = pre.size
    small = cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA)
    m = cv2.resize(mask.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
    x = _normalise(small, pre) * m[..., None]
    chans = [x.transpose(2, 0, 1)]
    if getattr(pre, "mask_channel", False):
        chans.append(m[None])
    return np.ascontiguousarray(np.concatenate(chans, axis=0)[None], dtype=np.float32)
