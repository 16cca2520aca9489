"""Segmentation: a smoke training run end to end, the shipped model on the committed example,
and the loader of real annotated photos (Eyes-defy-anemia layout)."""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort
import pytest

from hbscreen.inference.modelcard import MODELS_DIR, load_card
from hbscreen.training.annotated_photos import AnnotatedPhotoError, load_annotated_photos

ROOT = Path(__file__).resolve().parents[1]


def _session(path: Path) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


@pytest.mark.train
def test_smoke_training_writes_a_valid_model(tmp_path):
    pytest.importorskip("torch")
    from hbscreen.training.segmentation import train_segmentation

    t0 = time.perf_counter()
    metrics = train_segmentation(
        None,
        tmp_path,
        steps=3,
        progress=False,
        size=96,
        batch=4,
        n_train=8,
        n_eval=2,
    )
    assert time.perf_counter() - t0 < 60  # ~10 s on an idle 2-core machine
    card = load_card("segmentation", tmp_path)
    assert card.task == "segmentation" and card.threshold is not None
    assert card.preprocessing.size == (96, 96)
    assert any("CP-AnemiC" in c for c in card.citation) and len(card.citation) == 2
    assert "split" in card.metrics and "iou_mean" in metrics["held_out_renderings"]
    sess = _session(tmp_path / card.file)
    assert sess.get_inputs()[0].name == card.input.name
    x = np.zeros(card.input.shape, np.float32)
    out = dict(
        zip(
            [o.name for o in sess.get_outputs()], sess.run(None, {card.input.name: x}), strict=False
        )
    )
    assert out[card.outputs["logits"]].shape[-2:] == (48, 48)  # output stride 2


def test_smoke_training_is_deterministic(tmp_path):
    pytest.importorskip("torch")
    from hbscreen.training.segmentation import train_segmentation

    kw = dict(steps=2, progress=False, size=64, batch=2, n_train=4, n_eval=1, quantise=False)
    a = train_segmentation(None, tmp_path / "a", **kw)
    b = train_segmentation(None, tmp_path / "b", **kw)
    assert a["held_out_renderings"] == b["held_out_renderings"]
    assert (tmp_path / "a/segmentation.onnx").read_bytes() == (
        tmp_path / "b/segmentation.onnx"
    ).read_bytes()


def test_shipped_model_finds_the_conjunctiva_in_the_example():
    if not (MODELS_DIR / "segmentation.onnx").is_file():
        pytest.skip("no shipped segmentation model")
    from hbscreen.inference.preprocess import segmentation_input, segmentation_mask
    from hbscreen.training.render import render_example

    card = load_card("segmentation")
    sess = _session(MODELS_DIR / card.file)
    photo = cv2.cvtColor(cv2.imread(str(ROOT / "examples/eyelid.jpg")), cv2.COLOR_BGR2RGB)
    assert photo.shape[1] == 1280
    x = segmentation_input(photo, card.preprocessing)
    logits = sess.run([card.outputs["logits"]], {card.input.name: x})[0]
    thr = card.threshold or 0.5
    pred = segmentation_mask(logits, photo.shape[:2], thr) >= thr
    _, truth = render_example("eyelid")  # the same seed re-renders the example's mask
    truth = truth > 0.5
    iou = (pred & truth).sum() / (pred | truth).sum()
    # The renderer's mask is the whole everted conjunctiva; since 1.1.0 the model follows the
    # Eyes-defy experts, who mark the palpebral band only (the fold above it excluded), so it
    # marks less of a rendering than the renderer's mask holds (held-out renderings IoU 0.62).
    assert iou > 0.65, f"IoU {iou:.3f}"


# ---- annotated photos (Eyes-defy-anemia layout) ---------------------------------------------


