"""`hbscreen screen`: one photo, several, or a folder; text, CSV and JSON-lines output."""

from __future__ import annotations

import argparse
import csv
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

from hbscreen.inference.advice import DISCLAIMER_EN, GROUPS, cutoffs_for
from hbscreen.inference.result import ErrorInfo, ScreeningResult

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".heic", ".heif"}
MAX_READ_BYTES = 20 * 1024 * 1024 + 1  # intake refuses anything larger; never read more

CSV_FIELDS = (
    "path",
    "ok",
    "hb_g_dl",
    "interval_80_low",
    "interval_80_high",
    "interval_95_low",
    "interval_95_high",
    "category",
    "referral",
    "group",
    "validated_for_group",
    "quality_failing",
    "error_code",
    "heatmap_path",
)

REFERRAL_EN = {
    "urgent": "Go to a health facility today. Ask for a blood test for anaemia.",
    "blood_test": "Anaemia is possible. Get a blood test (HemoCue or laboratory) within a week.",
    "routine": "Anaemia is unlikely now. Keep routine check-ups.",
    "retake": "This photo cannot be judged. Take another one (see why above).",
}
CATEGORY_EN = {
    "none": "no anaemia",
    "mild": "mild anaemia",
    "moderate": "moderate anaemia",
    "severe": "severe anaemia",
}


def add_screen_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "screen",
        help="screen eyelid photos",
        description=(
            "Screen photos of the pulled-down lower eyelid for anaemia. "
            "Prints the photo-quality verdict, the haemoglobin estimate with intervals, the WHO "
            "category for the group, the referral advice, and where the heatmap was written."
        ),
    )
    p.add_argument("paths", nargs="+", type=Path, help="photos or folders of photos")
    p.add_argument(
        "--group",
        default="woman",
        choices=GROUPS,
        help="whose cut-offs to apply (WHO 2024); default: %(default)s",
    )
    p.add_argument("--json", action="store_true", help="one JSON object per image per line")
    p.add_argument(
        "--cutout",
        action="store_true",
        help="inputs are conjunctiva cut-outs (RGBA, mask in alpha): skip segmentation",
    )
    p.add_argument(
        "--danger-signs",
        action="store_true",
        help="the person reports danger signs (breathless at rest, fainting, ...): urgent",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=Path("hbscreen-out"),
        help="folder for heatmaps and the batch CSV (default: %(default)s)",
    )
    p.add_argument("--no-heatmap", action="store_true", help="do not write heatmap images")
    p.add_argument(
        "--masks",
        type=Path,
        metavar="DIR",
        help="also write the conjunctiva mask each screening used: DIR/<photo stem>.png, "
        "8-bit, 255 = conjunctiva, at the photo's upright size (not with --queue)",
    )
    p.add_argument(
        "--csv", type=Path, help="CSV summary path (default for batches: OUT/summary.csv)"
    )
    p.add_argument("--queue", metavar="REDIS_URL", help="send the batch through the workers")
    p.add_argument("--threads", type=int, default=1, help="onnxruntime threads (default: 1)")
    p.add_argument("--models", type=Path, help="folder with the ONNX models and cards")
    p.set_defaults(func=run_screen)


def collect_inputs(paths: Iterable[Path]) -> list[Path]:
    """Files as given; folders expanded to their image files (recursively, sorted)."""
    found: list[Path] = []
    for p in paths:
        if p.is_dir():
            found.extend(
                sorted(
                    f
                    for f in p.rglob("*")
                    if f.is_file()
                    and f.suffix.lower() in IMAGE_SUFFIXES
                    and not any(part.startswith(".") for part in f.relative_to(p).parts)
                )
            )
        elif p.exists():
            found.append(p)
        else:
            raise FileNotFoundError(p)
    return found


def read_limited(path: Path) -> bytes:
    with path.open("rb") as f:
        return f.read(MAX_READ_BYTES)


def _heatmap_path(out: Path, path: Path, index: int, total: int) -> Path:
    stem = path.stem if total == 1 else f"{index:04d}_{path.stem}"
    return out / f"{stem}_heatmap.jpg"


