"""The heatmap overlay that goes back to the person's phone."""

from __future__ import annotations

import cv2
import numpy as np

OVERLAY_LONG_SIDE = 720  # reads well on a small phone screen, stays well under 150 KB
OVERLAY_JPEG_QUALITY = 80
CONTEXT_MARGIN = 0.6  # show this much of the photo around the conjunctiva, per side
MAX_UPSCALE = 3.0  # enlarge small crops so the map is visible, but not into mush
DIM = 0.55  # brightness of the photo outside the conjunctiva
MAP_OPACITY = 0.55


def _context_box(
    box: tuple[int, int, int, int], shape: tuple[int, ...]
) -> tuple[int, int, int, int]:
    y0, y1, x0, x1 = box
    my, mx = int((y1 - y0) * CONTEXT_MARGIN), int((x1 - x0) * CONTEXT_MARGIN)
    return max(0, y0 - my), min(shape[0], y1 + my), max(0, x0 - mx), min(shape[1], x1 + mx)


def overlay(
    rgb: np.ndarray,
    mask: np.ndarray,
    cam: np.ndarray,
    box: tuple[int, int, int, int],
    long_side: int = OVERLAY_LONG_SIDE,
) -> np.ndarray:
    """RGB image of the region around the conjunctiva, at phone size, with the positive
    class-activation map (Grad-CAM convention: ReLU, scaled to its maximum) over the
    conjunctiva only and the rest of the photo dimmed."""
    cy0, cy1, cx0, cx1 = _context_box(box, rgb.shape)
    y0, y1, x0, x1 = box
    cam_full = np.zeros((cy1 - cy0, cx1 - cx0), np.float32)
    cam_full[y0 - cy0 : y1 - cy0, x0 - cx0 : x1 - cx0] = np.maximum(cam, 0.0)
    rgb, mask = rgb[cy0:cy1, cx0:cx1], mask[cy0:cy1, cx0:cx1]

    # Scale first, so the blending below costs the same for a 640 px or a 4000 px photo.
    h, w = rgb.shape[:2]
    scale = min(long_side / max(h, w), MAX_UPSCALE)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    interp = cv2.INTER_AREA if scale < 0.5 else cv2.INTER_LINEAR
    rgb = cv2.resize(rgb, size, interpolation=interp)
    mask = np.clip(cv2.resize(mask, size, interpolation=cv2.INTER_LINEAR), 0.0, 1.0)
    cam_full = cv2.resize(cam_full, size, interpolation=cv2.INTER_LINEAR) * mask
    scale = size[0] / w

    peak = float(cam_full.max())
    if peak > 0:
        cam_full /= peak
    # Outside the conjunctiva's box the photo is only dimmed (cheap, 8-bit); inside it the
    # colour map is blended in proportion to the mask.
    out = cv2.convertScaleAbs(rgb, alpha=DIM)
    by0, by1 = int((y0 - cy0) * scale), int(np.ceil((y1 - cy0) * scale))
    bx0, bx1 = int((x0 - cx0) * scale), int(np.ceil((x1 - cx0) * scale))
    m = mask[by0:by1, bx0:bx1, None]
    colours = cv2.applyColorMap(
        (cam_full[by0:by1, bx0:bx1] * 255).astype(np.uint8), cv2.COLORMAP_JET
    )
    colours = cv2.cvtColor(colours, cv2.COLOR_BGR2RGB).astype(np.float32)
    base = rgb[by0:by1, bx0:bx1].astype(np.float32) * (DIM + (1 - DIM) * m)
    blend = base + (colours - base) * (MAP_OPACITY * m)
    out[by0:by1, bx0:bx1] = np.clip(blend, 0, 255).astype(np.uint8)
    # Outline the region the model measured.
    edge = cv2.morphologyEx((mask > 0.5).astype(np.uint8), cv2.MORPH_GRADIENT, np.ones((3, 3)))
    out[edge > 0] = (255, 255, 255)
    return out


def encode_jpeg(rgb: np.ndarray, quality: int = OVERLAY_JPEG_QUALITY) -> bytes:
    """Encode without any metadata (OpenCV writes none)."""
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return buf.tobytes()


def overlay_jpeg(
    rgb: np.ndarray, mask: np.ndarray, cam: np.ndarray, box: tuple[int, int, int, int]
) -> bytes:
    return encode_jpeg(overlay(rgb, mask, cam, box))
