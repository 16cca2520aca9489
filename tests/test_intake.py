"""Safe intake on real files generated at test time (see tests/malformed_files.py)."""

from __future__ import annotations

import io
import resource
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image, ImageFile

from hbscreen.inference.errors import ErrorCode, IntakeError
from hbscreen.inference.intake import MAX_BYTES, DecodedImage, decode_image
from tests import malformed_files as mf


@pytest.fixture(scope="module")
def upright() -> np.ndarray:
    return mf.test_pattern(240, 320)


def _roundtrip(tmp_path: Path, name: str, data: bytes) -> bytes:
    """Write to a real file and read it back, as an upload would arrive."""
    return Path(mf.write(tmp_path / name, data)).read_bytes()


def _code(data: bytes, **kw: object) -> ErrorCode:
    with pytest.raises(IntakeError) as info:
        decode_image(data, **kw)  # type: ignore[arg-type]
    assert info.value.message  # plain words for people; tests match codes only
    return info.value.code


# --- refusals ---------------------------------------------------------------------------------


def test_empty_bytes() -> None:
    assert _code(b"") == ErrorCode.NOT_AN_IMAGE


def test_random_bytes(tmp_path: Path) -> None:
    assert _code(_roundtrip(tmp_path, "x.jpg", mf.random_bytes())) == ErrorCode.NOT_AN_IMAGE


def test_pdf_renamed_jpg(tmp_path: Path) -> None:
    data = _roundtrip(tmp_path, "photo.jpg", mf.pdf_document())
    assert data.startswith(b"%PDF")
    assert _code(data) == ErrorCode.NOT_AN_IMAGE


def test_text_file() -> None:
    assert _code(b"hello, this is my eye\n" * 20) == ErrorCode.NOT_AN_IMAGE


def test_truncated_jpeg(tmp_path: Path, upright: np.ndarray) -> None:
    data = _roundtrip(tmp_path, "t.jpg", mf.truncated_jpeg(upright))
    assert _code(data, min_side=24) == ErrorCode.CORRUPT


def test_truncated_jpeg_even_if_pillow_told_to_accept_truncation(
    monkeypatch: pytest.MonkeyPatch, upright: np.ndarray
) -> None:
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    assert _code(mf.truncated_jpeg(upright), min_side=24) == ErrorCode.CORRUPT
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # restored after the strict load


def test_truncated_png(upright: np.ndarray) -> None:
    assert _code(mf.truncated_png(upright), min_side=24) == ErrorCode.CORRUPT


def test_header_only_jpeg_is_corrupt(upright: np.ndarray) -> None:
    assert _code(mf.jpeg(upright)[:300], min_side=24) == ErrorCode.CORRUPT


def test_png_bomb_refused_fast_with_bounded_memory(tmp_path: Path) -> None:
    data = _roundtrip(tmp_path, "bomb.png", mf.png_bomb(30000, 30000))
    assert len(data) < 2 * 1024 * 1024  # small on the wire, 900 MB inflated
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    assert _code(data) == ErrorCode.TOO_LARGE
    elapsed = time.perf_counter() - t0
    rss_growth_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024
    # Generous bounds for a shared CI box; benchmarks/bench_intake.py prints real figures.
    assert elapsed < 1.0
    assert rss_growth_mb < 100


def test_png_bomb_refused_even_without_pillow_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    assert _code(mf.png_bomb(12000, 12000)) == ErrorCode.TOO_LARGE


def test_pixel_limit_is_a_parameter(upright: np.ndarray) -> None:
    assert _code(mf.png(upright), max_pixels=240 * 320 - 1) == ErrorCode.TOO_LARGE
    assert decode_image(mf.png(upright), max_pixels=240 * 320).rgb.shape == (240, 320, 3)


def test_file_over_20_mb(tmp_path: Path, upright: np.ndarray) -> None:
    data = _roundtrip(tmp_path, "big.jpg", mf.oversized_jpeg(upright))
    assert len(data) > MAX_BYTES
    assert _code(data) == ErrorCode.TOO_LARGE