def _write_subject(folder: Path, name: str, *, mask: bool = True) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    photo = np.full((60, 80, 3), 120, np.uint8)
    cv2.imwrite(str(folder / f"{name}.jpg"), photo)
    if mask:
        m = np.zeros((60, 80, 4), np.uint8)
        m[30:45, 20:60] = (60, 60, 200, 255)
        cv2.imwrite(str(folder / f"{name}_palpebral.png"), m)
        cv2.imwrite(str(folder / f"{name}_forniceal_palpebral.png"), m)  # ignored


def _write_sheet(path: Path, rows: list[tuple]) -> None:
    from openpyxl import Workbook

    wb = Workbook()
    ws = wb.active
    ws.append(["Number", "Hgb", "Gender", "Age"])
    for r in rows:
        ws.append(list(r))
    wb.save(path)


def test_annotated_photos_loader(tmp_path):
    country = tmp_path / "Italy"
    _write_subject(country / "1", "20200118_164733")
    _write_subject(country / "2", "20200119_101010")
    _write_sheet(country / "Italy.xlsx", [(1, "11,4", "F", 30), (2, 9.8, "M", 41)])
    items = load_annotated_photos(tmp_path)
    assert [(i.subject, i.hb) for i in items] == [("Italy/1", 11.4), ("Italy/2", 9.8)]
    rgb, mask = items[0].load()
    assert rgb.shape == (60, 80, 3) and mask.shape == (60, 80)
    assert mask[35, 30] == 1.0 and mask[5, 5] == 0.0


def test_annotated_photos_missing_mask_is_named(tmp_path):
    _write_subject(tmp_path / "1", "a")
    _write_subject(tmp_path / "2", "b", mask=False)
    _write_sheet(tmp_path / "sheet.xlsx", [(1, "12,0"), (2, "10,5")])
    with pytest.raises(AnnotatedPhotoError, match=r"2: photo b\.jpg has no mask b_palpebral"):
        load_annotated_photos(tmp_path)


def test_annotated_photos_missing_row_is_named(tmp_path):
    _write_subject(tmp_path / "1", "a")
    _write_subject(tmp_path / "3", "c")
    _write_sheet(tmp_path / "sheet.xlsx", [(1, "12,0")])
    with pytest.raises(AnnotatedPhotoError, match="no row for subject '3'"):
        load_annotated_photos(tmp_path)


# ---- the shared working-copy layout (photos.csv + photos/, 8-bit masks) ----------------------


def _write_shared_layout(root: Path, n: int = 3) -> None:
    (root / "photos").mkdir(parents=True)
    rows = ["image,mask,patient,hb_g_dl,sex,age_years"]
    rng = np.random.default_rng(0)
    for i in range(n):
        photo = rng.integers(60, 200, (80, 60, 3), dtype=np.uint8)
        mask = np.zeros((80, 60), np.uint8)
        mask[40 + i : 50 + i, 10:50] = 255
        cv2.imwrite(str(root / "photos" / f"p{i}.jpg"), photo)
        cv2.imwrite(str(root / "photos" / f"p{i}_palpebral.png"), mask)
        rows.append(f"p{i}.jpg,p{i}_palpebral.png,{10 + i},{9.5 + i},F,30")
    (root / "photos.csv").write_text("\n".join(rows) + "\n")


def test_shared_layout_loader_groups_by_patient(tmp_path):
    _write_shared_layout(tmp_path)
    items = load_annotated_photos(tmp_path)
    assert [(i.subject, i.hb) for i in items] == [("10", 9.5), ("11", 10.5), ("12", 11.5)]
    rgb, mask = items[1].load()
    assert rgb.shape == (80, 60, 3) and mask.dtype == np.float32
    assert mask[45, 30] == 1.0 and mask[5, 5] == 0.0 and mask.sum() == 10 * 40


def test_shared_layout_missing_file_is_named(tmp_path):
    _write_shared_layout(tmp_path)
    (tmp_path / "photos" / "p1_palpebral.png").unlink()
    with pytest.raises(AnnotatedPhotoError, match=r"line 3: p1_palpebral\.png not found"):
        load_annotated_photos(tmp_path)


