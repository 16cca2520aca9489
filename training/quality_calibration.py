"""Calibrate the quality gate (inference/quality.py RULES) on real eye photos.

Real photos: the 65 Eyes-defy-anemia full photos (one per patient), split by patient into a
calibration half (thresholds are chosen there) and a held-out half (only reported), each judged
as served: on the mask the pipeline's own segmentation gives it. (`--masks expert` judges the
photos, good and degraded, on the experts' masks instead, to tell the gate's errors from the
segmentation's; otherwise the experts' masks only place the added glare and the crops.) Each
good photo is also degraded on purpose (blur, motion, exposure, glare, lamp casts, greyscale,
JPEG q30, a crop that cuts the lid, zoomed out, too close); each degradation has the one code
the gate must answer with. Not-an-eyelid images (a face, a cat, a document, a screenshot, red
cloth) are procedural: no dataset pixels, nothing downloaded.

    python -m hbscreen.training.quality_calibration [--data DIR] [--masks model|expert]
        [--cache FILE.pkl] [--record]

prints, per half, check x (good photos refused, degraded photos caught with the right code),
and, for each RULES row, the threshold the calibration half suggests next to the one in use.
`--record` also writes the table to reports/quality_gate.json and into the "Quality gate"
section of inference/models/MODEL_CARD.md (`hbscreen train` carries that section over).
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from hbscreen.inference import intake, quality
from hbscreen.training.card_sections import replace_section
from hbscreen.training.model_card_md import QUALITY_GATE, gate_section_md

WORK_LONG_SIDE = 1280  # what the pipeline decodes to (inference/pipeline.py)
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared/data/eyes-defy-anemia"

Array = np.ndarray


# --- real photos ----------------------------------------------------------------------------


@dataclass(frozen=True)
class RealPhoto:
    name: str
    patient: str
    rgb: Array  # at the pipeline's working size
    mask: Array  # float32 [0, 1], expert mask at the same size


def load_photos(data: Path = DEFAULT_DATA) -> list[RealPhoto]:
    """The full photos with their expert masks, decoded the way the pipeline decodes uploads."""
    out = []
    with open(data / "photos.csv", newline="") as f:
        for row in csv.DictReader(f):
            img = intake.decode_image(
                (data / "photos" / row["image"]).read_bytes(), max_side=WORK_LONG_SIDE
            )
            m = cv2.imread(str(data / "photos" / row["mask"]), cv2.IMREAD_GRAYSCALE)
            h, w = img.rgb.shape[:2]
            m = cv2.resize(m, (w, h), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
            out.append(RealPhoto(row["image"], row["patient"], img.rgb, m))
    return out


def split_by_patient(photos: list[RealPhoto]) -> tuple[list[RealPhoto], list[RealPhoto]]:
    """Deterministic halves by patient id (hash-free: sorted ids, alternating)."""
    ids = sorted({p.patient for p in photos}, key=lambda s: (len(s), s))
    calib = {pid for i, pid in enumerate(ids) if i % 2 == 0}
    return [p for p in photos if p.patient in calib], [p for p in photos if p.patient not in calib]


# --- deliberate degradations -----------------------------------------------------------------


def gains(rgb: Array, g: tuple[float, float, float] | float) -> Array:
    gg = np.broadcast_to(np.asarray(g, np.float32), (3,))
    return np.clip(rgb.astype(np.float32) * gg + 0.5, 0, 255).astype(np.uint8)


def gaussian(rgb: Array, sigma: float) -> Array:
    return cv2.GaussianBlur(rgb, (0, 0), sigma)


def motion(rgb: Array, length: int, angle_deg: float) -> Array:
    """Linear motion blur of `length` px along `angle_deg` (a shaking hand)."""
    k = np.zeros((length, length), np.float32)
    c = (length - 1) / 2
    dx, dy = math.cos(math.radians(angle_deg)), math.sin(math.radians(angle_deg))
    p0 = (round(c - dx * c), round(c - dy * c))
    p1 = (round(c + dx * c), round(c + dy * c))
    cv2.line(k, p0, p1, 1.0, 1, cv2.LINE_AA)
    return cv2.filter2D(rgb, -1, k / k.sum())


def jpeg(rgb: Array, q: int) -> Array:
    ok, buf = cv2.imencode(".jpg", rgb[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, q])
    assert ok
    return np.ascontiguousarray(cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1])


def greyscale(rgb: Array) -> Array:
    g = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    return np.repeat(g[..., None], 3, axis=2)


def add_glare(rgb: Array, mask: Array, share: float, seed: int) -> Array:
    """Specular spots (ring light / flash reflections) over about `share` of the conjunctiva."""
    rng = np.random.default_rng(seed)
    out = rgb.astype(np.float32)
    ys, xs = np.nonzero(mask > 0.5)
    spots = np.zeros(mask.shape, np.float32)
    thick = max(4, int(math.sqrt(ys.size) / 12))
    target = share * ys.size
    while cv2.countNonZero((spots > 0.5).astype(np.uint8) & (mask > 0.5)) < target:
        i = int(rng.integers(ys.size))
        axes = (int(rng.integers(thick, 3 * thick)), int(rng.integers(thick // 2 + 1, thick)))
        cv2.ellipse(
            spots, (int(xs[i]), int(ys[i])), axes, float(rng.uniform(0, 180)), 0, 360, 1, -1
        )
    soft = cv2.GaussianBlur(spots, (0, 0), 1.5)[..., None]
    out = out * (1 - soft) + np.float32([250, 250, 248]) * soft
    return np.clip(out, 0, 255).astype(np.uint8)


def pallor(rgb: Array, mask: Array, amount: float) -> Array:
    """The conjunctiva of a severely anaemic person: its colour moved `amount` of the way to
    the white of the eye (the 99th-percentile brightness near it). Pallor is what is screened
    for, so the gate must accept it; the not_an_eyelid checks leave room for it."""
    x, y, w, h = cv2.boundingRect((mask > 0.5).astype(np.uint8))
    near = rgb[max(0, y - 2 * h) : y + h, x : x + w].reshape(-1, 3).astype(np.float32)
    luma = near @ np.float32([0.299, 0.587, 0.114])
    white = near[luma >= np.percentile(luma, 99)].mean(axis=0)
    f = rgb.astype(np.float32)
    a = (amount * np.clip(mask, 0, 1))[..., None]
    # keep the texture: move the local mean, not every pixel, towards the white
    base = cv2.GaussianBlur(f, (0, 0), 6)
    pale = f + (white - base) * 0.9
    return np.clip(f * (1 - a) + pale * a, 0, 255).astype(np.uint8)


def cut_lid(rgb: Array, mask: Array, side: str = "left") -> tuple[Array, Array]:
    """A crop that cuts the lid: a third of the conjunctiva's length lies outside the frame,
    beyond its left or right side."""
    if side == "right":
        r, m = cut_lid(rgb[:, ::-1], mask[:, ::-1])
        return np.ascontiguousarray(r[:, ::-1]), np.ascontiguousarray(m[:, ::-1])
    x, _, w, _ = cv2.boundingRect((mask > 0.5).astype(np.uint8))
    x0 = x + w // 3
    return np.ascontiguousarray(rgb[:, x0:]), np.ascontiguousarray(mask[:, x0:])


def zoom_out(rgb: Array, mask: Array, factor: float) -> tuple[Array, Array]:
    """The same eye photographed from further away: shrunk into the middle of a frame of the
    same size whose surroundings continue the photo's own border (its edge pixels carried
    outwards and smoothed: skin, lid, no second eye) with sensor noise."""
    h, w = rgb.shape[:2]
    sw, sh = max(8, round(w / factor)), max(8, round(h / factor))
    small = cv2.resize(rgb, (sw, sh), interpolation=cv2.INTER_AREA)
    msmall = cv2.resize(mask, (sw, sh), interpolation=cv2.INTER_AREA)
    y0, x0 = (h - sh) // 2, (w - sw) // 2
    canvas = cv2.copyMakeBorder(small, y0, h - sh - y0, x0, w - sw - x0, cv2.BORDER_REPLICATE)
    canvas = cv2.GaussianBlur(canvas.astype(np.float32), (0, 0), max(h, w) / 40)
    canvas += np.random.default_rng(0).normal(0, 2.0, canvas.shape).astype(np.float32)
    canvas = np.clip(canvas, 0, 255).astype(np.uint8)
    canvas[y0 : y0 + sh, x0 : x0 + sw] = small
    cm = np.zeros(mask.shape, np.float32)
    cm[y0 : y0 + sh, x0 : x0 + sw] = msmall
    return canvas, cm


def too_close(rgb: Array, mask: Array) -> tuple[Array, Array]:
    """Phone held too close: the lid overflows the frame on both sides and, as phones cannot
    focus that close, the picture is soft."""
    x, y, w, h = cv2.boundingRect((mask > 0.5).astype(np.uint8))
    cx, cy = x + w / 2, y + h / 2
    H, W = mask.shape
    cw = int(w * 0.6)
    ch = int(cw * H / W)
    x0, y0 = int(max(0, cx - cw / 2)), int(min(max(0, cy - ch / 2), H - ch))
    crop = rgb[y0 : y0 + ch, x0 : x0 + cw]
    mc = mask[y0 : y0 + ch, x0 : x0 + cw]
    big = cv2.resize(crop, (W, H), interpolation=cv2.INTER_CUBIC)
    return gaussian(big, 3.0), cv2.resize(mc, (W, H), interpolation=cv2.INTER_LINEAR)


@dataclass(frozen=True)
class Degradation:
    name: str
    expect: str  # the code the gate must answer with
    fn: Callable[[Array, Array, int], tuple[Array, Array]]
    # Other codes whose hint fixes it too: a blurred lid that runs off both sides of the frame is
    # told "too close" (move back, then tap to focus), which is what a phone that cannot focus
    # that close needs.
    also: tuple[str, ...] = ()

    def caught(self, told: list[str]) -> bool:
        return self.expect in told or any(c in told for c in self.also)


def _same_mask(f: Callable[[Array, int], Array]) -> Callable[[Array, Array, int], tuple]:
    return lambda rgb, m, seed: (f(rgb, seed), m)


def _shaken(length: int, sent_quality: int | None = None) -> Callable[[Array, Array, int], tuple]:
    """A smear of `length` px in a direction drawn from the seed, then JPEG-saved if sent."""

    def f(rgb: Array, seed: int) -> Array:
        out = motion(rgb, length, float(np.random.default_rng(seed).uniform(0, 180)))
        return out if sent_quality is None else jpeg(out, sent_quality)

    return _same_mask(f)


WARM_LAMP = (1.0, 0.8, 0.55)  # tungsten / warm-white LED seen through auto white balance
COOL_LAMP = (0.7, 0.85, 1.0)  # cold fluorescent / blue LED
DEGRADATIONS: tuple[Degradation, ...] = (
    Degradation("blur sigma 4", "blurry", _same_mask(lambda x, s: gaussian(x, 4)), ("too_close",)),
    Degradation("blur sigma 8", "blurry", _same_mask(lambda x, s: gaussian(x, 8)), ("too_close",)),
    Degradation(
        "blur sigma 16", "blurry", _same_mask(lambda x, s: gaussian(x, 16)), ("too_close",)
    ),
    Degradation("motion 15 px", "motion_blur", _shaken(15)),
    Degradation("motion 30 px", "motion_blur", _shaken(30)),
    # what a messenger makes of a shaken photo
    Degradation("motion 15 px, sent (JPEG q80)", "motion_blur", _shaken(15, sent_quality=80)),
    Degradation("under-exposed x0.3", "too_dark", _same_mask(lambda x, s: gains(x, 0.3))),
    Degradation("over-exposed x2.5", "too_bright", _same_mask(lambda x, s: gains(x, 2.5))),
    Degradation("glare 10%", "glare", lambda x, m, s: (add_glare(x, m, 0.10, s), m)),
    Degradation("warm lamp", "colour_cast", _same_mask(lambda x, s: gains(x, WARM_LAMP))),
    Degradation("cool lamp", "colour_cast", _same_mask(lambda x, s: gains(x, COOL_LAMP))),
    Degradation("greyscale", "greyscale", _same_mask(lambda x, s: greyscale(x))),
    Degradation("JPEG q30", "compressed", _same_mask(lambda x, s: jpeg(x, 30))),
    Degradation(
        "JPEG q30 + blur 8",
        "blurry",
        _same_mask(lambda x, s: jpeg(gaussian(x, 8), 30)),
        ("too_close", "compressed"),
    ),
    # A cut lid that already ran off the other side is told "too close" (its ends are outside:
    # moving back brings the cut end in too).
    Degradation(
        "crop cuts the lid", "conjunctiva_cut_off", lambda x, m, s: cut_lid(x, m), ("too_close",)
    ),
    Degradation(
        "crop cuts the lid (right)",
        "conjunctiva_cut_off",
        lambda x, m, s: cut_lid(x, m, "right"),
        ("too_close",),
    ),
    Degradation("zoomed out x5", "too_far", lambda x, m, s: zoom_out(x, m, 5.0)),
    Degradation("too close", "too_close", lambda x, m, s: too_close(x, m)),
)
# Not degradations to refuse: what messengers and phones do to every photo.
HARMLESS: tuple[Degradation, ...] = (
    Degradation("JPEG q70", "", _same_mask(lambda x, s: jpeg(x, 70))),
    Degradation("blur sigma 1", "", _same_mask(lambda x, s: gaussian(x, 1))),
    Degradation("severe pallor (simulated)", "", lambda x, m, s: (pallor(x, m, 0.6), m)),
    Degradation("exposure x0.7", "", _same_mask(lambda x, s: gains(x, 0.7))),
    Degradation("exposure x1.3", "", _same_mask(lambda x, s: gains(x, 1.3))),
)


# --- not an eyelid (procedural) -------------------------------------------------------------


def _noise(rng: np.random.Generator, h: int, w: int, sigma: float, amp: float) -> Array:
    n = cv2.GaussianBlur(rng.normal(0, 1, (h, w)).astype(np.float32), (0, 0), sigma)
    return n / (n.std() + 1e-6) * amp


def _camera(img: Array, rng: np.random.Generator) -> Array:
    """What a phone adds: slight blur, sensor noise, JPEG."""
    img = cv2.GaussianBlur(img.astype(np.float32), (0, 0), 0.8)
    img += rng.normal(0, 2.5, img.shape).astype(np.float32)
    return jpeg(np.clip(img, 0, 255).astype(np.uint8), 85)


def document(seed: int, h: int = 1280, w: int = 960) -> Array:
    """A photographed printed page: text lines, a red stamp and a heading, uneven light."""
    rng = np.random.default_rng(seed)
    img = np.full((h, w, 3), (236, 232, 222), np.uint8)  # putText draws on 8-bit only
    words = [
        "the",
        "patient",
        "was",
        "seen",
        "at",
        "the",
        "clinic",
        "and",
        "the",
        "result",
        "was",
        "explained",
        "to",
        "the",
        "family",
    ]
    y = 140
    cv2.putText(img, "HEALTH RECORD", (80, 100), cv2.FONT_HERSHEY_DUPLEX, 1.6, (150, 30, 40), 3)
    while y < h - 80:
        line = " ".join(rng.choice(words, int(rng.integers(6, 10))))
        cv2.putText(img, line, (60, y), cv2.FONT_HERSHEY_SIMPLEX, 0.8, (30, 30, 35), 2, cv2.LINE_AA)
        y += int(rng.integers(38, 48))
    c = (int(rng.integers(500, 800)), int(rng.integers(700, 1100)))
    cv2.circle(img, c, 90, (190, 40, 60), 8, cv2.LINE_AA)
    cv2.putText(img, "PAID", (c[0] - 60, c[1] + 15), cv2.FONT_HERSHEY_DUPLEX, 1.5, (190, 40, 60), 4)
    light = 1 + _noise(rng, h, w, 200, 0.04)
    return _camera(img.astype(np.float32) * light[..., None], rng)


def screenshot(seed: int, h: int = 1280, w: int = 720) -> Array:
    """A flat phone-UI screenshot: coloured app bar, chat bubbles, buttons (no camera noise)."""
    rng = np.random.default_rng(seed)
    bar = [(214, 48, 74), (230, 90, 110), (40, 120, 200), (236, 120, 80)][seed % 4]
    img = np.full((h, w, 3), (250, 250, 250), np.uint8)
    cv2.rectangle(img, (0, 0), (w, 120), bar, -1)
    cv2.putText(img, "Chats", (30, 80), cv2.FONT_HERSHEY_SIMPLEX, 1.4, (255, 255, 255), 3)
    y = 160
    while y < h - 200:
        left = bool(rng.integers(2))
        bw, bh = int(rng.integers(250, 520)), int(rng.integers(70, 160))
        x0 = 24 if left else w - 24 - bw
        col = (255, 255, 255) if left else (255, 214, 220)
        cv2.rectangle(img, (x0, y), (x0 + bw, y + bh), col, -1)
        cv2.rectangle(img, (x0, y), (x0 + bw, y + bh), (220, 220, 220), 1)
        cv2.putText(img, "hello, see you", (x0 + 16, y + 45), cv2.FONT_HERSHEY_SIMPLEX, 0.9,
                    (20, 20, 20), 2, cv2.LINE_AA)  # fmt: skip
        y += bh + int(rng.integers(20, 40))
    cv2.rectangle(img, (20, h - 140), (w - 20, h - 40), bar, -1)
    return img


def face(seed: int, h: int = 1280, w: int = 960) -> Array:
    """A person at arm's length: face, eyes, red lips, hair, an orange top, a wall behind."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.empty((h, w, 3), np.float32)
    img[:] = (120 + 40 * rng.random(), 140, 150)  # wall
    suit = [(235, 110, 30), (220, 60, 50), (200, 40, 90)][seed % 3]
    body = ((x - w / 2) / (0.55 * w)) ** 2 + ((y - 1.25 * h) / (0.5 * h)) ** 2 < 1
    img[body] = suit
    img[body] *= (1 + _noise(rng, h, w, 12, 0.12)[body])[:, None]
    skin = np.array([(205, 150, 120), (160, 105, 75), (110, 70, 50)][seed % 3], np.float32)
    cx, cy, fw, fh = w / 2, 0.42 * h, 0.26 * w, 0.22 * h
    neck = (np.abs(x - cx) < 0.1 * w) & (y > cy) & (y < cy + 0.35 * h) & ~body
    headm = ((x - cx) / fw) ** 2 + ((y - cy) / fh) ** 2 < 1
    img[neck | headm] = skin
    hair = (((x - cx) / (1.08 * fw)) ** 2 + ((y - cy + 0.06 * h) / (1.0 * fh)) ** 2 < 1) & (
        y < cy - 0.1 * h
    )
    img[hair] = (40, 28, 22)
    img *= (1 + _noise(rng, h, w, 3, 0.03))[..., None]
    for sx in (-1, 1):
        ex, ey = int(cx + sx * 0.42 * fw), int(cy - 0.1 * fh)
        cv2.ellipse(img, (ex, ey), (int(0.2 * fw), int(0.08 * fh)), 0, 0, 360, (235, 230, 225), -1)
        cv2.circle(img, (ex, ey), int(0.07 * fh), (70, 45, 30), -1)
        cv2.circle(img, (ex, ey), int(0.03 * fh), (10, 10, 10), -1)
    mx, my = int(cx), int(cy + 0.55 * fh)
    cv2.ellipse(img, (mx, my), (int(0.3 * fw), int(0.09 * fh)), 0, 0, 360, (175, 60, 70), -1)
    return _camera(img, rng)