def test_too_small() -> None:
    small = mf.test_pattern(150, 300)
    assert _code(mf.jpeg(small)) == ErrorCode.TOO_SMALL
    assert decode_image(mf.jpeg(small), min_side=24).rgb.shape == (150, 300, 3)


def test_cutout_sized_image_passes_with_cutout_min_side() -> None:
    rgba = np.zeros((33, 79, 4), np.uint8)
    rgba[..., 0] = 180
    rgba[8:25, 5:75, 3] = 255
    out = decode_image(mf.png(rgba, "RGBA"), keep_alpha=True, min_side=24)
    assert out.alpha is not None and out.alpha.shape == (33, 79)
    assert _code(mf.png(rgba[:20], "RGBA"), keep_alpha=True, min_side=24) == ErrorCode.TOO_SMALL


def test_animated_gif(tmp_path: Path, upright: np.ndarray) -> None:
    data = _roundtrip(tmp_path, "a.gif", mf.animated_gif(upright))
    assert _code(data) == ErrorCode.ANIMATED


def test_animated_webp(upright: np.ndarray) -> None:
    assert _code(mf.animated_webp(upright)) == ErrorCode.ANIMATED


def test_animated_png(upright: np.ndarray) -> None:
    assert _code(mf.animated_png(upright)) == ErrorCode.ANIMATED


@pytest.mark.parametrize("maker", [mf.still_gif, mf.tiff, mf.bmp])
def test_other_image_formats_unsupported(maker, upright: np.ndarray) -> None:
    assert _code(maker(upright)) == ErrorCode.UNSUPPORTED_FORMAT


def test_svg_unsupported() -> None:
    svg = b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="9" height="9"/>'
    assert _code(svg) == ErrorCode.UNSUPPORTED_FORMAT


def test_corrupt_png_body() -> None:
    data = bytearray(mf.png(mf.test_pattern(240, 320)))
    idat = data.index(b"IDAT")
    data[idat + 40 : idat + 400] = bytes(360)  # destroy the deflate stream, keep the header
    assert _code(bytes(data)) == ErrorCode.CORRUPT


# --- accepted formats and conversions -----------------------------------------------------------


def _close(a: np.ndarray, b: np.ndarray, tol: float) -> bool:
    return a.shape == b.shape and float(np.abs(a.astype(int) - b.astype(int)).mean()) < tol


def test_jpeg_png_webp_decode(upright: np.ndarray) -> None:
    out = decode_image(mf.png(upright))
    assert isinstance(out, DecodedImage) and out.format == "png" and out.alpha is None
    assert out.rgb.dtype == np.uint8 and np.array_equal(out.rgb, upright)
    assert decode_image(mf.webp(upright, lossless=True)).rgb.tolist() == upright.tolist()
    j = decode_image(mf.jpeg(upright))
    assert j.format == "jpeg" and _close(j.rgb, upright, 3)
    w = decode_image(mf.webp(upright))
    assert w.format == "webp" and _close(w.rgb, upright, 4)


def test_heic_photo(tmp_path: Path, upright: np.ndarray) -> None:
    data = _roundtrip(tmp_path, "IMG_0001.HEIC", mf.heic(upright))
    out = decode_image(data)
    assert out.format == "heif" and _close(out.rgb, upright, 5)


def test_heic_with_orientation(upright: np.ndarray) -> None:
    stored = mf.stored_for_orientation(upright, 6)
    out = decode_image(mf.heic(stored, orientation=6))
    assert _close(out.rgb, upright, 5)


def test_cmyk_jpeg_adobe_inverted(upright: np.ndarray) -> None:
    data = mf.cmyk_jpeg(upright)
    assert b"Adobe" in data[:200]
    out = decode_image(data)
    assert out.rgb.shape == upright.shape
    # Pillow's naive CMYK<->RGB is lossy for mixed colours; a wrong (un-inverted) decode
    # would give a photographic negative, far off this bound.
    assert _close(out.rgb, upright, 12)
    red_block = out.rgb[5:40, 5:70].reshape(-1, 3).mean(axis=0)
    assert red_block[0] > 200 and red_block[1] < 70 and red_block[2] < 70