def test_cv_folds_are_disjoint_by_patient():
    from hbscreen.training.segmentation import cv_folds

    patients = [str(i) for i in range(65)] + ["3", "7"]  # a patient with two photos
    folds = cv_folds(patients, 5, seed=0)
    flat = [p for f in folds for p in f]
    assert sorted(flat) == sorted(set(patients)) and len(flat) == len(set(flat))
    assert {len(f) for f in folds} == {13}
    assert folds == cv_folds(patients, 5, seed=0)


def test_augmentation_reframes_and_keeps_the_mask_aligned(monkeypatch):
    from hbscreen.training import seg_augment
    from hbscreen.training.seg_augment import augment

    monkeypatch.setattr(seg_augment, "PALLOR_P", 0.0)  # pallor removes the red on purpose

    # a flat red band on grey: after any warp and re-lighting the mask must still sit on red
    photo = _red_band_photo()
    rng = np.random.default_rng(1)
    fills = []
    for _ in range(40):
        img, m = augment(rng, photo, 96)
        assert img.shape == (96, 96, 3) and m.shape == (96, 96) and m.dtype == np.uint8
        inside = m > 200
        if inside.sum() < 20:
            continue
        fills.append(inside.mean())
        red = img[..., 0].astype(int) - img[..., 1]
        assert np.median(red[inside]) > np.median(red[m == 0]) + 30
    assert min(fills) < 0.04 and max(fills) > 0.15  # zoomed out and close-ups both occur


def _red_band_photo():
    """A flat red band on grey, as a real photo with its mask."""
    from hbscreen.training.seg_augment import RealPhoto

    rgb = np.full((1000, 750, 3), 110, np.uint8)
    mask = np.zeros((1000, 750), np.float32)
    mask[560:620, 150:600] = 1
    rgb[mask > 0] = (200, 40, 50)
    return RealPhoto.build("1", rgb, mask)


def test_crop_draw_is_a_pass_two_crop_around_the_true_mask(monkeypatch):
    from hbscreen.training import seg_augment
    from hbscreen.training.seg_augment import crop_draw

    monkeypatch.setattr(seg_augment, "PALLOR_P", 0.0)
    photo = _red_band_photo()
    rng = np.random.default_rng(2)
    for _ in range(20):
        img, m = crop_draw(rng, photo, 96)
        assert img.shape == (96, 96, 3) and m.shape == (96, 96) and m.dtype == np.uint8
        inside = m > 200
        # the whole band is in view, filling far more of the frame than in a whole photo
        assert 0.1 < inside.mean() < 0.8
        assert (m[:, 0] < 128).all() and (m[:, -1] < 128).all()  # margin on both ends
        red = img[..., 0].astype(int) - img[..., 1]
        assert np.median(red[inside]) > np.median(red[m == 0]) + 30


def test_guided_refine_snaps_a_blurred_map_to_the_photo_edge():
    from hbscreen.inference.preprocess import guided_refine
    from hbscreen.training.segmentation import iou_dice

    rgb = np.full((200, 300, 3), 200, np.uint8)
    truth = np.zeros((200, 300), bool)
    truth[80:120, 40:260] = True
    rgb[truth] = (180, 40, 50)
    # the model's map: right place, edges blurred and shifted by its output stride
    prob = cv2.GaussianBlur(np.roll(truth, 4, axis=0).astype(np.float32), (0, 0), 6)
    refined = guided_refine(rgb, prob, 4, 1e-3)
    assert refined.shape == prob.shape
    assert iou_dice(refined >= 0.5, truth)[0] > iou_dice(prob >= 0.5, truth)[0] + 0.03