def screen_local(args: argparse.Namespace, inputs: list[Path]) -> Iterator[ScreeningResult]:
    from hbscreen.inference.pipeline import Pipeline

    pipeline = Pipeline.shared(args.models, args.threads)
    mask_names: set[str] = set()  # same stem in two folders: the second gets its index
    for i, path in enumerate(inputs):
        try:
            data = read_limited(path)
        except OSError as e:
            yield _unreadable(args, path, e)
            continue
        result, jpeg, mask = pipeline.screen_with_mask(
            data, args.group, cutout=args.cutout, danger_signs=args.danger_signs, path=str(path)
        )
        if getattr(args, "masks", None) is not None and mask is not None:
            threshold = pipeline.segmenter.card.threshold or 0.5
            name = path.stem if path.stem not in mask_names else f"{path.stem}_{i:04d}"
            mask_names.add(name)
            result.mask_path = str(write_mask(args.masks, name, data, mask, threshold))
        yield _with_heatmap(args, result, jpeg, path, i, len(inputs))


def upright_size(data: bytes, work_hw: tuple[int, int]) -> tuple[int, int]:
    """(height, width) of the photo as shown upright, from its header (no pixels decoded).

    The pipeline works on a copy shrunk to at most 1280 px; EXIF rotation is read from the
    decoded copy's orientation, which intake already made upright.
    """
    import io

    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        w, h = im.size
    if (h > w) != (work_hw[0] > work_hw[1]) and h != w:
        h, w = w, h
    return h, w


def write_mask(folder: Path, stem: str, data: bytes, mask: object, threshold: float = 0.5) -> Path:
    """DIR/<stem>.png: 8-bit mask (255 = conjunctiva) of the pipeline's mask at the photo's
    upright size, so that researchers can compare it with their own masks pixel for pixel."""
    import cv2
    import numpy as np

    m = np.asarray(mask, dtype=np.float32)
    h, w = upright_size(data, m.shape[:2])
    if (h, w) != m.shape[:2]:
        m = cv2.resize(m, (w, h), interpolation=cv2.INTER_LINEAR)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{stem}.png"
    if not cv2.imwrite(str(target), np.where(m >= threshold, 255, 0).astype(np.uint8)):
        raise OSError(f"cannot write {target}")
    return target


def screen_queued(args: argparse.Namespace, inputs: list[Path]) -> Iterator[ScreeningResult]:
    import asyncio

    from hbscreen.inference.queue.batch import screen_via_queue

    results: list[ScreeningResult] = []

    async def go() -> None:
        from .compose import wire_submitter
        from .settings import get_settings

        settings = get_settings().model_copy(update={"redis_url": args.queue})
        wiring = wire_submitter(settings, submitter=None)  # a private results stream
        queue = wiring.queue
        try:
            items = [(str(p), read_limited(p)) for p in inputs]
            async for path, outcome in screen_via_queue(
                queue, items, args.group, cutout=args.cutout, danger_signs=args.danger_signs
            ):
                results.append((path, outcome))
        finally:
            await wiring.close()

    asyncio.run(go())
    index = {str(p): i for i, p in enumerate(inputs)}
    for path, outcome in results:
        result = outcome.result or ScreeningResult(
            path=path,
            group=args.group,
            ok=False,
            referral="retake",
            error=ErrorInfo(code=outcome.status, message=f"the job ended as {outcome.status}"),
        )
        result.path = path
        yield _with_heatmap(
            args, result, outcome.heatmap_jpeg, Path(path), index[path], len(inputs)
        )


def _unreadable(args: argparse.Namespace, path: Path, e: OSError) -> ScreeningResult:
    return ScreeningResult(
        path=str(path),
        group=args.group,
        ok=False,
        referral="retake",
        error=ErrorInfo(code="unreadable", message=f"cannot read the file: {e.strerror}"),
    )


def _with_heatmap(
    args: argparse.Namespace,
    result: ScreeningResult,
    jpeg: bytes | None,
    path: Path,
    index: int,
    total: int,
) -> ScreeningResult:
    if jpeg and not args.no_heatmap:
        target = _heatmap_path(args.out, path, index, total)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(jpeg)
        result.heatmap_path = str(target)
    return result


