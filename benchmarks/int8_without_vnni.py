"""The int8 segmentation on x86 CPUs without VNNI: are the served masks the ones measured?

    python benchmarks/int8_without_vnni.py [--photos ../shared/data/eyes-defy-anemia] [--limit N]

Valgrind's virtual CPU has AVX2 and neither VNNI nor AVX-512, so onnxruntime run under
`valgrind --tool=none` takes the int8 kernels of such a CPU (most cheap cloud machines and older
laptops). The served masks of the real annotated photos (decoded as the pipeline decodes them)
are computed here natively and there with onnxruntime's default int8 kernels and with the exact
ones the pipeline asks for (`make_session(exact_int8=True)`). Prints, for each, the mean IoU
against the experts and how many masks equal the native ones. Run on a VNNI machine for the
comparison to mean anything (on one without, native is already that CPU: it says so). Prints
figures; asserts nothing. Under valgrind a run takes ~25 s for the 65 photos.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from hbscreen.training import quality_calibration as qc


def served_masks(photos: Path, limit: int | None, exact: bool) -> dict[str, np.ndarray]:
    from hbscreen.inference.modelcard import MODELS_DIR, load_card
    from hbscreen.inference.pipeline import Segmenter, make_session

    card = load_card("segmentation", None)
    seg = Segmenter(card, make_session(MODELS_DIR / card.file, 1, exact_int8=exact))
    return {p.name: seg.segment(p.rgb) for p in qc.load_photos(photos)[:limit]}


def mean_iou(masks: dict[str, np.ndarray], photos: Path) -> float:
    truth = {p.name: p.mask > 0.5 for p in qc.load_photos(photos)}
    ious = [
        ((m > 0.5) & truth[k]).sum() / max(((m > 0.5) | truth[k]).sum(), 1)
        for k, m in masks.items()
    ]
    return float(np.mean(ious))


def has_vnni() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_vnni" in flags or "avx_vnni" in flags


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--photos", type=Path, default=qc.DEFAULT_DATA)
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--child", choices=["default", "exact"], help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:  # inside valgrind
        masks = served_masks(args.photos, args.limit, exact=args.child == "exact")
        np.savez_compressed(args.out, **masks)
        return
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is needed (it provides the CPU without VNNI)")
    print(
        f"this CPU has VNNI: {has_vnni()}"
        + ("" if has_vnni() else " (native is already such a CPU)")
    )
    native = served_masks(args.photos, args.limit, True)
    print(f"native: {len(native)} photos, mean IoU {mean_iou(native, args.photos):.4f}")
    with tempfile.TemporaryDirectory() as tmp:
        for kind in ("default", "exact"):
            out = Path(tmp) / f"{kind}.npz"
            cmd = ["valgrind", "--tool=none", "-q", sys.executable, __file__, "--child", kind,
                   "--out", str(out), "--photos", str(args.photos)]  # fmt: skip
            if args.limit:
                cmd += ["--limit", str(args.limit)]
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            got = dict(np.load(out))
            same = sum(np.array_equal(got[k], native[k]) for k in native)
            flipped = np.mean([((got[k] > 0.5) != (native[k] > 0.5)).mean() for k in native])
            apart = max(float(np.abs(got[k] - native[k]).max()) for k in native)
            iou = mean_iou(got, args.photos)
            print(
                f"no VNNI, {kind} int8 kernels: mean IoU {iou:.4f}; masks equal to native "
                f"{same}/{len(native)}; pixels flipped {flipped:.2%}; probabilities up to "
                f"{apart:.3f} apart"
            )


if __name__ == "__main__":
    main()