@pytest.mark.parametrize("decoder", [False, True])
def test_warm_start_reproduces_the_served_graph(decoder):
    """With the decoder, too: its last convolution starts at zero, so fine-tuning starts
    exactly at the served LR-ASPP graph."""
    pytest.importorskip("torch")
    import torch

    from hbscreen.training.seg_augment import warm_start
    from hbscreen.training.segmentation import INIT_RENDERINGS, build_model

    model = build_model(decoder=decoder)
    assert warm_start(model, INIT_RENDERINGS) == 56
    model.eval()
    x = np.random.default_rng(0).standard_normal((1, 3, 256, 256)).astype(np.float32)
    served = _session(INIT_RENDERINGS)
    ref = served.run(None, {served.get_inputs()[0].name: x})[0]
    with torch.no_grad():
        got = model(torch.from_numpy(x)).numpy()
    # int8 graph vs its dequantised weights in float: activations are not rounded in torch
    assert np.corrcoef(ref.ravel(), got.ravel())[0, 1] > 0.98


# ---- real photos (runs whenever ../shared/data/eyes-defy-anemia exists) ----------------------

EYES_DEFY = ROOT.parent / "shared" / "data" / "eyes-defy-anemia"


@pytest.mark.skipif(not (EYES_DEFY / "photos.csv").is_file(), reason="no Eyes-defy photos here")
def test_shipped_model_on_real_photos_regression_check():
    """A regression check, not validation: the shipped model was trained on these photos (its
    validation is the patient-grouped CV in its card). Guards against a model or
    post-processing change that breaks segmentation of real photos."""
    from hbscreen.training.segmentation import evaluate_photos, load_real_photos

    card = load_card("segmentation")
    records = evaluate_photos(
        MODELS_DIR / card.file, card.preprocessing, load_real_photos(EYES_DEFY), card.threshold
    )
    ious = np.array([r["iou"] for r in records])
    assert len(records) == 65
    assert ious.mean() >= REAL_PHOTO_IOU_FLOOR, f"mean IoU {ious.mean():.3f}"
    assert (ious < 0.3).sum() <= 3, sorted(ious)[:5]


REAL_PHOTO_IOU_FLOOR = 0.62  # shipped 1.1.0: 0.667 (it has seen these photos)


@pytest.mark.skipif(not (EYES_DEFY / "photos.csv").is_file(), reason="no Eyes-defy photos here")
@pytest.mark.xfail(
    strict=True,
    reason="segmentation 1.1.0 finds a pale conjunctiva less well: mean IoU 0.41 on these "
    "photos made pale, against 0.67 as taken; it takes in the red lid rim (model card Limits, "
    "benchmarks/seg_pallor.py)",
)
def test_a_pale_conjunctiva_is_found_as_well_as_a_perfused_one():
    """Pallor is what is screened for, and these photos are mostly well perfused: the same
    photos with the tissue made pale (the gate calibration's pallor, 0.3) must be segmented
    to the same floor as the photos as taken, or a pale person's Hb is read off other tissue."""
    from hbscreen.inference.pipeline import Segmenter
    from hbscreen.training.quality_calibration import pallor
    from hbscreen.training.segmentation import SERVE_LONG_SIDE, iou_dice

    seg = Segmenter.from_dir(MODELS_DIR, 1)
    ious = []
    for it in load_annotated_photos(EYES_DEFY):
        rgb, mask = it.load(long_side=SERVE_LONG_SIDE)
        ious.append(iou_dice(seg.segment(pallor(rgb, mask, 0.3)) > 0.5, mask > 0.5)[0])
    assert np.mean(ious) >= REAL_PHOTO_IOU_FLOOR, f"mean IoU {np.mean(ious):.3f}"