def cat(seed: int, h: int = 1280, w: int = 960) -> Array:
    """A ginger cat's head filling the frame: fur, pink nose and inner ears, green eyes."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.empty((h, w, 3), np.float32)
    img[:] = (90, 100, 80)
    cx, cy = w / 2, 0.55 * h
    headm = ((x - cx) / (0.42 * w)) ** 2 + ((y - cy) / (0.3 * h)) ** 2 < 1
    fur = np.array([(215, 130, 60), (120, 110, 100), (230, 220, 205)][seed % 3], np.float32)
    stripes = 0.15 * np.sin(y / 18 + _noise(rng, h, w, 20, 2.0))
    shade = 1 + stripes + _noise(rng, h, w, 1.2, 0.08)
    img[headm] = fur * shade[headm][:, None]
    for sx in (-1, 1):
        tri = np.array(
            [[cx + sx * 0.15 * w, cy - 0.2 * h], [cx + sx * 0.4 * w, cy - 0.2 * h],
             [cx + sx * 0.33 * w, cy - 0.45 * h]], np.int32)  # fmt: skip
        cv2.fillPoly(img, [tri], tuple(float(v) for v in fur))
        ear = np.array([cx + sx * 0.29 * w, cy - 0.28 * h])
        inner = ((tri - ear) * 0.55 + ear).astype(np.int32)
        cv2.fillPoly(img, [inner], (225, 150, 160))
        ex, ey = int(cx + sx * 0.16 * w), int(cy - 0.05 * h)
        cv2.ellipse(img, (ex, ey), (int(0.07 * w), int(0.045 * h)), 0, 0, 360, (140, 170, 60), -1)
        cv2.ellipse(img, (ex, ey), (int(0.015 * w), int(0.04 * h)), 0, 0, 360, (10, 10, 10), -1)
    nose = np.array([[cx - 35, cy + 60], [cx + 35, cy + 60], [cx, cy + 105]], np.int32)
    cv2.fillPoly(img, [nose], (215, 120, 130))
    return _camera(img, rng)


def red_cloth(seed: int, h: int = 1280, w: int = 960) -> Array:
    """Red/pink fabric filling the frame (a wrap, a scarf): right colour, wrong thing."""
    rng = np.random.default_rng(seed)
    col = np.array([(200, 60, 70), (220, 120, 130), (170, 40, 50)][seed % 3], np.float32)
    folds = 1 + 0.25 * np.sin(np.mgrid[0:h, 0:w][1] / 40.0 + _noise(rng, h, w, 60, 3.0))
    weave = _noise(rng, h, w, 0.7, 0.05)
    img = col * (folds + weave)[..., None].astype(np.float32)
    return _camera(img, rng)


NOT_EYELIDS: dict[str, Callable[[int], Array]] = {
    "face": face,
    "cat": cat,
    "document": document,
    "screenshot": screenshot,
    "red cloth": red_cloth,
}
NOT_EYELID_CODES = ("not_an_eyelid", "not_a_photo", "screenshot", "conjunctiva_not_found")


def not_eyelid_images(n_per_kind: int = 6) -> Iterator[tuple[str, int, Array]]:
    for kind, fn in NOT_EYELIDS.items():
        for seed in range(n_per_kind):
            yield kind, seed, fn(seed)


# --- evaluation -----------------------------------------------------------------------------

Values = dict[str, float | None]


def served_mask(rgb: Array) -> Array:
    """The conjunctiva mask the served pipeline uses for this photo (Pipeline.segment, the
    shipped segmentation model with its two passes)."""
    from hbscreen.inference.pipeline import Pipeline

    return safe(Pipeline.shared().segment, rgb)


def verdict(rgb: Array, mask: Array | None = None) -> list[str]:
    """The codes the person is told about (after precedence), empty when accepted; judged on
    the served mask unless a mask is given (the expert's, to separate the gate's errors from
    the segmentation's)."""
    return told(quality.measure(rgb, served_mask(rgb) if mask is None else mask))


def told(values: Values) -> list[str]:
    q = quality.judge(values)
    return [] if q.ok else quality.primary_codes(q.failing_codes)


@dataclass
class Measured:
    """Measured values of one half: good photos, harmless variants, each degradation and
    (procedural) non-eyelids, so thresholds can be tried without measuring again."""

    good: list[Values]
    harmless: dict[str, list[Values]]
    degraded: dict[str, list[Values]]
    not_eyelid: dict[str, list[Values]]


def safe(segment: Callable[[Array], Array], rgb: Array) -> Array:
    """The model's mask; an empty one where the segmentation refuses to find anything."""
    try:
        return segment(rgb)
    except ValueError:  # segmentation 1.1.0 raises "empty mask" when its first pass finds none
        return np.zeros(rgb.shape[:2], np.float32)


def measure_half(
    photos: list[RealPhoto],
    segment: Callable[[Array], Array] | None,
    not_eyelid_seeds: range,
    log: Callable[[str], None] = print,
) -> Measured:
    """Measure everything for one half. `segment`: None = the expert masks for the photos (the
    served model is always used for the non-eyelids: there is no expert mask of a cat)."""

    def mask_for(rgb: Array, m: Array) -> Array:
        return safe(segment, rgb) if segment else m

    good = [quality.measure(p.rgb, mask_for(p.rgb, p.mask)) for p in photos]
    out = Measured(good, {}, {}, {})
    for group, degs in ((out.degraded, DEGRADATIONS), (out.harmless, HARMLESS)):
        for d in degs:
            vals = []
            for i, p in enumerate(photos):
                rgb, m = d.fn(p.rgb, p.mask, i)
                vals.append(quality.measure(rgb, mask_for(rgb, m)))
            group[d.name] = vals
            log(f"   measured {d.name}")
    for kind, fn in NOT_EYELIDS.items():
        vals = []
        for seed in not_eyelid_seeds:
            rgb = fn(seed)
            vals.append(quality.measure(rgb, served_mask(rgb)))
        out.not_eyelid[kind] = vals
    return out


def table(m: Measured) -> list[tuple[str, str, int, int]]:
    """(item, expected code, caught or accepted, n) rows of the report."""
    rows = [("good real photos", "(accepted)", sum(not told(v) for v in m.good), len(m.good))]
    for name, vals in m.harmless.items():
        rows.append((name, "(accepted)", sum(not told(v) for v in vals), len(vals)))
    for d in DEGRADATIONS:
        vals = m.degraded[d.name]
        code = "/".join((d.expect, *d.also))
        rows.append((d.name, code, sum(d.caught(told(v)) for v in vals), len(vals)))
    for kind, vals in m.not_eyelid.items():
        hit = sum(bool(set(told(v)) & set(NOT_EYELID_CODES)) for v in vals)
        rows.append((f"not an eyelid: {kind}", "not_an_eyelid", hit, len(vals)))
    return rows


def refusals_by_code(vals: list[Values]) -> dict[str, int]:
    out: dict[str, int] = {}
    for v in vals:
        for c in told(v):
            out[c] = out.get(c, 0) + 1
    return out


def suggest(m: Measured, rule: quality.Rule) -> tuple[float | None, int, int, int]:
    """The threshold the calibration half supports for one RULES row, and what it does.

    Good values: the good photos and harmless variants. Bad values: the items whose expected
    code is this row's code and whose median lies on the refusing side of the good median.
    A "min" row: the 2nd percentile of good values and the 90th of bad values; when the bad
    ones lie below, the midpoint (catch >= 90% with a margin), else the good 2nd percentile
    (accepting good photos comes first). Mirrored for "max". Returns (suggestion, bad n,
    bad caught by this row alone at the value in use, good refused by it)."""
    good = [v.get(rule.key) for v in m.good + [x for vs in m.harmless.values() for x in vs]]
    g = np.array([x for x in good if x is not None], float)
    sets = [m.degraded[d.name] for d in DEGRADATIONS if d.expect == rule.code]
    if rule.code == "too_close":  # blurred frame-filling photos: "too close" fixes them
        sets += [m.degraded[d.name] for d in DEGRADATIONS if rule.code in d.also]
    if rule.code in NOT_EYELID_CODES:
        sets += list(m.not_eyelid.values())
    bad: list[float] = []
    for vs in sets:
        b = np.array([x for x in (v.get(rule.key) for v in vs) if x is not None], float)
        if len(b) and len(g):
            below = np.median(b) < np.median(g)
            if below == (rule.direction == "min"):
                bad.extend(b.tolist())
    if not len(g):
        return None, 0, 0, 0
    bb = np.array(bad, float)
    t = rule.threshold
    if rule.direction == "min":
        refused, caught = int((g < t).sum()), int((bb < t).sum())
        tg = float(np.percentile(g, 2))
        tb = float(np.percentile(bb, 90)) if len(bb) else None
        sug = (tg + tb) / 2 if tb is not None and tb < tg else tg
    else:
        refused, caught = int((g > t).sum()), int((bb > t).sum())
        tg = float(np.percentile(g, 98))
        tb = float(np.percentile(bb, 10)) if len(bb) else None
        sug = (tg + tb) / 2 if tb is not None and tb > tg else tg
    return sug, len(bb), caught, refused


MODEL_CARD_MD = Path("inference") / "models" / "MODEL_CARD.md"
RECORD_COMMAND = "python -m hbscreen.training.quality_calibration --record"


def libraries() -> dict[str, str]:
    """Versions the served masks depend on (the table moved between installs before)."""
    import onnxruntime

    return {
        "onnxruntime": onnxruntime.__version__,
        "opencv": cv2.__version__,
        "numpy": np.__version__,
    }


def int8_instructions() -> str:
    """The best int8 dot-product instructions of this CPU, as onnxruntime's int8 kernels pick
    them. Without VNNI the default kernels multiply u8 by s8 in pairs that can saturate, which
    moved a few photos per row of the table between CPU kinds; the served sessions ask for exact
    sums there (make_session), so the table no longer depends on it: recorded for the record."""
    import platform

    try:
        flags = set(Path("/proc/cpuinfo").read_text().split("flags", 2)[1].split("\n")[0].split())
    except (OSError, IndexError):
        return platform.machine()
    for flag, name in (
        ("avx512_vnni", "AVX-512 VNNI"), ("avx_vnni", "AVX-VNNI"),
        ("avx512bw", "AVX-512 without VNNI"), ("avx2", "AVX2 without VNNI"),
    ):  # fmt: skip
        if flag in flags:
            return f"{platform.machine()}, {name}"
    return platform.machine()


def table_record(measured: dict[str, Measured], masks: str, segmentation: str) -> dict:
    """The report's table as data: what the model card's "Quality gate" section shows."""
    halves = {half: table(m) for half, m in measured.items()}
    first = next(iter(halves.values()))
    return {
        "measured_on": datetime.date.today().isoformat(),
        "command": RECORD_COMMAND,
        "masks": masks,
        "segmentation": segmentation,
        "libraries": libraries(),
        "cpu": int8_instructions(),
        "rows": [
            {
                "item": name,
                "expected": code,
                **{half: list(rows[i][2:]) for half, rows in halves.items()},
            }
            for i, (name, code, _, _) in enumerate(first)
        ],
    }


def write_record(record: dict, json_path: Path, card_md: Path) -> None:
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(record, indent=2) + "\n", "utf-8")
    if card_md.is_file():
        text = replace_section(card_md.read_text("utf-8"), gate_section_md(record))
        card_md.write_text(text, "utf-8")


