"""Image -> tensor steps shared by serving and training, so the two cannot drift.

training/ imports these functions; do not reimplement them there.
Invariant the heatmap relies on: a regression input is the crop resized to the card's
(height, width) with no letterbox, so the in-graph heatmap maps back by a plain resize.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import cache

import cv2
import numpy as np

from .modelcard import Preprocessing


@cache
def _normalise_luts(mean: tuple[float, ...], std: tuple[float, ...]) -> list[np.ndarray]:
    """Per channel, (v - mean) / std in float32 for every uint8 value v: a lookup then gives
    the same numbers as the arithmetic (it is the same arithmetic) at half the cost."""
    v = np.arange(256, dtype=np.float32)[:, None]
    table = (v - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    table = np.broadcast_to(table, (256, 3))  # a card may give one value for all channels
    return [np.ascontiguousarray(table[:, c]).reshape(1, 256) for c in range(3)]


def segmentation_input(rgb: np.ndarray, pre: Preprocessing) -> np.ndarray:
    """uint8 HxWx3 RGB photo -> float32 1x3xHxW tensor for the segmentation model."""
    h, w = pre.size
    luts = _normalise_luts(tuple(pre.mean), tuple(pre.std))
    x = np.empty((1, 3, h, w), np.float32)
    for c, plane in enumerate(cv2.split(shrink(rgb, h, w))):
        cv2.LUT(plane, luts[c], dst=x[0, c])
    return x


def shrink(rgb: np.ndarray, h: int, w: int) -> np.ndarray:
    """Anti-aliased downscale to (h, w): halve with pyrDown while at least 2x too large, then
    bilinear for the rest. Measured on real photos (segmentation CV folds 0-1, 26 held-out
    patients): the same mean IoU as INTER_AREA for the last step (0.705/0.622 vs 0.704/0.623),
    at 1.3 ms instead of 1.6 ms for a 1280 px photo and 0.1 ms instead of 1.6 ms for the
    second pass's crop; training draws its samples the same way (seg_augment: a pyramid level
    within 2x, then a bilinear warp). The halving runs plane by plane: OpenCV's single-channel
    pyrDown is vectorised, its 3-channel one is not (1280 px: 1.1 ms with the split and merge,
    instead of 1.8; the same pixels)."""
    if rgb.shape[0] >= 2 * h and rgb.shape[1] >= 2 * w:
        planes = list(cv2.split(rgb)) if rgb.ndim == 3 else [rgb]
        while planes[0].shape[0] >= 2 * h and planes[0].shape[1] >= 2 * w:
            planes = [cv2.pyrDown(p) for p in planes]
        rgb = cv2.merge(planes) if rgb.ndim == 3 else planes[0]
    return cv2.resize(rgb, (w, h), interpolation=cv2.INTER_LINEAR)


def probabilities(logits: np.ndarray) -> np.ndarray:
    """Segmentation logits (any leading singleton dims) -> float32 HxW probability map."""
    z = np.asarray(logits, dtype=np.float32)
    z = z.reshape(z.shape[-2:])
    return (1.0 / (1.0 + np.exp(-np.clip(z, -30, 30)))).astype(np.float32)


def main_component(prob: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Keep the plausible conjunctiva: the largest connected region above `threshold`.

    Returns the soft probabilities inside that region and zeros elsewhere, so small false
    positives elsewhere in the frame (lips, a red finger nail) cannot move the crop.
    """
    binary = (prob >= threshold).astype(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8)
    if n <= 1:
        return np.zeros_like(prob, dtype=np.float32)
    largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    keep = cv2.dilate((labels == largest).astype(np.uint8), np.ones((3, 3), np.uint8))
    return (prob * keep).astype(np.float32)


def segmentation_mask(
    logits: np.ndarray, out_hw: tuple[int, int], threshold: float = 0.5
) -> np.ndarray:
    """Segmentation logits -> probability map of the plausible conjunctiva at `out_hw`.

    The component is chosen at the model's resolution (cheap), then upsampled: serving and the
    segmentation evaluation both call this, so the measured IoU is the served one.
    """
    keep = main_component(probabilities(logits), threshold)
    return cv2.resize(keep, (out_hw[1], out_hw[0]), interpolation=cv2.INTER_LINEAR)


# The guided filter needs a crop several windows wide: on an eye far from the camera (crop
# 22-54 px short side at the 320 px working scale, against 92-204 for the 65 real photos) a
# radius-8 window spans the whole band and erased it, so such a crop keeps pass 2's own map.
GUIDED_MIN_SIDE_RADII = 8


