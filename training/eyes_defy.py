"""Eyes-defy-anemia loader (adults, India and Italy): palpebral cut-outs and full photos.

Layout of the working copy (see its README):

    ROOT/cutouts.csv   image,country,patient,hb_g_dl,sex,age_years   (one cut-out per patient)
    ROOT/cutouts/<image>.png                                         RGBA, mask in alpha
    ROOT/photos.csv    image,mask,patient,hb_g_dl,sex,age_years      (India only)
    ROOT/photos/<image>.jpg + <mask>.png                             expert mask, 255 = tissue

The split unit is the patient (`group_id` = "<country>-<patient>"): a photo and the cut-out
of the same Indian patient share it, so they always land in the same fold. The cut-outs come
from a JPEG copy: a few near-black pixels inside the mask are ringing, not tissue; the
regressor's preprocessing drops them (`dark_exclude` in the card), the loader keeps the
pixels as distributed.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from .cpanemic import DatasetError, read_rgba

CUTOUTS_CSV = "cutouts.csv"
PHOTOS_CSV = "photos.csv"
CUTOUT_COLUMNS = ("image", "country", "patient", "hb_g_dl", "sex", "age_years")
PHOTO_COLUMNS = ("image", "mask", "patient", "hb_g_dl", "sex", "age_years")
# Below this max(R, G, B) a pixel inside the mask is JPEG ringing at the cut-out's edge
# (measured: under 0.1% of mask pixels in this copy; tissue in the darkest Indian cut-outs
# stays above ~60).
DARK_PIXEL = 30.0
CITATIONS = [
    "Dimauro G, Maglietta R, et al. Eyes-defy-anemia. IEEE DataPort (dataset of eye pictures "
    "from Italy and India taken with a device that removes ambient light). Roboflow copy, "
    "CC BY 4.0.",
    "Dimauro G, Camporeale MG, Dipalma A, Guarini A, Maglietta R. Anaemia detection based on "
    "sclera and blood vessel colour estimation (2023).",
]
LICENCE = "Eyes-defy-anemia (Roboflow copy), CC BY 4.0."


@dataclass
class EyesSample:
    """One cut-out (or a photo's served cut-out) of one adult patient."""

    path: Path
    rgba: np.ndarray
    hb: float
    country: str  # "india" / "italy"
    patient: str
    sex: str  # "F" / "M"
    age_years: float | None
    source: str = "cutout"  # "cutout" or "photo"

    @property
    def group_id(self) -> str:
        return f"{self.country}-{self.patient}"

    @property
    def population(self) -> str:
        return population_of(self.sex)


def population_of(sex: str) -> str:
    """The WHO group of an adult of this sex ("F" / "M"), as the advice names it."""
    return "woman" if sex == "F" else "man"


def _rows(path: Path, columns: tuple[str, ...]) -> list[dict[str, str]]:
    if not path.is_file():
        raise DatasetError(f"{path} not found")
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in columns if c not in (reader.fieldnames or [])]
        if missing:
            raise DatasetError(f"{path} lacks columns {missing}; has {reader.fieldnames}")
        return list(reader)


def _hb(value: str, where: str) -> float:
    try:
        hb = float(str(value).replace(",", "."))
    except ValueError:
        raise DatasetError(f"{where}: hb_g_dl {value!r} is not a number") from None
    if not 2.0 <= hb <= 25.0:
        raise DatasetError(f"{where}: hb_g_dl {hb} g/dL is implausible")
    return hb


def _sex(value: str, where: str) -> str:
    s = str(value).strip().upper()[:1]
    if s not in ("F", "M"):
        raise DatasetError(f"{where}: sex {value!r} is neither F nor M")
    return s


def _age(value: str) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def load_cutouts(root: Path) -> list[EyesSample]:
    """Every row of cutouts.csv with its RGBA cut-out; fails loudly on a missing file, a
    duplicated patient or an unreadable value."""
    root = Path(root)
    out: list[EyesSample] = []
    seen: set[str] = set()
    for n, r in enumerate(_rows(root / CUTOUTS_CSV, CUTOUT_COLUMNS), start=2):
        where = f"{CUTOUTS_CSV} row {n}"
        path = root / "cutouts" / r["image"]
        if not path.is_file():
            raise DatasetError(f"{where}: image {path} not found")
        rgba = read_rgba(path)
        if rgba[..., 3].max() == 0:
            raise DatasetError(f"{where}: {path.name} has an empty mask")
        s = EyesSample(
            path=path,
            rgba=rgba,
            hb=_hb(r["hb_g_dl"], where),
            country=r["country"].strip().lower(),
            patient=str(r["patient"]).strip(),
            sex=_sex(r["sex"], where),
            age_years=_age(r["age_years"]),
        )
        if s.group_id in seen:
            raise DatasetError(f"{where}: patient {s.group_id} appears twice")
        seen.add(s.group_id)
        out.append(s)
    return out