def test_png_16bit_grey_scaled_not_clipped() -> None:
    ramp = np.tile(np.linspace(0, 65535, 256).astype(np.uint16), (240, 1))
    out = decode_image(mf.png16_grey(ramp))
    g = out.rgb[..., 0].astype(int)
    assert np.array_equal(out.rgb[..., 0], out.rgb[..., 1])
    expected = np.round(ramp.astype(np.float64) * 255 / 65535).astype(int)
    assert np.abs(g - expected).max() <= 1
    assert g.max() == 255 and g.min() == 0 and len(np.unique(g)) > 200  # a ramp, not a step


def test_png_16bit_rgb(upright: np.ndarray) -> None:
    rgb16 = upright.astype(np.uint16) * 257
    out = decode_image(mf.png16_rgb(rgb16))
    assert np.abs(out.rgb.astype(int) - upright.astype(int)).max() <= 1


def test_greyscale(upright: np.ndarray) -> None:
    grey = upright[..., 1]
    out = decode_image(mf.png(grey, "L"))
    assert out.rgb.shape == (240, 320, 3) and np.array_equal(out.rgb[..., 2], grey)
    grey_jpeg = decode_image(mf.jpeg(np.ascontiguousarray(grey)))
    assert grey_jpeg.format == "jpeg" and _close(grey_jpeg.rgb[..., 0], grey, 3)


def test_palette(upright: np.ndarray) -> None:
    out = decode_image(mf.palette_png(upright))
    assert out.rgb.shape == upright.shape and _close(out.rgb, upright, 12)


def test_palette_with_transparency_keeps_alpha() -> None:
    rgb = mf.test_pattern(240, 320)
    data = mf.palette_png(rgb, transparent_index=0)
    out = decode_image(data, keep_alpha=True)
    assert out.alpha is not None and out.alpha.dtype == np.uint8 and out.alpha.min() == 0


def test_la_greyscale_with_alpha() -> None:
    la = np.zeros((240, 320, 2), np.uint8)
    la[..., 0] = 200
    la[60:180, 80:240, 1] = 255
    data = mf.png(la, "LA")
    kept = decode_image(data, keep_alpha=True)
    assert kept.alpha is not None and np.array_equal(kept.alpha, la[..., 1])
    assert np.all(kept.rgb == 200)
    dropped = decode_image(data)
    assert dropped.alpha is None
    assert np.all(dropped.rgb[0, 0] == 0) and np.all(dropped.rgb[100, 100] == 200)


def test_rgba_cutout_alpha_is_the_mask() -> None:
    rgba = np.zeros((100, 200, 4), np.uint8)
    rgba[..., :3] = (170, 80, 75)
    rgba[30:70, 20:180, 3] = 255
    rgba[29, 20:180, 3] = 128  # a soft edge
    kept = decode_image(mf.png(rgba, "RGBA"), keep_alpha=True, min_side=24)
    assert np.array_equal(kept.alpha, rgba[..., 3])
    assert np.array_equal(kept.rgb, rgba[..., :3])  # RGB as stored, not premultiplied
    flat = decode_image(mf.png(rgba, "RGBA"), min_side=24)
    assert flat.alpha is None and flat.rgb[0, 0].tolist() == [0, 0, 0]
    assert flat.rgb[29, 50].tolist() == [85, 40, 38]  # composited onto black
    webp_kept = decode_image(mf.webp_rgba(rgba), keep_alpha=True, min_side=24)
    assert np.array_equal(webp_kept.alpha, rgba[..., 3])