def main() -> None:  # pragma: no cover - a report, run by hand
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument(
        "--masks",
        choices=("expert", "model"),
        default="model",
        help="conjunctiva masks of the real photos: the served model's (as the pipeline runs; "
        "the default) or the experts' (to tell the gate's errors from the segmentation's)",
    )
    ap.add_argument(
        "--cache",
        type=Path,
        help="pickle of the measured values: written after measuring, read if it exists "
        "(to try thresholds without measuring again; delete it after changing a measure)",
    )
    ap.add_argument(
        "--record",
        action="store_true",
        help=f"also write the table to {QUALITY_GATE} and the model card's Quality gate section "
        "(served masks only)",
    )
    a = ap.parse_args()
    if a.record and a.masks != "model":
        ap.error("--record records the gate as served: use it with --masks model")
    cv2.setNumThreads(1)
    if a.cache and a.cache.exists():
        import pickle

        raw = pickle.loads(a.cache.read_bytes())
        measured = {k: Measured(**v) for k, v in raw.items()}
        report(measured, a.masks)
        if a.record:
            _record(measured)
        return
    photos = load_photos(a.data)
    segment = None
    if a.masks == "model":
        from hbscreen.inference.pipeline import Pipeline

        segment = Pipeline.shared().segment
    cal, held = split_by_patient(photos)
    measured = {}
    for (half, ps), seeds in zip(
        (("calibration", cal), ("held-out", held)), (range(0, 6), range(6, 12)), strict=True
    ):
        print(f"measuring {half}: {len(ps)} photos, {len({p.patient for p in ps})} patients")
        measured[half] = measure_half(ps, segment, seeds, log=lambda s: None)
    if a.cache:
        import pickle

        a.cache.write_bytes(pickle.dumps({k: vars(v) for k, v in measured.items()}))
    report(measured, a.masks)
    if a.record:
        _record(measured)


