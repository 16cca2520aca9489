"""Quality gate: is this photo good enough to estimate haemoglobin from?

`assess(rgb, mask)` measures framing, focus, exposure, glare and colour cast of the
conjunctiva and returns a `Quality` whose checks carry the measured value and the threshold,
so the bot can say exactly why a photo should be retaken. Every threshold lives in `RULES`
(one row per check and measure; `conjunctiva_too_small` has two rows, share of frame and
pixels, and `colour_cast` one per mode).

Calibration (benchmarks/bench_intake.py reproduces it): >= 97% of the real CP-AnemiC
cut-outs pass in cut-out mode, while clearly degraded synthetic photos fail
(tests/test_quality.py). Real conjunctivas are smooth tissue and some CP-AnemiC cut-outs are
as detail-free as a heavily blurred photo, so the focus check only refuses photos whose
conjunctiva shows essentially no detail at the scale the model sees (blur of roughly a sixth
of the conjunctiva's size). A stricter focus check needs real full-eye photos to calibrate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np

from .result import Quality, QualityCheck

Mode = Literal["photo", "cutout", "both"]


@dataclass(frozen=True)
class Rule:
    """One row of the threshold table."""

    code: str  # stable, what the bot translates
    key: str  # which measured value (see `measure`)
    measure: str  # what that value is, in words (for people reading JSON and the docs)
    direction: Literal["min", "max"]  # min: value must be >= threshold; max: <= threshold
    threshold: float
    message: str
    modes: Mode = "both"


# The ONE table of thresholds. Values are calibrated, see the module docstring.
RULES: tuple[Rule, ...] = (
    Rule(
        "conjunctiva_not_found",
        "mask_fraction",
        "share of the frame covered by the conjunctiva mask",
        "min",
        0.002,
        "The inside of the lower eyelid was not found. Pull the lower eyelid down and "
        "photograph the pink inner part.",
    ),
    Rule(
        "conjunctiva_too_small",
        "mask_fraction",
        "share of the frame covered by the conjunctiva",
        "min",
        0.008,
        "The eyelid is too small in the photo. Move the camera closer.",
        "photo",
    ),
    Rule(
        "conjunctiva_too_small",
        "mask_pixels",
        "conjunctiva size in pixels",
        "min",
        2500,
        "The eyelid has too few pixels. Move closer or use a higher camera resolution.",
        "photo",
    ),
    Rule(
        "conjunctiva_cut_off",
        "outline_on_edge",
        "share of the conjunctiva outline lying on the photo edge",
        "max",
        0.05,
        "Part of the eyelid is cut off at the edge of the photo. Keep the whole eyelid "
        "inside the frame.",
        "photo",
    ),
    Rule(
        "blurry",
        "sharpness",
        "sharpness of detail inside the conjunctiva at a fixed scale (1 = no detail)",
        "min",
        1.05,
        "The photo is blurry. Hold the phone still, tap to focus on the eyelid and retake.",
    ),
    Rule(
        "too_dark",
        "median_luma",
        "median brightness of the conjunctiva (0-255)",
        "min",
        45.0,
        "The photo is too dark. Take it in daylight or with more light.",
    ),
    Rule(
        "too_bright",
        "median_luma",
        "median brightness of the conjunctiva (0-255)",
        "max",
        225.0,
        "The photo is too bright. Avoid direct sunlight or move the light further away.",
    ),
    Rule(
        "clipped",
        "clipped_share",
        "share of conjunctiva pixels with a channel at the limit (0 or 255)",
        "max",
        0.35,
        "Parts of the eyelid are burnt out or black. Use softer, even light.",
    ),
    Rule(
        "glare",
        "glare_share",
        "share of the conjunctiva covered by shiny white reflections",
        "max",
        0.05,
        "Light reflections cover the eyelid. Turn off the flash or change the angle.",
    ),
    Rule(
        "colour_cast",
        "frame_cast",
        "distance of the photo's average colour from natural light (CIELAB units)",
        "max",
        24.0,
        "The colours look tinted by the light. Use daylight, not coloured lamps.",
        "photo",
    ),
    Rule(
        "colour_cast",
        "hue_cast",
        "hue of the conjunctiva away from natural pink-red (degrees)",
        "max",
        30.0,
        "The colours look tinted by the light. Use daylight, not coloured lamps.",
        "cutout",
    ),
)

# Reference points for the colour-cast measures (not thresholds): the mean (a*, b*) of a whole
# eye-region photo under neutral light, and the hue band (degrees) of CP-AnemiC conjunctivas.
CAST_REFERENCE_AB = (12.0, 14.0)
CONJUNCTIVA_HUE_BAND = (10.0, 48.0)

MASK_LEVEL = 0.5
BLUR_SCALE = 64.0  # sqrt(mask area) after resampling: roughly the regressor's view
BLUR_SIGMAS = (1.5, 3.0)
CLIP_HIGH, CLIP_LOW = 254, 2
GLARE_MIN_MAX, GLARE_MIN_WHITENESS, GLARE_ABOVE_MEDIAN = 240.0, 0.85, 30.0
MAX_STAT_PIXELS = 8_000  # colour statistics use a strided sample at most this large

CHECK_CODES: tuple[str, ...] = tuple(dict.fromkeys(r.code for r in RULES))


def rules_for(cutout: bool) -> tuple[Rule, ...]:
    mode = "cutout" if cutout else "photo"
    return tuple(r for r in RULES if r.modes in ("both", mode))


# ---------------------------------------------------------------------------------------------


def assess(rgb: np.ndarray, mask: np.ndarray, *, cutout: bool = False) -> Quality:
    """Run every check for this mode; `mask` is a float [0, 1] conjunctiva map at rgb's HxW.

    In cut-out mode (CP-AnemiC style RGBA, mask = alpha/255) the framing checks are skipped.
    A value of None means "not measurable" (e.g. no conjunctiva): that check passes and
    `conjunctiva_not_found` carries the verdict.
    """
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError("rgb must be HxWx3 uint8")
    if mask.shape != rgb.shape[:2]:
        raise ValueError(f"mask shape {mask.shape} != image shape {rgb.shape[:2]}")
    values = measure(rgb, mask, cutout=cutout)
    checks: list[QualityCheck] = []
    for rule in rules_for(cutout):
        v = values.get(rule.key)
        if v is None:
            passed = True
        elif rule.direction == "min":
            passed = v >= rule.threshold
        else:
            passed = v <= rule.threshold
        checks.append(
            QualityCheck(
                code=rule.code,
                passed=bool(passed),
                value=None if v is None else round(float(v), 4),
                threshold=rule.threshold,
                direction=rule.direction,
                message=rule.message,
            )
        )
    return Quality(ok=all(c.passed for c in checks), checks=checks)


def measure(rgb: np.ndarray, mask: np.ndarray, *, cutout: bool = False) -> dict[str, float | None]:
    """Every measured value by Rule.key. Exposed for calibration and the benchmark."""
    h, w = rgb.shape[:2]
    if mask.dtype != np.float32:
        mask = mask.astype(np.float32)  # float64 from numpy maths, bool from tests
    # Framing needs no more than ~320 px: count and locate on a nearest-neighbour subsample,
    # then threshold the full-resolution mask only inside the conjunctiva's box.
    k = max(1, max(h, w) // 320)
    small = mask if k == 1 else np.ascontiguousarray(mask[::k, ::k])
    ms = _binary(small)
    area = cv2.countNonZero(ms) * (h * w) / float(ms.size)
    out: dict[str, float | None] = {
        "mask_fraction": area / float(h * w),
        "mask_pixels": float(area),
    }
    if not cutout:
        out["outline_on_edge"] = _cut_off(ms) if area else None
        out["frame_cast"] = _frame_cast(rgb)
    if area < 16:
        # Nothing to measure colour or focus on; but a dark or burnt-out frame is often WHY
        # nothing was found, and "too dark" is the hint that helps the person retake.
        if not cutout:
            frame = cv2.cvtColor(rgb[::k, ::k], cv2.COLOR_RGB2GRAY)
            out["median_luma"] = float(np.median(frame))
        return out

    sx, sy, sw, sh = cv2.boundingRect(ms)
    pad = k + 4  # the subsample may miss up to k-1 px; sharpness wants 4 px of context
    x0, y0 = max(0, sx * k - pad), max(0, sy * k - pad)
    x1, y1 = min(w, (sx + sw) * k + pad), min(h, (sy + sh) * k + pad)
    region, mregion = rgb[y0:y1, x0:x1], _binary(mask[y0:y1, x0:x1])
    full_area = cv2.countNonZero(mregion)
    if full_area < 16:
        return out
    x, y, bw, bh = cv2.boundingRect(mregion)
    pix = _sample(region[y : y + bh, x : x + bw], mregion[y : y + bh, x : x + bw])
    luma = pix @ np.array([0.299, 0.587, 0.114], np.float32)
    out["median_luma"] = median_luma = float(np.median(luma))
    r, g, b = pix[:, 0], pix[:, 1], pix[:, 2]
    hi, lo = np.maximum(np.maximum(r, g), b), np.minimum(np.minimum(r, g), b)
    out["clipped_share"] = float(np.mean((hi >= CLIP_HIGH) | (hi <= CLIP_LOW)))
    # Specular reflections: near-white AND well above the conjunctiva's own brightness, so a
    # pale (anaemic) conjunctiva is not mistaken for glare.
    whiteness = lo / np.maximum(hi, 1.0)
    glare = (
        (hi >= GLARE_MIN_MAX)
        & (whiteness >= GLARE_MIN_WHITENESS)
        & (luma >= median_luma + GLARE_ABOVE_MEDIAN)
    )
    out["glare_share"] = float(np.mean(glare))
    if cutout:
        out["hue_cast"] = _hue_cast(pix, luma)
    out["sharpness"] = _sharpness(region, mregion, (x, y, bw, bh), full_area)
    return out


# ---------------------------------------------------------------------------------------------
# Measures


def _binary(mask: np.ndarray) -> np.ndarray:
    """uint8 0/1 mask (one pass; cv2 is several times faster than numpy here)."""
    return cv2.compare(mask, MASK_LEVEL, cv2.CMP_GT) // 255  # type: ignore[call-overload]


def _sample(crop: np.ndarray, mcrop: np.ndarray) -> np.ndarray:
    """Masked pixels as float32 Nx3, strided so large masks cost the same as small ones."""
    n = cv2.countNonZero(mcrop)
    step = max(1, math.ceil(math.sqrt(n / MAX_STAT_PIXELS)))
    c = np.ascontiguousarray(crop[::step, ::step]).reshape(-1, 3)
    idx = np.flatnonzero(mcrop[::step, ::step])
    return c[idx].astype(np.float32)


def _cut_off(m: np.ndarray) -> float:
    """Share of the mask outline on the frame border, on a mask of at most 256 px."""
    h, w = m.shape
    s = min(1.0, 256.0 / max(h, w))
    if s < 1.0:
        size = (max(1, round(w * s)), max(1, round(h * s)))
        small = cv2.resize(m, size, interpolation=cv2.INTER_NEAREST)
    else:
        small = m
    eroded = cv2.erode(small, np.ones((3, 3), np.uint8), borderType=cv2.BORDER_CONSTANT)
    outline = cv2.countNonZero(small - eroded)  # border-touching pixels are outline too
    border = (int(small[0].sum()) + int(small[-1].sum()) + int(small[1:-1, 0].sum())) + int(
        small[1:-1, -1].sum()
    )
    return border / max(outline, 1)


def _lab_ab(rgb_mean: np.ndarray) -> tuple[float, float]:
    px = np.asarray(rgb_mean, np.float32).reshape(1, 1, 3) / 255.0
    lab = cv2.cvtColor(px, cv2.COLOR_RGB2LAB)[0, 0]
    return float(lab[1]), float(lab[2])


def _frame_cast(rgb: np.ndarray) -> float:
    """Grey-world on the whole photo: distance of its mean (a*, b*) from neutral-skin light.

    Skin and sclera dominate an eye-region photo, so the reference is warm, not grey; the
    threshold only catches strong casts (blue/green lamps, heavy tungsten)."""
    h, w = rgb.shape[:2]
    s = min(1.0, 80.0 / max(h, w))  # an 80-px nearest-neighbour sample is plenty for a mean
    size = (max(1, round(w * s)), max(1, round(h * s)))
    small = cv2.resize(rgb, size, interpolation=cv2.INTER_NEAREST)
    a, b = _lab_ab(np.asarray(cv2.mean(small)[:3], np.float32))
    return math.hypot(a - CAST_REFERENCE_AB[0], b - CAST_REFERENCE_AB[1])


def _hue_cast(pix: np.ndarray, luma: np.ndarray) -> float:
    """Cut-outs hold only conjunctiva: degrees its mean hue lies outside the natural band."""
    keep = luma < 220.0  # leave highlights out of the hue
    mean = pix[keep].mean(axis=0) if keep.sum() > 10 else pix.mean(axis=0)
    a, b = _lab_ab(mean)
    if math.hypot(a, b) < 4.0:
        return 0.0  # nearly grey (very pale): hue is meaningless, exposure checks cover it
    hue = math.degrees(math.atan2(b, a))
    lo, hi = CONJUNCTIVA_HUE_BAND
    return max(lo - hue, hue - hi, 0.0)


def _gauss(x: np.ndarray, sigma: float) -> np.ndarray:
    return cv2.GaussianBlur(x, (0, 0), sigma, borderType=cv2.BORDER_REFLECT)


def _grad_mag(x: np.ndarray) -> np.ndarray:
    gx = cv2.Sobel(x, cv2.CV_32F, 1, 0, ksize=3, scale=0.125)
    gy = cv2.Sobel(x, cv2.CV_32F, 0, 1, ksize=3, scale=0.125)
    return cv2.magnitude(gx, gy)


def _blockiness(luma: np.ndarray, m: np.ndarray) -> float:
    """How much more the luma steps on one 8-px grid phase than on the others (JPEG blocks).

    1 for natural images; >> 1 when heavy compression left flat 8x8 blocks. About 48 rows
    and 48 columns are enough for a statistic over hundreds of blocks."""
    worst = 1.0
    rs, cs = max(1, luma.shape[0] // 48), max(1, luma.shape[1] // 48)
    for img, msk in ((luma[::rs], m[::rs]), (luma[:, ::cs].T, m[:, ::cs].T)):
        img = img.astype(np.float32)
        d = np.abs(np.diff(img, axis=1))
        ok = (msk[:, 1:] & msk[:, :-1]).astype(np.float32)  # both pixels inside the mask
        n = d.shape[1] // 8 * 8
        if n < 16:
            continue
        sums = (d[:, :n] * ok[:, :n]).sum(axis=0).reshape(-1, 8).sum(axis=0)
        counts = ok[:, :n].sum(axis=0).reshape(-1, 8).sum(axis=0)
        if counts.min() < 20:
            continue
        per_phase = sums / counts
        worst = max(worst, float(per_phase.max() / (np.median(per_phase) + 0.05)))
    return worst


def _sharpness(
    rgb: np.ndarray,
    m: np.ndarray,
    box: tuple[int, int, int, int],
    area: int,
) -> float | None:
    """Scale-normalised, noise- and blocking-robust sharpness of the conjunctiva.

    The conjunctiva is resampled so sqrt(area) = BLUR_SCALE (roughly the resolution the
    regressor sees) and the 99th-percentile gradient at sigma 1.5 is compared with that at
    sigma 3. A sharp step gives 2, a sharp thin line up to 4, blurred or detail-free tissue
    tends to 1. Sensor noise is estimated (robust Laplacian) and its expected gradient removed;
    if most luma steps sit on an 8-px JPEG grid, the excess over 1 is scaled down accordingly.

    Only the inside counts: the outside is filled with a smooth continuation of the inside, so
    neither a cut-out's alpha border nor a photo's lid margin and lashes count as detail.
    """
    x, y, bw, bh = box
    s = BLUR_SCALE / math.sqrt(area)
    f = int(1.0 / s) if s < 1 else 1  # integer pre-shrink factor (see below)
    pad = 4
    H, W = m.shape
    x0, y0, x1, y1 = max(0, x - pad), max(0, y - pad), min(W, x + bw + pad), min(H, y + bh + pad)
    y1, x1 = y0 + (y1 - y0) // f * f, x0 + (x1 - x0) // f * f
    crop = rgb[y0:y1, x0:x1]
    mc = m[y0:y1, x0:x1]
    # BT.601 luma: what JPEG encodes as Y, so chroma blocks (16 px) do not leak in.
    luma8 = cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY)
    block = _blockiness(luma8, mc)
    luma = luma8.astype(np.float32)

    size = (max(8, round(crop.shape[1] * s)), max(8, round(crop.shape[0] * s)))
    g: np.ndarray = luma
    if f >= 2:  # box-average by an integer factor first: OpenCV's fast INTER_AREA path
        g = cv2.resize(g, None, fx=1.0 / f, fy=1.0 / f, interpolation=cv2.INTER_AREA)
    g = cv2.resize(g, size, interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
    mi: np.ndarray = cv2.resize(mc.astype(np.float32), size, interpolation=cv2.INTER_LINEAR)
    mi = (mi > 0.5).astype(np.uint8)
    sa, sc = BLUR_SIGMAS
    # Fill outside the mask with a smooth continuation of the inside, then keep away from the
    # outline by twice the coarse scale.
    mf = mi.astype(np.float32)
    fill = _gauss(g * mf, 6.0) / np.maximum(_gauss(mf, 6.0), 1e-3)
    g = g * mf + fill * (1.0 - mf)
    r = round(2 * sc)
    sel = cv2.erode(mi, np.ones((2 * r + 1, 2 * r + 1), np.uint8))
    if cv2.countNonZero(sel) < 30:
        sel = cv2.erode(mi, np.ones((3, 3), np.uint8))
    if cv2.countNonZero(sel) < 30:
        return None
    on = sel.astype(bool)
    ga = _grad_mag(_gauss(g, sa))
    gc = _grad_mag(_gauss(g, sc))
    pa, pc = np.percentile(ga[on], 99), np.percentile(gc[on], 99)
    # Noise: estimated at full resolution where it is white, scaled to the fixed scale; the
    # 99th percentile of white-noise gradient magnitude at each scale is removed in quadrature.
    sn = _noise_sigma(luma8, mc) * min(1.0, s)  # area-averaging 1/s x 1/s pixels
    na = 3.03 * sn / (math.sqrt(8 * math.pi) * sa * sa)
    nc = 3.03 * sn / (math.sqrt(8 * math.pi) * sc * sc)
    pa = math.sqrt(max(pa * pa - na * na, 0.0))
    pc = math.sqrt(max(pc * pc - nc * nc, 0.0))
    if pc < 0.05:  # flat to within a twentieth of a grey level: no detail at all
        return 1.0
    ratio = pa / pc
    return 1.0 + (ratio - 1.0) * min(1.0, (2.0 / block) ** 2)


def _noise_sigma(luma: np.ndarray, m: np.ndarray) -> float:
    """Robust sensor-noise sigma: Immerkaer's 3x3 Laplacian-of-differences with a median
    instead of a mean (so edges and vessels do not count), on ~24 rows inside the mask."""
    h = luma.shape[0]
    if h < 3 or luma.shape[1] < 3:
        return 0.0
    rows = np.arange(1, h - 1, max(1, (h - 2) // 24))
    a, b, c = (luma[rows + o].astype(np.float32) for o in (-1, 0, 1))

    def d2(x: np.ndarray) -> np.ndarray:
        return x[:, :-2] - 2.0 * x[:, 1:-1] + x[:, 2:]

    lap = d2(a) - 2.0 * d2(b) + d2(c)  # the separable kernel [1 -2 1] x [1 -2 1]
    inside = m[rows - 1] & m[rows] & m[rows + 1]
    inside = (inside[:, :-2] & inside[:, 1:-1] & inside[:, 2:]).astype(bool)
    vals = lap[inside]
    if vals.size < 50:
        return 0.0
    return float(np.median(np.abs(vals))) * 1.4826 / 6.0


__all__ = ["CHECK_CODES", "RULES", "Rule", "assess", "measure", "rules_for"]
