"""Safe image intake: bytes from a stranger -> an upright RGB uint8 array, or a typed refusal.

Why it is careful:
- Byte size is checked before anything is parsed, and pixel count is read from the header
  before any pixel is decoded, so a decompression bomb costs milliseconds and a few MB.
  Pillow's own bomb limits are global, lenient (89 Mpx warn / 178 Mpx error) and can be
  switched off by any other import; we do not rely on them.
- The container is identified by its magic bytes and then opened with ONLY that Pillow
  plugin, so a file cannot be steered into an exotic decoder by a misleading name.
- Truncated files are refused as `corrupt` even if someone set Pillow's process-wide
  ``ImageFile.LOAD_TRUNCATED_IMAGES``: a half-grey photo would be judged as pale.
- EXIF orientation is applied, then everything but pixels is dropped: the arrays returned
  carry no EXIF, GPS, ICC or XMP data (photos are health data).
- Colour is normalised to 8-bit RGB: 16-bit is rescaled (not clipped), CMYK (incl. Adobe's
  inverted CMYK JPEGs) and palettes are converted, and embedded ICC profiles (e.g. Display
  P3 from iPhones, CMYK profiles) are converted to sRGB, because the models read colour.
"""

from __future__ import annotations

import io
import threading
import warnings
from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np
from PIL import Image, ImageCms, ImageFile

from .errors import ErrorCode, IntakeError
from .limits import MAX_BYTES

try:  # HEIC/HEIF from iPhones; pillow-heif is a runtime dependency
    import pillow_heif

    pillow_heif.register_heif_opener()
    _HEIF_OK = True
except ImportError:  # pragma: no cover - the wheel is a declared dependency
    _HEIF_OK = False

MAX_PIXELS = 50_000_000  # 48 Mpx phone photos (8000x6000) pass; ~150 MB as RGB
MIN_SIDE = 200  # short side of a photo; cut-outs are smaller, the pipeline passes 24

# Our own limit is far below Pillow's bomb warning threshold, so its warning only fires for
# images we refuse anyway; silence exactly that category instead of per-call filter juggling
# (warnings.catch_warnings is not thread-safe).
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)

Image.init()  # import Pillow's plugins now, not inside the first request (~50 ms once)

_LOAD_LOCK = threading.Lock()  # guards the temporary LOAD_TRUNCATED_IMAGES override


@dataclass(frozen=True)
class DecodedImage:
    """Decoded pixels only: no metadata survives intake."""

    rgb: np.ndarray  # HxWx3 uint8, upright, sRGB
    alpha: np.ndarray | None  # HxW uint8 when keep_alpha and the image had alpha, else None
    format: str  # "jpeg", "png", "webp", "heif"


# ---------------------------------------------------------------------------------------------
# Identification by magic bytes


_HEVC_BRANDS = {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis"}
_OTHER_IMAGE_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"BM", "BMP"),
    (b"\x00\x00\x01\x00", "ICO"),
    (b"8BPS", "PSD"),
    (b"\xff\x0a", "JPEG XL"),
    (b"\x00\x00\x00\x0cJXL \r\n\x87\n", "JPEG XL"),
    (b"\x00\x00\x00\x0cjP  \r\n\x87\n", "JPEG 2000"),
    (b"\xff\x4f\xff\x51", "JPEG 2000"),
    (b"qoif", "QOI"),
    (b"DDS ", "DDS"),
    (b"\x76\x2f\x31\x01", "OpenEXR"),
)


