"""Pipeline latency per stage, peak RSS, and onnxruntime vs PyTorch eager on the same models.

    python benchmarks/bench_pipeline.py [--photo examples/eyelid.jpg] [--reps 40]

Prints figures; asserts nothing. Run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from hbscreen.inference import preprocess
from hbscreen.inference.pipeline import Pipeline

SIZES = (640, 1280, 4000)


def jpeg_at(photo: Path, long_side: int) -> bytes:
    bgr = cv2.imread(str(photo), cv2.IMREAD_COLOR)
    h, w = bgr.shape[:2]
    s = long_side / max(h, w)
    bgr = cv2.resize(bgr, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    return buf.tobytes()


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def bench_stages(pipeline: Pipeline, data: bytes, reps: int) -> dict[str, list[float]]:
    for _ in range(3):
        pipeline.screen(data, "pregnant-2")
    stages: dict[str, list[float]] = {}
    for _ in range(reps):
        t0 = time.perf_counter()
        result, _ = pipeline.screen(data, "pregnant-2")
        total = (time.perf_counter() - t0) * 1000
        if result.error:
            raise SystemExit(f"benchmark photo was refused: {result.error}")
        for k, v in result.timings_ms.items():
            stages.setdefault(k, []).append(v)
        stages.setdefault("total", []).append(total)
    return stages


def model_inputs(pipeline: Pipeline, data: bytes) -> tuple[np.ndarray, np.ndarray]:
    from hbscreen.inference.intake import decode_image

    rgb = decode_image(data).rgb
    seg_x = preprocess.segmentation_input(rgb, pipeline.segmenter.card.preprocessing)
    mask = pipeline.segment(rgb)
    y0, y1, x0, x1 = preprocess.crop_box(mask)
    reg_x = preprocess.regression_input(
        rgb[y0:y1, x0:x1], mask[y0:y1, x0:x1], pipeline.regressor.card.preprocessing
    )
    return seg_x, reg_x


def time_call(fn, reps: int) -> float:
    for _ in range(3):
        fn()
    samples = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1000)
    return statistics.median(samples)


def bench_torch(pipeline: Pipeline, models_dir: Path, data: bytes, threads: int, reps: int) -> None:
    """Each model alone: the served onnxruntime graph vs the same network in PyTorch eager
    (the ONNX graph converted by onnx2torch). An int8 QDQ graph runs in eager as its float
    equivalent (benchmarks/dequantize.py: the same dequantised weights); onnxruntime on that
    float graph is timed too, so precision and runtime can be told apart."""
    try:
        import onnx
        import torch
        from onnx2torch import convert
    except ImportError as e:
        print(f"  skipped ({e.name} is not installed: pip install '.[train]')")
        return
    from dequantize import dequantized, is_quantized  # beside this script (sys.path[0])

    from hbscreen.inference.pipeline import make_session

    torch.set_num_threads(threads)
    inputs = dict(zip(("segmentation", "regression"), model_inputs(pipeline, data), strict=True))
    totals = {"served": 0.0, "torch": 0.0}
    with tempfile.TemporaryDirectory() as tmp:
        for name, model in (
            ("segmentation", pipeline.segmenter),
            ("regression", pipeline.regressor),
        ):
            served = models_dir / model.card.file
            twin = served
            if is_quantized(served):
                twin = Path(tmp) / f"{name}.float.onnx"
                onnx.save(dequantized(served), str(twin))
            eager = convert(str(twin)).eval()
            x = inputs[name]
            feed = {model.card.input.name: x}
            args = [torch.from_numpy(x)]
            gi = getattr(model.card, "group_input", None)
            if gi is not None:  # the Hb model takes the person's population as well
                g = preprocess.group_input("woman", gi.populations, gi.population_of)
                feed[gi.name] = g
                args.append(torch.from_numpy(g))

            def run_eager(eager=eager, args=args) -> None:
                with torch.inference_mode():
                    eager(*args)

            times = {}
            for label, path in (("served", served), ("float", twin)):
                if label == "float" and twin == served:
                    continue
                session = make_session(path, threads)
                times[label] = time_call(lambda s=session, f=feed: s.run(None, f), reps)
            times["torch"] = time_call(run_eager, reps)
            totals["served"] += times["served"]
            totals["torch"] += times["torch"]
            extra = (
                f", onnxruntime on the float graph {times['float']:.2f} ms"
                if "float" in times
                else ""
            )
            print(
                f"  {name} ({served.name}): onnxruntime {times['served']:.2f} ms{extra}, "
                f"torch eager {times['torch']:.2f} ms (medians) -> served graph "
                f"{times['torch'] / times['served']:.1f}x faster"
            )
    print(
        f"  both models: onnxruntime {totals['served']:.2f} ms, torch eager "
        f"{totals['torch']:.2f} ms -> {totals['torch'] / totals['served']:.1f}x"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--photo", type=Path, default=Path("examples/eyelid.jpg"))
    ap.add_argument("--models", type=Path, default=Path("inference/models"))
    ap.add_argument("--reps", type=int, default=40)
    args = ap.parse_args()
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    pipelines = {threads: Pipeline(args.models, threads) for threads in (1, 2)}
    for threads, pipeline in pipelines.items():
        print(f"== onnxruntime intra-op threads: {threads}")
        for size in SIZES:
            data = jpeg_at(args.photo, size)
            stages = bench_stages(pipeline, data, args.reps)
            parts = ", ".join(
                f"{k} {statistics.median(v):.2f}/{pct(v, 95):.2f}" for k, v in stages.items()
            )
            print(f"  {size:>4} px JPEG ({len(data) // 1024} KB), ms median/p95: {parts}")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS of the onnxruntime pipeline: {rss:.0f} MB (imports alone: {rss0:.0f} MB)")
    print("== the same two models: onnxruntime vs PyTorch eager (model time only, 1280 px photo)")
    for threads, pipeline in pipelines.items():
        print(f"  threads {threads}:")
        bench_torch(pipeline, args.models, jpeg_at(args.photo, 1280), threads, args.reps)


if __name__ == "__main__":
    main()
