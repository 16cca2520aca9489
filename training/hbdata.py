"""One list of training/evaluation items from both shared datasets.

Children (CP-AnemiC, Ghana): one item per pixel-content group (label policy of issue 3,
training/folds.py). Adults (Eyes-defy-anemia, India and Italy): one item per cut-out, grouped
by patient; optionally the Indian full photos pushed through the served segmentation, grouped
with the same patient's cut-out. Every split is by `group_id`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hbscreen.inference.advice import cutoffs_for

from .cpanemic import load_cpanemic
from .eyes_defy import load_cutouts, load_photos, photos_through_segmentation
from .folds import apply_label_policy

POPULATIONS = ["child", "woman", "man"]
HEADS = [0, 1, 1]  # capture domain of each population's head: Ghana phones / LED device
# Every WHO group -> the population it is screened as. Pregnancy has no data: a pregnant woman
# is screened as a woman and never validated; children 5-14 years as children (unvalidated).
POPULATION_OF = {
    "child-6-23m": "child",
    "child-24-59m": "child",
    "child-5-11y": "child",
    "child-12-14y": "child",
    "woman": "woman",
    "pregnant-1": "woman",
    "pregnant-2": "woman",
    "pregnant-3": "woman",
    "man": "man",
}
SITES = ["ghana", "india", "italy"]
REPORT_POPULATIONS = ["child", "woman", "man", "adult", "india", "italy"]


@dataclass
class HbItem:
    rgba: np.ndarray
    hb: float
    group_id: str  # split unit: content group (children) or patient (adults)
    population: str  # child / woman / man
    who_group: str  # the WHO group whose cut-off applies
    site: str  # ghana / india / italy
    source: str  # cpanemic / cutout / photo
    name: str = ""
    file_hbs: list[float] = field(default_factory=list)
    spread: float = 0.0

    @property
    def cutoff(self) -> float:
        return cutoffs_for(self.who_group).anaemia_below

    @property
    def evaluated(self) -> bool:
        """Scored in the report (photos are extra training items of a patient whose cut-out
        is the scored one; their own figures are reported separately)."""
        return self.source != "photo"


def child_group(age_months: float | None) -> str:
    return "child-6-23m" if age_months is not None and age_months < 24 else "child-24-59m"


@dataclass
class Dataset:
    items: list[HbItem]
    stats: dict[str, object]

    def array(self, attr: str) -> np.ndarray:
        return np.array([getattr(it, attr) for it in self.items])

    @property
    def y(self) -> np.ndarray:
        return self.array("hb").astype(np.float64)

    @property
    def groups(self) -> list[str]:
        return [it.group_id for it in self.items]

    @property
    def pops(self) -> list[str]:
        return [it.population for it in self.items]

    def mask(self, name: str) -> np.ndarray:
        """Boolean mask of the evaluated items of a report population."""
        ev = self.array("evaluated").astype(bool)
        pop, site = self.array("population"), self.array("site")
        sel = {
            "all": np.ones(len(pop), bool),
            "child": pop == "child",
            "woman": pop == "woman",
            "man": pop == "man",
            "adult": pop != "child",
            "india": site == "india",
            "italy": site == "italy",
            "ghana": site == "ghana",
        }[name]
        return sel & ev


def load_dataset(
    cpanemic: Path | None,
    eyes: Path | None,
    *,
    photos: bool = True,
    models_dir: Path | None = None,
) -> Dataset:
    """Items from whichever of the two datasets are given."""
    items: list[HbItem] = []
    stats: dict[str, object] = {}
    if cpanemic is not None:
        samples = load_cpanemic(cpanemic)
        policy_items, pstats = apply_label_policy(samples)
        stats["cpanemic"] = pstats
        for it in policy_items:
            items.append(
                HbItem(
                    rgba=it.sample.rgba,
                    hb=it.hb,
                    group_id=f"ghana-{it.group_id}",
                    population="child",
                    who_group=child_group(it.sample.age_months),
                    site="ghana",
                    source="cpanemic",
                    name=it.sample.image_id,
                    file_hbs=list(it.file_hbs),
                    spread=it.spread,
                )
            )
    if eyes is not None:
        cut = load_cutouts(eyes)
        extra = []
        if photos and (eyes / "photos.csv").is_file():
            extra, seg = photos_through_segmentation(load_photos(eyes), models_dir)
            ious = [s["iou"] for s in seg]
            stats["photos"] = {
                "photos": len(seg),
                "used": len(extra),
                "served_iou_mean": float(np.mean(ious)) if ious else None,
                "served_iou_median": float(np.median(ious)) if ious else None,
            }
        for s in cut + extra:
            items.append(
                HbItem(
                    rgba=s.rgba,
                    hb=s.hb,
                    group_id=s.group_id,
                    population=s.population,
                    who_group=s.population,
                    site=s.country,
                    source=s.source,
                    name=s.path.name,
                    file_hbs=[s.hb],
                )
            )
        stats["eyes_defy"] = {
            "cutouts": len(cut),
            "patients": len({s.group_id for s in cut}),
            "india": sum(s.country == "india" for s in cut),
            "italy": sum(s.country == "italy" for s in cut),
        }
    if not items:
        raise ValueError("no dataset given")
    return Dataset(items, stats)
