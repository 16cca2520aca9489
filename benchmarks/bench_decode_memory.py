"""Peak RSS of a worker process per large input (a script, not a timed test).

    python benchmarks/bench_decode_memory.py [KIND ...]

Runs `python -m tests.memory_probe KIND` for each input in a fresh process (the models loaded
as a worker loads them) and prints one row per input: bytes on the wire, RSS after loading,
peak RSS, and what the pipeline answered. On a shared machine the times vary; the memory
figures do not.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = [
    "png16-rgba-7000",
    "png16-grey-7000",
    "png8-rgb-7071",
    "png8-rgba-7071",
    "png16-rgb-6000",
    "jpeg-8000x6000",
    "heic-5712x4284",
]


def main(kinds: list[str]) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    print(f"{'input':<18} {'bytes':>9} {'base MB':>8} {'peak MB':>8} {'s':>6}  answer")
    for kind in kinds:
        t0 = time.perf_counter()
        out = subprocess.run(
            [sys.executable, "-m", "tests.memory_probe", kind],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        r = json.loads(out.stdout.strip().splitlines()[-1])
        answer = r["code"] or ("screened" if r["ok"] else "quality gate")
        print(
            f"{kind:<18} {r['bytes']:>9} {r['baseline_mb']:>8} {r['peak_mb']:>8} "
            f"{time.perf_counter() - t0:>6.1f}  {answer}"
        )


if __name__ == "__main__":
    main(sys.argv[1:] or DEFAULT)
