"""Pipeline latency per stage, peak RSS, and onnxruntime vs PyTorch eager on the same models.

    python benchmarks/bench_pipeline.py [--photo examples/eyelid.jpg] [--reps 40]
        [--baseline-segmentation OLD.onnx] [--baseline-code DIR] [--threads 1] [--no-torch]

Prints figures; asserts nothing. Run it on an otherwise idle machine; on a shared one, compare
variants in the same run: --baseline-segmentation screens the same photos with another
segmentation model (its card OLD.json beside it; the same regressor), --baseline-code with
another version of the code (an `inference/` folder, e.g. `git archive main inference | tar -x
-C /tmp/base` gives /tmp/base/inference; the same models), interleaved with the current one,
and prints the ratio of their medians.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import resource
import statistics
import sys
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
        if not result.ok:
            codes = result.quality.failing_codes if result.quality else "?"
            raise SystemExit(
                f"benchmark photo was refused by the gate ({codes}): pass --through-gate to "
                "time the whole pipeline"
            )
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


def baseline_models(models: Path, segmentation: Path, tmp: Path) -> Path:
    """A models folder with `segmentation` (and its card beside it) and the current regressor."""
    import json
    import shutil

    for f in ("regression.onnx", "regression.json"):
        shutil.copy(models / f, tmp / f)
    card = json.loads(segmentation.with_suffix(".json").read_text("utf-8"))
    card["file"] = "segmentation.onnx"
    shutil.copy(segmentation, tmp / "segmentation.onnx")
    (tmp / "segmentation.json").write_text(json.dumps(card), "utf-8")
    return tmp


def baseline_pipeline_module(code: Path):
    """The `pipeline` module of another copy of inference/, imported beside the current one
    (as the package `baseline_inference`, so its relative imports stay inside that copy)."""
    if not (code / "pipeline.py").is_file():
        raise SystemExit(f"{code} is not a copy of inference/ (no pipeline.py)")
    spec = importlib.util.spec_from_file_location(
        "baseline_inference", code / "__init__.py", submodule_search_locations=[str(code)]
    )
    assert spec is not None and spec.loader is not None
    package = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = package
    spec.loader.exec_module(package)
    return importlib.import_module("baseline_inference.pipeline")


def pass_the_gate(pipeline_module) -> None:
    """Make `pipeline_module` run regression and heatmap whatever its quality gate decides."""
    assess = pipeline_module.quality.assess

    def passing(*a, **kw):
        return assess(*a, **kw).model_copy(update={"ok": True})

    pipeline_module.quality.assess = passing


def cpu_ms(pipeline: Pipeline, data: bytes, reps: int) -> dict[str, float]:
    """Median CPU time of this thread (ms) for the segmentation stage and a whole screening.

    With one onnxruntime thread everything runs on the calling thread, so CPU time is what
    the call costs a core, whatever the neighbours' load; wall time on a shared machine also
    counts the waits for a core.
    """
    from hbscreen.inference.intake import decode_image
    from hbscreen.inference.pipeline import WORK_LONG_SIDE

    rgb = decode_image(data, max_side=WORK_LONG_SIDE).rgb
    seg, total = [], []
    for _ in range(reps):
        t0 = time.thread_time()
        pipeline.segment(rgb)
        t1 = time.thread_time()
        pipeline.screen(data, "pregnant-2")
        t2 = time.thread_time()
        seg.append((t1 - t0) * 1000)
        total.append((t2 - t1) * 1000)
    return {"segmentation": statistics.median(seg), "total": statistics.median(total)}


def compare(pipelines: dict[str, Pipeline], photo: Path, reps: int) -> None:
    """Same photos, models interleaved in rounds (a shared machine's load hits both alike)."""
    for size in SIZES:
        data = jpeg_at(photo, size)
        stages: dict[str, dict[str, list[float]]] = {k: {} for k in pipelines}
        cpu: dict[str, dict[str, list[float]]] = {k: {} for k in pipelines}
        rounds = 4
        for _ in range(rounds):
            for label, pipeline in pipelines.items():
                for k, v in bench_stages(pipeline, data, max(1, reps // rounds)).items():
                    stages[label].setdefault(k, []).extend(v)
                for k, c in cpu_ms(pipeline, data, max(1, reps // rounds)).items():
                    cpu[label].setdefault(k, []).append(c)
        for label, c in cpu.items():
            print(
                f"  {size:>4} px JPEG, {label:<8} CPU ms (thread time, median): segmentation "
                f"{statistics.median(c['segmentation']):.2f}, total "
                f"{statistics.median(c['total']):.2f}"
            )
        for label, st in stages.items():
            parts = ", ".join(
                f"{k} {statistics.median(v):.2f}/{pct(v, 95):.2f}" for k, v in st.items()
            )
            print(f"  {size:>4} px JPEG, {label:<8} ms median/p95: {parts}")
        new, old = (stages[k] for k in pipelines)
        ratios = ", ".join(
            f"{k} {statistics.median(new[k]) / statistics.median(old[k]):.2f}x" for k in new
        )
        (c_new, c_old) = (statistics.median(cpu[k]["total"]) for k in pipelines)
        print(
            f"  {size:>4} px JPEG, current/baseline medians: {ratios}; CPU total "
            f"{c_new / c_old:.2f}x"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--photo", type=Path, default=Path("examples/eyelid.jpg"))
    ap.add_argument("--models", type=Path, default=Path("inference/models"))
    ap.add_argument("--reps", type=int, default=40)
    ap.add_argument(
        "--baseline-segmentation",
        type=Path,
        help="another segmentation.onnx (card: same stem .json) to time in the same run",
    )
    ap.add_argument(
        "--baseline-code",
        type=Path,
        help="another copy of inference/ to time in the same run (the same models)",
    )
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--no-torch", action="store_true", help="skip onnxruntime vs torch eager")
    ap.add_argument(
        "--through-gate",
        action="store_true",
        help="run regression and heatmap even where the quality gate refuses the photo (the "
        "gate still runs and is timed): times the whole pipeline whatever the gate decides",
    )
    args = ap.parse_args()
    from hbscreen.inference import pipeline as pipeline_module

    old_code = baseline_pipeline_module(args.baseline_code) if args.baseline_code else None
    if args.through_gate:
        for module in (pipeline_module, old_code):
            if module is not None:
                pass_the_gate(module)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if old_code is not None:
        for threads in args.threads:
            print(f"== current vs baseline code {args.baseline_code}, intra-op threads: {threads}")
            compare(
                {
                    "current": Pipeline(args.models, threads),
                    "baseline": old_code.Pipeline(args.models, threads),
                },
                args.photo,
                args.reps,
            )
    if args.baseline_segmentation:
        with tempfile.TemporaryDirectory() as tmp:
            base = baseline_models(args.models, args.baseline_segmentation, Path(tmp))
            for threads in args.threads:
                print(f"== current vs baseline segmentation, intra-op threads: {threads}")
                compare(
                    {
                        "current": Pipeline(args.models, threads),
                        "baseline": Pipeline(base, threads),
                    },
                    args.photo,
                    args.reps,
                )
    pipelines = {threads: Pipeline(args.models, threads) for threads in args.threads}
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
    if args.no_torch:
        return
    print("== the same two models: onnxruntime vs PyTorch eager (model time only, 1280 px photo)")
    for threads, pipeline in pipelines.items():
        print(f"  threads {threads}:")
        bench_torch(pipeline, args.models, jpeg_at(args.photo, 1280), threads, args.reps)


if __name__ == "__main__":
    main()
