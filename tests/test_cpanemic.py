"""CP-AnemiC loader, label policy, group splits and conformal helpers (synthetic folder)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import openpyxl
import pytest

from hbscreen.training.cpanemic import DatasetError, load_cpanemic, parse_age_months
from hbscreen.training.folds import (
    apply_label_policy,
    assert_group_disjoint,
    conformal_quantile,
    cross_conformal_coverage,
    file_kfold,
    group_kfold,
)


def fake_cutout(rng: np.random.Generator, hb: float) -> np.ndarray:
    """An RGBA conjunctiva-like crescent whose redness follows hb (RGB black outside)."""
    h, w = int(rng.integers(40, 70)), int(rng.integers(110, 180))
    alpha = np.zeros((h, w), np.uint8)
    cv2.ellipse(alpha, (w // 2, 0), (w // 2 - 4, h - 6), 0, 0, 180, 255, -1)
    alpha = cv2.GaussianBlur(alpha, (3, 3), 0)
    red = np.clip(120 + 9 * (hb - 10) + rng.normal(0, 6), 0, 255)
    base = np.array([red, 90 - 3 * (hb - 10), 95], np.float32)
    rgb = np.clip(base + rng.normal(0, 8, (h, w, 3)), 0, 255).astype(np.uint8)
    rgb[alpha == 0] = 0
    return np.dstack([rgb, alpha])


def make_fake_cpanemic(root: Path, n: int = 40, seed: int = 0, duplicates: int = 4) -> Path:
    """A folder in the distributed layout: Anemic/, Non-anemic/, the xlsx sheet. The last
    `duplicates` files are pixel copies of the first ones with a different Hb."""
    rng = np.random.default_rng(seed)
    (root / "Anemic").mkdir(parents=True)
    (root / "Non-anemic").mkdir()
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.append(["IMAGE_ID", "HB_LEVEL", "AGE", "GENDER", "REMARK", "HOSPITAL"])
    images = []
    for i in range(n):
        hb = round(float(rng.uniform(6.5, 14.5)), 1)
        if i >= n - duplicates:
            img = images[i - (n - duplicates)]
            hb = round(hb, 1)
        else:
            img = fake_cutout(rng, hb)
        images.append(img)
        name = f"Image_{i + 1:03d}"
        folder = "Anemic" if hb < 11 else "Non-anemic"
        cv2.imwrite(str(root / folder / f"{name}.png"), cv2.cvtColor(img, cv2.COLOR_RGBA2BGRA))
        age = f"{int(rng.integers(6, 12))} months" if i % 5 == 0 else int(rng.integers(1, 5))
        ws.append([name, hb, age, "Male" if i % 2 else "Female", folder, "Test Hospital"])
    wb.save(root / "Anemia_Data_Collection_Sheet.xlsx")
    return root


def test_loads_layout_ages_and_groups(tmp_path: Path) -> None:
    root = make_fake_cpanemic(tmp_path / "cp", n=20, duplicates=3)
    samples = load_cpanemic(root)
    assert len(samples) == 20
    s = samples[0]
    assert s.rgba.shape[2] == 4 and s.rgba.dtype == np.uint8
    assert s.mask.max() == pytest.approx(1.0)
    assert {x.age_months for x in samples} <= set(range(6, 61))
    assert len({x.group_id for x in samples}) == 17  # 3 pixel copies share a group
    by_id = {x.image_id: x for x in samples}
    assert by_id["Image_018"].group_id == by_id["Image_001"].group_id
    assert by_id["Image_001"].rgb[0, 0].tolist() == [0, 0, 0]  # RGB order, black outside


def test_age_parsing() -> None:
    assert parse_age_months(2) == 24
    assert parse_age_months("7 Months") == 7
    assert parse_age_months("11 months") == 11
    assert parse_age_months(None) is None
    with pytest.raises(DatasetError):
        parse_age_months("two years")


def test_missing_and_extra_files_are_clear_errors(tmp_path: Path) -> None:
    root = make_fake_cpanemic(tmp_path / "cp", n=10, duplicates=0)
    victim = next((root / "Anemic").glob("*.png"), None) or next((root / "Non-anemic").glob("*"))
    victim.unlink()
    with pytest.raises(DatasetError, match="sheet rows without an image"):
        load_cpanemic(root)
    cv2.imwrite(str(victim), np.zeros((5, 5, 4), np.uint8))
    cv2.imwrite(str(root / "Anemic" / "Image_999.png"), np.zeros((5, 5, 4), np.uint8))
    with pytest.raises(DatasetError, match="images without a sheet row"):
        load_cpanemic(root)
    with pytest.raises(DatasetError, match="not found"):
        load_cpanemic(tmp_path / "nowhere")


def test_label_policy_and_group_folds(tmp_path: Path) -> None:
    samples = load_cpanemic(make_fake_cpanemic(tmp_path / "cp", n=30, duplicates=5))
    items, stats = apply_label_policy(samples)
    assert stats["items"] == stats["groups"] == 25
    dup = [it for it in items if it.n_files > 1]
    assert len(dup) == 5
    assert all(it.hb == pytest.approx(np.mean(it.file_hbs)) for it in dup)
    strict, _ = apply_label_policy(samples, max_spread=0.0)
    assert len(strict) == 25 - sum(it.spread > 0 for it in dup)
    groups = [s.group_id for s in samples]
    folds = group_kfold(groups, 5, seed=0)
    assert sorted(np.concatenate(folds).tolist()) == list(range(30))
    assert_group_disjoint(groups, folds)
    leaky = file_kfold(len(samples), 5, seed=0)
    with pytest.raises(AssertionError):
        assert_group_disjoint(groups, leaky)  # the file split does leak copies
    assert [f.tolist() for f in group_kfold(groups, 5, 0)] == [f.tolist() for f in folds]


def test_conformal_quantile_and_coverage() -> None:
    r = np.arange(1, 11, dtype=float)  # n=10: ceil(11*0.8)=9th smallest
    assert conformal_quantile(r, 0.8) == 9
    assert conformal_quantile(r, 0.95) == 10
    rng = np.random.default_rng(0)
    y = rng.normal(10, 2, 2000)
    pred = y + rng.normal(0, 1, 2000)
    folds = group_kfold([str(i) for i in range(2000)], 5, 0)
    cov, q = cross_conformal_coverage(y, pred, folds, 0.8)
    assert 0.77 < cov < 0.83
    assert q.mean() == pytest.approx(1.2816, abs=0.1)


def test_children_join_the_pooled_dataset_as_content_groups(tmp_path: Path) -> None:
    """CP-AnemiC in the one dataset of children and adults: one item per content group (the
    same label policy), the WHO group from the child's age, split ids that cannot collide with
    an Eyes-defy patient."""
    from hbscreen.training.hbdata import child_group, load_dataset

    root = make_fake_cpanemic(tmp_path / "cp", n=30, duplicates=5)
    ds = load_dataset(root, None)
    assert len(ds.items) == 25 and ds.stats["cpanemic"]["groups"] == 25
    assert {it.population for it in ds.items} == {"child"}
    assert all(it.group_id.startswith("ghana-") and it.site == "ghana" for it in ds.items)
    assert {it.who_group for it in ds.items} <= {"child-6-23m", "child-24-59m"}
    assert child_group(11.0) == "child-6-23m" and child_group(24.0) == "child-24-59m"
    assert child_group(None) == "child-24-59m"
    assert ds.mask("child").all() and not ds.mask("adult").any()