@pytest.mark.train
def test_train_with_cv_carries_the_patient_cv_into_the_card(tmp_path):
    pytest.importorskip("torch")
    from hbscreen.training.segmentation import card_section_md, train_with_cv

    photos = tmp_path / "photos_root"
    _write_shared_layout(photos, n=5)
    kw = dict(steps=2, size=64, batch=4, n_train=4, n_eval=1, quantise=False, workers=1)
    train_with_cv(None, tmp_path / "out", photos=photos, progress=False, real_per_batch=2, **kw)
    card = load_card("segmentation", tmp_path / "out")
    cv = card.metrics["real_photos_cv"]
    assert [f["n_photos"] for f in cv["folds"]] == [1, 1, 1, 1, 1] and cv["n_photos"] == 5
    assert card.training_data["real_annotated_photos"] == 5
    assert any("Eyes-defy" in c for c in card.citation)
    md = "\n".join(card_section_md(card.model_dump(mode="json")))
    assert "| **all** | 5 |" in md and "CC BY 4.0" in md


@pytest.mark.train
def test_attach_cv_rescores_the_folds_with_the_cards_guided_filter(tmp_path):
    """After a change of post-processing (the card's guided_refine), --attach-cv re-scores
    the same folds' models with and without it and the card section says what it adds."""
    pytest.importorskip("torch")
    from hbscreen.training.segmentation import attach_cv, card_section_md, train_with_cv

    photos = tmp_path / "photos_root"
    _write_shared_layout(photos, n=5)
    kw = dict(steps=2, size=64, batch=4, n_train=4, n_eval=1, quantise=False, workers=1)
    guided = {"radius": 1, "eps": 1e-3, "long_side": 64}
    out = tmp_path / "out"
    train_with_cv(None, out, photos=photos, progress=False, real_per_batch=2, guided=guided, **kw)
    card = attach_cv(out, out / "cv", photos=photos)
    gain = card["metrics"]["guided_refine_cv"]
    assert len(gain["real_iou_per_fold"]) == 5 and len(gain["real_iou_mean"]) == 2
    assert card["metrics"]["real_photos_cv"]["iou_mean_of_folds"] == pytest.approx(
        gain["real_iou_mean"][1], abs=1e-3
    )
    assert "The guided filter, on the same folds" in "\n".join(card_section_md(card))


def test_pallor_makes_the_conjunctiva_pale():
    from hbscreen.training.seg_augment import _pallor

    img = np.full((64, 64, 3), (200, 60, 70), np.uint8)
    mask = np.zeros((64, 64), np.float32)
    mask[24:40, 8:56] = 1
    out = _pallor(np.random.default_rng(0), img, mask).astype(int)
    assert out[32, 32, 0] - out[32, 32, 1] < 0.6 * (200 - 60)  # less red inside
    assert (out[2, 2] == img[2, 2]).all()  # untouched far away


def test_guided_refine_leaves_a_far_away_eye_alone():
    """A crop narrower than GUIDED_MIN_SIDE_RADII filter radii at the working scale keeps pass
    2's own map (the filter had erased a far-away eye's band); a near one is refined."""
    from hbscreen.inference.modelcard import load_card
    from hbscreen.inference.preprocess import segment_two_pass

    pre = load_card("segmentation").preprocessing
    guided = {"radius": 8, "eps": 1e-3, "long_side": 320}

    def red_detector(x: np.ndarray) -> np.ndarray:  # logits: the red band, as a model would
        return np.where(x[:, :1] - x[:, 1:2] > 1.0, 8.0, -8.0).astype(np.float32)

    for band, refined in (((470, 490, 600, 680), False), ((300, 560, 200, 1080), True)):
        rgb = np.full((960, 1280, 3), 200, np.uint8)
        y0, y1, x0, x1 = band
        rgb[y0:y1, x0:x1] = (200, 40, 50)
        plain = segment_two_pass(red_detector, rgb, pre, 0.5, 0.3)
        snapped = segment_two_pass(red_detector, rgb, pre, 0.5, 0.3, guided)
        assert plain[(y0 + y1) // 2, (x0 + x1) // 2] > 0.5
        assert np.array_equal(plain, snapped) is not refined, band
