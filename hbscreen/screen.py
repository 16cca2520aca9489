"""`hbscreen screen`: one photo, several, or a folder; text, CSV and JSON-lines output."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import decimal
import sys
import unicodedata
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, overload

from hbscreen.bot.i18n import LANGUAGES, N_, fmt_number, fmt_percent, t, tn
from hbscreen.bot.messages import (
    REFERRAL_TEXT,
    RETAKE_HINTS,
    error_text,
    group_label,
    plain,
    result_parts,
)
from hbscreen.inference.advice import GROUPS, cutoffs_for
from hbscreen.inference.limits import IMAGE_EXTENSIONS, MAX_BYTES
from hbscreen.inference.result import ErrorInfo, ScreeningResult

if TYPE_CHECKING:
    from .compose import Wiring

MAX_READ_BYTES = MAX_BYTES + 1  # intake refuses anything larger; never read more

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

# What the WHO band means, in the table's words; the advice itself comes from the bot's
# catalogue (hbscreen.bot.messages), so the CLI and the bot never disagree.
BAND = {
    "none": N_("above the anaemia cut-off"),
    "mild": N_("mild anaemia range"),
    "moderate": N_("moderate anaemia range"),
    "severe": N_("severe anaemia range"),
}
# The row labels of the text output, translated with the rest (`--lang`).
LABELS = {
    "refused": N_("Refused"),
    "quality": N_("Photo quality"),
    "caution": N_("Caution"),
    "hb": N_("Haemoglobin"),
    "category": N_("WHO category"),
    "meaning": N_("Meaning"),
    "advice": N_("Advice"),
    "heatmap": N_("Heatmap"),
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
        "--lang",
        default="en",
        choices=LANGUAGES,
        help="language of the text output: labels, numbers, hints and advice; the codes in "
        "[brackets], the JSON and the CSV stay English for scripts (default: %(default)s)",
    )
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
                    and f.suffix.lower() in IMAGE_EXTENSIONS
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
    h, w = upright_size(data, (m.shape[0], m.shape[1]))
    if (h, w) != m.shape[:2]:
        m = np.asarray(cv2.resize(m, (w, h), interpolation=cv2.INTER_LINEAR), np.float32)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{stem}.png"
    if not cv2.imwrite(str(target), np.where(m >= threshold, 255, 0).astype(np.uint8)):
        raise OSError(f"cannot write {target}")
    return target


class LazyFiles(Sequence[tuple[str, bytes]]):
    """(path, bytes) read only when the batch submits that item, so a batch of 40 x 19 MB
    photos never sits in memory at once (the queue keeps at most its in-flight window)."""

    def __init__(self, paths: Iterable[Path]) -> None:
        self.paths = list(paths)

    def __len__(self) -> int:
        return len(self.paths)

    @overload
    def __getitem__(self, i: int) -> tuple[str, bytes]: ...
    @overload
    def __getitem__(self, i: slice) -> list[tuple[str, bytes]]: ...
    def __getitem__(self, i: int | slice) -> tuple[str, bytes] | list[tuple[str, bytes]]:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        path = self.paths[i]
        return str(path), read_limited(path)


# A batch's results stream holds health data; nobody reads it after its jobs' deadlines, so
# if the CLI is killed it expires this long after the last outcome, not after 7 days.
BATCH_RESULTS_TTL_MARGIN_S = 300


def screen_queued(args: argparse.Namespace, inputs: list[Path]) -> Iterator[ScreeningResult]:
    """Stream results as the workers finish them (each is written out, then forgotten).

    Interrupted (Ctrl-C, SIGTERM, an error downstream), the batch cancels its jobs still
    waiting and deletes its results stream; killed outright, the stream's short TTL ends it."""
    import signal

    from hbscreen.inference.queue.batch import screen_via_queue

    from .compose import wire_submitter
    from .settings import get_settings

    settings = get_settings()
    ttl = int(settings.job_deadline_s) + BATCH_RESULTS_TTL_MARGIN_S
    settings = settings.model_copy(update={"redis_url": args.queue, "results_ttl_s": ttl})
    loop = asyncio.new_event_loop()
    wiring = wire_submitter(settings, submitter=None)  # a private results stream
    outcomes = screen_via_queue(
        wiring.queue,
        LazyFiles(inputs),
        args.group,
        cutout=args.cutout,
        danger_signs=args.danger_signs,
    )
    index = {str(p): i for i, p in enumerate(inputs)}
    step: asyncio.Future | None = None
    interrupted = False

    def on_signal() -> None:  # runs inside the loop: never an exception mid-task
        nonlocal interrupted
        interrupted = True
        if step is not None and not step.done():
            step.cancel()

    handled = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, on_signal)
            handled.append(sig)
    try:
        while True:
            if interrupted:
                raise KeyboardInterrupt
            step = asyncio.ensure_future(anext(outcomes), loop=loop)
            try:
                path, outcome = loop.run_until_complete(step)
            except StopAsyncIteration:
                break
            except asyncio.CancelledError:
                if interrupted:
                    raise KeyboardInterrupt from None
                raise
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
    finally:
        loop.run_until_complete(_end_batch(step, outcomes, wiring))
        for sig in handled:
            loop.remove_signal_handler(sig)
        loop.close()