def segment_two_pass(
    run: Callable[[np.ndarray], np.ndarray],
    rgb: np.ndarray,
    pre: Preprocessing,
    threshold: float = 0.5,
    refine_margin: float | None = None,
    guided: Mapping[str, float] | None = None,
) -> np.ndarray:
    """The conjunctiva's probability map at the photo's size, as served.

    `run` maps the input tensor to logits. Pass 1 segments the whole frame; with
    `refine_margin` (from the card) pass 2 segments again a crop around pass 1's mask widened
    by that share of its size, where the thin lid band spans ~3x more input pixels, and its map
    replaces pass 1's inside the crop. With `guided` (the card's `guided_refine`: radius, eps,
    long_side) pass 2's map is then snapped to the photo's own edges (`guided_refine`).
    Training evaluation calls this too, so the measured IoU is the served one.
    """
    logits = run(segmentation_input(rgb, pre))
    H, W = rgb.shape[:2]
    if refine_margin is None:
        return segmentation_mask(logits, (H, W), threshold)
    # pass 1 only places the crop: its box is found on a quarter-size map (1 ms less than at
    # full size; the box moves by at most 4 px, against a margin of ~100 px)
    h, w = max(1, H // 4), max(1, W // 4)
    coarse = segmentation_mask(logits, (h, w), threshold)
    if not (coarse > 0.5).any():  # the same test as crop_box's
        return np.zeros((H, W), np.float32)
    b0, b1, a0, a1 = crop_box(coarse, refine_margin)
    y0, y1 = b0 * H // h, min(H, -(-b1 * H // h))
    x0, x1 = a0 * W // w, min(W, -(-a1 * W // w))
    if (y1 - y0) < 8 or (x1 - x0) < 8:
        return segmentation_mask(logits, (H, W), threshold)
    crop = rgb[y0:y1, x0:x1]  # a view: OpenCV reads it in place
    logits = run(segmentation_input(crop, pre))
    s = float(guided["long_side"]) / max(H, W) if guided else 0.0
    hw = (max(1, round(crop.shape[0] * s)), max(1, round(crop.shape[1] * s)))
    if guided and min(hw) >= GUIDED_MIN_SIDE_RADII * int(guided["radius"]):
        # filtered at the card's working scale, then up to the crop once
        small = segmentation_mask(logits, hw, threshold)
        small = guided_refine(crop, small, int(guided["radius"]), float(guided["eps"]))
        fine = cv2.resize(small, crop.shape[1::-1], interpolation=cv2.INTER_LINEAR)
    else:
        fine = segmentation_mask(logits, crop.shape[:2], threshold)
    out = np.zeros((H, W), np.float32)
    out[y0:y1, x0:x1] = fine
    return out


def guided_filter(guide: np.ndarray, src: np.ndarray, radius: int, eps: float) -> np.ndarray:
    """He et al.'s guided filter with a grey guide (float32 in [0, 1]): smooths `src` but keeps
    the edges of `guide`, in six box filters."""
    k = (2 * radius + 1, 2 * radius + 1)

    def box(x: np.ndarray) -> np.ndarray:
        return cv2.boxFilter(x, -1, k, borderType=cv2.BORDER_REFLECT)

    mi, mp = box(guide), box(src)
    a = (box(guide * src) - mi * mp) / (box(guide * guide) - mi * mi + eps)
    b = mp - a * mi
    return box(a) * guide + box(b)


def guided_refine(rgb: np.ndarray, prob: np.ndarray, radius: int, eps: float) -> np.ndarray:
    """Probability map (at any size) snapped to the edges of `rgb` (shrunk to the map's size as
    the guide; radius in pixels of the map). The model's map is blurred at its output stride
    (6+ px at 1280 px); the photo itself holds the sharp edge."""
    grey = cv2.cvtColor(shrink(rgb, *prob.shape[:2]), cv2.COLOR_RGB2GRAY)
    return guided_filter(grey.astype(np.float32) / 255.0, prob.astype(np.float32), radius, eps)


def crop_box(mask: np.ndarray, margin: float = 0.08) -> tuple[int, int, int, int]:
    """(y0, y1, x0, x1) around the mask's support, widened by `margin` of its size."""
    x0, y0, bw, bh = cv2.boundingRect((mask > 0.5).astype(np.uint8))
    if bw == 0 or bh == 0:
        raise ValueError("empty mask")
    y1, x1 = y0 + bh, x0 + bw
    my, mx = round(bh * margin), round(bw * margin)
    h, w = mask.shape[:2]
    return max(0, y0 - my), min(h, y1 + my), max(0, x0 - mx), min(w, x1 + mx)


def glare_mask(rgb: np.ndarray) -> np.ndarray:
    """Specular glare: bright, nearly colourless pixels (bool HxW). Glare carries the light's
    colour, not the tissue's, so the colour-based regressor ignores it."""
    f = rgb.astype(np.float32)
    mx, mn = f.max(axis=2), f.min(axis=2)
    return (mx >= 235.0) & (mn >= 0.80 * mx)


def _colour_channels(rgb: np.ndarray, colour: str) -> tuple[np.ndarray, int | None]:
    """uint8 RGB -> float32 HxWx3 in the card's colour space, and the index of its lightness
    channel (None for rgb). "lab": CIELAB (L* 0-100, a*, b*); "logchroma": log(R/G),
    log(B/G) and mean log intensity, which are invariant to a change of exposure;
    "lab_chroma": CIELAB followed by three exposure-invariant redness ratios, a*/L*,
    log(R/G) and the red chromaticity R/(R+G+B) (these moved least between the three capture
    setups while keeping the within-site Hb signal: see reports/report.md, leave-one-site-out)."""
    if colour == "rgb":
        return rgb.astype(np.float32), None
    if colour == "lab":
        return cv2.cvtColor(rgb.astype(np.float32) / 255.0, cv2.COLOR_RGB2Lab), 0
    if colour == "lab_chroma":
        f = rgb.astype(np.float32)
        lab = cv2.cvtColor(f / 255.0, cv2.COLOR_RGB2Lab)
        r, g, b = np.moveaxis(f + 1.0, 2, 0)
        ratios = [
            lab[..., 1] / np.maximum(lab[..., 0], 1.0),
            np.log(r / g),
            r / (r + g + b),
        ]
        return np.concatenate([lab, np.stack(ratios, axis=2)], axis=2), 0
    if colour == "logchroma":
        lr, lg, lb = np.moveaxis(np.log(rgb.astype(np.float32) + 1.0), 2, 0)
        return np.stack([lr - lg, lb - lg, (lr + lg + lb) / 3.0], axis=2), 2
    raise ValueError(f"unknown colour space {colour!r} in the model card")


def regression_input(rgb: np.ndarray, mask: np.ndarray, pre: Preprocessing) -> np.ndarray:
    """uint8 HxWx3 crop + float mask in [0, 1] -> float32 1xCxHxW tensor for the regressor.

    Pixels outside the mask are zeroed after normalisation. Model-specific colour handling is
    switched on by keys in the card's preprocessing:
    - colour: "rgb" (default), "lab" or "logchroma" (see _colour_channels);
    - glare_exclude: drop specular glare from the mask;
    - dark_exclude: drop near-black pixels (max RGB below this value) from the mask: in
      cut-outs made from JPEG copies they are compression ringing, not tissue;
    - lightness_norm: subtract the mask-weighted mean of the lightness channel, so a darker
      or brighter exposure (phone, light) does not move the estimate; chroma stays absolute;
    - mask_channel: append the (resized, glare-free) mask as a last channel.
    """
    h, w = pre.size
    small = cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA)
    m = cv2.resize(mask.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
    m = np.clip(m, 0.0, 1.0)
    if getattr(pre, "glare_exclude", False):
        m = m * ~glare_mask(small)
    dark = getattr(pre, "dark_exclude", None)
    if dark:
        m = m * (small.max(axis=2) >= float(dark))
    x, light = _colour_channels(small, pre.colour)
    if getattr(pre, "lightness_norm", False) and light is not None and m.sum() > 0:
        x[..., light] -= float((x[..., light] * m).sum() / m.sum())
    x = (x - np.asarray(pre.mean, np.float32)) / np.asarray(pre.std, np.float32)
    x = x * m[..., None]
    chans = [x.transpose(2, 0, 1)]
    if getattr(pre, "mask_channel", False):
        chans.append(m[None])
    return np.ascontiguousarray(np.concatenate(chans, axis=0)[None], dtype=np.float32)


def group_input(group: str, populations: list[str], population_of: dict[str, str]) -> np.ndarray:
    """WHO group -> the regressor's second input: a 1 x P one-hot of the person's population
    (the card's `group_input`), so the estimate starts from that population's Hb."""
    pop = population_of.get(group)
    if pop not in populations:
        raise ValueError(f"group {group!r} has no population in the regression card")
    x = np.zeros((1, len(populations)), np.float32)
    x[0, populations.index(pop)] = 1.0
    return x
