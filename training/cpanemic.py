"""CP-AnemiC loader: conjunctiva cut-outs (RGBA, mask in alpha) with measured Hb.

The layout is the one distributed on Mendeley Data (doi 10.17632/m53vz6b7fx.1):
`Anemic/Image_NNN.png`, `Non-anemic/Image_NNN.png` and `Anemia_Data_Collection_Sheet.xlsx`.
Many files are pixel-identical copies carrying different Hb values, so every sample gets a
`group_id` (hash of its pixels) and every split must be by that group (see training/folds.py).
"""

from __future__ import annotations

import hashlib
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

SHEET_NAME = "Anemia_Data_Collection_Sheet.xlsx"
FOLDERS = {"Anemic": True, "Non-anemic": False}
ANAEMIA_CUTOFF = 11.0  # the dataset's folder rule: Hb < 11 g/dL is "Anemic"
REQUIRED_COLUMNS = ("IMAGE_ID", "HB_LEVEL", "AGE", "GENDER")
CITATIONS = [
    "Asare JW, Appiahene P, Donkoh ET. CP-AnemiC (conjunctival pallor) dataset. Mendeley Data, "
    "V1 (2023). doi:10.17632/m53vz6b7fx.1. CC BY 4.0.",
    "Appiahene P, Chaturvedi K, Asare JW, Donkoh ET, Prasad M. CP-AnemiC: a conjunctival pallor "
    "dataset and benchmark for anemia detection in children. Medicine in Novel Technology and "
    "Devices 18 (2023) 100244.",
]
LICENCE = (
    "Training data: CP-AnemiC, CC BY 4.0 (the authors add: reuse for academic purposes, cited)."
)


class DatasetError(ValueError):
    """The folder does not look like a complete CP-AnemiC download."""


@dataclass
class Sample:
    """One cut-out. `rgba` is HxWx4 uint8 in RGB(A) order; alpha is the (soft) mask."""

    path: Path
    rgba: np.ndarray
    hb: float
    age_months: float | None
    sex: str
    hospital: str = ""
    region: str = ""
    folder_anaemic: bool = False
    group_id: str = ""
    meta: dict[str, object] = field(default_factory=dict)

    @property
    def image_id(self) -> str:
        return self.path.stem

    @property
    def rgb(self) -> np.ndarray:
        return self.rgba[..., :3]

    @property
    def mask(self) -> np.ndarray:
        """Alpha as float32 in [0, 1]."""
        return self.rgba[..., 3].astype(np.float32) / 255.0


