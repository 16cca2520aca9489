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
    assert iou > 0.7, f"IoU {iou:.3f}"


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
