"""The ONNX pipeline end to end: bytes in, result + heatmap out.

Mechanics run on tiny ONNX models with the shipped contract; the realistic-photo test runs the
shipped models on the committed (synthetic) example photo.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from hbscreen.inference.pipeline import Pipeline
from tests.synthetic import jpeg, synthetic_photo
from tests.tiny_models import build_tiny_models

EXAMPLE = Path("examples/eyelid.jpg")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Pipeline:
    return Pipeline(build_tiny_models(tmp_path_factory.mktemp("tiny")))


@pytest.fixture(scope="module")
def shipped() -> Pipeline:
    return Pipeline.shared()


def test_tiny_pipeline_gives_a_complete_result(tiny):
    result, heatmap = tiny.screen(jpeg(synthetic_photo()), "pregnant-2", path="x.jpg")
    assert result.error is None, result.error
    assert result.quality is not None and result.quality.ok, result.quality
    assert result.ok and result.hb_g_dl is not None
    lo80, hi80 = result.interval_80
    lo95, hi95 = result.interval_95
    assert lo95 <= lo80 <= result.hb_g_dl <= hi80 <= hi95
    assert result.category in {"none", "mild", "moderate", "severe"}
    assert result.referral in {"urgent", "blood_test", "routine"}
    assert result.validated_for_group is False  # pregnancy is outside the training population
    assert set(result.timings_ms) >= {"decode", "segmentation", "quality", "regression"}
    # The heatmap is a small JPEG without metadata.
    assert heatmap is not None and len(heatmap) <= 150_000
    im = Image.open(io.BytesIO(heatmap))
    assert im.format == "JPEG" and not im.getexif()
    json.loads(result.to_json())  # JSON-serialisable, no bytes inside


def test_refusals_are_results_not_exceptions(tiny):
    result, heatmap = tiny.screen(b"%PDF-1.7\n1 0 obj\n<<>>\nendobj\n", "woman")
    assert not result.ok and heatmap is None
    assert result.error.code == "not_an_image"
    assert result.referral == "retake"


def test_a_photo_without_conjunctiva_asks_for_a_retake(tiny):
    skin = np.full((720, 960, 3), (196, 150, 122), np.uint8)
    result, heatmap = tiny.screen(jpeg(skin), "woman")
    assert not result.ok and heatmap is None and result.referral == "retake"
    assert "conjunctiva_not_found" in result.quality.failing_codes


def test_exif_rotated_photo_gives_the_upright_result(tiny):
    upright = synthetic_photo()
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: viewers turn it 90 degrees clockwise
    stored = np.ascontiguousarray(np.rot90(upright, k=1))
    a, _ = tiny.screen(jpeg(upright), "woman")
    b, _ = tiny.screen(jpeg(stored, exif.tobytes()), "woman")
    assert a.ok and b.ok
    assert abs(a.hb_g_dl - b.hb_g_dl) <= 0.1


def test_a_model_crash_still_answers(tmp_path):
    root = build_tiny_models(tmp_path)
    card = json.loads((root / "regression.json").read_text())
    card["preprocessing"]["size"] = [16, 16]  # the graph wants 32x32: onnxruntime raises
    (root / "regression.json").write_text(json.dumps(card))
    result, _ = Pipeline(root).screen(jpeg(synthetic_photo()), "woman")
    assert not result.ok and result.error.code == "model_failed"


def test_cutout_mode_takes_the_mask_from_alpha(tiny):
    rgba = np.zeros((120, 300, 4), np.uint8)
    rgba[..., :3] = (200, 80, 90)
    alpha = np.zeros((120, 300), np.uint8)
    cv2.ellipse(alpha, (150, 60), (140, 50), 0, 0, 360, 255, -1)
    rgba[..., 3] = alpha
    buf = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buf, "PNG")
    result, _heatmap = tiny.screen(buf.getvalue(), "child-24-59m", cutout=True)
    assert result.ok and "segmentation" not in result.timings_ms
    assert result.validated_for_group is True
    no_alpha, _ = tiny.screen(jpeg(synthetic_photo()), "woman", cutout=True)
    assert no_alpha.error.code == "no_alpha"


def test_shipped_models_screen_the_example_photo(shipped):
    result, heatmap = shipped.screen(EXAMPLE.read_bytes(), "pregnant-2", path=str(EXAMPLE))
    assert result.ok, (result.error, result.quality)
    assert 4.0 <= result.hb_g_dl <= 20.0
    assert result.quality.ok
    assert heatmap is not None and len(heatmap) <= 150_000
    assert result.model_versions["regression"] != "0.0.0-tiny"


@pytest.mark.parametrize("shape", [(1280, 960, 3), (613, 1001, 3), (700, 500)])
def test_shrink_halves_plane_by_plane_to_the_same_pixels(shape) -> None:
    """shrink's plane-by-plane pyrDown gives what a 3-channel pyrDown chain gives (the model
    was trained on that), on whole frames and on pass 2's strided crops."""
    from hbscreen.inference.preprocess import shrink

    img = np.random.default_rng(len(shape)).integers(0, 256, shape, dtype=np.uint8)
    for x in (img, img[17:-23, 31:-5]):
        ref = x
        while ref.shape[0] >= 2 * 96 and ref.shape[1] >= 2 * 96:
            ref = cv2.pyrDown(ref)
        assert np.array_equal(shrink(x, 96, 96), cv2.resize(ref, (96, 96)))


def test_sessions_ask_for_exact_int8_sums_where_the_default_saturates() -> None:
    """On x86 without VNNI the default int8 kernels saturate and no served mask matched a VNNI
    machine's; the exact ones make them identical (benchmarks/int8_without_vnni.py). On VNNI
    the default is exact already, and the exact kernels were 1.33x slower: not asked for."""
    from hbscreen.inference.modelcard import MODELS_DIR
    from hbscreen.inference.pipeline import int8_sums_saturate, make_session

    def entry(**kw: bool) -> str:
        options = make_session(MODELS_DIR / "segmentation.onnx", **kw).get_session_options()
        try:
            return options.get_session_config_entry("session.x64quantprecision")
        except RuntimeError:  # not set
            return ""

    assert entry(exact_int8=True) == "1" and entry(exact_int8=False) == ""
    assert entry() == ("1" if int8_sums_saturate() else "")
    zen2 = "flags\t\t: fpu sse2 avx avx2 fma bmi2"
    ice_lake = zen2 + " avx512f avx512bw avx512_vnni"
    assert int8_sums_saturate("x86_64", zen2)
    assert int8_sums_saturate("x86_64", zen2 + " avx512f avx512bw")  # Skylake-SP
    assert not int8_sums_saturate("x86_64", ice_lake)
    assert not int8_sums_saturate("x86_64", zen2 + " avx_vnni")  # Alder Lake
    assert not int8_sums_saturate("aarch64", "")
