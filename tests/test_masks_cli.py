"""`hbscreen screen --masks DIR`: the mask each screening used, as an 8-bit PNG at the photo's
upright size, named after the photo, with its path in the JSON line."""

from __future__ import annotations

import io
import json
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from hbscreen.cli import main

ROOT = Path(__file__).resolve().parents[1]


def _lines(capsys) -> list[dict]:
    return [json.loads(x) for x in capsys.readouterr().out.splitlines()]


def test_masks_for_the_example_photo_match_its_conjunctiva(tmp_path, capsys):
    from hbscreen.training.render import render_example

    masks = tmp_path / "masks"
    args = ["screen", str(ROOT / "examples/eyelid.jpg"), "--json", "--no-heatmap"]
    code = main([*args, "--masks", str(masks), "--out", str(tmp_path / "out")])
    assert code == 0
    (line,) = _lines(capsys)
    assert line["ok"] and line["mask_path"] == str(masks / "eyelid.png")
    m = cv2.imread(line["mask_path"], cv2.IMREAD_UNCHANGED)
    assert m.dtype == np.uint8 and m.ndim == 2 and set(np.unique(m)) <= {0, 255}
    photo = cv2.imread(str(ROOT / "examples/eyelid.jpg"))
    assert m.shape == photo.shape[:2]
    _, truth = render_example("eyelid")  # the seed re-renders the example's true mask
    pred, truth = m == 255, truth > 0.5
    assert (pred & truth).sum() / (pred | truth).sum() > 0.6


def test_masks_are_upright_full_size_and_undecodable_inputs_have_none(tmp_path, capsys):
    # a 2000x1500 landscape JPEG stored sideways with EXIF orientation 6 (rotate 90° CW):
    # the worker screens it upright at 1280 px; the mask comes back at 1500x2000 upright
    rgb = cv2.cvtColor(cv2.imread(str(ROOT / "examples/eyelid.jpg")), cv2.COLOR_BGR2RGB)
    big = cv2.resize(rgb, (2000, 1500))
    stored = np.ascontiguousarray(np.rot90(big, 1))  # what the camera wrote (1500 wide)
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    Image.fromarray(stored).save(buf, "JPEG", quality=92, exif=exif)
    photos = tmp_path / "in"
    photos.mkdir()
    (photos / "sideways.jpg").write_bytes(buf.getvalue())
    (photos / "broken.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    masks = tmp_path / "masks"
    args = ["screen", str(photos), "--json", "--no-heatmap", "--masks", str(masks)]
    main([*args, "--out", str(tmp_path / "out")])
    by_name = {Path(x["path"]).name: x for x in _lines(capsys)}
    assert by_name["broken.jpg"]["mask_path"] is None
    m = cv2.imread(by_name["sideways.jpg"]["mask_path"], cv2.IMREAD_UNCHANGED)
    assert m.shape == (1500, 2000)
    ys, xs = np.nonzero(m)
    assert xs.size and xs.max() - xs.min() > ys.max() - ys.min()  # the lid band lies flat


def test_masks_refuse_the_queue(tmp_path, capsys):
    args = ["screen", str(ROOT / "examples/eyelid.jpg"), "--masks", str(tmp_path)]
    code = main([*args, "--queue", "redis://127.0.0.1:1/0"])
    assert code == 2 and "--masks" in capsys.readouterr().err
