"""Instructions per screening, the current code against another copy of inference/, by callgrind.

    python benchmarks/bench_instructions.py --baseline-code DIR [--photos DIR] [--n 12]
        [--rounds 3] [--size 1280]

Wall time on this project's shared machines moves by up to 3x from one day to the next;
callgrind's count of the instructions executed does not (the same total twice, whatever the
neighbours do). Each side runs in its own process under `valgrind --tool=callgrind`, once with
only the warm-up and once with ROUNDS more rounds over the photos; the difference over the
screenings is the count per screening. DIR is an `inference/` folder, e.g. `git archive main
inference | tar -x -C /tmp/base` gives /tmp/base/inference; the same models. Photos: the first N
real photos of --photos (Eyes-defy-anemia's layout), else examples/eyelid.jpg, as JPEGs at
--size px. Valgrind's CPU has AVX2 and neither AVX-512 nor VNNI, so the libraries take their
AVX2 code paths: a count for such machines (but whether the pipeline asks for exact int8 sums
follows the host's /proc/cpuinfo: on a VNNI host it does not, which such a machine would, for
~11 M instructions a screening more). A few minutes per side. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from bench_pipeline import baseline_pipeline_module, jpeg_at

ROOT = Path(__file__).resolve().parents[1]


def photo_bytes(photos: Path | None, n: int, size: int) -> list[bytes]:
    if photos is not None and (photos / "photos.csv").is_file():
        paths = sorted((photos / "photos").glob("*.jpg"))[:n]
        return [jpeg_at(p, size) for p in paths]
    return [jpeg_at(ROOT / "examples/eyelid.jpg", size)]


def child(code: str, rounds: int, photos: Path | None, n: int, size: int) -> None:
    if code == "current":
        from hbscreen.inference import pipeline as module
    else:
        module = baseline_pipeline_module(Path(code))
    datas = photo_bytes(photos, n, size)
    pipeline = module.Pipeline(ROOT / "inference/models", 1)
    for data in datas:  # warm-up: first-call allocations and caches
        pipeline.screen(data, "pregnant-2")
    for _ in range(rounds):
        for data in datas:
            pipeline.screen(data, "pregnant-2")


def count(code: str, rounds: int, args: argparse.Namespace, tmp: Path) -> int:
    cmd = [
        "valgrind", "--tool=callgrind", f"--callgrind-out-file={tmp}/cg.out", sys.executable,
        __file__, "--child", code, "--rounds", str(rounds), "--n", str(args.n),
        "--size", str(args.size),
    ]  # fmt: skip
    if args.photos:
        cmd += ["--photos", str(args.photos)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    found = re.findall(r"Collected : (\d+)", done.stderr)
    if done.returncode or not found:
        raise SystemExit(f"callgrind run failed ({code}):\n{done.stderr[-2000:]}")
    return int(found[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline-code", type=Path, help="another copy of inference/")
    ap.add_argument("--photos", type=Path, default=None, help="Eyes-defy-anemia folder")
    ap.add_argument("--n", type=int, default=12, help="photos per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--size", type=int, default=1280, help="long side of the JPEGs (px)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.rounds, args.photos, args.n, args.size)
        return
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is needed (apt install valgrind)")
    if args.baseline_code is None:
        ap.error("--baseline-code is required")
    screenings = args.rounds * len(photo_bytes(args.photos, args.n, args.size))
    per: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, code in (("current", "current"), ("baseline", str(args.baseline_code))):
            extra = count(code, args.rounds, args, Path(tmp)) - count(code, 0, args, Path(tmp))
            per[label] = extra / screenings
            print(f"{label:<8} {per[label] / 1e6:8.1f} M instructions per screening")
    print(f"current/baseline: {per['current'] / per['baseline']:.3f}x ({screenings} screenings)")


if __name__ == "__main__":
    main()