async def _end_batch(
    step: asyncio.Future | None, outcomes: AsyncIterator[object], wiring: Wiring
) -> None:
    """Stop reading; the batch generator cancels what is still queued; delete the results."""
    if step is not None and not step.done():
        step.cancel()
        with contextlib.suppress(BaseException):
            await step
    elif step is not None and not step.cancelled():
        step.exception()  # the interrupt that ended it: retrieved, not reported again
    with contextlib.suppress(Exception):
        await outcomes.aclose()  # type: ignore[attr-defined]
    await wiring.close()


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


def format_text(r: ScreeningResult, lang: str = "en") -> str:
    """The human-readable block for one photo in the person's language: measurements as
    numbers, then the same paragraphs the bot sends (warning first where the model is not
    validated). Codes in [brackets] stay English, for scripts and support."""
    labels = {k: t(lang, v) for k, v in LABELS.items()}
    width = max(map(_display_width, labels.values())) + 2
    lines = [str(r.path)]

    def row(kind: str, text: str) -> None:
        label = labels[kind]
        lines.append(f"  {label}{' ' * (width - _display_width(label))}{text}")

    def num(x: float) -> str:
        return fmt_number(x, lang, 1)

    if r.error:  # the person's language where the bot has the sentence, the code for scripts
        text = r.error.message if lang == "en" else plain(error_text(r.error.code, lang))
        row("refused", f"{text} [{r.error.code}]")
    if r.quality is not None:
        failing = r.quality.failing
        if not failing:
            n = len(r.quality.checks)
            row("quality", tn(lang, "good ({n} check passed)", "good ({n} checks passed)", n))
        # One row per hint: two measures of one check (say, a cut lid read from its symmetry
        # and from its end) would otherwise print the same sentence twice.
        rows: dict[tuple[str, str], list[str]] = {}
        for c in failing:
            hint = (
                c.message
                if lang == "en" or c.code not in RETAKE_HINTS
                else t(lang, RETAKE_HINTS[c.code])
            )
            measured = rows.setdefault((hint, c.code), [])
            if c.value is not None and c.threshold is not None:
                measured.append(
                    t(
                        lang,
                        "measured {value}, needs {relation} {threshold}",
                        value=_measure(c.value, lang),
                        relation="≥" if c.direction == "min" else "≤",
                        threshold=_measure(c.threshold, lang),
                    )
                )
        for (hint, code), measured in rows.items():
            if measured:
                hint = t(
                    lang, "{hint} ({measurements})", hint=hint, measurements="; ".join(measured)
                )
            row("quality", f"{hint} [{code}]")
    if r.hb_g_dl is None or not r.interval_80 or not r.interval_95:
        row("advice", plain(t(lang, REFERRAL_TEXT[r.referral])))
        if r.heatmap_path:
            row("heatmap", r.heatmap_path)
        return "\n".join(lines)
    parts = dict(result_parts(r, lang))
    if "warning" in parts:
        row("caution", plain(parts["warning"]))
    (l80, h80), (l95, h95) = r.interval_80, r.interval_95
    intervals = {"low80": num(l80), "high80": num(h80), "low95": num(l95), "high95": num(h95)}
    intervals |= {"p80": fmt_percent(0.8, lang), "p95": fmt_percent(0.95, lang)}
    if r.validated_for_group:
        hb = t(
            lang,
            "{hb} g/dL ({p80} interval {low80}–{high80}, {p95} interval {low95}–{high95})",
            hb=num(r.hb_g_dl),
            **intervals,
        )
    else:  # as in the bot: a range, not one number, where the model is not validated
        hb = t(
            lang,
            "between {low95} and {high95} g/dL ({p95} interval; {p80} interval {low80}–{high80}); "
            "the model is not validated for this group",
            **intervals,
        )
    row("hb", hb)
    row(
        "category",
        t(
            lang,
            "{band} ({group}: anaemia below {cutoff} g/dL)",
            band=t(lang, BAND[r.category or "none"]),
            group=group_label(lang, r.group),
            cutoff=num(cutoffs_for(r.group).anaemia_below),
        ),
    )
    for kind in ("meaning", "danger", "advice", "pregnancy"):
        if kind in parts:
            row("meaning" if kind == "meaning" else "advice", plain(parts[kind]))
    if r.heatmap_path:
        row("heatmap", r.heatmap_path)
    return "\n".join(lines)


