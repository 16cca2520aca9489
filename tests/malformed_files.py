"""Builds real, fully synthetic image files (good, odd and hostile) at test time.

Nothing here is committed as a binary fixture and no pixel comes from a dataset: every file is
generated from numpy noise/gradients with Pillow, pillow-heif, OpenCV or hand-written bytes.
"""

from __future__ import annotations

import io
import os
import struct
import zlib

import cv2
import numpy as np
import pillow_heif
from PIL import Image

pillow_heif.register_heif_opener()


def test_pattern(h: int = 240, w: int = 320, seed: int = 0) -> np.ndarray:
    """An asymmetric RGB pattern (so any rotation or flip is visible) with mild texture."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    r = 60 + 150 * x / max(w - 1, 1)
    g = 40 + 120 * y / max(h - 1, 1)
    b = 90 + 60 * np.sin(x / 17.0) * np.cos(y / 23.0)
    img = np.stack([r, g, b], axis=2)
    img += rng.normal(0, 4, img.shape).astype(np.float32)
    img = cv2.GaussianBlur(img, (0, 0), 1.0)
    img[: h // 5, : w // 4] = (230, 40, 40)  # a red block in the top-left corner
    return np.clip(img, 0, 255).astype(np.uint8)


def _save(im: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def jpeg(rgb: np.ndarray, quality: int = 92, orientation: int | None = None) -> bytes:
    im = Image.fromarray(rgb)
    kw: dict[str, object] = {"quality": quality}
    if orientation is not None:
        exif = im.getexif()
        exif[0x0112] = orientation
        exif[0x010F] = "SyntheticCam"  # Make, to check metadata does not survive
        kw["exif"] = exif.tobytes()
    return _save(im, "JPEG", **kw)


def png(arr: np.ndarray, mode: str | None = None, orientation: int | None = None) -> bytes:
    im = Image.fromarray(arr, mode) if mode else Image.fromarray(arr)
    kw: dict[str, object] = {}
    if orientation is not None:
        exif = im.getexif()
        exif[0x0112] = orientation
        kw["exif"] = exif.tobytes()
    return _save(im, "PNG", **kw)


def stored_for_orientation(upright: np.ndarray, orientation: int) -> np.ndarray:
    """The pixels a camera stores so that applying EXIF `orientation` shows `upright`."""
    inverse = {
        1: lambda a: a,
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1],
        5: lambda a: a.swapaxes(0, 1),
        6: lambda a: np.rot90(a, 1),  # display rotates 90 deg clockwise
        7: lambda a: a[::-1, ::-1].swapaxes(0, 1),
        8: lambda a: np.rot90(a, -1),
    }[orientation]
    return np.ascontiguousarray(inverse(upright))


def truncated_jpeg(rgb: np.ndarray) -> bytes:
    data = jpeg(rgb)
    return data[: len(data) * 6 // 10]


def truncated_png(rgb: np.ndarray) -> bytes:
    data = png(rgb)
    return data[: len(data) * 6 // 10]


def pdf_document() -> bytes:
    """A small valid one-page PDF (the kind someone renames to photo.jpg)."""
    objs = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 200 200] /Contents 4 0 R >>",
    ]
    stream = b"0 0 1 rg 20 20 160 160 re f"
    objs.append(b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream")
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for i, body in enumerate(objs, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % i + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objs) + 1)
    for off in offsets:
        out += b"%010d 00000 n \n" % off
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objs) + 1,
        xref,
    )
    return bytes(out)


def _png_chunk(tag: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body))


def png_bomb(width: int = 30000, height: int = 30000) -> bytes:
    """A complete, valid 8-bit greyscale PNG of all-black pixels: ~0.9 MB that inflates to
    width*height bytes (900 MB for the default). Built in ~0.1 s without materialising the raw
    data: identical full-flushed deflate blocks of zero bytes are repeated, and the zlib
    trailer's Adler-32 of an all-zero stream is computed in closed form."""
    raw_len = height * (width + 1)  # a filter byte (0) before each row, all zero
    chunk = 1 << 20
    c = zlib.compressobj(9)
    first = c.compress(bytes(chunk)) + c.flush(zlib.Z_FULL_FLUSH)  # zlib header + block
    block = c.compress(bytes(chunk)) + c.flush(zlib.Z_FULL_FLUSH)  # a block, no header
    n_full, rem = divmod(raw_len, chunk)
    tail = c.compress(bytes(rem)) + c.flush()  # final block + (wrong) adler32
    adler = ((raw_len % 65521) << 16) | 1  # a = 1 + sum(zeros) = 1, b = n * 1 mod 65521
    body = first + block * (n_full - 1) + tail[:-4] + struct.pack(">I", adler)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", body)
        + _png_chunk(b"IEND", b"")
    )


