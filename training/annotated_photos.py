"""Loader for real annotated eye photos in the Eyes-defy-anemia layouts.

Shared working-copy layout (../shared/data/eyes-defy-anemia; read first when present):

    ROOT/photos.csv       # columns image, mask, patient, hb_g_dl, sex, age_years
    ROOT/photos/<image>   # full eye photo (JPEG)
    ROOT/photos/<mask>    # 8-bit mask, 255 = palpebral conjunctiva, same size as the photo

Original distribution layout (one or more country folders are fine):

    ROOT/<Country>/<subject>/<name>.jpg                # the photo
    ROOT/<Country>/<subject>/<name>_palpebral.png      # RGBA: palpebral conjunctiva opaque
    ROOT/<Country>/<Country>.xlsx                      # one row per subject, Hb with decimal commas

Subject folders may also sit directly under ROOT with the sheet beside them. Masks named
`*_forniceal*.png` (other regions) are ignored. Users who have such photos can train the
segmentation model on them (`python -m hbscreen.training.segmentation --photos ROOT`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from .degrade import downscale_long_side

PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png")
MASK_SUFFIX = "_palpebral.png"


class AnnotatedPhotoError(ValueError):
    """The folder does not follow the expected layout (the message says what is wrong)."""


@dataclass(frozen=True)
class AnnotatedPhoto:
    subject: str  # "<country>/<subject folder>", the grouping unit for splits
    photo_path: Path
    mask_path: Path
    hb: float | None

    def load(self, long_side: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(RGB uint8 photo, float32 mask in [0, 1]) at the same size, optionally shrunk."""
        bgr = cv2.imread(str(self.photo_path), cv2.IMREAD_COLOR)
        if bgr is None:
            raise AnnotatedPhotoError(f"cannot decode photo {self.photo_path}")
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        m = cv2.imread(str(self.mask_path), cv2.IMREAD_UNCHANGED)
        if m is None:
            raise AnnotatedPhotoError(f"cannot decode mask {self.mask_path}")
        if m.ndim == 3 and m.shape[2] == 4:
            mask = m[..., 3].astype(np.float32) / 255.0
        else:  # 8-bit (255 = conjunctiva) or no alpha: the bright pixels are the region
            grey = m if m.ndim == 2 else m.max(axis=2)
            mask = (grey > 127).astype(np.float32)
        if mask.shape != rgb.shape[:2]:
            raise AnnotatedPhotoError(
                f"mask {self.mask_path.name} is {mask.shape[1]}x{mask.shape[0]} but photo "
                f"{self.photo_path.name} is {rgb.shape[1]}x{rgb.shape[0]}; they must match"
            )
        if long_side is not None:
            small = downscale_long_side(rgb, long_side)
            if small.shape != rgb.shape:
                mask = cv2.resize(
                    mask, (small.shape[1], small.shape[0]), interpolation=cv2.INTER_AREA
                )
            rgb = small
        return rgb, mask