def _sniff(data: bytes) -> str:
    """Our format name for a supported container, 'other:<NAME>' for a known unsupported
    image format, or '' when the bytes are not an image we recognise."""
    if data[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    if data[4:8] == b"ftyp":
        box_len = int.from_bytes(data[:4], "big")
        brands = {data[8:12]} | {data[i : i + 4] for i in range(16, min(box_len, 64), 4)}
        if brands & _HEVC_BRANDS:
            return "heif"
        if brands & {b"avif", b"avis"}:
            return "other:AVIF"
        if brands & {b"mif1", b"msf1"}:
            return "heif"  # generic HEIF: let libheif try, a codec it lacks reads as corrupt
        return ""  # MP4/MOV video and other ISO-BMFF files
    for magic, name in _OTHER_IMAGE_MAGIC:
        if data.startswith(magic):
            return f"other:{name}"
    head = data[:256].lstrip().lower()
    if head.startswith(b"<svg") or (head.startswith(b"<?xml") and b"<svg" in data[:4096]):
        return "other:SVG"
    return ""


_PIL_FORMAT = {"jpeg": "JPEG", "png": "PNG", "webp": "WEBP", "heif": "HEIF", "gif": "GIF"}


# ---------------------------------------------------------------------------------------------
# Public entry point


def decode_image(
    data: bytes,
    *,
    keep_alpha: bool = False,
    max_bytes: int = MAX_BYTES,
    max_pixels: int = MAX_PIXELS,
    min_side: int = MIN_SIDE,
    max_side: int | None = None,
) -> DecodedImage:
    """Decode untrusted image bytes into upright 8-bit sRGB, or raise IntakeError.

    keep_alpha: return the alpha channel (for cut-outs the alpha IS the conjunctiva mask) and
        leave RGB as stored; otherwise transparent pixels are composited onto black, the
        convention of cut-out datasets (RGB outside the mask is black).
    max_side: if given, the result's long side is at most this; JPEGs are then decoded at a
        reduced DCT scale (much faster and smaller for 12-48 Mpx photos).
    """
    if not data:
        raise IntakeError(ErrorCode.NOT_AN_IMAGE, "The file is empty.")
    if len(data) > max_bytes:
        raise IntakeError(
            ErrorCode.TOO_LARGE,
            f"The file is larger than {max_bytes // (1024 * 1024)} MB. "
            "Please send a smaller photo.",
            bytes=len(data),
        )
    kind = _sniff(data)
    if not kind:
        raise IntakeError(
            ErrorCode.NOT_AN_IMAGE,
            "This file is not a photo. Please send a JPEG, PNG, WebP or HEIC photo.",
        )
    if kind == "heif" and not _HEIF_OK:  # pragma: no cover
        raise IntakeError(ErrorCode.UNSUPPORTED_FORMAT, "HEIC photos cannot be read here.")
    if kind.startswith("other:"):
        name = kind.split(":", 1)[1]
        if name == "GIF":
            _refuse_if_animated_gif(data, max_pixels)
        raise IntakeError(
            ErrorCode.UNSUPPORTED_FORMAT,
            f"{name} images are not supported. Please send a JPEG, PNG, WebP or HEIC photo.",
            format=name,
        )

    im = _open(data, kind)
    _check_dimensions(im.size, max_pixels=max_pixels, min_side=min_side)
    if _n_frames(im) > 1:
        raise IntakeError(
            ErrorCode.ANIMATED,
            "This is an animation. Please send a single still photo.",
        )
    if max_side is not None and kind == "jpeg" and max(im.size) > max_side:
        # Decode at 1/2, 1/4 or 1/8 scale, never below the requested size.
        scale = max_side / max(im.size)
        im.draft(im.mode, (int(im.size[0] * scale) + 1, int(im.size[1] * scale) + 1))
    _load_strict(im)

    rgb, alpha = _to_rgb8(im, keep_alpha=keep_alpha)
    rgb, alpha = _orient(im, rgb, alpha)
    if max_side is not None and max(rgb.shape[:2]) > max_side:
        rgb, alpha = _shrink(rgb, alpha, max_side)
    if rgb.shape[0] < min_side or rgb.shape[1] < min_side:  # e.g. a draft rounding quirk
        _check_dimensions((rgb.shape[1], rgb.shape[0]), max_pixels=max_pixels, min_side=min_side)
    rgb.setflags(write=False)
    if alpha is not None:
        alpha.setflags(write=False)
    return DecodedImage(rgb=rgb, alpha=alpha, format=kind)


# ---------------------------------------------------------------------------------------------
# Steps


def _open(data: bytes, kind: str) -> Image.Image:
    try:
        return Image.open(io.BytesIO(data), formats=[_PIL_FORMAT[kind]])
    except Image.DecompressionBombError as exc:
        raise IntakeError(
            ErrorCode.TOO_LARGE, "The image has too many pixels. Please send a smaller photo."
        ) from exc
    except Exception as exc:  # UnidentifiedImageError, SyntaxError, struct errors, HeifError
        raise IntakeError(
            ErrorCode.CORRUPT, "The photo file is damaged and cannot be opened."
        ) from exc


def _check_dimensions(size: tuple[int, int], *, max_pixels: int, min_side: int) -> None:
    w, h = size
    if w <= 0 or h <= 0:
        raise IntakeError(ErrorCode.CORRUPT, "The photo file is damaged and cannot be opened.")
    if w * h > max_pixels:
        raise IntakeError(
            ErrorCode.TOO_LARGE,
            f"The image has too many pixels ({w}x{h}). Please send a smaller photo.",
            width=w,
            height=h,
        )
    if min(w, h) < min_side:
        raise IntakeError(
            ErrorCode.TOO_SMALL,
            f"The image is too small ({w}x{h}). Please send a photo at least "
            f"{min_side} pixels on its short side.",
            width=w,
            height=h,
        )


def _n_frames(im: Image.Image) -> int:
    try:
        if im.format == "HEIF":
            return 1  # HEIF names its primary image explicitly; decode that one
        return int(getattr(im, "n_frames", 1))
    except Exception as exc:
        raise IntakeError(
            ErrorCode.CORRUPT, "The photo file is damaged and cannot be opened."
        ) from exc


def _refuse_if_animated_gif(data: bytes, max_pixels: int) -> None:
    """An animated GIF gets the more useful `animated` answer; a still GIF is unsupported."""
    try:
        im = Image.open(io.BytesIO(data), formats=["GIF"])
        if im.size[0] * im.size[1] > max_pixels:
            return
        animated = bool(getattr(im, "is_animated", False))
    except Exception:
        return
    if animated:
        raise IntakeError(
            ErrorCode.ANIMATED, "This is an animation. Please send a single still photo."
        )


def _load_strict(im: Image.Image) -> None:
    """Decode pixels; a truncated or broken stream is `corrupt`, whatever the global says."""
    try:
        with _LOAD_LOCK:
            saved = ImageFile.LOAD_TRUNCATED_IMAGES
            ImageFile.LOAD_TRUNCATED_IMAGES = False
            try:
                im.load()
            finally:
                ImageFile.LOAD_TRUNCATED_IMAGES = saved
    except Image.DecompressionBombError as exc:
        raise IntakeError(
            ErrorCode.TOO_LARGE, "The image has too many pixels. Please send a smaller photo."
        ) from exc
    except Exception as exc:  # OSError "image file is truncated", zlib, libwebp, libheif
        raise IntakeError(
            ErrorCode.CORRUPT,
            "The photo file is damaged or incomplete. Please send it again.",
        ) from exc


def _to_rgb8(im: Image.Image, *, keep_alpha: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """Any decoded mode -> (HxWx3 uint8 sRGB, HxW uint8 alpha or None)."""
    mode = im.mode
    alpha: np.ndarray | None = None

    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        # 16-bit greyscale: rescale 0..65535 -> 0..255 with rounding instead of clipping.
        g = np.asarray(im).astype(np.uint32)
        if mode == "I" and g.max(initial=0) <= 255:
            g8 = g.astype(np.uint8)
        else:
            g8 = ((np.minimum(g, 65535) * 255 + 32767) // 65535).astype(np.uint8)
        return np.repeat(g8[..., None], 3, axis=2), None
    if mode == "F":
        f = np.asarray(im, dtype=np.float32)
        g8 = np.clip(f * (255.0 if f.max(initial=0) <= 1.0 else 1.0) + 0.5, 0, 255)
        return np.repeat(g8.astype(np.uint8)[..., None], 3, axis=2), None

    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        mode in ("P", "L", "RGB") and "transparency" in im.info
    )
    icc = im.info.get("icc_profile")
    if mode == "CMYK":
        base = _icc_to_srgb(im, icc, "CMYK") or im.convert("RGB")
    elif has_alpha:
        rgba = im.convert("RGBA")
        alpha = np.asarray(rgba)[..., 3].copy()
        base = _icc_to_srgb(rgba.convert("RGB"), icc, "RGB") or rgba.convert("RGB")
    elif mode in ("L", "1"):
        g = np.asarray(im.convert("L"))
        rgb = np.repeat(g[..., None], 3, axis=2)
        return rgb, None
    else:  # RGB, P, YCbCr, LAB, HSV, RGBX
        rgb_im = im if mode == "RGB" else im.convert("RGB")
        base = _icc_to_srgb(rgb_im, icc, "RGB") or rgb_im

    rgb = np.array(base, dtype=np.uint8)  # a fresh, writable copy with no metadata
    if alpha is not None:
        if keep_alpha:
            return rgb, alpha
        if alpha.min() < 255:  # composite onto black, as cut-outs store it
            rgb = ((rgb.astype(np.uint16) * alpha[..., None] + 127) // 255).astype(np.uint8)
    return rgb, None


@lru_cache(maxsize=16)
def _icc_transform(icc: bytes, mode: str) -> ImageCms.ImageCmsTransform | None:
    try:
        src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        desc = (ImageCms.getProfileDescription(src) or "").lower()
        if mode == "RGB" and "srgb" in desc:
            return None  # already sRGB: skip the cost
        dst = ImageCms.createProfile("sRGB")
        return ImageCms.buildTransform(src, dst, mode, "RGB")
    except Exception:
        return None  # a broken profile: fall back to treating the pixels as sRGB


def _icc_to_srgb(im: Image.Image, icc: bytes | None, mode: str) -> Image.Image | None:
    """Convert embedded-profile colours to sRGB; None means 'use the plain conversion'."""
    if not icc or len(icc) > 4 * 1024 * 1024:
        return None
    t = _icc_transform(bytes(icc), mode)
    if t is None:
        return None
    src = im if im.mode == mode else im.convert(mode)
    try:
        return ImageCms.applyTransform(src, t)
    except Exception:
        return None


_ORIENT_OPS = {
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.swapaxes(0, 1),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: a[::-1, ::-1].swapaxes(0, 1),
    8: lambda a: np.rot90(a, 1),
}


def _orient(
    im: Image.Image, rgb: np.ndarray, alpha: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray | None]:
    """Apply EXIF orientation (HEIF: pillow-heif already applied irot/imir and reset it)."""
    try:
        orientation = int(im.getexif().get(0x0112, 1))
    except Exception:
        orientation = 1
    op = _ORIENT_OPS.get(orientation)
    if op is None:
        return rgb, alpha
    rgb = np.ascontiguousarray(op(rgb))
    if alpha is not None:
        alpha = np.ascontiguousarray(op(alpha))
    return rgb, alpha


def _shrink(
    rgb: np.ndarray, alpha: np.ndarray | None, max_side: int
) -> tuple[np.ndarray, np.ndarray | None]:
    h, w = rgb.shape[:2]
    s = max_side / max(h, w)
    size = (max(1, round(w * s)), max(1, round(h * s)))
    rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
    if alpha is not None:
        alpha = cv2.resize(alpha, size, interpolation=cv2.INTER_AREA)
    return rgb, alpha


__all__ = ["MAX_BYTES", "MAX_PIXELS", "MIN_SIDE", "DecodedImage", "decode_image"]
