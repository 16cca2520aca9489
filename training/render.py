"""Renderer of smartphone photos of a pulled-down lower eyelid, with the conjunctiva mask.

No real full-eye photos with masks are available offline, so the segmentation model learns from
these renderings: a conjunctiva (a real CP-AnemiC cut-out, or a procedural one for committed
examples and tests) is placed into a drawn eye region — skin across the Fitzpatrick range,
sclera with vessels, an iris looking up, lashes, the everted lid with fornix and lid margin, and
a fingertip pulling the lid down — then lit, rotated, framed, blurred, noised and JPEG-coded
like a phone photo. The scene is built around the cut-out's own outline, so the mask is the
cut-out's soft alpha, exactly.
"""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np

from .degrade import jpeg_roundtrip

# Skin tones (sRGB) spanning Fitzpatrick I-VI; a render interpolates between neighbours.
FITZPATRICK_RGB = np.array(
    [
        [238, 206, 185],
        [222, 180, 152],
        [194, 146, 112],
        [156, 106, 74],
        [112, 72, 48],
        [68, 44, 32],
    ],
    dtype=np.float32,
)

Array = np.ndarray


# ----------------------------------------------------------------------------------------------
# small drawing helpers (float32 images in 0..255, masks in 0..1). Work happens inside regions
# of interest (y0, y1, x0, x1) so that a render stays cheap at training resolution.

Roi = tuple[int, int, int, int]


def _lowfreq(rng: np.random.Generator, h: int, w: int, cells: int) -> Array:
    """Smooth random field in about [-1, 1] with `cells` blobs along the longer side."""
    gh = max(2, round(cells * h / max(h, w)))
    gw = max(2, round(cells * w / max(h, w)))
    g = rng.standard_normal((gh, gw), dtype=np.float32)
    return cv2.resize(g, (w, h), interpolation=cv2.INTER_CUBIC) * 0.6


def _roi(x_lo: float, x_hi: float, y_lo: float, y_hi: float, pad: float, shape) -> Roi | None:
    h, w = shape[:2]
    y0, y1 = max(0, int(y_lo - pad)), min(h, math.ceil(y_hi + pad) + 1)
    x0, x1 = max(0, int(x_lo - pad)), min(w, math.ceil(x_hi + pad) + 1)
    return (y0, y1, x0, x1) if y1 > y0 and x1 > x0 else None


def _pts_roi(pts: Array, pad: float, shape) -> Roi | None:
    return _roi(pts[:, 0].min(), pts[:, 0].max(), pts[:, 1].min(), pts[:, 1].max(), pad, shape)


def _poly_mask(roi: Roi, pts: Array) -> Array:
    """Anti-aliased filled polygon (canvas coordinates) rasterised into the roi."""
    y0, y1, x0, x1 = roi
    m = np.zeros((y1 - y0, x1 - x0), np.uint8)
    q = np.round((pts - np.array([x0, y0], np.float32)) * 16).astype(np.int32)
    cv2.fillPoly(m, [q], 255, cv2.LINE_AA, shift=4)
    return m.astype(np.float32) * (1.0 / 255.0)


def _blend(img: Array, colour, mask: Array, roi: Roi | None = None) -> None:
    """In place: img = img * (1 - mask) + colour * mask inside roi (mask, colour roi-sized)."""
    sub = img if roi is None else img[roi[0] : roi[1], roi[2] : roi[3]]
    sub += (np.asarray(colour, np.float32) - sub) * mask[..., None]


def _smooth1d(v: Array, k: int) -> Array:
    if k < 2 or v.size < 3:
        return v
    k = min(k, v.size)
    pad = np.pad(v, (k, k), mode="edge")
    ker = np.ones(k, np.float32) / k
    return np.convolve(pad, ker, mode="same")[k:-k].astype(np.float32)


def _curve_pts(x: Array, y: Array) -> Array:
    return np.stack([np.asarray(x, np.float32), np.asarray(y, np.float32)], axis=1)


def _polyline(layer: Array, pts: Array, value: int, thick: int, offset=(0, 0)) -> None:
    q = np.round((np.asarray(pts, np.float32) - np.array(offset, np.float32)) * 4)
    cv2.polylines(
        layer, [q.astype(np.int32)], False, int(value), max(1, thick), cv2.LINE_AA, shift=2
    )


# ----------------------------------------------------------------------------------------------
# conjunctiva