@dataclass(frozen=True)
class EyesPhoto:
    path: Path
    mask_path: Path
    hb: float
    patient: str
    sex: str
    age_years: float | None
    country: str = "india"

    @property
    def group_id(self) -> str:
        return f"{self.country}-{self.patient}"

    @property
    def population(self) -> str:
        return population_of(self.sex)

    def load(self) -> tuple[np.ndarray, np.ndarray]:
        """(RGB uint8, expert mask float32 in [0, 1])."""
        bgr = cv2.imread(str(self.path), cv2.IMREAD_COLOR)
        m = cv2.imread(str(self.mask_path), cv2.IMREAD_GRAYSCALE)
        if bgr is None or m is None:
            raise DatasetError(f"cannot decode {self.path.name} or its mask")
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), (m > 127).astype(np.float32)


def load_photos(root: Path) -> list[EyesPhoto]:
    """Rows of photos.csv (Indian patients; same patient numbers as the cut-outs)."""
    root = Path(root)
    out = []
    for n, r in enumerate(_rows(root / PHOTOS_CSV, PHOTO_COLUMNS), start=2):
        where = f"{PHOTOS_CSV} row {n}"
        p, m = root / "photos" / r["image"], root / "photos" / r["mask"]
        if not p.is_file() or not m.is_file():
            raise DatasetError(f"{where}: {p.name} or {m.name} not found")
        out.append(
            EyesPhoto(
                p,
                m,
                _hb(r["hb_g_dl"], where),
                str(r["patient"]).strip(),
                _sex(r["sex"], where),
                _age(r["age_years"]),
            )
        )
    return out


def served_cutout(rgb: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """RGBA cut-out of a photo with a (served) probability mask: the crop inference makes,
    mask in alpha, RGB zeroed outside like the distributed cut-outs."""
    from hbscreen.inference.preprocess import crop_box

    y0, y1, x0, x1 = crop_box(mask)
    a = np.clip(mask[y0:y1, x0:x1] * 255.0, 0, 255).astype(np.uint8)
    c = rgb[y0:y1, x0:x1].copy()
    c[a == 0] = 0
    return np.dstack([c, a])


def photos_through_segmentation(
    photos: list[EyesPhoto], models_dir: Path | None = None, max_side: int = 1280
) -> tuple[list[EyesSample], list[dict[str, float]]]:
    """Each photo pushed through the SERVED segmentation (inference's own Segmenter.segment at
    the serving work size) -> a cut-out sample, plus the served mask's IoU against the expert
    mask (for the report). Photos where the served model finds nothing are skipped (counted)."""
    from hbscreen.inference.pipeline import Segmenter
    from hbscreen.inference.preprocess import shrink

    seg = Segmenter.from_dir(models_dir)
    out, stats = [], []
    for ph in photos:
        rgb, truth = ph.load()
        scale = max_side / max(rgb.shape[:2])
        if scale < 1:
            h, w = round(rgb.shape[0] * scale), round(rgb.shape[1] * scale)
            rgb = shrink(rgb, h, w)
            truth = cv2.resize(truth, (w, h), interpolation=cv2.INTER_AREA)
        served = seg.segment(rgb)
        a, b = served > 0.5, truth > 0.5
        iou = float((a & b).sum() / max((a | b).sum(), 1))
        stats.append({"patient": float(ph.patient), "iou": iou})
        if a.sum() < 64:
            continue
        out.append(
            EyesSample(
                path=ph.path,
                rgba=served_cutout(rgb, served),
                hb=ph.hb,
                country=ph.country,
                patient=ph.patient,
                sex=ph.sex,
                age_years=ph.age_years,
                source="photo",
            )
        )
    return out, stats
