"""Intake and quality-gate figures (a script, not a timed test).

    python benchmarks/bench_intake.py [--cp-anemic ../shared/data/cp-anemic] [--repeat 200]

Prints: PNG-bomb (30000x30000) refusal time and peak extra RSS, decode time of a 1280 px
JPEG, quality-gate latency on a 1280x960 photo (OpenCV single-threaded, as in workers), and
the CP-AnemiC cut-out pass rate with the failing checks, when the data is present.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import resource
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from hbscreen.inference.errors import IntakeError  # noqa: E402
from hbscreen.inference.intake import decode_image  # noqa: E402
from hbscreen.inference.quality import assess  # noqa: E402
from tests import malformed_files as mf  # noqa: E402
from tests.test_quality import eye_photo  # noqa: E402


def _status_kb(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak() -> bool:
    """Reset the kernel's peak-RSS mark (Linux >= 4.0), so a later peak is this step's own."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _peak_mb() -> float:
    hwm = _status_kb("VmHWM")
    if hwm is None:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    return hwm / 1024


def _times(fn, repeat: int) -> tuple[float, float, float]:
    """Wall-clock median and p95, and the median CPU time of this process (which a box
    shared with other jobs inflates much less than wall time)."""
    fn()
    ts, cpu = [], []
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        cpu.append((time.process_time() - c0) * 1000)
        ts.append((time.perf_counter() - t0) * 1000)
    ts.sort()
    return statistics.median(ts), ts[int(0.95 * (len(ts) - 1))], statistics.median(cpu)


def bench_bomb(repeat: int) -> None:
    bomb = mf.png_bomb(30000, 30000)
    exact = _reset_peak()
    before = (_status_kb("VmRSS") or 0) / 1024 if exact else _peak_mb()
    t0 = time.perf_counter()
    try:
        decode_image(bomb)
        raise SystemExit("the bomb was decoded!")
    except IntakeError as e:
        first_ms = (time.perf_counter() - t0) * 1000
        code = e.code.value
    extra = _peak_mb() - before

    def refuse() -> None:
        with contextlib.suppress(IntakeError):
            decode_image(bomb)

    # Control: the same RSS method on an honest 4000x3000 decode shows it sees allocations.
    big = mf.jpeg(mf.test_pattern(3000, 4000), quality=85)
    exact = _reset_peak()
    base = (_status_kb("VmRSS") or 0) / 1024 if exact else _peak_mb()
    decode_image(big)
    control = _peak_mb() - base
    med, p95, _ = _times(refuse, repeat)
    print(
        f"PNG bomb 30000x30000 ({len(bomb) / 1e6:.2f} MB file, 900 MB inflated): code={code}, "
        f"first call {first_ms:.2f} ms, then median {med:.3f} ms, p95 {p95:.3f} ms; "
        f"peak extra RSS {extra:.1f} MB ({'VmHWM reset' if exact else 'ru_maxrss'}); "
        f"control: decoding a real 4000x3000 JPEG peaks at +{control:.0f} MB"
    )


def bench_decode_and_gate(repeat: int) -> None:
    rgb, mask = eye_photo(960, 1280)
    data = mf.jpeg(rgb, quality=90)
    med, p95, best = _times(lambda: decode_image(data), repeat)
    print(f"decode 1280x960 JPEG q90: median {med:.2f} ms, p95 {p95:.2f} ms, CPU {best:.2f} ms")
    med, p95, best = _times(lambda: assess(rgb, mask), repeat)
    print(f"quality gate 1280x960 photo: median {med:.2f} ms, p95 {p95:.2f} ms, CPU {best:.2f} ms")
    crgb, cmask = rgb[500:720, 200:1080], mask[500:720, 200:1080]
    med, p95, best = _times(lambda: assess(crgb, cmask, cutout=True), repeat)
    print(f"quality gate 880x220 cut-out: median {med:.2f} ms, p95 {p95:.2f} ms, CPU {best:.2f} ms")


def bench_cp_anemic(root: Path) -> None:
    files = sorted(root.glob("*/*.png"))
    if not files:
        print(f"CP-AnemiC: no images under {root}, skipped")
        return
    passed, fails = 0, collections.Counter()
    for f in files:
        out = decode_image(f.read_bytes(), keep_alpha=True, min_side=24)
        alpha = out.alpha if out.alpha is not None else np.full(out.rgb.shape[:2], 255, np.uint8)
        q = assess(out.rgb, alpha.astype(np.float32) / 255.0, cutout=True)
        passed += q.ok
        fails.update(set(q.failing_codes))
    print(
        f"CP-AnemiC cut-outs (cutout mode): {passed}/{len(files)} pass = "
        f"{100 * passed / len(files):.1f}%; failing checks: {dict(fails)}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=200)
    ap.add_argument("--cp-anemic", type=Path, default=ROOT.parent / "shared/data/cp-anemic")
    args = ap.parse_args()
    cv2.setNumThreads(1)  # as the worker does
    print(f"python {sys.version.split()[0]}, opencv {cv2.__version__}, numpy {np.__version__}")
    bench_bomb(args.repeat)
    bench_decode_and_gate(args.repeat)
    bench_cp_anemic(args.cp_anemic)


if __name__ == "__main__":
    main()
