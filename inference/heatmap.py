"""The heatmap overlay that goes back to the person's phone.

What a person should see: her own eyelid in its natural colour (the colour is what the
estimate is about), a thin white outline of the region the model measured, and a translucent
yellow map over only the regions that mattered most, with a small wordless legend in a corner
(the photo's caption says in words what the line and the colour mean). The crop shows the eye
around the eyelid at a phone-friendly aspect ratio, never a thin strip.
"""

from __future__ import annotations

import cv2
import numpy as np

OVERLAY_LONG_SIDE = 720  # reads well on a small phone screen, stays well under 150 KB
OVERLAY_JPEG_QUALITY = 80
CONTEXT_MARGIN = 0.35  # show this much of the photo around the conjunctiva, per side
MAX_ASPECT = 4 / 3  # the crop is padded so that neither side is longer than this x the other
MAX_UPSCALE = 3.0  # enlarge small crops so the map is visible, but not into mush
DIM = 0.8  # brightness of the photo outside the conjunctiva: a hint of focus, no wash
TOP_SHARE = 0.2  # colour only this share of the measured region: where it mattered most
MAP_OPACITY = 0.5  # at the strongest point; fades with the map's strength
OUTLINE_SMOOTH = 0.008  # Gaussian sigma of the outline's mask, as a share of the long side
SMOOTH = 0.03  # Gaussian sigma of the map, as a share of the crop's long side (regions, not dots)
MAP_RGB = (255, 214, 0)  # yellow: stands apart from the red and pink of the eyelid
OUTLINE_RGB = (255, 255, 255)