def _display_width(text: str) -> int:
    """Terminal columns: wide (CJK) characters take two, non-spacing marks (Devanagari's
    nukta, virama and upper vowel signs) none, so the text column lines up in every language."""
    return sum(
        0
        if unicodedata.combining(ch) or unicodedata.category(ch) == "Mn"
        else 2
        if unicodedata.east_asian_width(ch) in "WF"
        else 1
        for ch in text
    )


def _measure(x: float, lang: str) -> str:
    """A gate measurement with three significant digits, in the locale's number format."""
    exponent = decimal.Decimal(f"{x:.3g}").as_tuple().exponent
    return fmt_number(x, lang, max(0, -int(exponent)))


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
        endings = " ".join(sorted(IMAGE_EXTENSIONS))
        print(f"hbscreen screen: no image files found ({endings})", file=sys.stderr)
        return 2
    from .settings import get_settings

    if getattr(args, "masks", None) is not None and args.queue:
        print("hbscreen screen: --masks works without --queue only", file=sys.stderr)
        return 2
    if args.queue and get_settings().queue_key is None:
        from .compose import NO_QUEUE_KEY

        print(f"hbscreen screen --queue: {NO_QUEUE_KEY}", file=sys.stderr)
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
    n = 0
    with contextlib.ExitStack() as stack:
        writer = None
        if csv_path:  # written row by row: a batch's results are never all in memory
            csv_path.parent.mkdir(parents=True, exist_ok=True)
            f = stack.enter_context(csv_path.open("w", newline="", encoding="utf-8"))
            writer = csv.DictWriter(f, fieldnames=CSV_FIELDS)
            writer.writeheader()
        for r in results:
            progress.update(1)
            if args.json:
                print(r.to_json(), flush=True)
            else:
                progress.write(format_text(r, args.lang) + "\n", file=sys.stdout)
            if writer is not None:
                writer.writerow(csv_row(r))
            n += 1
    progress.close()
    if not args.json:
        summary = (
            tn(
                args.lang,
                "Screened {n} photo. Summary: {path}",
                "Screened {n} photos. Summary: {path}",
                n,
                path=csv_path,
            )
            if csv_path
            else tn(args.lang, "Screened {n} photo.", "Screened {n} photos.", n)
        )
        disclaimer = t(
            args.lang,
            "This is a screening, not a diagnosis. Only a blood test can confirm anaemia.",
        )
        print(f"{summary}\n{disclaimer}")
    return 0
