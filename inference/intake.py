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
- Memory is bounded by what the pixels cost once decoded, not only by their count: a 381 KB
  16-bit RGBA PNG of 7000x7000 is 392 MB of samples. Large non-interlaced RGB(A)/16-bit grey
  PNGs are decoded in bands of rows (each band reduced to 8 bits and downscaled before the
  next is inflated), JPEGs at a reduced DCT scale; anything else whose decoded size would
  exceed `MAX_DECODE_BYTES` is refused up front as `too_large` (a smaller copy will pass; the
  same file never will). Conversions run on strips, so no full-size temporary is made.
  Measured peak RSS of a worker: tests/test_faults_memory.py.
"""

from __future__ import annotations

import io
import struct
import threading
import warnings
import zlib
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
# What the decoder may hold at once for one image (Pillow's buffer plus the codec's own):
# with a worker's ~170 MB of models and runtime this keeps its peak under 400 MB. A 24 Mpx
# HEIC (~171 MB while libheif hands its buffer to Pillow) passes; a 48 Mpx HEIC does not
# (sent as a photo rather than a file, Telegram makes it a small JPEG, which passes).
MAX_DECODE_BYTES = 176 * 1024 * 1024
_STRIP_ROWS = 256  # rows converted (and banded PNG rows inflated) at a time
_MAX_ICC_BYTES = 4 * 1024 * 1024  # a larger embedded profile is ignored (pixels taken as sRGB)

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
    max_decode_bytes: int = MAX_DECODE_BYTES,
) -> DecodedImage:
    """Decode untrusted image bytes into upright 8-bit sRGB, or raise IntakeError.

    keep_alpha: return the alpha channel (for cut-outs the alpha IS the conjunctiva mask) and
        leave RGB as stored; otherwise transparent pixels are composited onto black, the
        convention of cut-out datasets (RGB outside the mask is black).
    max_side: if given, the result's long side is at most this; JPEGs are then decoded at a
        reduced DCT scale (much faster and smaller for 12-48 Mpx photos), large PNGs band by
        band with each band downscaled, everything else strip by strip.
    max_decode_bytes: refuse (`too_large`) what would need more decoder memory than this.
    """
    if not data:
        raise IntakeError(ErrorCode.NOT_AN_IMAGE, "The file is empty.")
    if len(data) > max_bytes:
        raise IntakeError(
            ErrorCode.TOO_LARGE,
            f"The file is larger than {max_bytes // (1024 * 1024)} MB. "
            "Please send a smaller photo.",
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
    plan = _png_band_plan(data, im) if kind == "png" else None
    cost = plan.cost if plan is not None else _decode_cost(im, kind)
    if cost > max_decode_bytes:
        w, h = im.size
        raise IntakeError(
            ErrorCode.TOO_LARGE,
            f"The image is too large to check ({w}x{h}, {cost // (1024 * 1024)} MB once "
            "decoded). Please send it as a photo rather than as a file, or a smaller copy.",
        )
    orientation = _orientation(im)
    factor = _reduce_factor(im.size, max_side)
    if plan is not None:
        rgb, alpha = _decode_png_bands(data, plan, im, keep_alpha=keep_alpha, factor=factor)
    else:
        _load_strict(im)
        rgb, alpha = _convert_in_strips(im, keep_alpha=keep_alpha, factor=factor)
    im.close()  # free the full-size decoded pixels before anything else is allocated

    rgb, alpha = _orient(orientation, rgb, alpha)
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
        )
    if min(w, h) < min_side:
        raise IntakeError(
            ErrorCode.TOO_SMALL,
            f"The image is too small ({w}x{h}). Please send a photo at least "
            f"{min_side} pixels on its short side.",
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


def _plain_rgb(im: Image.Image) -> bool:
    """8-bit RGB whose pixels are already what `_to_rgb8` returns (no alpha, no profile to
    convert from)."""
    if im.mode != "RGB" or "transparency" in im.info:
        return False
    icc = im.info.get("icc_profile")
    return not icc or len(icc) > _MAX_ICC_BYTES or _icc_transform(bytes(icc), "RGB") is None


def _icc_to_srgb(im: Image.Image, icc: bytes | None, mode: str) -> Image.Image | None:
    """Convert embedded-profile colours to sRGB; None means 'use the plain conversion'."""
    if not icc or len(icc) > _MAX_ICC_BYTES:
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


def _orientation(im: Image.Image) -> int:
    """EXIF orientation, read before the pixels (HEIF: pillow-heif already applied it).

    A PNG's getexif() would decode the whole image to look for an eXIf chunk after the
    pixels; only an eXIf chunk before them is read (where libpng writers put it)."""
    try:
        if im.format == "PNG":
            raw = im.info.get("exif")
            if not raw:
                return 1
            exif = Image.Exif()
            exif.load(raw)
            return int(exif.get(0x0112, 1))
        return int(im.getexif().get(0x0112, 1))
    except Exception:
        return 1


def _orient(
    orientation: int, rgb: np.ndarray, alpha: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray | None]:
    """Apply EXIF orientation to the (already reduced) arrays."""
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


# ---------------------------------------------------------------------------------------------
# Bounded memory: decode cost, strip-wise conversion, banded PNG decoding

# Bytes per pixel of Pillow's in-memory modes ("RGB" is stored as 4 bytes, like "RGBA").
_PILLOW_BPP = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16L": 2, "I;16B": 2, "I;16N": 2}


def _decode_cost(im: Image.Image, kind: str) -> int:
    """Bytes the decoder holds at its peak: Pillow's image, and for WebP/HEIF also the codec's
    own full-size buffer (3 or 4 bytes a pixel) that is copied into it. Measured for a 24 Mpx
    HEIC: 151 MB over the worker's baseline, against 171 MB estimated here."""
    w, h = im.size
    pillow = _PILLOW_BPP.get(im.mode, 4)
    codec = (4 if "A" in im.mode else 3) if kind in ("webp", "heif") else 0
    return w * h * (pillow + codec)