def _fit(lo: int, hi: int, length: int, limit: int) -> tuple[int, int]:
    """Grow [lo, hi) to `length` around its centre, shifted to stay inside [0, limit)."""
    length = min(length, limit)
    lo = max(0, (lo + hi - length) // 2)
    return min(lo, limit - length), min(lo, limit - length) + length


def _context_box(
    box: tuple[int, int, int, int], shape: tuple[int, ...]
) -> tuple[int, int, int, int]:
    """The conjunctiva's box with a margin, padded to an aspect ratio within MAX_ASPECT
    (an eyelid is a wide strip; shown alone it is a 720 x 156 sliver on a phone)."""
    y0, y1, x0, x1 = box
    my, mx = int((y1 - y0) * CONTEXT_MARGIN), int((x1 - x0) * CONTEXT_MARGIN)
    y0, y1 = max(0, y0 - my), min(shape[0], y1 + my)
    x0, x1 = max(0, x0 - mx), min(shape[1], x1 + mx)
    h, w = y1 - y0, x1 - x0
    if w > h * MAX_ASPECT:
        y0, y1 = _fit(y0, y1, int(np.ceil(w / MAX_ASPECT)), shape[0])
    elif h > w * MAX_ASPECT:
        x0, x1 = _fit(x0, x1, int(np.ceil(h / MAX_ASPECT)), shape[1])
    return y0, y1, x0, x1


def _top_regions(cam: np.ndarray, inside: np.ndarray, sigma: float) -> np.ndarray:
    """Strength in [0, 1] of the smoothed map on its top TOP_SHARE of the measured region,
    0 elsewhere: the few places that mattered most, not a wash over the whole lid."""
    # Smoothed at a quarter of the size: the same picture at a sixteenth of the cost.
    h, w = cam.shape
    small = cv2.resize(cam, (max(1, w // 4), max(1, h // 4)), interpolation=cv2.INTER_AREA)
    small = cv2.GaussianBlur(small, (0, 0), sigmaX=max(sigma / 4, 0.5))
    smooth = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    values = smooth.ravel()[np.flatnonzero(inside)]  # smooth[inside], taken faster by index
    if values.size == 0 or float(values.max()) <= 0:
        return np.zeros_like(cam)
    cut = float(np.quantile(values, 1.0 - TOP_SHARE))
    peak = float(values.max())
    strength = np.clip((smooth - cut) / max(peak - cut, 1e-6), 0.0, 1.0)
    strength *= inside
    return strength


def _place(
    cam: np.ndarray,
    box: tuple[int, int, int, int],
    origin: tuple[int, int],
    scale: tuple[float, float],
    size: tuple[int, int],
) -> np.ndarray:
    """The map (at `box` size) on a blank canvas of the overlay's `size`: resized once, to
    where the box falls after cropping at `origin` and scaling by (x, y) `scale`; not laid on
    a blank full-resolution crop first (an array of up to the whole photo's size)."""
    (y0, y1, x0, x1), (oy, ox), (fx, fy) = box, origin, scale
    w, h = size
    u0, u1 = min(w, round((x0 - ox) * fx)), min(w, round((x1 - ox) * fx))
    v0, v1 = min(h, round((y0 - oy) * fy)), min(h, round((y1 - oy) * fy))
    view = np.zeros((h, w), np.float32)
    if u1 > u0 and v1 > v0:
        view[v0:v1, u0:u1] = cv2.resize(cam, (u1 - u0, v1 - v0), interpolation=cv2.INTER_LINEAR)
    return view


def _support(x: np.ndarray, margin: int = 0) -> tuple[slice, slice]:
    """Rows and columns of the bounding box of x's nonzero pixels, widened by `margin` within
    the frame (empty where x is all zero)."""
    bx, by, bw, bh = cv2.boundingRect((x > 0).view(np.uint8))
    if not (bw and bh):
        return slice(0, 0), slice(0, 0)
    h, w = x.shape[:2]
    rows = slice(max(0, by - margin), min(h, by + bh + margin))
    return rows, slice(max(0, bx - margin), min(w, bx + bw + margin))


def _blur_near(x: np.ndarray, sigma: float) -> np.ndarray:
    """GaussianBlur of a map that is zero outside a small box, computed only on that box
    widened by twice the kernel's radius: the same values to float rounding (what the border
    rule reflects in there is zero too; measured: within 2e-7) at the cost of the box, not the
    frame."""
    r = 2 * ((round(sigma * 8 + 1) | 1) // 2)  # twice the radius OpenCV takes for float32
    sy, sx = _support(x, r)
    out = np.zeros_like(x)
    if sy.stop > sy.start:
        out[sy, sx] = cv2.GaussianBlur(x[sy, sx], (0, 0), sigmaX=sigma)
    return out


def _outline(lid: np.ndarray) -> list[np.ndarray]:
    """Contours of the measured region drawn for the person: the mask smoothed over ~1% of
    the picture, a calm line rather than every step and bump of the mask's edge (the
    measurement keeps them); specks under 0.2% of the picture left out. Smoothed at half size
    on the region's box only (the blur is far wider than a pixel: 0.4 ms instead of 1.8 at
    720 px), traced at full size."""
    sigma = OUTLINE_SMOOTH * max(lid.shape)
    sy, sx = _support(lid, int(np.ceil(3 * sigma)) + 2)
    if sy.stop == sy.start:
        return []
    box = lid[sy, sx]
    h, w = box.shape
    half = cv2.resize(box, (max(1, w // 2), max(1, h // 2)), interpolation=cv2.INTER_AREA)
    calm = cv2.resize(cv2.GaussianBlur(half, (0, 0), sigmaX=sigma / 2), (w, h))
    contours, _ = cv2.findContours(
        (calm > 0.5).astype(np.uint8),
        cv2.RETR_EXTERNAL,
        cv2.CHAIN_APPROX_SIMPLE,
        offset=(sx.start, sy.start),
    )
    return [c for c in contours if cv2.contourArea(c) >= 0.002 * lid.size]


def _legend(out: np.ndarray) -> None:
    """A small wordless key in the bottom-left corner: the outline swatch and the colour."""
    h, w = out.shape[:2]
    unit = max(6, round(min(h, w) / 40))
    pad, sw = unit, 3 * unit
    x0, y1 = pad, h - pad
    y0, x1 = y1 - 2 * unit - pad, x0 + 2 * sw + 3 * pad
    panel = out[y0:y1, x0:x1].astype(np.float32)
    out[y0:y1, x0:x1] = (panel * 0.35).astype(np.uint8)  # dark, translucent backing
    cy = (y0 + y1) // 2
    lx0 = x0 + pad
    cv2.line(out, (lx0, cy), (lx0 + sw, cy), OUTLINE_RGB, max(2, unit // 3), cv2.LINE_AA)
    rx0 = lx0 + sw + pad
    cv2.rectangle(out, (rx0, cy - unit // 2 - 1), (rx0 + sw, cy + unit // 2 + 1), MAP_RGB, -1)


def overlay(
    rgb: np.ndarray,
    mask: np.ndarray,
    cam: np.ndarray,
    box: tuple[int, int, int, int],
    long_side: int = OVERLAY_LONG_SIDE,
) -> np.ndarray:
    """RGB image of the region around the conjunctiva, at phone size: the photo in its own
    colours, the measured region outlined, and the positive class-activation map (Grad-CAM
    convention: ReLU) shown translucent on its strongest regions only."""
    cy0, cy1, cx0, cx1 = _context_box(box, rgb.shape)
    rgb, mask = rgb[cy0:cy1, cx0:cx1], mask[cy0:cy1, cx0:cx1]

    # Scale first, so the blending below costs the same for a 640 px or a 4000 px photo.
    h, w = rgb.shape[:2]
    scale = min(long_side / max(h, w), MAX_UPSCALE)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    interp = cv2.INTER_AREA if scale < 0.5 else cv2.INTER_LINEAR
    rgb = cv2.resize(rgb, size, interpolation=interp)
    lid = cv2.resize(np.asarray(mask, np.float32), size, interpolation=cv2.INTER_LINEAR)
    np.clip(lid, 0.0, 1.0, out=lid)
    cam_view = _place(np.maximum(cam, 0.0), box, (cy0, cx0), (size[0] / w, size[1] / h), size)
    inside = lid > 0.5

    # The photo stays as it is inside the measured region, a little darker outside it (8-bit
    # blends in OpenCV: the same picture as float arithmetic at a fraction of the cost).
    soft = _blur_near(lid, 2.0)
    out = cv2.convertScaleAbs(rgb, alpha=DIM)
    sy, sx = _support(soft)
    out[sy, sx] = cv2.blendLinear(rgb[sy, sx], out[sy, sx], soft[sy, sx], 1.0 - soft[sy, sx])
    strength = _top_regions(cam_view, inside, SMOOTH * max(size))
    top = (strength > 0).astype(np.uint8)
    bx, by, bw, bh = cv2.boundingRect(top)
    if bw and bh:
        y0, y1, x0, x1 = by, by + bh, bx, bx + bw
        alpha = np.ascontiguousarray(MAP_OPACITY * strength[y0:y1, x0:x1])
        region = np.ascontiguousarray(out[y0:y1, x0:x1])
        # one plane per channel: numpy broadcasting a 3-tuple over the region took 1.3 ms
        colour = cv2.merge([np.full((bh, bw), v, np.uint8) for v in MAP_RGB])
        out[y0:y1, x0:x1] = cv2.blendLinear(colour, region, alpha, 1.0 - alpha)

    # Contours: yellow around the top regions, white around the measured region.
    contours, _ = cv2.findContours(top, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(out, contours, -1, MAP_RGB, 1, cv2.LINE_AA)
    thick = max(1, round(max(size) / 360))
    contours = _outline(lid)
    cv2.drawContours(out, contours, -1, OUTLINE_RGB, thick, cv2.LINE_AA)
    _legend(out)
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
