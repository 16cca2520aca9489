"""The int8 segmentation on x86 CPUs without VNNI: are the served masks the ones measured?

    python benchmarks/int8_without_vnni.py [--photos ../shared/data/eyes-defy-anemia] [--limit N]
        [--instructions]

Valgrind's virtual CPU has AVX2 and neither VNNI nor AVX-512, so onnxruntime run under
`valgrind --tool=none` takes the int8 kernels of such a CPU (most cheap cloud machines and older
laptops). The served masks of the real annotated photos (decoded as the pipeline decodes them)
are computed here natively and there with onnxruntime's default int8 kernels and with the
exact ones the pipeline asks for on such a CPU (`make_session(exact_int8=True)`). Prints, for
each, the mean IoU against the experts and how many masks equal the native ones. Run on a VNNI
machine for the comparison to mean anything (on one without, native is already that CPU: it
says so). `--instructions` also counts, with callgrind, the instructions one segmentation costs
there with each kind of kernel (a few minutes more). Prints figures; asserts nothing. Under
valgrind a run takes ~25 s for the 65 photos.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from hbscreen.training import quality_calibration as qc


def segmenter(exact: bool | None):
    from hbscreen.inference.modelcard import MODELS_DIR, load_card
    from hbscreen.inference.pipeline import Segmenter, make_session

    card = load_card("segmentation", None)
    return Segmenter(card, make_session(MODELS_DIR / card.file, 1, exact_int8=exact))


def served_masks(photos: list[qc.RealPhoto], exact: bool | None) -> dict[str, np.ndarray]:
    """exact: None as served here, True/False forced (make_session)."""
    seg = segmenter(exact)
    return {p.name: seg.segment(p.rgb) for p in photos}


COUNTED = 12  # photos segmented per counted round


def segment_rounds(photos: Path, exact: bool, rounds: int) -> None:
    seg = segmenter(exact)
    rgbs = [p.rgb for p in qc.load_photos(photos)[:COUNTED]]
    seg.segment(rgbs[0])  # warm-up
    for _ in range(rounds):
        for rgb in rgbs:
            seg.segment(rgb)


def instructions(kind: str, rounds: int, photos: Path, tmp: str) -> int:
    cmd = [
        "valgrind", "--tool=callgrind", f"--callgrind-out-file={tmp}/cg.out", sys.executable,
        __file__, "--child", kind, "--count-rounds", str(rounds), "--photos", str(photos),
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return int(re.findall(r"Collected : (\d+)", done.stderr)[-1])


def mean_iou(masks: dict[str, np.ndarray], truth: dict[str, np.ndarray]) -> float:
    from hbscreen.training.segmentation import iou_dice

    return float(np.mean([iou_dice(m > 0.5, truth[k])[0] for k, m in masks.items()]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--photos", type=Path, default=qc.DEFAULT_DATA)
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--child", choices=["default", "exact"], help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--count-rounds", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--instructions", action="store_true", help="also count instructions")
    args = ap.parse_args()
    if args.child and args.count_rounds is not None:  # inside callgrind
        segment_rounds(args.photos, args.child == "exact", args.count_rounds)
        return
    if args.child:  # inside valgrind
        masks = served_masks(qc.load_photos(args.photos)[: args.limit], args.child == "exact")
        np.savez_compressed(args.out, **masks)
        return
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is needed (it provides the CPU without VNNI)")
    from hbscreen.inference.pipeline import int8_sums_saturate

    saturates = int8_sums_saturate()
    print(
        f"this CPU's default int8 sums saturate: {saturates}"
        + (" (native is already such a CPU)" if saturates else "")
    )
    photos = qc.load_photos(args.photos)[: args.limit]
    truth = {p.name: p.mask > 0.5 for p in photos}
    native = served_masks(photos, None)
    print(f"native: {len(native)} photos, mean IoU {mean_iou(native, truth):.4f}")
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
            iou = mean_iou(got, truth)
            print(
                f"no VNNI, {kind} int8 kernels: mean IoU {iou:.4f}; masks equal to native "
                f"{same}/{len(native)}; pixels flipped {flipped:.2%}; probabilities up to "
                f"{apart:.3f} apart"
            )
        if args.instructions:
            per = {}
            for kind in ("default", "exact"):
                two, zero = (instructions(kind, r, args.photos, tmp) for r in (2, 0))
                per[kind] = (two - zero) / (2 * COUNTED)
                print(f"no VNNI, {kind} int8 kernels: {per[kind] / 1e6:.1f} M instructions a mask")
            print(f"exact/default: {per['exact'] / per['default']:.3f}x")


if __name__ == "__main__":
    main()
