"""Image degradations of a cheap phone sending over a messenger.

Used by the renderer (to make training photos look like real ones) and by the evaluation
(robustness of the Hb model to the kind of images community health workers send).
All functions take and return RGB uint8 arrays and are pure numpy/opencv.
"""

from __future__ import annotations

import cv2
import numpy as np


def jpeg_roundtrip(rgb: np.ndarray, quality: int) -> np.ndarray:
    """Encode as JPEG at `quality` (1-100) and decode again."""
    ok, buf = cv2.imencode(
        ".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, int(quality)]
    )
    if not ok:
        raise ValueError("JPEG encoding failed")
    return cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def gaussian_blur(rgb: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur with standard deviation `sigma` pixels (no-op for sigma <= 0)."""
    if sigma <= 0:
        return rgb.copy()
    return cv2.GaussianBlur(rgb, (0, 0), sigmaX=float(sigma), sigmaY=float(sigma))


def add_noise(rgb: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Additive Gaussian sensor noise with standard deviation `sigma` (in 0-255 units)."""
    if sigma <= 0:
        return rgb.copy()
    noisy = rgb.astype(np.float32) + rng.normal(0.0, sigma, rgb.shape).astype(np.float32)
    return np.clip(noisy + 0.5, 0, 255).astype(np.uint8)


def scale_brightness(rgb: np.ndarray, factor: float) -> np.ndarray:
    """Multiply every channel by `factor` (exposure change), clipped to 0-255."""
    return np.clip(rgb.astype(np.float32) * float(factor) + 0.5, 0, 255).astype(np.uint8)


def downscale_long_side(rgb: np.ndarray, long_side: int) -> np.ndarray:
    """Shrink so the longer side is at most `long_side` pixels; never upscales."""
    h, w = rgb.shape[:2]
    if max(h, w) <= long_side:
        return rgb.copy()
    s = long_side / max(h, w)
    size = (max(1, round(w * s)), max(1, round(h * s)))
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)


def cheap_phone(
    rgb: np.ndarray,
    rng: np.random.Generator,
    *,
    long_side: int = 640,
    jpeg_quality: int = 60,
    brightness: float = 0.10,
    blur_sigma: float = 0.8,
) -> np.ndarray:
    """Degrade like a cheap phone sending over a messenger.

    Downscale to `long_side` (if larger), mild blur, a random brightness change of up to
    ±`brightness`, then JPEG at `jpeg_quality` (the messenger's recompression comes last).
    """
    out = downscale_long_side(rgb, long_side)
    out = gaussian_blur(out, blur_sigma)
    out = scale_brightness(out, 1.0 + rng.uniform(-brightness, brightness))
    return jpeg_roundtrip(out, jpeg_quality)