def _reduce_factor(size: tuple[int, int], max_side: int | None) -> int:
    """Integer box-reduction factor that keeps the long side >= max_side (1: none)."""
    if max_side is None:
        return 1
    return max(1, max(size) // max_side)


def _reduce(
    rgb: np.ndarray, alpha: np.ndarray | None, factor: int
) -> tuple[np.ndarray, np.ndarray | None]:
    if factor <= 1:
        return rgb, alpha
    rgb = np.asarray(Image.fromarray(rgb).reduce(factor))
    if alpha is not None:
        alpha = np.asarray(Image.fromarray(alpha).reduce(factor))
    return rgb, alpha


class _Assembler:
    """Collects reduced strips into one preallocated output (no list of full strips)."""

    def __init__(self, size: tuple[int, int], factor: int) -> None:
        w, h = size
        self.shape = (-(-h // factor), -(-w // factor))
        self.rgb = np.empty((*self.shape, 3), np.uint8)
        self.alpha: np.ndarray | None = None
        self.y = 0

    def add(self, rgb: np.ndarray, alpha: np.ndarray | None) -> None:
        n = rgb.shape[0]
        self.rgb[self.y : self.y + n] = rgb
        if alpha is not None:
            if self.alpha is None:
                self.alpha = np.empty(self.shape, np.uint8)
            self.alpha[self.y : self.y + n] = alpha
        self.y += n


def _strip_rows(factor: int) -> int:
    return max(factor, (_STRIP_ROWS // factor) * factor)


def _convert_in_strips(
    im: Image.Image, *, keep_alpha: bool, factor: int
) -> tuple[np.ndarray, np.ndarray | None]:
    """`_to_rgb8` strip by strip, each strip reduced before the next: no full-size copy."""
    if factor == 1 and _plain_rgb(im):
        # Nothing to convert or reduce: Pillow's pixels in one copy, the output itself, not
        # strip by strip (four copies each). Measured: 2000x1500 (a 12 Mpx JPEG at half
        # scale) 14.6 -> 6.2 ms.
        return np.asarray(im), None
    w, h = im.size
    out = _Assembler(im.size, factor)
    rows = _strip_rows(factor)
    for y in range(0, h, rows):
        strip = im.crop((0, y, w, min(h, y + rows)))  # crop keeps info (ICC, transparency)
        rgb, alpha = _to_rgb8(strip, keep_alpha=keep_alpha)
        out.add(*_reduce(rgb, alpha, factor))
    return out.rgb, out.alpha if keep_alpha else None


@dataclass(frozen=True)
class _PngPlan:
    width: int
    height: int
    depth: int
    colour_type: int  # 0 grey, 2 RGB, 6 RGBA
    idat: tuple[tuple[int, int], ...]  # (offset, length) of each IDAT payload
    cost: int

    @property
    def channels(self) -> int:
        return {0: 1, 2: 3, 6: 4}[self.colour_type]

    @property
    def row_bytes(self) -> int:
        return self.width * self.channels * self.depth // 8


_BAND_MIN_BYTES = 32 * 1024 * 1024  # below this, Pillow's one-piece decode is fine


def _png_band_plan(data: bytes, im: Image.Image) -> _PngPlan | None:
    """A plan to decode this PNG band by band, or None when Pillow should decode it whole:
    small images, interlaced ones, palettes, 8-bit grey, grey+alpha and tRNS keys (at most
    1-2 bytes per pixel in Pillow, or rare) keep the one-piece path and its budget check."""
    w, h = im.size
    if w * h * _PILLOW_BPP.get(im.mode, 4) < _BAND_MIN_BYTES:
        return None
    pos, idat, header = 8, [], None
    try:
        while pos + 8 <= len(data):
            length, tag = struct.unpack(">I4s", data[pos : pos + 8])
            body = pos + 8
            if tag == b"IHDR":
                header = struct.unpack(">IIBBBBB", data[body : body + 13])
            elif tag == b"IDAT":
                idat.append((body, min(length, len(data) - body)))
            elif tag == b"tRNS":
                return None
            elif tag == b"IEND":
                break
            pos = body + length + 4
    except struct.error:
        return None
    if header is None or not idat:
        return None
    width, height, depth, colour_type, _, _, interlace = header
    if interlace or (width, height) != (w, h):
        return None
    if not ((colour_type in (2, 6) and depth in (8, 16)) or (colour_type == 0 and depth == 16)):
        return None
    plan = _PngPlan(width, height, depth, colour_type, tuple(idat), 0)
    band = _STRIP_ROWS * (plan.row_bytes + 1)
    # inflated rows + one band as decoded samples + its 8-bit copy
    return _PngPlan(width, height, depth, colour_type, tuple(idat), 3 * band + plan.row_bytes)


def _mini_png(plan: _PngPlan, rows: int, raw: bytes | bytearray) -> bytes:
    """A PNG of `rows` rows around already-filtered scanlines (stored deflate: no work)."""

    def chunk(tag: bytes, body: bytes) -> list[bytes]:
        crc = zlib.crc32(body, zlib.crc32(tag))
        return [struct.pack(">I", len(body)), tag, body, struct.pack(">I", crc)]

    ihdr = struct.pack(">IIBBBBB", plan.width, rows, plan.depth, plan.colour_type, 0, 0, 0)
    parts = [b"\x89PNG\r\n\x1a\n", *chunk(b"IHDR", ihdr)]
    parts += chunk(b"IDAT", zlib.compress(raw, 0)) + chunk(b"IEND", b"")
    return b"".join(parts)


_CORRUPT_PNG = "The photo file is damaged or incomplete. Please send it again."


def _decode_png_bands(
    data: bytes, plan: _PngPlan, im: Image.Image, *, keep_alpha: bool, factor: int
) -> tuple[np.ndarray, np.ndarray | None]:
    """Inflate the IDAT stream a band of rows at a time; each band is re-wrapped as a small
    PNG whose first row is the previous band's last (reconstructed) row, so PNG's row filters
    resolve exactly, decoded by OpenCV (exact 16-bit samples), reduced to 8 bits and
    downscaled before the next band is inflated."""
    icc = im.info.get("icc_profile")
    row = plan.row_bytes + 1  # with the filter byte
    rows_per_band = _strip_rows(factor)
    out = _Assembler((plan.width, plan.height), factor)
    inflater = zlib.decompressobj()
    buf = bytearray()
    seed: bytes | None = None
    y = 0

    def emit(n: int) -> None:
        nonlocal seed, y
        if y + n > plan.height:
            raise IntakeError(ErrorCode.CORRUPT, _CORRUPT_PNG)
        raw = bytearray(b"\x00" + seed if seed is not None else b"")
        raw += buf[: n * row]
        del buf[: n * row]
        mini = _mini_png(plan, n + (seed is not None), raw)
        del raw
        arr = cv2.imdecode(np.frombuffer(mini, np.uint8), cv2.IMREAD_UNCHANGED)
        if arr is None:
            raise IntakeError(ErrorCode.CORRUPT, _CORRUPT_PNG)
        if seed is not None:
            arr = arr[1:]
        seed = _png_row_bytes(arr[-1], plan)
        rgb, alpha = _band_to_rgb8(arr, plan, icc, keep_alpha=keep_alpha)
        out.add(*_reduce(rgb, alpha, factor))
        y += n

    try:
        for offset, length in plan.idat:
            pending = data[offset : offset + length]
            while pending:
                buf += inflater.decompress(pending, rows_per_band * row)
                pending = inflater.unconsumed_tail
                while len(buf) >= rows_per_band * row:
                    emit(rows_per_band)
            if inflater.eof:
                break
        if buf:
            if len(buf) % row:
                raise IntakeError(ErrorCode.CORRUPT, _CORRUPT_PNG)
            emit(len(buf) // row)
    except zlib.error as exc:
        raise IntakeError(ErrorCode.CORRUPT, _CORRUPT_PNG) from exc
    if y != plan.height or not inflater.eof:
        raise IntakeError(ErrorCode.CORRUPT, _CORRUPT_PNG)
    return out.rgb, out.alpha if keep_alpha else None


def _png_row_bytes(last: np.ndarray, plan: _PngPlan) -> bytes:
    """One decoded row (OpenCV's BGR(A), native-endian) back to PNG sample bytes."""
    if plan.colour_type == 2:
        last = last[:, ::-1]
    elif plan.colour_type == 6:
        last = last[:, [2, 1, 0, 3]]
    return np.ascontiguousarray(last).astype(">u2" if plan.depth == 16 else np.uint8).tobytes()


def _band_to_rgb8(
    arr: np.ndarray, plan: _PngPlan, icc: bytes | None, *, keep_alpha: bool
) -> tuple[np.ndarray, np.ndarray | None]:
    if plan.depth == 16:  # rescale 0..65535 -> 0..255 with rounding, no wide temporaries
        arr = cv2.convertScaleAbs(arr, alpha=255.0 / 65535.0)
    alpha = None
    if plan.colour_type == 0:
        rgb = np.repeat(arr[..., None], 3, axis=2)
    elif plan.colour_type == 2:
        rgb = np.ascontiguousarray(arr[..., ::-1])
    else:
        rgb = np.ascontiguousarray(arr[..., 2::-1])
        alpha = np.ascontiguousarray(arr[..., 3])
    if icc:
        converted = _icc_to_srgb(Image.fromarray(rgb), icc, "RGB")
        if converted is not None:
            rgb = np.asarray(converted, dtype=np.uint8)
    if alpha is not None and not keep_alpha:
        if alpha.min() < 255:
            rgb = ((rgb.astype(np.uint16) * alpha[..., None] + 127) // 255).astype(np.uint8)
        alpha = None
    return rgb, alpha


__all__ = [
    "MAX_BYTES",
    "MAX_DECODE_BYTES",
    "MAX_PIXELS",
    "MIN_SIDE",
    "DecodedImage",
    "decode_image",
]