def heic(rgb: np.ndarray, quality: int = 90, orientation: int | None = None) -> bytes:
    im = Image.fromarray(rgb)
    kw: dict[str, object] = {"quality": quality}
    if orientation is not None:
        exif = im.getexif()
        exif[0x0112] = orientation
        kw["exif"] = exif.tobytes()
    return _save(im, "HEIF", **kw)


def cmyk_jpeg(rgb: np.ndarray) -> bytes:
    """Pillow writes CMYK JPEGs the way Photoshop does: Adobe APP14 marker, inverted ink."""
    return _save(Image.fromarray(rgb).convert("CMYK"), "JPEG", quality=95)


def png16_grey(grey16: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", grey16.astype(np.uint16))
    assert ok
    return buf.tobytes()


def png16_rgb(rgb16: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(rgb16[..., ::-1].astype(np.uint16)))
    assert ok
    return buf.tobytes()


def _frames(rgb: np.ndarray, n: int = 3) -> list[Image.Image]:
    return [Image.fromarray(np.roll(rgb, 7 * i, axis=1)) for i in range(n)]


def animated_gif(rgb: np.ndarray) -> bytes:
    fr = _frames(rgb)
    return _save(fr[0], "GIF", save_all=True, append_images=fr[1:], duration=100, loop=0)


def still_gif(rgb: np.ndarray) -> bytes:
    return _save(Image.fromarray(rgb), "GIF")


def animated_webp(rgb: np.ndarray) -> bytes:
    fr = _frames(rgb)
    return _save(fr[0], "WEBP", save_all=True, append_images=fr[1:], duration=100, quality=80)


def animated_png(rgb: np.ndarray) -> bytes:
    fr = _frames(rgb)
    return _save(fr[0], "PNG", save_all=True, append_images=fr[1:], duration=100)


def webp(rgb: np.ndarray, lossless: bool = False) -> bytes:
    return _save(Image.fromarray(rgb), "WEBP", quality=90, lossless=lossless)


def webp_rgba(rgba: np.ndarray) -> bytes:
    return _save(Image.fromarray(rgba, "RGBA"), "WEBP", lossless=True)


def tiff(rgb: np.ndarray) -> bytes:
    return _save(Image.fromarray(rgb), "TIFF")


def bmp(rgb: np.ndarray) -> bytes:
    return _save(Image.fromarray(rgb), "BMP")


def oversized_jpeg(rgb: np.ndarray, total: int = 21 * 1024 * 1024) -> bytes:
    """A valid JPEG padded past 20 MB with trailing bytes (as Motion Photos append video)."""
    data = jpeg(rgb)
    return data + bytes(total - len(data))


def palette_png(rgb: np.ndarray, transparent_index: int | None = None) -> bytes:
    im = Image.fromarray(rgb).quantize(colors=32)
    kw: dict[str, object] = {}
    if transparent_index is not None:
        kw["transparency"] = transparent_index
    return _save(im, "PNG", **kw)


def random_bytes(n: int = 4096, seed: int = 0) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()


def write(path: str | os.PathLike[str], data: bytes) -> str:
    """Write the bytes to a real file (tests then read it back like a user upload)."""
    with open(path, "wb") as f:
        f.write(data)
    return os.fspath(path)


def flat_png(width: int, height: int, *, bit_depth: int = 8, colour: str = "RGB") -> bytes:
    """A valid all-zero PNG of any size, depth and colour type, built in constant memory.

    The issue's 381 KB 16-bit RGBA 7000x7000 file is `flat_png(7000, 7000, bit_depth=16,
    colour="RGBA")`: tiny on the wire, 392 MB of samples inflated. Same trick as png_bomb.
    """
    channels = {"L": 1, "LA": 2, "RGB": 3, "RGBA": 4}[colour]
    colour_type = {"L": 0, "LA": 4, "RGB": 2, "RGBA": 6}[colour]
    raw_len = height * (1 + width * channels * bit_depth // 8)
    chunk = 1 << 20
    c = zlib.compressobj(9)
    first = c.compress(bytes(chunk)) + c.flush(zlib.Z_FULL_FLUSH)
    block = c.compress(bytes(chunk)) + c.flush(zlib.Z_FULL_FLUSH)
    n_full, rem = divmod(raw_len, chunk)
    tail = c.compress(bytes(rem)) + c.flush()
    adler = ((raw_len % 65521) << 16) | 1
    body = first + block * (n_full - 1) + tail[:-4] + struct.pack(">I", adler)
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", body)
        + _png_chunk(b"IEND", b"")
    )