@pytest.mark.parametrize("orientation", [2, 3, 4, 5, 6, 7, 8])
def test_exif_rotated_png_equals_upright(orientation: int, upright: np.ndarray) -> None:
    stored = mf.stored_for_orientation(upright, orientation)
    out = decode_image(mf.png(stored, orientation=orientation))
    assert np.array_equal(out.rgb, upright)


@pytest.mark.parametrize("orientation", [6, 8, 3])
def test_exif_rotated_jpeg_equals_upright(
    tmp_path: Path, orientation: int, upright: np.ndarray
) -> None:
    stored = mf.stored_for_orientation(upright, orientation)
    data = _roundtrip(tmp_path, "rot.jpg", mf.jpeg(stored, quality=95, orientation=orientation))
    rotated = decode_image(data).rgb
    plain = decode_image(mf.jpeg(upright, quality=95)).rgb
    assert rotated.shape == plain.shape == upright.shape
    # Same pixels up to JPEG noise (the blocks lie differently); a wrong rotation is far off.
    assert _close(rotated, plain, 2.5)
    assert _close(rotated, upright, 2.5)
    wrong = np.rot90(upright, 2) if orientation != 3 else upright[::-1]
    assert not _close(rotated, np.ascontiguousarray(wrong), 10)


def test_metadata_dropped(upright: np.ndarray) -> None:
    out = decode_image(mf.jpeg(upright, orientation=1))
    assert type(out.rgb) is np.ndarray
    assert not out.rgb.flags.writeable  # frozen: callers copy before drawing on it
    # The arrays are the whole result: a re-encoded copy carries no EXIF at all.
    buf = io.BytesIO()
    Image.fromarray(np.array(out.rgb)).save(buf, "JPEG")
    assert b"SyntheticCam" not in buf.getvalue() and b"Exif" not in buf.getvalue()


def test_max_side_uses_reduced_decode() -> None:
    big = mf.test_pattern(1500, 2000)
    out = decode_image(mf.jpeg(big), max_side=640)
    assert max(out.rgb.shape[:2]) == 640 and out.rgb.shape[:2] == (480, 640)


def test_icc_srgb_profile_is_noop(upright: np.ndarray) -> None:
    from PIL import ImageCms

    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    buf = io.BytesIO()
    Image.fromarray(upright).save(buf, "PNG", icc_profile=icc)
    out = decode_image(buf.getvalue())
    assert np.abs(out.rgb.astype(int) - upright.astype(int)).max() <= 1


def _ftyp(major: bytes, *compat: bytes) -> bytes:
    body = major + b"\x00\x00\x00\x00" + b"".join(compat)
    return (8 + len(body)).to_bytes(4, "big") + b"ftyp" + body + bytes(64)


def test_iso_bmff_family() -> None:
    assert _code(_ftyp(b"avif", b"mif1", b"miaf")) == ErrorCode.UNSUPPORTED_FORMAT
    assert _code(_ftyp(b"isom", b"mp41")) == ErrorCode.NOT_AN_IMAGE  # a video renamed .jpg
    assert _code(_ftyp(b"heic", b"mif1")) == ErrorCode.CORRUPT  # HEIC header, no image


# --- bounded decode memory (issue 12 part 2) ---------------------------------------------------


