"""The heatmap a person sees: her eyelid in its own colours, an outline, a translucent map on
the strongest regions only, a small legend, a phone-friendly crop, a small JPEG."""

from __future__ import annotations

import io
import time

import cv2
import numpy as np
import pytest
from PIL import Image

from hbscreen.inference import heatmap
from tests.synthetic import synthetic_photo


def _strip_case(h: int = 960, w: int = 1280):
    """A wide, thin conjunctiva (the shape real eyelids have) with a peaked map."""
    rgb = synthetic_photo(h, w)
    mask = np.zeros((h, w), np.float32)
    y0, y1, x0, x1 = 500, 600, 200, 1100
    mask[y0:y1, x0:x1] = 1.0
    cam = np.zeros((y1 - y0, x1 - x0), np.float32)
    cam[30:70, 600:700] = 5.0  # one strong region
    cam += np.random.default_rng(0).random(cam.shape).astype(np.float32) * 0.5
    return rgb, mask, cam, (y0, y1, x0, x1)


def test_a_thin_eyelid_gets_a_sane_crop():
    rgb, mask, cam, box = _strip_case()
    out = heatmap.overlay(rgb, mask, cam, box)
    h, w = out.shape[:2]
    assert max(h, w) == heatmap.OVERLAY_LONG_SIDE
    assert max(h, w) / min(h, w) <= heatmap.MAX_ASPECT + 0.01  # never a 720 x 156 strip


def test_the_crop_stays_inside_a_small_photo():
    rgb = synthetic_photo(300, 1280)  # the photo itself is a strip
    y0, y1, x0, x1 = heatmap._context_box((100, 200, 200, 1100), rgb.shape)
    assert 0 <= y0 < y1 <= 300 and 0 <= x0 < x1 <= 1280


@pytest.mark.parametrize("box", [(500, 600, 200, 1100), (100, 900, 600, 700)])
def test_context_box_contains_the_conjunctiva(box):
    y0, y1, x0, x1 = heatmap._context_box(box, (960, 1280, 3))
    assert y0 <= box[0] and y1 >= box[1] and x0 <= box[2] and x1 >= box[3]
    assert max(y1 - y0, x1 - x0) / min(y1 - y0, x1 - x0) <= heatmap.MAX_ASPECT + 0.01


def test_the_eyelid_keeps_its_natural_colour():
    rgb, mask, cam, box = _strip_case()
    out = heatmap.overlay(rgb, mask, cam, box).astype(np.float32)
    cy0, _, cx0, cx1 = heatmap._context_box(box, rgb.shape)
    scale = out.shape[1] / (cx1 - cx0)
    # A point inside the measured region, far from the strong map region: unchanged colour.
    y, x = 550, 300
    oy, ox = round((y - cy0) * scale), round((x - cx0) * scale)
    original = rgb[y - 2 : y + 3, x - 2 : x + 3].reshape(-1, 3).mean(0)
    shown = out[oy - 1 : oy + 2, ox - 1 : ox + 2].reshape(-1, 3).mean(0)
    assert np.abs(shown - original).max() < 12
    # Most of the measured region is left uncoloured: a map on the top regions, not a wash.
    strength = heatmap._top_regions(
        np.maximum(cam, 0), np.ones(cam.shape, bool), heatmap.SMOOTH * 720
    )
    assert 0 < (strength > 0).mean() <= heatmap.TOP_SHARE + 0.01
    # The strong region is tinted towards the map colour.
    oy, ox = round((550 - cy0) * scale), round((850 - cx0) * scale)
    tinted = out[oy, ox]
    assert tinted[2] < rgb[550, 850, 2] or tinted[1] > rgb[550, 850, 1]


def test_a_legend_sits_in_a_corner():
    rgb, mask, cam, box = _strip_case()
    out = heatmap.overlay(rgb, mask, cam, box)
    h, w = out.shape[:2]
    corner = out[int(h * 0.85) :, : int(w * 0.3)].reshape(-1, 3)
    yellow = (corner[:, 0] > 200) & (corner[:, 1] > 180) & (corner[:, 2] < 80)
    white = (corner > 230).all(axis=1)
    assert yellow.sum() > 50 and white.sum() > 20


def test_a_flat_map_colours_nothing():
    rgb, mask, _, box = _strip_case()
    cam = np.zeros((box[1] - box[0], box[3] - box[2]), np.float32)
    out = heatmap.overlay(rgb, mask, cam, box)
    assert out.shape[2] == 3  # no division by zero, just the outline and the photo


def test_jpeg_is_small_without_metadata_and_fast():
    rgb, mask, cam, box = _strip_case(h=3000, w=4000)
    start = time.perf_counter()
    data = heatmap.overlay_jpeg(rgb, mask, cam, box)
    elapsed = time.perf_counter() - start
    assert len(data) <= 150_000
    im = Image.open(io.BytesIO(data))
    assert im.format == "JPEG" and not im.getexif()
    assert elapsed < 1.0  # generous: a shared machine; typically ~20-40 ms


def test_the_outline_is_calm_on_a_ragged_edge_and_keeps_the_region():
    """An edge-snapped mask has a saw-toothed upper edge; the drawn outline does not, and it
    still encloses the region measured (IoU >= 0.9 with the mask)."""
    h, w = 405, 720
    lid = np.zeros((h, w), np.float32)
    lid[180:240, 80:640] = 1.0
    for x in range(80, 640, 8):
        lid[172:180, x : x + 4] = 1.0  # teeth 8 px high, 4 px wide
    (outline,) = heatmap._outline(lid)
    drawn = np.zeros((h, w), np.uint8)
    cv2.drawContours(drawn, [outline], -1, 1, -1)
    mask = lid > 0.5
    assert (drawn.astype(bool) & mask).sum() / (drawn.astype(bool) | mask).sum() >= 0.9
    ragged = cv2.findContours(mask.view(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)[0]
    # the teeth add ~2 x 8 px of edge each (140 of them); the calm line is near the box's
    assert cv2.arcLength(outline, True) < 1.15 * 2 * (560 + 60) < cv2.arcLength(ragged[0], True)
