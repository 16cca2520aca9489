"""Render the heatmap a person receives for a few photos, to look at it, and time it.

The quality gate is bypassed (this is about the picture, not the verdict): each photo is
segmented and estimated with the shipped models, then `inference.heatmap.overlay_jpeg` draws
it. The JPEGs go to --out (default: a folder under /tmp; never commit them: dataset pixels),
plus `sheet.png`, all of them side by side at phone width (360 px) for a quick look.

    python benchmarks/render_heatmaps.py ../shared/data/eyes-defy-anemia/photos \
        examples/eyelid.jpg -n 5
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import cv2
from PIL import Image

from hbscreen.inference import heatmap, intake
from hbscreen.inference.limits import IMAGE_EXTENSIONS
from hbscreen.inference.pipeline import WORK_LONG_SIDE, Pipeline

PHONE_WIDTH = 360


def photos_in(paths: list[Path], n: int) -> list[Path]:
    """Files as given; from each folder, n photos spread over its sorted listing."""
    found: list[Path] = []
    for p in paths:
        if p.is_dir():
            files = sorted(
                f for f in p.iterdir() if f.suffix.lower() in IMAGE_EXTENSIONS and "_" in f.stem
            )
            files = [f for f in files if not f.stem.endswith(("_palpebral", "_mask"))]
            step = max(1, len(files) // max(n, 1))
            found += files[::step][:n]
        else:
            found.append(p)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("paths", nargs="+", type=Path, help="photos or folders of photos")
    parser.add_argument("-n", type=int, default=5, help="photos per folder (default: 5)")
    parser.add_argument("--out", type=Path, default=None, help="folder for the JPEGs")
    parser.add_argument("--repeat", type=int, default=10, help="timing repeats per photo")
    args = parser.parse_args()
    cv2.setNumThreads(1)
    out = args.out or Path(tempfile.mkdtemp(prefix="hbscreen-heatmaps-"))
    out.mkdir(parents=True, exist_ok=True)
    pipe = Pipeline(None, 1)
    thumbs, times = [], []
    for path in photos_in(args.paths, args.n):
        img = intake.decode_image(path.read_bytes(), max_side=WORK_LONG_SIDE)
        mask = pipe.segment(img.rgb)
        _, cam, box = pipe.estimate(img.rgb, mask, "woman")
        runs = []
        for _ in range(args.repeat):
            start = time.perf_counter()
            jpeg = heatmap.overlay_jpeg(img.rgb, mask, cam, box)
            runs.append((time.perf_counter() - start) * 1000)
        times += runs
        target = out / f"{path.stem}_heatmap.jpg"
        target.write_bytes(jpeg)
        im = Image.open(target)
        print(
            f"{path.name}: {im.width}x{im.height}, {len(jpeg) / 1024:.0f} KB, "
            f"median {statistics.median(runs):.1f} ms"
        )
        thumbs.append(im.resize((PHONE_WIDTH, round(im.height * PHONE_WIDTH / im.width))))
    if thumbs:
        sheet = Image.new("RGB", (len(thumbs) * (PHONE_WIDTH + 10), max(t.height for t in thumbs)))
        for i, t in enumerate(thumbs):
            sheet.paste(t, (i * (PHONE_WIDTH + 10), 0))
        sheet.save(out / "sheet.png")
        print(f"overlay median {statistics.median(times):.1f} ms over {len(times)} runs; -> {out}")


if __name__ == "__main__":
    main()