def _noise(h: int, w: int, c: int, dtype: type, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    top = np.iinfo(dtype).max
    base = np.linspace(0, top, w, dtype=np.float64)[None, :, None] * np.ones((h, 1, c))
    return np.clip(base + rng.normal(0, top / 20, (h, w, c)), 0, top).astype(dtype)


def _both_paths(monkeypatch: pytest.MonkeyPatch, data: bytes, **kw: object) -> tuple:
    """Decode once whole (Pillow) and once band by band (forced), for comparison."""
    from hbscreen.inference import intake

    monkeypatch.setattr(intake, "_BAND_MIN_BYTES", 1 << 40)
    whole = decode_image(data, **kw)  # type: ignore[arg-type]
    monkeypatch.setattr(intake, "_BAND_MIN_BYTES", 0)
    monkeypatch.setattr(intake, "_STRIP_ROWS", 37)  # many bands, odd boundaries
    banded = decode_image(data, **kw)  # type: ignore[arg-type]
    return whole, banded


def test_banded_png_matches_whole_decode_8bit_rgb(monkeypatch: pytest.MonkeyPatch) -> None:
    rgb = _noise(300, 410, 3, np.uint8)
    _ok, buf = cv2.imencode(".png", rgb[..., ::-1])  # OpenCV's adaptive row filters
    whole, banded = _both_paths(monkeypatch, buf.tobytes())
    assert np.array_equal(whole.rgb, rgb) and np.array_equal(banded.rgb, rgb)


def test_banded_png_matches_whole_decode_16bit_grey(monkeypatch: pytest.MonkeyPatch) -> None:
    g = _noise(260, 333, 1, np.uint16)[..., 0]
    whole, banded = _both_paths(monkeypatch, mf.png16_grey(g))
    assert np.array_equal(whole.rgb, banded.rgb)


def test_banded_png_16bit_rgba_with_alpha_and_downscale(monkeypatch: pytest.MonkeyPatch) -> None:
    rgba = _noise(500, 640, 4, np.uint16, seed=3)
    _ok, buf = cv2.imencode(".png", rgba[..., [2, 1, 0, 3]])
    whole, banded = _both_paths(monkeypatch, buf.tobytes(), max_side=300)
    assert whole.rgb.shape == banded.rgb.shape == (234, 300, 3)
    # Pillow truncates 16-bit RGBA to the high byte; the banded path rounds: at most 1 apart
    # per sample before compositing, a few after averaging.
    diff = np.abs(whole.rgb.astype(int) - banded.rgb.astype(int))
    assert diff.max() <= 2 and diff.mean() < 0.6
    whole, banded = _both_paths(monkeypatch, buf.tobytes(), keep_alpha=True, min_side=24)
    assert banded.alpha is not None and whole.alpha is not None
    assert np.abs(whole.alpha.astype(int) - banded.alpha.astype(int)).max() <= 1


def test_banded_png_truncated_or_damaged_is_corrupt(monkeypatch: pytest.MonkeyPatch) -> None:
    from hbscreen.inference import intake

    monkeypatch.setattr(intake, "_BAND_MIN_BYTES", 0)
    rgb = _noise(300, 410, 3, np.uint8)
    data = mf.png(rgb)
    assert _code(data[: len(data) * 6 // 10]) == ErrorCode.CORRUPT
    broken = bytearray(data)
    idat = broken.index(b"IDAT")
    broken[idat + 40 : idat + 400] = bytes(360)
    assert _code(bytes(broken)) == ErrorCode.CORRUPT


def test_issue_png_decodes_in_bands_with_bounded_memory() -> None:
    """The issue's 381 KB 16-bit RGBA 7000x7000 PNG: answered, not a 1.4 GB decode."""
    data = mf.flat_png(7000, 7000, bit_depth=16, colour="RGBA")
    assert len(data) < 400 * 1024
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out = decode_image(data, max_side=1280)
    growth_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024
    assert out.rgb.shape == (1280, 1280, 3)
    assert growth_mb < 150  # was ~1300; the real worker's peak: tests/test_faults_memory.py


def test_over_decode_budget_is_refused_without_inviting_a_resend() -> None:
    """What cannot be banded (here: grey+alpha) and would need more than the budget is
    refused before any pixel is decoded."""
    im = Image.new("LA", (4000, 3000))
    buf = io.BytesIO()
    im.save(buf, "PNG")  # Pillow holds LA as 4 bytes a pixel
    with pytest.raises(IntakeError) as info:
        decode_image(buf.getvalue(), max_decode_bytes=16 * 1024 * 1024)
    assert info.value.code == ErrorCode.TOO_LARGE
    assert "again" not in info.value.message
    assert info.value.details["decoded_bytes"] == 4000 * 3000 * 4