def format_text(r: ScreeningResult) -> str:
    """The human-readable block for one photo."""
    lines = [str(r.path)]

    def row(label: str, text: str) -> None:
        lines.append(f"  {label:<15} {text}")

    if r.error:
        row("Refused", f"{r.error.message} [{r.error.code}]")
    if r.quality is not None:
        failing = r.quality.failing
        if not failing:
            row("Photo quality", f"good ({len(r.quality.checks)} checks passed)")
        for c in failing:
            measured = ""
            if c.value is not None and c.threshold is not None:
                sign = ">=" if c.direction == "min" else "<="
                measured = f" (measured {c.value:.3g}, needs {sign} {c.threshold:.3g})"
            row("Photo quality", f"{c.message}{measured} [{c.code}]")
    if r.hb_g_dl is not None and r.interval_80 and r.interval_95:
        c = cutoffs_for(r.group)
        row(
            "Haemoglobin",
            f"{r.hb_g_dl:.1f} g/dL (80% interval {r.interval_80[0]:.1f}–{r.interval_80[1]:.1f}, "
            f"95% interval {r.interval_95[0]:.1f}–{r.interval_95[1]:.1f})",
        )
        row(
            "WHO category",
            f"{CATEGORY_EN[r.category or 'none']} for {c.label} "
            f"(anaemia below {c.anaemia_below:.1f} g/dL)",
        )
    advice = REFERRAL_EN[r.referral]
    if r.referral == "blood_test" and r.category == "none":
        advice = (
            "The estimate is above the cut-off, but it is uncertain and may be below it. "
            "Get a blood test (HemoCue or laboratory) within a week."
        )
    row("Advice", advice)
    if r.ok and not r.validated_for_group:
        row(
            "Caution",
            "The model was trained on children 6–59 months in Ghana; it is not validated for "
            "this group. Trust a blood test over this estimate.",
        )
    if r.heatmap_path:
        row("Heatmap", r.heatmap_path)
    return "\n".join(lines)


def csv_row(r: ScreeningResult) -> dict[str, object]:
    i80, i95 = r.interval_80 or (None, None), r.interval_95 or (None, None)
    return {
        "path": r.path,
        "ok": r.ok,
        "hb_g_dl": r.hb_g_dl,
        "interval_80_low": i80[0],
        "interval_80_high": i80[1],
        "interval_95_low": i95[0],
        "interval_95_high": i95[1],
        "category": r.category,
        "referral": r.referral,
        "group": r.group,
        "validated_for_group": r.validated_for_group,
        "quality_failing": " ".join(r.quality.failing_codes) if r.quality else "",
        "error_code": r.error.code if r.error else "",
        "heatmap_path": r.heatmap_path,
    }


def run_screen(args: argparse.Namespace) -> int:
    try:
        inputs = collect_inputs(args.paths)
    except FileNotFoundError as e:
        print(f"hbscreen screen: no such file or folder: {e.args[0]}", file=sys.stderr)
        return 2
    if not inputs:
        print("hbscreen screen: no image files found (.jpg .png .webp .heic)", file=sys.stderr)
        return 2
    if getattr(args, "masks", None) is not None and args.queue:
        print("hbscreen screen: --masks works without --queue only", file=sys.stderr)
        return 2
    batch = len(inputs) > 1
    csv_path = args.csv or (args.out / "summary.csv" if batch else None)
    results = screen_queued(args, inputs) if args.queue else screen_local(args, inputs)

    from tqdm import tqdm

    progress = tqdm(
        total=len(inputs),
        unit="photo",
        disable=not batch or not sys.stderr.isatty(),
        file=sys.stderr,
        leave=False,
    )
    rows = []
    for r in results:
        progress.update(1)
        if args.json:
            print(r.to_json(), flush=True)
        else:
            progress.write(format_text(r) + "\n", file=sys.stdout)
        rows.append(csv_row(r))
    progress.close()
    if csv_path:
        csv_path.parent.mkdir(parents=True, exist_ok=True)
        with csv_path.open("w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=CSV_FIELDS)
            writer.writeheader()
            writer.writerows(rows)
    if not args.json:
        summary = f"Screened {len(rows)} photo(s)."
        if csv_path:
            summary += f" Summary: {csv_path}"
        print(f"{summary}\n{DISCLAIMER_EN}")
    return 0
