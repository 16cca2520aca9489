"""Eyes-defy-anemia loader: a synthetic folder in the distributed layout, and (when the shared
copy exists) the real one. No dataset pixels are written anywhere but tmp_path."""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np
import pytest

from hbscreen.training.cpanemic import DatasetError
from hbscreen.training.eyes_defy import load_cutouts, load_photos, served_cutout
from hbscreen.training.folds import assert_group_disjoint, group_kfold

from .test_cpanemic import fake_cutout

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "eyes-defy-anemia"


def make_fake_eyes(root: Path, n: int = 12, seed: int = 0) -> Path:
    """cutouts/ + cutouts.csv (India and Italy) and photos/ + photos.csv for the Indian
    patients, with a few near-black 'ringing' pixels inside each cut-out's mask."""
    rng = np.random.default_rng(seed)
    (root / "cutouts").mkdir(parents=True)
    (root / "photos").mkdir()
    rows, photos = [], []
    for i in range(n):
        country = "India" if i % 2 == 0 else "Italy"
        hb = float(np.round(rng.uniform(8, 16), 1))
        rgba = fake_cutout(rng, hb - 2)
        ys, xs = np.nonzero(rgba[..., 3] == 255)
        rgba[ys[:3], xs[:3], :3] = 5  # JPEG ringing inside the mask
        name = f"{country.lower()}_{i:03d}.png"
        cv2.imwrite(str(root / "cutouts" / name), cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGRA))
        sex = "F" if i % 3 else "M"
        rows.append([name, country, i, f"{hb}", sex, 30 + i])
        if country == "India":
            photo = np.full((200, 300, 3), (190, 150, 120), np.uint8)
            mask = np.zeros((200, 300), np.uint8)
            cv2.ellipse(mask, (150, 120), (80, 25), 0, 0, 360, 255, -1)
            photo[mask > 0] = (200, 80, 90)
            cv2.imwrite(str(root / "photos" / f"p{i}.jpg"), photo[..., ::-1])
            cv2.imwrite(str(root / "photos" / f"p{i}_palpebral.png"), mask)
            photos.append([f"p{i}.jpg", f"p{i}_palpebral.png", i, f"{hb}", sex, 30 + i])
    with (root / "cutouts.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["image", "country", "patient", "hb_g_dl", "sex", "age_years"])
        w.writerows(rows)
    with (root / "photos.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["image", "mask", "patient", "hb_g_dl", "sex", "age_years"])
        w.writerows(photos)
    return root


def test_loads_cutouts_with_patients_sites_and_sex(tmp_path: Path) -> None:
    root = make_fake_eyes(tmp_path / "eyes")
    s = load_cutouts(root)
    assert len(s) == 12 and {x.country for x in s} == {"india", "italy"}
    assert s[0].group_id == "india-0" and s[0].population in ("woman", "man")
    assert s[0].rgba.shape[2] == 4 and s[0].rgba[..., 3].max() == 255
    photos = load_photos(root)
    assert {p.group_id for p in photos} <= {x.group_id for x in s}


def test_clear_errors(tmp_path: Path) -> None:
    root = make_fake_eyes(tmp_path / "eyes")
    (root / "cutouts" / "india_000.png").unlink()
    with pytest.raises(DatasetError, match="not found"):
        load_cutouts(root)
    root2 = make_fake_eyes(tmp_path / "eyes2")
    text = (root2 / "cutouts.csv").read_text().replace(",F,", ",X,", 1)
    (root2 / "cutouts.csv").write_text(text)
    with pytest.raises(DatasetError, match="sex"):
        load_cutouts(root2)
    with pytest.raises(DatasetError, match="not found"):
        load_cutouts(tmp_path / "nowhere")


def test_photo_and_cutout_of_a_patient_share_a_fold(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from hbscreen.training.hbdata import load_dataset

    from .tiny_models import build_tiny_models

    root = make_fake_eyes(tmp_path / "eyes")
    models = build_tiny_models(tmp_path / "models")
    ds = load_dataset(None, root, photos=True, models_dir=models)
    src = ds.array("source")
    assert (src == "photo").any() and (src == "cutout").sum() == 12
    folds = group_kfold(ds.groups, 3, 0)
    assert_group_disjoint(ds.groups, folds)
    fold_of = {i: k for k, f in enumerate(folds) for i in f}
    by_patient: dict[str, set[int]] = {}
    for i, g in enumerate(ds.groups):
        by_patient.setdefault(g, set()).add(fold_of[i])
    assert all(len(v) == 1 for v in by_patient.values())
    assert not ds.mask("all")[src == "photo"].any()  # photos are never scored


def test_dark_ringing_pixels_leave_the_mask() -> None:
    from hbscreen.inference.preprocess import regression_input
    from hbscreen.training.regressor import RegressorConfig

    rgb = np.full((40, 100, 3), (150, 60, 60), np.uint8)
    rgb[10:20, 40:60] = 4
    mask = np.ones((40, 100), np.float32)
    pre = RegressorConfig(size=(40, 100), dark_exclude=30.0).preprocessing()
    x = regression_input(rgb, mask, pre)
    assert x[0, -1, 12:18, 45:55].max() == 0 and x[0, -1, 30, 10] == 1


def test_served_cutout_is_an_rgba_crop() -> None:
    rgb = np.full((50, 80, 3), 200, np.uint8)
    m = np.zeros((50, 80), np.float32)
    m[10:30, 20:60] = 1.0
    c = served_cutout(rgb, m)
    assert c.shape[2] == 4 and c[..., 3].max() == 255 and (c[c[..., 3] == 0, :3] == 0).all()


@pytest.mark.skipif(not (REAL / "cutouts.csv").is_file(), reason="needs the Eyes-defy copy")
def test_real_copy_loads() -> None:
    s = load_cutouts(REAL)
    assert len(s) == 160 and len({x.group_id for x in s}) == 160
    assert sum(x.country == "india" for x in s) == 68
    assert all(4 <= x.hb <= 20 for x in s)
    photos = load_photos(REAL)
    assert len(photos) == 65 and {p.group_id for p in photos} <= {x.group_id for x in s}


def test_photos_go_through_a_folder_that_holds_only_a_segmentation_model(tmp_path: Path) -> None:
    """`hbscreen train --skip-segmentation --out DIR` with a freshly trained segmentation in DIR
    and no regressor yet: the photo step loads the segmentation alone (it loaded both models and
    failed on the missing regression card)."""
    import shutil

    from hbscreen.inference.pipeline import Pipeline, Segmenter
    from hbscreen.training.eyes_defy import EyesPhoto, photos_through_segmentation
    from tests.synthetic import synthetic_photo
    from tests.tiny_models import build_tiny_models

    both = build_tiny_models(tmp_path / "both")
    only = tmp_path / "only"
    only.mkdir()
    for f in ("segmentation.json", "segmentation.onnx"):
        shutil.copy(both / f, only / f)
    rgb = synthetic_photo()
    assert np.array_equal(Segmenter.from_dir(only).segment(rgb), Pipeline(both).segment(rgb))
    cv2.imwrite(str(tmp_path / "p.jpg"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(tmp_path / "m.png"), np.zeros(rgb.shape[:2], np.uint8))
    photo = EyesPhoto(tmp_path / "p.jpg", tmp_path / "m.png", 11.0, "1", "F", 30.0)
    _, stats = photos_through_segmentation([photo], only)
    assert len(stats) == 1