def parse_age_months(value: object) -> float | None:
    """AGE cell -> months. Bare numbers are years; "N months" strings are months."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, (int, float)):
        return float(value) * 12.0
    text = str(value).strip().lower()
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(months?|mos?|m)", text)
    if m:
        return float(m.group(1))
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(years?|yrs?|y)?", text)
    if m:
        return float(m.group(1)) * 12.0
    raise DatasetError(f"cannot read AGE {value!r}: expected years (a number) or 'N months'")


def content_hash(rgba: np.ndarray) -> str:
    """Group id: identical pixels (and shape) give the same id, whatever the file name."""
    h = hashlib.sha1(str(rgba.shape).encode())
    h.update(np.ascontiguousarray(rgba).tobytes())
    return h.hexdigest()[:16]


def read_rgba(path: Path) -> np.ndarray:
    """PNG -> HxWx4 uint8 RGBA (an image without alpha gets alpha = non-black pixels)."""
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise DatasetError(f"cannot decode image {path}")
    if img.ndim == 2:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    if img.dtype != np.uint8:
        img = (img / 257).astype(np.uint8)
    if img.shape[2] == 3:
        alpha = np.where(img.max(axis=2) > 0, 255, 0).astype(np.uint8)
        img = np.dstack([img, alpha])
    return cv2.cvtColor(img, cv2.COLOR_BGRA2RGBA)


def read_sheet(path: Path) -> dict[str, dict[str, object]]:
    """xlsx rows keyed by IMAGE_ID, with clear errors for missing columns or duplicate rows."""
    import openpyxl

    if not path.is_file():
        raise DatasetError(f"sheet {path} not found (expected {SHEET_NAME} in the dataset root)")
    wb = openpyxl.load_workbook(path, read_only=True, data_only=True)
    try:
        rows = list(wb.worksheets[0].iter_rows(values_only=True))
    finally:
        wb.close()
    if not rows:
        raise DatasetError(f"sheet {path} is empty")
    header = [str(c).strip().upper() if c is not None else "" for c in rows[0]]
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        raise DatasetError(f"sheet {path} lacks columns {missing}; has {header}")
    out: dict[str, dict[str, object]] = {}
    for n, row in enumerate(rows[1:], start=2):
        if row is None or all(c is None for c in row):
            continue
        rec = dict(zip(header, row, strict=False))
        image_id = str(rec["IMAGE_ID"]).strip()
        if image_id in out:
            raise DatasetError(f"sheet {path} row {n}: IMAGE_ID {image_id} appears twice")
        out[image_id] = rec
    return out


def load_cpanemic(root: Path) -> list[Sample]:
    """Every image of a CP-AnemiC folder with its sheet row; fails loudly on any mismatch.

    Raises DatasetError for a missing sheet or folder, an image without a sheet row, a sheet
    row without an image, an unreadable Hb, or an Hb that contradicts its folder.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"dataset folder {root} not found")
    sheet = read_sheet(root / SHEET_NAME)
    files: dict[str, tuple[Path, bool]] = {}
    for folder, anaemic in FOLDERS.items():
        d = root / folder
        if not d.is_dir():
            raise DatasetError(f"folder {d} not found (expected Anemic/ and Non-anemic/)")
        for p in sorted(d.iterdir()):
            if p.suffix.lower() not in {".png", ".jpg", ".jpeg"}:
                continue
            if p.stem in files:
                raise DatasetError(f"{p.stem} is in both folders")
            files[p.stem] = (p, anaemic)
    extra_files = sorted(set(files) - set(sheet))
    extra_rows = sorted(set(sheet) - set(files))
    if extra_files or extra_rows:
        raise DatasetError(
            f"{root}: images without a sheet row: {extra_files[:10]}"
            f"{' ...' if len(extra_files) > 10 else ''} ({len(extra_files)}); "
            f"sheet rows without an image: {extra_rows[:10]}"
            f"{' ...' if len(extra_rows) > 10 else ''} ({len(extra_rows)})"
        )
    samples = []
    for image_id in sorted(files):
        path, anaemic = files[image_id]
        rec = sheet[image_id]
        try:
            hb = float(str(rec["HB_LEVEL"]).replace(",", "."))
        except (TypeError, ValueError):
            raise DatasetError(
                f"{image_id}: HB_LEVEL {rec['HB_LEVEL']!r} is not a number"
            ) from None
        if not 2.0 <= hb <= 25.0:
            raise DatasetError(f"{image_id}: HB_LEVEL {hb} g/dL is implausible")
        if (hb < ANAEMIA_CUTOFF) != anaemic:
            raise DatasetError(f"{image_id}: Hb {hb} contradicts its folder {path.parent.name}")
        rgba = read_rgba(path)
        samples.append(
            Sample(
                path=path,
                rgba=rgba,
                hb=hb,
                age_months=parse_age_months(rec.get("AGE")),
                sex=str(rec.get("GENDER") or "").strip().lower(),
                hospital=str(rec.get("HOSPITAL") or "").strip(),
                region=str(rec.get("REGION") or "").strip(),
                folder_anaemic=anaemic,
                group_id=content_hash(rgba),
            )
        )
    return samples


def groups_of(samples: list[Sample]) -> dict[str, list[Sample]]:
    """group_id -> its samples (files with identical pixels)."""
    out: dict[str, list[Sample]] = defaultdict(list)
    for s in samples:
        out[s.group_id].append(s)
    return dict(out)
