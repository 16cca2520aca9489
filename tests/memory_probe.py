"""Peak RSS of a worker-like process screening one large input (run as a child process).

    python -m tests.memory_probe png16-rgba-7000 [--models DIR]

Loads the pipeline exactly as a worker does (`pipeline_process`), records the RSS after the
models are loaded, builds the input in constant memory, screens it, and prints one JSON line:
{"kind", "bytes", "baseline_mb", "peak_mb", "ok", "code"}. Peak is the kernel's high-water
mark (VmHWM, else getrusage ru_maxrss) of this process: the figure a container limit meets.
Used by tests/test_faults_memory.py and benchmarks/bench_decode_memory.py.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

# name -> (width, height, bit depth, colour type) of an all-zero PNG, or a JPEG/other maker
INPUTS: dict[str, tuple[int, int, int, str]] = {
    "png16-rgba-7000": (7000, 7000, 16, "RGBA"),  # the 381 KB file
    "png16-grey-7000": (7000, 7000, 16, "L"),
    "png8-rgb-7071": (7071, 7071, 8, "RGB"),
    "png8-rgba-7071": (7071, 7071, 8, "RGBA"),
    "png16-rgb-6000": (6000, 6000, 16, "RGB"),
    "png8-rgb-4000": (4000, 3000, 8, "RGB"),  # a 12 Mpx screenshot-sized PNG: must pass
}


def _status_mb(field: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def peak_mb() -> float:
    hwm = _status_mb("VmHWM")
    if hwm is not None:
        return hwm
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def make_input(kind: str) -> bytes:
    from tests import malformed_files as mf

    if kind in ("jpeg-8000x6000", "heic-5712x4284"):
        # a 48 Mpx camera JPEG, built in another process so that its pixels do not count here
        import subprocess
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            w, h = (8000, 6000) if kind.startswith("jpeg") else (5712, 4284)
            path = Path(tmp) / ("big.jpg" if kind.startswith("jpeg") else "big.heic")
            code = (
                "import numpy as np, sys, pillow_heif; from PIL import Image; "
                "pillow_heif.register_heif_opener(); "
                f"x = np.linspace(60, 200, {w}, dtype=np.uint8); "
                f"a = np.broadcast_to(x[None, :, None], ({h}, {w}, 3)); "
                "Image.fromarray(np.ascontiguousarray(a)).save(sys.argv[1], quality=85)"
            )
            subprocess.run([sys.executable, "-c", code, str(path)], check=True)
            return path.read_bytes()
    w, h, depth, colour = INPUTS[kind]
    return mf.flat_png(w, h, bit_depth=depth, colour=colour)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("kind", choices=[*INPUTS, "jpeg-8000x6000", "heic-5712x4284"])
    ap.add_argument("--budget-mb", type=int, default=None, help="override MAX_DECODE_BYTES")
    ap.add_argument("--models", type=Path, default=None)
    args = ap.parse_args(argv)

    from hbscreen.inference.queue.protocol import Job
    from hbscreen.inference.worker import pipeline_process

    if args.budget_mb is not None:
        from hbscreen.inference import intake

        intake.MAX_DECODE_BYTES = args.budget_mb * 1024 * 1024
        defaults = list(intake.decode_image.__kwdefaults__ or {})
        assert "max_decode_bytes" in defaults
        intake.decode_image.__kwdefaults__["max_decode_bytes"] = intake.MAX_DECODE_BYTES
    process = pipeline_process(args.models, 1)
    data = make_input(args.kind)
    # warm-up on a small photo so one-off allocations (ONNX arenas) count in the baseline
    from tests.synthetic import synthetic_jpeg

    process(synthetic_jpeg(), Job(group="woman"))
    baseline = _status_mb("VmRSS") or 0.0
    result, _ = process(data, Job(group="woman"))
    out = {
        "kind": args.kind,
        "bytes": len(data),
        "baseline_mb": round(baseline, 1),
        "peak_mb": round(peak_mb(), 1),
        "ok": result.ok,
        "code": result.error.code if result.error else None,
        "quality_ok": result.quality.ok if result.quality else None,
    }
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
