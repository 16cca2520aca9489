"""A synthetic eyelid-like photo for mechanical tests (no dataset pixels)."""

from __future__ import annotations

import io

import cv2
import numpy as np
from PIL import Image


def synthetic_photo(h: int = 720, w: int = 960) -> np.ndarray:
    """Skin-coloured frame with a textured red conjunctiva band: enough for the tiny models."""
    rng = np.random.default_rng(1)
    img = np.empty((h, w, 3), np.float32)
    img[:] = (196, 150, 122)
    yy, xx = np.mgrid[0:h, 0:w]
    band = ((xx - w / 2) / (w * 0.28)) ** 2 + ((yy - h * 0.55) / (h * 0.16)) ** 2 < 1
    # the white of the eye above the lid: the quality gate reads the light's colour from it
    sclera = ((xx - w / 2) / (w * 0.3)) ** 2 + ((yy - h * 0.36) / (h * 0.14)) ** 2 < 1
    img[sclera & ~band] = (226, 220, 214)
    img[band] = (205, 70, 80)
    img += rng.normal(0, 6, img.shape)
    for _ in range(40):  # vessels give the blur check real edges
        x0, y0 = rng.integers(w // 4, 3 * w // 4), rng.integers(int(h * 0.42), int(h * 0.68))
        cv2.line(
            img,
            (int(x0), int(y0)),
            (int(x0 + rng.integers(-60, 60)), int(y0 + 15)),
            (150, 30, 45),
            2,
        )
    img[~band] = np.clip(img[~band], 0, 255)
    return np.clip(img, 0, 255).astype(np.uint8)


def jpeg(rgb: np.ndarray, exif: bytes | None = None) -> bytes:
    buf = io.BytesIO()
    kw = {"exif": exif} if exif else {}
    Image.fromarray(rgb).save(buf, "JPEG", quality=92, **kw)
    return buf.getvalue()


def synthetic_jpeg(h: int = 720, w: int = 960, brightness: float = 1.0) -> bytes:
    """The synthetic photo as JPEG bytes, optionally darkened or brightened."""
    rgb = synthetic_photo(h, w)
    return jpeg(np.clip(rgb.astype(np.float32) * brightness, 0, 255).astype(np.uint8))