def procedural_conjunctiva(rng: np.random.Generator, pallor: float) -> Array:
    """A synthetic palpebral-conjunctiva cut-out (premultiplied RGBA uint8, soft alpha).

    `pallor` 0 = well-perfused red, 1 = very pale. Shaped like the CP-AnemiC cut-outs: a
    crescent with horns pointing up, about 3:1 wide, vessels, grain and small wet highlights.
    """
    pallor = float(np.clip(pallor, 0.0, 1.0))
    w = int(rng.integers(300, 420))
    h = int(w * rng.uniform(0.30, 0.42))
    ss = 2  # supersample the outline for a soft, smooth edge
    u = np.linspace(0.0, 1.0, 64)
    s = 2 * u - 1
    sag = rng.uniform(0.2, 0.4)  # how far the middle of the top edge hangs below the horns
    top = h * (0.04 + sag * (1 - s**2) ** rng.uniform(0.8, 1.4))
    thick = h * rng.uniform(0.4, 0.6) * np.sin(np.pi * u) ** rng.uniform(0.55, 0.9)
    skew = rng.uniform(-0.12, 0.12) * h * s
    top = top + skew
    bot = np.minimum(top + thick, h * 0.97)
    xs = u * (w - 1)
    pts = np.concatenate([_curve_pts(xs, top), _curve_pts(xs[::-1], bot[::-1])])
    alpha = _poly_mask((0, h * ss, 0, w * ss), pts * ss)
    alpha = cv2.resize(alpha, (w, h), interpolation=cv2.INTER_AREA)
    alpha = cv2.GaussianBlur(alpha, (0, 0), 1.0)

    red = np.array([178, 52, 58], np.float32)
    pale = np.array([232, 178, 170], np.float32)
    base = red * (1 - pallor) + pale * pallor + rng.normal(0, 6, 3)
    img = np.empty((h, w, 3), np.float32)
    img[:] = base
    # depth: deeper red toward the fornix (top), lighter toward the lid margin
    yy = np.linspace(0, 1, h, dtype=np.float32)[:, None, None]
    img *= 0.92 + 0.14 * yy
    img *= (1.0 + 0.1 * _lowfreq(rng, h, w, 5) + 0.05 * _lowfreq(rng, h, w, 20))[..., None]
    # paler streaks and a whitish mucous sheen in places
    streaks = np.clip(_lowfreq(rng, max(2, h // 6), w, 30), 0, None)
    streaks = cv2.resize(streaks, (w, h), interpolation=cv2.INTER_LINEAR)
    _blend(img, np.float32(235), streaks * rng.uniform(0.05, 0.18))
    # vessels: thin, redder, darker meandering lines
    ves = np.zeros((h, w), np.uint8)
    for _ in range(int(rng.integers(8, 22))):
        x, y = rng.uniform(0, w), rng.uniform(0, h)
        ang = rng.uniform(0, 2 * np.pi)
        line = []
        for _ in range(int(rng.integers(4, 10))):
            line.append((x, y))
            ang += rng.normal(0, 0.5)
            step = rng.uniform(6, 18)
            x, y = x + step * math.cos(ang), y + step * math.sin(ang) * 0.5
        cv2.polylines(ves, [np.int32(line)], False, int(rng.integers(90, 200)), 1, cv2.LINE_AA)
    vm = cv2.GaussianBlur(ves.astype(np.float32) / 255.0, (0, 0), 0.6) * (1.0 - 0.6 * pallor)
    _blend(img, base * np.array([0.75, 0.35, 0.4], np.float32), vm * 0.8)
    img += rng.normal(0, 3.0, img.shape).astype(np.float32)  # mucosal grain
    # small wet highlights
    for _ in range(int(rng.integers(0, 4))):
        hl = np.zeros((h, w), np.float32)
        c = (int(rng.uniform(0.2, 0.8) * w), int(rng.uniform(0.3, 0.8) * h))
        cv2.ellipse(
            hl,
            c,
            (int(rng.uniform(3, 12)), int(rng.uniform(1, 4))),
            rng.uniform(-20, 20),
            0,
            360,
            1.0,
            -1,
            cv2.LINE_AA,
        )
        hl = cv2.GaussianBlur(hl, (0, 0), 1.5)
        img += hl[..., None] * rng.uniform(30, 90)
    img = np.clip(img, 0, 255) * alpha[..., None]
    rgba = np.dstack([img, alpha * 255.0])
    return np.clip(rgba + 0.5, 0, 255).astype(np.uint8)


def _cutout_profile(alpha: Array) -> tuple[int, int, Array, Array]:
    """First/last covered column and per-column top/bottom rows of the alpha > 0.5 region."""
    cov = alpha > 0.5
    cols = np.nonzero(cov.any(axis=0))[0]
    if cols.size < 2:
        raise ValueError("conjunctiva cut-out has an empty alpha mask")
    c0, c1 = int(cols[0]), int(cols[-1])
    sub = cov[:, c0 : c1 + 1]
    h = sub.shape[0]
    has = sub.any(axis=0)
    top = np.where(has, sub.argmax(axis=0), np.nan).astype(np.float32)
    bot = np.where(has, h - 1 - sub[::-1].argmax(axis=0), np.nan).astype(np.float32)
    idx = np.arange(top.size)
    top = np.interp(idx, idx[has], top[has]).astype(np.float32)
    bot = np.interp(idx, idx[has], bot[has]).astype(np.float32)
    return c0, c1, top, bot


# ----------------------------------------------------------------------------------------------
# scene


def _skin_tone(rng: np.random.Generator, fitzpatrick: float | None) -> Array:
    f = rng.uniform(0, 5) if fitzpatrick is None else float(np.clip(fitzpatrick - 1, 0, 5))
    i = min(int(f), 4)
    t = f - i
    tone = FITZPATRICK_RGB[i] * (1 - t) + FITZPATRICK_RGB[i + 1] * t
    return tone * rng.uniform(0.97, 1.03, 3).astype(np.float32)


def _lashes(
    layer: Array,
    rng: np.random.Generator,
    xs: Array,
    ys: Array,
    n: int,
    length: float,
    direction: float,
    spread: float,
    thick: int,
) -> None:
    """Draw `n` curved lashes rooted along the curve (xs, ys) into a uint8 layer.

    direction: -1 lashes point up (upper lid), +1 down (lower lid).
    """
    mid = (xs[0] + xs[-1]) / 2
    half = max(1.0, (xs[-1] - xs[0]) / 2)
    j = rng.integers(0, xs.size, n)
    x0, y0 = xs[j], ys[j]
    out = (x0 - mid) / half  # -1 .. 1 across the lid: lashes fan outwards
    ln = length * rng.uniform(0.55, 1.1, n) * (1 - 0.45 * np.abs(out) ** 3)
    ang = direction * np.pi / 2 - direction * out * spread + rng.normal(0, 0.12, n)
    dy = np.sin(ang)
    dx = out * np.abs(np.cos(ang)) + rng.normal(0, 0.1, n)
    curl = rng.uniform(0.1, 0.35, n) * ln
    # quadratic Bezier from the root, through a control point, to the curled tip
    p0 = np.stack([x0, y0], 1)
    p1 = np.stack([x0 + dx * ln * 0.5, y0 + dy * ln * 0.6], 1)
    p2 = np.stack([x0 + dx * ln + out * curl, y0 + dy * ln * 0.8], 1)
    t = np.linspace(0, 1, 5, dtype=np.float32)[None, :, None]
    pts = (1 - t) ** 2 * p0[:, None] + 2 * (1 - t) * t * p1[:, None] + t**2 * p2[:, None]
    pts = np.round(pts * 4).astype(np.int32)
    shade = rng.integers(0, 3, n)
    for k, value in enumerate((150, 200, 255)):
        sel = pts[shade == k]
        if len(sel):
            cv2.polylines(layer, list(sel), False, value, thick, cv2.LINE_AA, shift=2)


def _finger(
    img: Array,
    rng: np.random.Generator,
    tip: tuple[float, float],
    angle: float,
    width: float,
    tone: Array,
) -> tuple[Roi, Array] | None:
    """A fingertip (back of the finger, nail towards the camera) reaching in from outside.

    Returns (roi, coverage mask in the roi) so the caller can occlude what lies beneath.
    """
    h, w = img.shape[:2]
    tx, ty = tip
    ux, uy = math.cos(angle), math.sin(angle)  # axis direction from tip towards the hand
    r = width / 2
    cx, cy = tx + ux * r, ty + uy * r
    far = 2.0 * (h + w)
    fx, fy = cx + ux * far, cy + uy * far
    # clip the finger's far end to the canvas box (plus a margin) to bound the roi
    t_exit = far
    for d, lo, hi, c in ((ux, -r, w + r, cx), (uy, -r, h + r, cy)):
        if abs(d) > 1e-6:
            t_exit = min(t_exit, max((lo - c) / d, (hi - c) / d))
    fx, fy = cx + ux * t_exit, cy + uy * t_exit
    pad = width * 0.6
    roi = _roi(min(tx, fx) - r, max(tx, fx) + r, min(ty, fy) - r, max(ty, fy) + r, pad, img.shape)
    if roi is None:
        return None
    y0, y1, x0, x1 = roi
    fm = np.zeros((y1 - y0, x1 - x0), np.uint8)
    _polyline(fm, [(cx, cy), (fx, fy)], 255, round(width), offset=(x0, y0))
    mask = fm.astype(np.float32) * (1.0 / 255.0)
    sub = img[y0:y1, x0:x1]
    # soft contact shadow on the skin around the finger (blurred at quarter resolution)
    q = cv2.resize(mask, ((x1 - x0 + 3) // 4, (y1 - y0 + 3) // 4), interpolation=cv2.INTER_AREA)
    q = cv2.GaussianBlur(q, (0, 0), max(0.5, width * 0.15 / 4))
    sh = cv2.resize(q, (x1 - x0, y1 - y0), interpolation=cv2.INTER_LINEAR)
    sub *= (1.0 - 0.4 * sh)[..., None]
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    d = ((xx - cx) * -uy + (yy - cy) * ux) / r  # -1 .. 1 across the finger
    along = (xx - cx) * ux + (yy - cy) * uy  # 0 at the centre of the tip's round end
    shade = np.clip(1.0 - 0.5 * np.clip(np.abs(d), 0, 1) ** 2.2, 0.35, 1.0)
    tip_round = np.clip(-along / r, 0, 1)
    shade *= 1.0 - 0.25 * tip_round**2
    ftone = (tone * np.array([1.05, 0.96, 0.94], np.float32) * rng.uniform(0.95, 1.1)).astype(
        np.float32
    )
    tex = 1 + 0.05 * _lowfreq(rng, y1 - y0, x1 - x0, 8)
    cr = np.zeros_like(fm)
    for k in range(int(rng.integers(1, 4))):  # knuckle creases across the finger
        pos = width * (1.5 + 0.22 * k + rng.uniform(-0.1, 0.1))
        px, py = cx + ux * pos, cy + uy * pos
        ends = [(px - uy * r, py + ux * r), (px + uy * r, py - ux * r)]
        _polyline(cr, ends, int(rng.integers(40, 90)), round(0.03 * width), offset=(x0, y0))
    tex *= 1 - cr.astype(np.float32) * (1.0 / 255.0)
    fcol = ftone * (shade * tex)[..., None]
    _blend(img, fcol, mask, roi)
    # nail: a rounded plate near the tip, pinker and lighter than the skin
    nm = np.zeros_like(fm)
    ncx, ncy = tx + ux * width * 0.45, ty + uy * width * 0.45
    axes = (round(width * 0.3 * 4), round(width * 0.25 * 4))
    cv2.ellipse(
        nm,
        (round((ncx - x0) * 4), round((ncy - y0) * 4)),
        axes,
        math.degrees(angle),
        0,
        360,
        255,
        -1,
        cv2.LINE_AA,
        shift=2,
    )
    nmask = nm.astype(np.float32) * (1.0 / 255.0) * mask
    nail = ftone * 0.7 + np.array([222, 178, 172], np.float32) * 0.3
    ncol = nail * shade[..., None]
    free = np.clip(1 - (along + 0.5 * r) / (0.18 * width), 0, 1)[..., None]  # whitish free edge
    ncol = ncol * (1 - 0.3 * free) + np.float32(225 * 0.3) * free
    _blend(img, ncol, nmask * 0.75, roi)
    hl = np.clip(1 - np.abs(d + 0.35) / 0.12, 0, 1) * nmask
    sub += hl[..., None] * rng.uniform(15, 50)
    return roi, mask


def _light(rng: np.random.Generator, strength: tuple[float, float]) -> tuple[Array, float]:
    """(RGB gains of the light colour, exposure factor)."""
    warmth = rng.uniform(-1, 1)  # -1 cool daylight/LED, +1 warm tungsten
    gains = np.array(
        [1 + 0.1 * warmth, 1.0, 1 - (0.25 if warmth > 0 else 0.1) * warmth], np.float32
    )
    gains *= rng.uniform(0.98, 1.02, 3).astype(np.float32)  # slight green/magenta casts
    gains /= gains.mean()
    return gains, float(rng.uniform(*strength))


def _coarse(rng_field: Array, shape) -> Array:
    return cv2.resize(rng_field, (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)


def render_eye_photo(
    rng: np.random.Generator,
    conjunctiva_rgba: Array | None = None,
    *,
    size: tuple[int, int] = (960, 1280),
    pallor: float | None = None,
    fitzpatrick: float | None = None,
    exposure: tuple[float, float] = (0.55, 1.2),
    blur_sigma: float | None = None,
    noise_sigma: float | None = None,
    jpeg_quality: int | None = None,
    max_rotation: float = 25.0,
    eye_scale: tuple[float, float] = (0.45, 0.85),
    glare: bool | None = None,
    finger: bool | None = None,
) -> tuple[Array, Array]:
    """Render one photo of a pulled-down lower eyelid.

    conjunctiva_rgba: a cut-out (HxWx4 uint8 RGBA, mask in alpha, RGB black outside as in
    CP-AnemiC); None draws a procedural one with `pallor` (random if None).
    size: (height, width) of the photo. The other keywords pin a random factor (None = random);
    eye_scale is the conjunctiva's width as a fraction of the photo's (framing).
    Returns (RGB uint8 HxWx3 photo, float32 HxW mask in [0, 1] of the conjunctiva).
    """
    H, W = size
    if conjunctiva_rgba is None:
        conjunctiva_rgba = procedural_conjunctiva(
            rng, rng.uniform(0, 1) if pallor is None else pallor
        )
    theta = math.radians(rng.uniform(-max_rotation, max_rotation))
    cw = math.ceil(W * abs(math.cos(theta)) + H * abs(math.sin(theta))) + 4
    ch = math.ceil(W * abs(math.sin(theta)) + H * abs(math.cos(theta))) + 4
    shape = (ch, cw)

    # --- conjunctiva: scale to its width in the photo, slight anisotropic stretch
    a0 = conjunctiva_rgba[..., 3].astype(np.float32) / 255.0
    c0, c1, _, _ = _cutout_profile(a0)
    crop = conjunctiva_rgba[:, c0 : c1 + 1].astype(np.float32)
    target_w = min(W, H * 1.3) * rng.uniform(*eye_scale)
    sx = target_w / crop.shape[1]
    sy = sx * rng.uniform(0.8, 1.25)
    fit = min(1.0, 0.45 * H / (crop.shape[0] * sy))  # tall cut-outs: leave room for the eye
    sx, sy = sx * fit, sy * fit
    cw_px = max(8, round(crop.shape[1] * sx))
    chh = max(4, round(crop.shape[0] * sy))
    conj = cv2.resize(crop, (cw_px, chh), interpolation=cv2.INTER_AREA)
    calpha = np.clip(conj[..., 3] / 255.0, 0, 1)
    conj_rgb_pm = conj[..., :3]  # premultiplied: the cut-outs are black outside the mask
    p0, p1, top, bot = _cutout_profile(calpha)
    top = _smooth1d(top, max(3, cw_px // 25))
    bot = _smooth1d(bot, max(3, cw_px // 25))
    u = float(cw_px)  # scene unit: the conjunctiva's width in pixels

    # placement in the canonical canvas (eye horizontal) with a framing offset
    ox = (cw - cw_px) / 2 + rng.uniform(-0.18, 0.18) * W
    oy = ch / 2 - chh * 0.5 + rng.uniform(-0.1, 0.25) * H
    ox = float(np.clip(ox, (cw - W) / 2 + 2, (cw + W) / 2 - cw_px - 2))
    oy = float(np.clip(oy, (ch - H) / 2 + 2, (ch + H) / 2 - chh - 2))
    ox = float(round(min(max(ox, 0.0), cw - cw_px)))
    oy = float(round(min(max(oy, 0.0), ch - chh)))
    xs = ox + np.arange(p0, p1 + 1, dtype=np.float32)
    T, B = oy + top, oy + bot
    step = max(1, xs.size // 48)
    xs_s, T_s, B_s = xs[::step], T[::step], B[::step]

    tone = _skin_tone(rng, fitzpatrick).astype(np.float32)
    dark_skin = float(np.clip((180 - tone.mean()) / 110, 0, 1))
    img = np.empty((ch, cw, 3), np.float32)
    img[:] = tone
    # skin: broad shading, blotches, pores (mid-frequency), periorbital darkening
    small = (max(2, ch // 8), max(2, cw // 8))
    shade = 1 + 0.07 * _lowfreq(rng, small[0], small[1], 4)
    shade += 0.04 * _lowfreq(rng, small[0], small[1], 16)
    peri = np.zeros(small, np.float32)
    ecx, ecy = (ox + cw_px / 2) / 8, (oy - 0.1 * u) / 8
    cv2.ellipse(
        peri,
        (round(ecx), round(ecy)),
        (round(0.85 * u / 8), round(0.6 * u / 8)),
        0,
        0,
        360,
        1.0,
        -1,
    )
    peri = cv2.GaussianBlur(peri, (0, 0), max(0.5, 0.2 * u / 8))
    shade *= 1 - (0.06 + 0.16 * dark_skin) * peri * rng.uniform(0.5, 1.0)
    pores = rng.standard_normal((ch // 2 + 1, cw // 2 + 1), dtype=np.float32)
    pores = cv2.resize(pores, (cw, ch), interpolation=cv2.INTER_LINEAR)
    img *= (_coarse(shade, shape) * (1 + 0.025 * pores))[..., None]

    # --- eye geometry built around the conjunctiva's outline
    f_th = u * rng.uniform(0.025, 0.06)  # visible fornix band between globe and conjunctiva
    m_th = u * rng.uniform(0.03, 0.055)  # lid margin thickness
    ml, mr = u * rng.uniform(0.04, 0.14), u * rng.uniform(0.04, 0.14)
    xl, xr = float(xs[0] - ml), float(xs[-1] + mr)
    yl = float(T[0] - f_th * 0.5 + rng.uniform(-0.04, 0.04) * u)
    yr = float(T[-1] - f_th * 0.5 + rng.uniform(-0.04, 0.04) * u)
    eye_h = u * rng.uniform(0.42, 0.62)
    s = np.linspace(-1, 1, 48, dtype=np.float32)
    up_x = np.linspace(xl, xr, 48, dtype=np.float32)
    sp = np.clip(s - rng.uniform(-0.25, 0.25) * (1 - s**2), -1, 1)
    up_y = (yl + (yr - yl) * (s + 1) / 2 - eye_h * (1 - sp**2) ** 0.75).astype(np.float32)
    low_x = np.concatenate([[xl], xs_s, [xr]]).astype(np.float32)
    low_y = np.concatenate([[yl], T_s - f_th, [yr]]).astype(np.float32)
    mg_x = low_x
    mg_y = np.concatenate([[yl + 0.02 * u], B_s + m_th, [yr + 0.02 * u]]).astype(np.float32)
    eye_roi = _roi(xl, xr, float(up_y.min()), float(mg_y.max()), 0.3 * u, shape)
    ey0, ey1, ex0, ex1 = eye_roi

    # lower-lid skin: faint wrinkles parallel to the margin
    wr = np.zeros((ey1 - ey0, ex1 - ex0), np.uint8)
    for k in range(int(rng.integers(1, 4))):
        off = u * (0.08 + 0.08 * k + rng.uniform(-0.02, 0.02))
        _polyline(wr, _curve_pts(mg_x, mg_y + off), 255, round(u * 0.005), (ex0, ey0))
    wrm = cv2.GaussianBlur(wr.astype(np.float32) / 255.0, (0, 0), max(0.8, u * 0.008))
    img[ey0:ey1, ex0:ex1] *= (1 - 0.08 * wrm)[..., None]

    # everted tissue around the cut-out: fornix above, down to the lid margin
    cmean = (conj_rgb_pm.reshape(-1, 3).sum(0) / max(float(calpha.sum()), 1.0)).astype(np.float32)
    tis_pts = np.concatenate([_curve_pts(low_x, low_y - 2), _curve_pts(xs_s[::-1], B_s[::-1] + 1)])
    tissue = _poly_mask(eye_roi, tis_pts)
    tcol = cmean * np.array([0.72, 0.55, 0.6], np.float32) * rng.uniform(0.8, 1.0)
    _blend(img, tcol, tissue, eye_roi)
    # lid margin: a band between conjunctiva and skin
    band = _poly_mask(
        eye_roi, np.concatenate([_curve_pts(xs_s, B_s - 2), _curve_pts(mg_x[::-1], mg_y[::-1])])
    )
    mcol = (tone * 0.6 + cmean * 0.4) * rng.uniform(0.8, 0.95)
    _blend(img, mcol, band, eye_roi)

    # globe: sclera (vessels, roundness, lid shadow) and an iris looking up
    globe_pts = np.concatenate([_curve_pts(up_x, up_y), _curve_pts(low_x[::-1], low_y[::-1])])
    globe = _poly_mask(eye_roi, globe_pts)
    gh, gw = ey1 - ey0, ex1 - ex0
    sclera = np.array([238, 232, 226], np.float32) * rng.uniform(0.88, 1.0)
    sclera = sclera * (1 - 0.1 * dark_skin) + np.array([0, -3, -8], np.float32) * dark_skin
    yy, xx = np.mgrid[ey0:ey1, ex0:ex1].astype(np.float32)
    ex = (xx - (xl + xr) / 2) / ((xr - xl) / 2)
    gcol = sclera * (1 - 0.3 * np.clip(np.abs(ex), 0, 1.3) ** 2.5)[..., None]
    gcol *= (1 + 0.04 * _lowfreq(rng, gh, gw, 6))[..., None]
    # the bulbar conjunctiva near the lid is pinker
    near = np.clip(1 - (np.interp(xx[0], low_x, low_y)[None, :] - yy) / (0.12 * u), 0, 1)
    _blend(gcol, cmean * 0.9 + 25, near * 0.25)
    ves = np.zeros((gh, gw), np.uint8)
    for _ in range(int(rng.integers(6, 16))):
        side = 1 if rng.random() < 0.5 else -1
        x = (xl if side < 0 else xr) - side * rng.uniform(0, 0.15) * u
        y = rng.uniform(float(up_y.min()), float(low_y.max()))
        ang = 0.0 if side < 0 else math.pi
        line = []
        for _ in range(int(rng.integers(3, 8))):
            line.append((x, y))
            ang += rng.normal(0, 0.45)
            st = rng.uniform(0.02, 0.05) * u
            x, y = x + st * math.cos(ang), y + st * math.sin(ang)
        _polyline(ves, line, int(rng.integers(60, 180)), 1, (ex0, ey0))
    vm = cv2.GaussianBlur(ves.astype(np.float32) / 255.0, (0, 0), max(0.5, u * 0.002))
    _blend(gcol, np.array([185, 70, 70], np.float32), vm * rng.uniform(0.4, 0.8))
    r_i = u * rng.uniform(0.2, 0.26)
    icx = (xl + xr) / 2 + rng.uniform(-0.18, 0.18) * u
    icy = float(up_y.min()) + rng.uniform(-0.1, 0.75) * r_i
    if rng.random() < 0.8 + 0.2 * dark_skin:
        iris_col = np.array([62, 38, 24], np.float32) * rng.uniform(0.7, 1.4)
    else:
        iris_col = np.array(
            [[70, 100, 130], [95, 110, 70], [120, 90, 50]][int(rng.integers(0, 3))], np.float32
        )
    streak = _lowfreq(rng, 1, 180, 60)[0]
    iroi = _roi(
        max(icx - r_i, ex0),
        min(icx + r_i, ex1 - 1),
        max(icy - r_i, ey0),
        min(icy + r_i, ey1 - 1),
        1,
        img.shape,
    )
    if iroi is not None:
        iy0, iy1, ix0, ix1 = iroi
        yi, xi = (
            yy[iy0 - ey0 : iy1 - ey0, ix0 - ex0 : ix1 - ex0],
            xx[iy0 - ey0 : iy1 - ey0, ix0 - ex0 : ix1 - ex0],
        )
        dist = np.sqrt((xi - icx) ** 2 + (yi - icy) ** 2) / r_i
        idx = ((np.arctan2(yi - icy, xi - icx) + np.pi) * (179 / (2 * np.pi))).astype(np.int32)
        itex = 1 + 0.25 * streak[idx] + 0.3 * np.clip(1 - dist, 0, 1)
        itex *= 1 - 0.5 * np.clip((dist - 0.85) / 0.15, 0, 1)  # limbal ring
        groi = (iy0 - ey0, iy1 - ey0, ix0 - ex0, ix1 - ex0)
        _blend(gcol, iris_col * itex[..., None], np.clip((1.0 - dist) * r_i + 0.5, 0, 1), groi)
        pr = rng.uniform(0.3, 0.5)
        _blend(gcol, np.float32(14), np.clip((pr - dist) * r_i + 0.5, 0, 1), groi)
    above_pts = np.concatenate(
        [_curve_pts(up_x, up_y), np.array([[xr, ey0 - 10], [xl, ey0 - 10]], np.float32)]
    )
    above = _poly_mask(eye_roi, above_pts)
    shadow = cv2.GaussianBlur(above, (0, 0), max(1.0, 0.06 * u))
    gcol *= (1 - 0.55 * shadow)[..., None]
    globe = cv2.GaussianBlur(globe, (0, 0), max(0.5, 0.004 * u))
    _blend(img, gcol, globe, eye_roi)
    # upper lid margin: a darker rim of skin along the upper edge of the eye
    rim = np.zeros((gh, gw), np.uint8)
    _polyline(rim, _curve_pts(up_x, up_y - 0.012 * u), 255, round(0.025 * u), (ex0, ey0))
    rimm = cv2.GaussianBlur(rim.astype(np.float32) / 255.0, (0, 0), max(0.5, 0.006 * u))
    _blend(img, tone * 0.55, rimm * 0.8, eye_roi)
    # caruncle: a pink mound in the inner corner
    if rng.random() < 0.8:
        cx_ = xl + 0.03 * u if rng.random() < 0.5 else xr - 0.03 * u
        cy_ = (yl if cx_ < (xl + xr) / 2 else yr) - 0.02 * u
        car = np.zeros((gh, gw), np.uint8)
        cv2.ellipse(
            car,
            (round((cx_ - ex0) * 4), round((cy_ - ey0) * 4)),
            (round(0.05 * u * 4), round(0.035 * u * 4)),
            0,
            0,
            360,
            255,
            -1,
            cv2.LINE_AA,
            shift=2,
        )
        carm = cv2.GaussianBlur(car.astype(np.float32) / 255.0, (0, 0), max(0.5, 0.01 * u))
        _blend(img, cmean * 0.85 + 20, carm * 0.9, eye_roi)

    # the conjunctiva itself (premultiplied alpha over the tissue)
    y0, x0 = round(oy), round(ox)
    sub = img[y0 : y0 + chh, x0 : x0 + cw_px]
    sub *= (1 - calpha)[..., None]
    sub += conj_rgb_pm
    cmask = np.zeros(shape, np.float32)
    cmask[y0 : y0 + chh, x0 : x0 + cw_px] = calpha

    # upper-lid crease and lashes; lower lashes hang from the everted margin
    lay = np.zeros((gh, gw), np.uint8)
    _polyline(lay, _curve_pts(up_x, up_y - eye_h * 0.35), 255, round(u * 0.012), (ex0, ey0))
    crease = cv2.GaussianBlur(lay.astype(np.float32) / 255, (0, 0), 0.012 * u + 0.5)
    img[ey0:ey1, ex0:ex1] *= (1 - 0.15 * crease)[..., None]
    lash = np.zeros((gh, gw), np.uint8)
    lt = max(1, round(u * 0.006))
    off = np.array([ex0, ey0], np.float32)
    _lashes(
        lash,
        rng,
        up_x[4:-4] - off[0],
        up_y[4:-4] - 1 - off[1],
        int(rng.integers(50, 110)),
        u * rng.uniform(0.12, 0.2),
        -1.0,
        0.9,
        lt,
    )
    _lashes(
        lash,
        rng,
        mg_x[1:-1] - off[0],
        mg_y[1:-1] - off[1],
        int(rng.integers(15, 45)),
        u * rng.uniform(0.06, 0.12),
        1.0,
        0.7,
        lt,
    )
    lm = lash.astype(np.float32) / 255.0
    _blend(img, np.array([28, 22, 20], np.float32) * rng.uniform(0.7, 1.3), lm * 0.9, eye_roi)

    # finger pulling the lid down from below
    if finger if finger is not None else rng.random() < 0.92:
        fw = u * rng.uniform(0.55, 0.85)
        tipx = ox + cw_px * rng.uniform(0.3, 0.7)
        tipy = float(np.interp(tipx, mg_x, mg_y)) + u * rng.uniform(0.03, 0.14)
        hit = _finger(img, rng, (tipx, tipy), math.pi / 2 + rng.uniform(-1.1, 1.1), fw, tone)
        if hit is not None:  # the finger occludes whatever conjunctiva it covers
            (fy0, fy1, fx0, fx1), fmask = hit
            cmask[fy0:fy1, fx0:fx1] *= 1.0 - fmask

    # --- light: colour, strength, direction, vignette, flash glare on wet surfaces
    gains, expo = _light(rng, exposure)
    sy_, sx_ = np.mgrid[0 : small[0], 0 : small[1]].astype(np.float32)
    ra = rng.uniform(0, 2 * math.pi)
    ramp = ((sx_ - small[1] / 2) * math.cos(ra) + (sy_ - small[0] / 2) * math.sin(ra)) / max(small)
    lmap = expo * (1 + rng.uniform(0, 0.5) * ramp)
    vr = ((sx_ - small[1] / 2) ** 2 + (sy_ - small[0] / 2) ** 2) / (
        0.25 * ((W / 8) ** 2 + (H / 8) ** 2)
    )
    lmap *= 1 - rng.uniform(0, 0.35) * np.clip(vr, 0, 1.5)
    img *= _coarse(lmap.astype(np.float32), shape)[..., None] * gains
    if glare if glare is not None else rng.random() < 0.6:
        wet = np.clip(globe + tissue, 0, 1)
        wet = np.maximum(wet, cmask[ey0:ey1, ex0:ex1])
        gl = np.zeros((gh, gw), np.float32)
        for _ in range(int(rng.integers(1, 5))):
            if rng.random() < 0.6:  # on the conjunctiva / tissue
                gx_ = ox + rng.uniform(0.15, 0.85) * cw_px
                gy_ = float(np.interp(gx_, xs, (T + B) / 2)) + rng.normal(0, 0.05) * u
            else:  # catch-light on the cornea / sclera
                gx_, gy_ = icx + rng.normal(0, 0.5) * r_i, icy + rng.uniform(0.2, 0.8) * r_i
            axes = (
                max(1, round(rng.uniform(0.01, 0.05) * u)),
                max(1, round(rng.uniform(0.005, 0.02) * u)),
            )
            cv2.ellipse(
                gl,
                (round(gx_ - ex0), round(gy_ - ey0)),
                axes,
                rng.uniform(-30, 30),
                0,
                360,
                1.0,
                -1,
                cv2.LINE_AA,
            )
        gl = cv2.GaussianBlur(gl, (0, 0), max(0.6, 0.004 * u)) * wet
        img[ey0:ey1, ex0:ex1] += gl[..., None] * rng.uniform(120, 255)

    # --- camera: mirror (other eye), rotate and crop, blur, noise, JPEG
    if rng.random() < 0.5:
        img, cmask = img[:, ::-1], cmask[:, ::-1]
    img = np.ascontiguousarray(np.clip(img, 0, 255))
    cmask = np.ascontiguousarray(cmask)
    M = cv2.getRotationMatrix2D((cw / 2, ch / 2), math.degrees(theta), 1.0)
    M[0, 2] -= (cw - W) / 2
    M[1, 2] -= (ch - H) / 2
    photo = cv2.warpAffine(
        img, M, (W, H), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101
    )
    mask = cv2.warpAffine(
        cmask, M, (W, H), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0
    )
    scale = min(H, W) / 256.0
    if blur_sigma is None:
        kind = rng.random()
        sig = (
            rng.uniform(0.3, 0.6)
            if kind < 0.3
            else rng.uniform(0.6, 1.3)
            if kind < 0.8
            else rng.uniform(1.3, 2.5)
        )
    else:
        sig = blur_sigma
    if sig > 0:
        photo = cv2.GaussianBlur(photo, (0, 0), sig * scale)
    ns = rng.uniform(1.0, 6.0) / max(0.4, expo) if noise_sigma is None else noise_sigma
    if ns > 0:
        photo += rng.standard_normal(photo.shape, dtype=np.float32) * np.float32(ns)
    out = np.clip(photo + 0.5, 0, 255).astype(np.uint8)
    q = int(rng.integers(35, 96)) if jpeg_quality is None else jpeg_quality
    if q < 100:
        out = jpeg_roundtrip(out, q)
    return out, np.clip(mask, 0, 1).astype(np.float32)


# ----------------------------------------------------------------------------------------------
# committed examples (fully synthetic: procedural conjunctiva, no dataset pixels)

# name -> (seed, keyword arguments of render_eye_photo); regenerate with
# `python -m hbscreen.training.render --examples`. tests/test_segmentation.py re-renders
# eyelid.jpg's mask from the same entry.
EXAMPLES: dict[str, tuple[int, dict]] = {
    "eyelid": (
        3,  # seed 11 (until 2.2.0) drew vessels as horizontal streaks that measured as a smear
        dict(
            pallor=0.15,
            fitzpatrick=5.0,
            exposure=(1.0, 1.0),
            blur_sigma=0.35,
            noise_sigma=2.0,
            jpeg_quality=100,
            max_rotation=6.0,
            eye_scale=(0.48, 0.48),
            glare=False,
            finger=True,
        ),
    ),
    "eyelid_pale": (
        12,
        dict(
            pallor=0.95,
            fitzpatrick=3.0,
            exposure=(1.0, 1.0),
            blur_sigma=0.35,
            noise_sigma=2.0,
            jpeg_quality=100,
            max_rotation=6.0,
            eye_scale=(0.48, 0.48),
            glare=False,
            finger=True,
        ),
    ),
    "too_dark": (
        13,
        dict(
            pallor=0.3,
            fitzpatrick=4.0,
            exposure=(0.16, 0.16),
            blur_sigma=0.5,
            noise_sigma=3.0,
            jpeg_quality=100,
            max_rotation=6.0,
            eye_scale=(0.48, 0.48),
            glare=False,
            finger=True,
        ),
    ),
    "blurry": (
        4,  # seed 14 (until 2.2.0) measured on the edge of motion_blur (see inference/quality.py)
        dict(
            pallor=0.3,
            fitzpatrick=2.0,
            exposure=(1.0, 1.0),
            blur_sigma=5.0,
            noise_sigma=1.5,
            jpeg_quality=100,
            max_rotation=6.0,
            eye_scale=(0.48, 0.48),
            glare=False,
            finger=True,
        ),
    ),
}
EXAMPLE_SIZE = (960, 1280)  # (height, width)


def render_example(name: str) -> tuple[Array, Array]:
    """(photo, mask) of one committed example, reproducibly."""
    seed, kw = EXAMPLES[name]
    return render_eye_photo(np.random.default_rng(seed), None, size=EXAMPLE_SIZE, **kw)


def _arrow(img: Array, p0, p1, colour, thick: int) -> None:
    cv2.arrowedLine(
        img,
        tuple(map(int, p0)),
        tuple(map(int, p1)),
        (255, 255, 255),
        thick + 6,
        cv2.LINE_AA,
        tipLength=0.3,
    )
    cv2.arrowedLine(
        img, tuple(map(int, p0)), tuple(map(int, p1)), colour, thick, cv2.LINE_AA, tipLength=0.3
    )


def _badge(img: Array, centre, r: int, ok: bool) -> None:
    """A round green check mark or red cross, text-free so it reads in every language."""
    c = tuple(map(int, centre))
    cv2.circle(img, c, r + 4, (255, 255, 255), -1, cv2.LINE_AA)
    cv2.circle(img, c, r, (40, 160, 70) if ok else (205, 45, 45), -1, cv2.LINE_AA)
    t = max(3, r // 4)
    x, y = c
    if ok:
        pts = np.array([[x - r * 0.5, y], [x - r * 0.12, y + r * 0.4], [x + r * 0.55, y - r * 0.4]])
        cv2.polylines(img, [pts.astype(np.int32)], False, (255, 255, 255), t, cv2.LINE_AA)
    else:
        d = int(r * 0.45)
        cv2.line(img, (x - d, y - d), (x + d, y + d), (255, 255, 255), t, cv2.LINE_AA)
        cv2.line(img, (x - d, y + d), (x + d, y - d), (255, 255, 255), t, cv2.LINE_AA)


def photo_guide(good: Array, good_mask: Array, bad: list[Array]) -> Array:
    """The bot's "how to take the photo" card: the good photo with a check mark, an arrow
    showing the lid pulled down and the conjunctiva outlined; below, bad photos crossed out."""
    W = 960
    gh = round(good.shape[0] * W / good.shape[1])
    top = cv2.resize(good, (W, gh), interpolation=cv2.INTER_AREA)
    m = cv2.resize(good_mask, (W, gh), interpolation=cv2.INTER_AREA) > 0.5
    cnts, _ = cv2.findContours(m.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(top, cnts, -1, (255, 255, 255), 7, cv2.LINE_AA)
    cv2.drawContours(top, cnts, -1, (40, 160, 70), 3, cv2.LINE_AA)
    ys, xs = np.nonzero(m)
    cx, by = int(xs.mean()), int(ys.max())
    _arrow(top, (cx + 0.28 * W, by + 0.05 * gh), (cx + 0.28 * W, by + 0.25 * gh), (40, 160, 70), 9)
    _badge(top, (W - 70, 70), 48, True)
    n = len(bad)
    tw = (W - 12 * (n + 1)) // n
    th = round(tw * good.shape[0] / good.shape[1])
    row = np.full((th + 24, W, 3), 245, np.uint8)
    for i, b in enumerate(bad):
        x0 = 12 + i * (tw + 12)
        row[12 : 12 + th, x0 : x0 + tw] = cv2.resize(b, (tw, th), interpolation=cv2.INTER_AREA)
        _badge(row, (x0 + tw - 34, 12 + 34), 26, False)
    sep = np.full((6, W, 3), 245, np.uint8)
    return np.vstack([top, sep, row])


def write_examples(examples_dir: Path, guide_path: Path | None = None) -> dict[str, Path]:
    """Write the committed example photos (JPEG) and, optionally, the bot's photo guide."""
    examples_dir.mkdir(parents=True, exist_ok=True)
    out, photos = {}, {}
    for name in EXAMPLES:
        photo, mask = render_example(name)
        photos[name] = (photo, mask)
        path = examples_dir / f"{name}.jpg"
        cv2.imwrite(
            str(path),
            cv2.cvtColor(photo, cv2.COLOR_RGB2BGR),
            [cv2.IMWRITE_JPEG_QUALITY, 88, cv2.IMWRITE_JPEG_OPTIMIZE, 1],
        )
        out[name] = path
    if guide_path is not None:
        guide_path.parent.mkdir(parents=True, exist_ok=True)
        g = photo_guide(*photos["eyelid"], [photos["too_dark"][0], photos["blurry"][0]])
        cv2.imwrite(
            str(guide_path),
            cv2.cvtColor(g, cv2.COLOR_RGB2BGR),
            [cv2.IMWRITE_JPEG_QUALITY, 85, cv2.IMWRITE_JPEG_OPTIMIZE, 1],
        )
        out["photo_guide"] = guide_path
    return out


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description="Write the committed synthetic example photos.")
    ap.add_argument("--examples", type=Path, default=Path("examples"))
    ap.add_argument("--guide", type=Path, default=Path("bot/assets/photo_guide.jpg"))
    a = ap.parse_args()
    for k, p in write_examples(a.examples, a.guide).items():
        print(f"{k}: {p} ({p.stat().st_size // 1024} KB)")
