"""The screening pipeline: bytes in, ScreeningResult (+ heatmap JPEG) out.

decode -> segmentation -> quality gate -> crop -> regression with in-graph heatmap ->
conformal interval -> advice. Models and cards load once per process.
"""

from __future__ import annotations

import ctypes
import platform
import time
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort

from . import advice, heatmap, intake, preprocess, quality
from .errors import ErrorCode, ScreeningError
from .modelcard import MODELS_DIR, ModelCard, load_card
from .result import ErrorInfo, ScreeningResult

CUTOUT_MIN_SIDE = 24
# Photos are screened at most this large: more pixels add decode time, not information the
# models (256 px segmentation, small regression crops) or the quality gate can use.
WORK_LONG_SIDE = 1280


def keep_image_buffers_in_heap(limit: int = 64 * 1024 * 1024) -> bool:
    """Ask glibc to serve photo-sized buffers from the heap instead of fresh mmaps.

    By default each multi-megabyte array is mmapped and unmapped again, and every screening
    pays its page faults anew (measured: 1280 px JPEG decode 20 ms instead of 8). Same effect
    as MALLOC_MMAP_THRESHOLD_ / MALLOC_TRIM_THRESHOLD_ in the environment; a no-op off glibc.
    """
    try:
        libc = ctypes.CDLL(None)
        m_trim_threshold, m_mmap_threshold = -1, -3
        return bool(
            libc.mallopt(m_mmap_threshold, limit // 2) and libc.mallopt(m_trim_threshold, limit)
        )
    except (OSError, AttributeError):
        return False


def int8_sums_saturate(machine: str | None = None, cpuinfo: str | None = None) -> bool:
    """Whether onnxruntime's default int8 kernels can saturate here: on x86-64 without VNNI
    (AVX2 alone, or AVX-512 without it) they add u8 x s8 products in 16-bit pairs. Read from
    /proc/cpuinfo; an x86 CPU whose flags cannot be read counts as one (exact sums are always
    right, only slower); other architectures never saturate."""
    machine = (machine or platform.machine()).lower()
    if machine not in ("x86_64", "amd64", "x64"):
        return False
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return True
    return not ("avx512_vnni" in cpuinfo or "avx_vnni" in cpuinfo)


def make_session(
    path: Path, threads: int = 1, *, exact_int8: bool | None = None
) -> ort.InferenceSession:
    """A CPU session for a worker process: `threads` intra-op threads, no spinning, so that
    processes x threads <= cores does not fight over shared cores. `exact_int8`: None (the
    default) asks for exact int8 sums where the default kernels saturate; True or False forces
    it (benchmarks/int8_without_vnni.py compares them)."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = max(1, threads)
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.add_session_config_entry("session.inter_op.allow_spinning", "0")
    # The int8 segmentation on an x86 CPU without VNNI: onnxruntime's default U8S8 kernels
    # saturate there, and no served mask of the 65 real photos matched a VNNI machine's (0.43%
    # of pixels flipped, probabilities up to 0.995 apart). U8U8 keeps the sums exact: all 65
    # identical, for ~11% more instructions a mask. Not asked for on VNNI, where the default
    # sums are exact already and U8U8 made the model 1.3-1.4x slower.
    if _this_cpu_saturates() if exact_int8 is None else exact_int8:
        so.add_session_config_entry("session.x64quantprecision", "1")
    return ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])


@cache
def _this_cpu_saturates() -> bool:
    return int8_sums_saturate()


@dataclass
class _Model:
    card: ModelCard
    session: ort.InferenceSession

    @classmethod
    def load(cls, name: str, models_dir: Path | None, threads: int) -> _Model:
        card = load_card(name, models_dir)
        root = Path(models_dir) if models_dir else MODELS_DIR
        return cls(card, make_session(root / card.file, threads))

    def run(
        self, x: np.ndarray, extra: dict[str, np.ndarray] | None = None
    ) -> dict[str, np.ndarray]:
        names = list(self.card.outputs.values())
        outs = self.session.run(names, {self.card.input.name: x, **(extra or {})})
        return dict(zip(self.card.outputs.keys(), outs, strict=True))


class Segmenter(_Model):
    """The segmentation model alone: training pushes the annotated photos through it, from a
    models folder that may hold no regressor yet."""

    @classmethod
    def from_dir(cls, models_dir: Path | None = None, threads: int = 1) -> Segmenter:
        cv2.setNumThreads(1)
        model = _Model.load("segmentation", models_dir, threads)
        return cls(model.card, model.session)

    def segment(self, rgb: np.ndarray) -> np.ndarray:
        """Probability map of the conjunctiva, reduced to its plausible component."""
        card = self.card
        return preprocess.segment_two_pass(
            lambda x: self.run(x)["logits"],
            rgb,
            card.preprocessing,
            card.threshold or 0.5,
            getattr(card, "refine_margin", None),
            getattr(card, "guided_refine", None),
        )


class Pipeline:
    """Both models and their cards. Build one per process with `Pipeline.shared()`."""

    def __init__(self, models_dir: Path | None = None, threads: int = 1) -> None:
        cv2.setNumThreads(1)
        keep_image_buffers_in_heap()
        self.segmenter = Segmenter.from_dir(models_dir, threads)
        self.regressor = _Model.load("regression", models_dir, threads)
        if self.regressor.card.calibration is None:
            raise ValueError("the regression model card has no conformal calibration")

    @staticmethod
    @cache
    def shared(models_dir: Path | None = None, threads: int = 1) -> Pipeline:
        return Pipeline(models_dir, threads)

    @property
    def model_versions(self) -> dict[str, str]:
        return {
            "segmentation": self.segmenter.card.version,
            "regression": self.regressor.card.version,
        }

    def screen(
        self,
        data: bytes,
        group: str,
        *,
        cutout: bool = False,
        danger_signs: bool = False,
        path: str | None = None,
    ) -> tuple[ScreeningResult, bytes | None]:
        """Screen one upload. Refusals come back as a result with `error`, never raise."""
        result, jpeg, _ = self.screen_with_mask(
            data, group, cutout=cutout, danger_signs=danger_signs, path=path
        )
        return result, jpeg

    def screen_with_mask(
        self,
        data: bytes,
        group: str,
        *,
        cutout: bool = False,
        danger_signs: bool = False,
        path: str | None = None,
    ) -> tuple[ScreeningResult, bytes | None, np.ndarray | None]:
        """`screen`, plus the conjunctiva mask it used (float HxW in [0, 1] at the decoded
        working resolution; None when the photo could not be decoded), for `--masks`."""
        advice.cutoffs_for(group)  # unknown group is a programming error: raise early
        base = {
            "path": path,
            "group": group,
            "danger_signs": danger_signs,
            "validated_for_group": group in self.regressor.card.validated_groups,
            "validated_groups": list(self.regressor.card.validated_groups),
            "anaemia_below_g_dl": advice.cutoffs_for(group).anaemia_below,
            "model_versions": self.model_versions,
        }
        timings: dict[str, float] = {}
        used: dict[str, np.ndarray] = {}
        try:
            result, jpeg = self._screen(data, group, cutout, danger_signs, base, timings, used)
            return result, jpeg, used.get("mask")
        except ScreeningError as e:
            return self._refused(base, timings, e.code.value, e.message), None, used.get("mask")
        except Exception as e:  # a model crash must still give the person an answer
            msg = f"the models failed on this image ({type(e).__name__})"
            refused = self._refused(base, timings, ErrorCode.MODEL_FAILED.value, msg)
            return refused, None, used.get("mask")

    @staticmethod
    def _refused(base: dict, timings: dict, code: str, message: str) -> ScreeningResult:
        return ScreeningResult(
            **base,
            ok=False,
            referral="retake",
            error=ErrorInfo(code=code, message=message),
            timings_ms=timings,
        )

    def _screen(
        self,
        data: bytes,
        group: str,
        cutout: bool,
        danger_signs: bool,
        base: dict,
        timings: dict[str, float],
        used: dict[str, np.ndarray],
    ) -> tuple[ScreeningResult, bytes | None]:
        t = time.perf_counter()

        def lap(stage: str) -> None:
            nonlocal t
            now = time.perf_counter()
            timings[stage] = round((now - t) * 1000, 3)
            t = now

        if cutout:
            img = intake.decode_image(data, keep_alpha=True, min_side=CUTOUT_MIN_SIDE)
            if img.alpha is None:
                raise ScreeningError(
                    ErrorCode.NO_ALPHA, "--cutout needs an RGBA image with the mask in alpha"
                )
            mask = img.alpha.astype(np.float32) / 255.0
            lap("decode")
        else:
            img = intake.decode_image(data, max_side=WORK_LONG_SIDE)
            lap("decode")
            mask = self.segment(img.rgb)
            lap("segmentation")
        used["mask"] = mask
        q = quality.assess(img.rgb, mask, cutout=cutout)
        lap("quality")
        # Cut-outs are research inputs: report their quality but always estimate.
        if not q.ok and not cutout:
            return ScreeningResult(
                **base, ok=False, referral="retake", quality=q, timings_ms=timings
            ), None

        hb, cam, box = self.estimate(img.rgb, mask, group)
        lap("regression")
        cal = advice.group_calibration(self.regressor.card, group)
        hb_r = round(hb, 1)  # HemoCue precision; classify what we show
        i80 = (round(hb - cal.q80, 1), round(hb + cal.q80, 1))
        i95 = (round(hb - cal.q95, 1), round(hb + cal.q95, 1))
        jpeg = heatmap.overlay_jpeg(img.rgb, mask, cam, box)
        lap("heatmap")
        result = ScreeningResult(
            **base,
            ok=True,
            hb_g_dl=hb_r,
            interval_80=i80,
            interval_95=i95,
            category=advice.category_for(hb_r, group),
            referral=advice.referral_for(
                hb_r,
                group,
                cal.margin,
                danger_signs=danger_signs,
            ),
            quality=q,
            timings_ms=timings,
        )
        return result, jpeg

    def segment(self, rgb: np.ndarray) -> np.ndarray:
        """Probability map of the conjunctiva, reduced to its plausible component."""
        return self.segmenter.segment(rgb)

    def estimate(
        self, rgb: np.ndarray, mask: np.ndarray, group: str | None = None
    ) -> tuple[float, np.ndarray, tuple[int, int, int, int]]:
        """Hb (g/dL), the heatmap at crop size, and the crop box (y0, y1, x0, x1). A card with
        a group input gets the person's population as the second input."""
        box = preprocess.crop_box(mask)
        y0, y1, x0, x1 = box
        crop, crop_mask = rgb[y0:y1, x0:x1], mask[y0:y1, x0:x1]
        card = self.regressor.card
        x = preprocess.regression_input(crop, crop_mask, card.preprocessing)
        extra = None
        if card.group_input is not None:
            if group is None:
                raise ValueError("this regression model needs the person's group")
            gi = card.group_input
            extra = {gi.name: preprocess.group_input(group, gi.populations, gi.population_of)}
        out = self.regressor.run(x, extra)
        hb = float(np.asarray(out["hb"]).reshape(-1)[0])
        cam: np.ndarray = np.asarray(out["heatmap"], dtype=np.float32)
        cam = cam.reshape(out["heatmap"].shape[-2:])
        cam = cv2.resize(cam, (x1 - x0, y1 - y0), interpolation=cv2.INTER_LINEAR)
        return hb, cam, box
