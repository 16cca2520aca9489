"""Pipeline latency per stage, peak RSS, and onnxruntime vs PyTorch eager on the same models.

    python benchmarks/bench_pipeline.py [--photo examples/eyelid.jpg] [--reps 40]

Prints figures; asserts nothing. Run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time
from pathlib import Path

import cv2
import numpy as np

from inference import preprocess
from inference.pipeline import Pipeline

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
    from inference.intake import decode_image

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
    """Each model alone: onnxruntime vs the same ONNX graph converted to PyTorch eager.

    An int8 graph has no eager equivalent; its fp32 twin (`<name>.fp32.onnx`, written by
    training with --keep-fp32) is used on both sides when present."""
    try:
        import torch
        from onnx2torch import convert
    except ImportError as e:
        print(f"  skipped ({e.name} is not installed: pip install '.[train]')")
        return
    from inference.pipeline import make_session

    torch.set_num_threads(threads)
    inputs = dict(zip(("segmentation", "regression"), model_inputs(pipeline, data), strict=True))
    for name, model in (("segmentation", pipeline.segmenter), ("regression", pipeline.regressor)):
        path = models_dir / model.card.file
        fp32 = path.with_suffix(".fp32.onnx")
        path = fp32 if fp32.exists() else path
        try:
            eager = convert(str(path)).eval()
        except NotImplementedError as e:
            print(f"  {name}: no eager twin ({e}); train with --keep-fp32 to compare")
            continue
        session = make_session(path, threads)
        x = inputs[name]
        feed = {model.card.input.name: x}
        tx = torch.from_numpy(x)

        def run_eager(eager=eager, tx=tx) -> None:
            with torch.inference_mode():
                eager(tx)

        t_ort = time_call(lambda session=session, feed=feed: session.run(None, feed), reps)
        t_torch = time_call(run_eager, reps)
        print(
            f"  {name} ({path.name}): onnxruntime {t_ort:.2f} ms, torch eager {t_torch:.2f} ms"
            f" median -> onnxruntime {t_torch / t_ort:.1f}x faster"
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