def _number(value: object) -> float | None:
    """Sheet cell -> float; accepts decimal commas ("11,2"); blank -> None."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    try:
        return float(str(value).strip().replace(",", "."))
    except ValueError:
        raise AnnotatedPhotoError(f"Hb value {value!r} is not a number") from None


def read_hb_sheet(path: Path) -> dict[str, float | None]:
    """Subject id (as text) -> Hb (g/dL) from the first sheet; columns found by name."""
    from openpyxl import load_workbook

    wb = load_workbook(path, read_only=True, data_only=True)
    try:
        rows = list(wb.worksheets[0].iter_rows(values_only=True))
    finally:
        wb.close()
    if not rows:
        raise AnnotatedPhotoError(f"{path}: empty sheet")
    header = [str(c).strip().lower() if c is not None else "" for c in rows[0]]
    id_col = next((i for i, h in enumerate(header) if h in ("number", "id", "subject", "n")), None)
    hb_col = next(
        (i for i, h in enumerate(header) if h.startswith(("hgb", "hb", "haemo", "hemo"))), None
    )
    if id_col is None or hb_col is None:
        raise AnnotatedPhotoError(
            f"{path}: need a subject column (Number/ID) and an Hb column (Hgb/Hb); got {header}"
        )
    out: dict[str, float | None] = {}
    for r in rows[1:]:
        if r is None or id_col >= len(r) or r[id_col] is None:
            continue
        key = str(r[id_col]).strip()
        if key.endswith(".0"):
            key = key[:-2]
        out[key] = _number(r[hb_col] if hb_col < len(r) else None)
    return out


def load_photo_table(root: Path) -> list[AnnotatedPhoto]:
    """Every (photo, mask, Hb) of the shared layout: ROOT/photos.csv + ROOT/photos/.

    The subject (grouping unit for splits) is the csv's `patient` column, so that two photos of
    one patient can never fall on both sides of a split. Raises AnnotatedPhotoError naming the
    row when a file is missing or a column is absent.
    """
    import csv

    root = Path(root)
    table = root / "photos.csv"
    with table.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    need = {"image", "mask", "patient"}
    if not rows or not need <= set(rows[0]):
        raise AnnotatedPhotoError(f"{table}: need columns {sorted(need)}")
    folder = root / "photos"
    items: list[AnnotatedPhoto] = []
    problems: list[str] = []
    for k, r in enumerate(rows, start=2):
        photo, mask = folder / r["image"], folder / r["mask"]
        for p in (photo, mask):
            if not p.is_file():
                problems.append(f"{table.name} line {k}: {p.name} not found in {folder}")
        items.append(
            AnnotatedPhoto(str(r["patient"]).strip(), photo, mask, _number(r.get("hb_g_dl")))
        )
    if problems:
        raise AnnotatedPhotoError(
            f"{len(problems)} problem(s) in {root}:\n  " + "\n  ".join(problems[:20])
        )
    return items


def _subject_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def load_annotated_photos(root: Path, *, require_hb: bool = True) -> list[AnnotatedPhoto]:
    """Every (photo, palpebral mask, Hb) of an Eyes-defy-anemia style folder.

    Raises AnnotatedPhotoError naming the subject and file when a photo has no mask, a mask
    has no photo, a subject has no row in the sheet, or there is no sheet at all.
    """
    root = Path(root)
    if not root.is_dir():
        raise AnnotatedPhotoError(f"{root} is not a folder")
    if (root / "photos.csv").is_file():
        return load_photo_table(root)
    # country folders hold their own sheet; otherwise the root is the country folder
    countries = [d for d in _subject_dirs(root) if list(d.glob("*.xlsx"))] or [root]
    items: list[AnnotatedPhoto] = []
    problems: list[str] = []
    for country in countries:
        sheets = sorted(country.glob("*.xlsx")) or sorted(root.glob("*.xlsx"))
        if not sheets and require_hb:
            raise AnnotatedPhotoError(f"no .xlsx Hb sheet in {country}")
        hb = read_hb_sheet(sheets[0]) if sheets else {}
        for subj in _subject_dirs(country):
            files = sorted(p for p in subj.iterdir() if p.is_file())
            masks = [
                p
                for p in files
                if p.name.lower().endswith(MASK_SUFFIX) and "forniceal" not in p.name.lower()
            ]
            photos = [
                p
                for p in files
                if p.suffix.lower() in PHOTO_SUFFIXES
                and "_palpebral" not in p.name.lower()
                and "_forniceal" not in p.name.lower()
            ]
            sid = f"{country.name}/{subj.name}" if country != root else subj.name
            if not photos and not masks:
                continue
            if require_hb and subj.name not in hb:
                problems.append(f"{sid}: no row for subject {subj.name!r} in {sheets[0].name}")
                continue
            by_stem = {p.stem.lower(): p for p in photos}
            for m in masks:
                stem = m.name[: -len(MASK_SUFFIX)].lower()
                photo = by_stem.pop(stem, None)
                if photo is None:
                    problems.append(f"{sid}: mask {m.name} has no photo named {stem}.jpg/.png")
                    continue
                items.append(AnnotatedPhoto(sid, photo, m, hb.get(subj.name)))
            for left in by_stem.values():
                problems.append(f"{sid}: photo {left.name} has no mask {left.stem}{MASK_SUFFIX}")
    if problems:
        raise AnnotatedPhotoError(
            f"{len(problems)} problem(s) in {root}:\n  " + "\n  ".join(problems[:20])
        )
    if not items:
        raise AnnotatedPhotoError(f"no annotated photos (*{MASK_SUFFIX}) found under {root}")
    return items
