"""Mask clean-up and the heatmap overlay that goes back to the person's phone."""

from __future__ import annotations

import cv2
import numpy as np

OVERLAY_LONG_SIDE = 720  # reads well on a small phone screen, stays well under 150 KB
OVERLAY_JPEG_QUALITY = 80
CONTEXT_MARGIN = 0.6  # show this much of the photo around the conjunctiva, per side


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


def _context_box(
    box: tuple[int, int, int, int], shape: tuple[int, ...]
) -> tuple[int, int, int, int]:
    y0, y1, x0, x1 = box
    my, mx = int((y1 - y0) * CONTEXT_MARGIN), int((x1 - x0) * CONTEXT_MARGIN)
    return max(0, y0 - my), min(shape[0], y1 + my), max(0, x0 - mx), min(shape[1], x1 + mx)


def overlay(
    rgb: np.ndarray, mask: np.ndarray, cam: np.ndarray, box: tuple[int, int, int, int]
) -> np.ndarray:
    """RGB image: the region around the conjunctiva with the positive class-activation map
    (Grad-CAM convention: ReLU, scaled to its maximum) blended over the conjunctiva only."""
    y0, y1, x0, x1 = box
    full = np.zeros(rgb.shape[:2], np.float32)
    full[y0:y1, x0:x1] = np.maximum(cam, 0.0)
    full *= mask
    peak = float(full.max())
    if peak > 0:
        full /= peak
    colours = cv2.applyColorMap((full * 255).astype(np.uint8), cv2.COLORMAP_JET)
    colours = cv2.cvtColor(colours, cv2.COLOR_BGR2RGB).astype(np.float32)
    alpha = (0.55 * np.clip(mask, 0, 1))[..., None]
    base = rgb.astype(np.float32)
    # Dim what is not conjunctiva so the eye goes to the part that was measured.
    base = base * (0.55 + 0.45 * np.clip(mask, 0, 1))[..., None]
    out = base * (1 - alpha) + colours * alpha
    # Outline the region the model measured.
    edge = cv2.morphologyEx((mask > 0.5).astype(np.uint8), cv2.MORPH_GRADIENT, np.ones((3, 3)))
    out[edge > 0] = (255, 255, 255)
    cy0, cy1, cx0, cx1 = _context_box(box, rgb.shape)
    return np.clip(out[cy0:cy1, cx0:cx1], 0, 255).astype(np.uint8)


def encode_jpeg(rgb: np.ndarray, long_side: int = OVERLAY_LONG_SIDE) -> bytes:
    """Resize to a phone-friendly size and encode without any metadata."""
    h, w = rgb.shape[:2]
    scale = long_side / max(h, w)
    if scale < 1:
        rgb = cv2.resize(rgb, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
    elif scale > 1.5:  # enlarge small crops so the map is visible, but not into mush
        s = min(scale, 3.0)
        rgb = cv2.resize(rgb, (round(w * s), round(h * s)), interpolation=cv2.INTER_CUBIC)
    ok, buf = cv2.imencode(
        ".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, OVERLAY_JPEG_QUALITY]
    )
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return buf.tobytes()


def overlay_jpeg(
    rgb: np.ndarray, mask: np.ndarray, cam: np.ndarray, box: tuple[int, int, int, int]
) -> bytes:
    return encode_jpeg(overlay(rgb, mask, cam, box))