def _record(measured: dict[str, Measured]) -> None:  # pragma: no cover - run by hand
    from hbscreen.inference.pipeline import Pipeline

    seg = Pipeline.shared().model_versions["segmentation"]
    write_record(table_record(measured, "model", seg), QUALITY_GATE, MODEL_CARD_MD)
    print(f"\nwrote {QUALITY_GATE} and the Quality gate section of {MODEL_CARD_MD}")


def report(measured: dict[str, Measured], masks: str) -> None:  # pragma: no cover
    print(f"\nmasks of the real photos: {masks}; thresholds chosen on the calibration half")
    print(f"{'item':30s} {'expected code':30s} {'calibration':>12s} {'held-out':>12s}")
    t_cal, t_held = table(measured["calibration"]), table(measured["held-out"])
    for (name, code, h1, n1), (_, _, h2, n2) in zip(t_cal, t_held, strict=True):
        print(
            f"{name:30s} {code:30s} {h1:5d}/{n1:<3d} {h1 / n1:4.0%} {h2:5d}/{n2:<3d} {h2 / n2:4.0%}"
        )
    for half, mm in measured.items():
        print(f"good photos refused ({half}), by code told: {refusals_by_code(mm.good)}")
    print(
        "\nper RULES row (calibration half): in use, suggested, row alone: bad caught, good refused"
    )
    for rule in quality.rules_for(cutout=False):
        sug, nb, caught, refused = suggest(measured["calibration"], rule)
        s_txt = "-" if sug is None else f"{sug:.4g}"
        print(
            f"  {rule.code:22s} {rule.key:16s} {rule.direction} {rule.threshold:<8g} "
            f"suggested {s_txt:8s} bad caught {caught}/{nb}, good refused {refused}"
        )


if __name__ == "__main__":  # pragma: no cover
    main()
