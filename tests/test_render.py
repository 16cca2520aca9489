"""The renderer of eyelid photos: shapes, mask sanity, determinism, degradations."""

from __future__ import annotations

import numpy as np
import pytest

from hbscreen.training.degrade import (
    add_noise,
    cheap_phone,
    downscale_long_side,
    gaussian_blur,
    jpeg_roundtrip,
    scale_brightness,
)
from hbscreen.training.render import procedural_conjunctiva, render_eye_photo


def test_procedural_conjunctiva_is_a_soft_crescent():
    rgba = procedural_conjunctiva(np.random.default_rng(0), pallor=0.5)
    assert rgba.dtype == np.uint8 and rgba.ndim == 3 and rgba.shape[2] == 4
    alpha = rgba[..., 3]
    assert 0.1 < (alpha > 127).mean() < 0.6
    assert ((alpha > 0) & (alpha < 255)).any(), "edge must be soft"
    assert rgba[..., :3][alpha == 0].max() == 0, "RGB is black outside the mask"


def test_pallor_makes_the_conjunctiva_paler():
    def mean_rgb(p: float) -> np.ndarray:
        rgba = procedural_conjunctiva(np.random.default_rng(1), pallor=p)
        a = rgba[..., 3] > 200
        return rgba[..., :3][a].mean(axis=0)

    red, pale = mean_rgb(0.0), mean_rgb(1.0)
    assert pale[1] > red[1] + 40  # green rises as the tissue pales


@pytest.mark.parametrize("size", [(256, 320), (480, 360)])
def test_render_shapes_and_mask(size):
    photo, mask = render_eye_photo(np.random.default_rng(3), None, size=size)
    assert photo.shape == (*size, 3) and photo.dtype == np.uint8
    assert mask.shape == size and mask.dtype == np.float32
    assert mask.min() >= 0.0 and mask.max() <= 1.0
    frac = (mask > 0.5).mean()
    assert 0.005 < frac < 0.4
    # the conjunctiva is redder than the frame on average
    red = photo[..., 0].astype(float) - photo[..., 1]
    assert red[mask > 0.5].mean() > red[mask < 0.01].mean()


def test_render_is_deterministic_with_a_seed():
    a = render_eye_photo(np.random.default_rng(42), None, size=(200, 260))
    b = render_eye_photo(np.random.default_rng(42), None, size=(200, 260))
    c = render_eye_photo(np.random.default_rng(43), None, size=(200, 260))
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])


def test_render_accepts_a_real_style_cutout():
    cut = procedural_conjunctiva(np.random.default_rng(5), 0.2)
    _photo, mask = render_eye_photo(np.random.default_rng(5), cut, size=(240, 320), finger=False)
    # the mask holds the cut-out's area, scaled (rotation/cropping keep it roughly)
    assert (mask > 0.5).sum() > 200


def test_degradations_keep_uint8_rgb():
    rng = np.random.default_rng(0)
    rgb = (rng.random((900, 1200, 3)) * 255).astype(np.uint8)
    assert downscale_long_side(rgb, 640).shape == (480, 640, 3)
    assert downscale_long_side(rgb, 2000).shape == rgb.shape
    for out in (
        jpeg_roundtrip(rgb, 60),
        gaussian_blur(rgb, 0.8),
        add_noise(rgb, 3.0, rng),
        scale_brightness(rgb, 1.1),
    ):
        assert out.dtype == np.uint8 and out.shape == rgb.shape
    assert scale_brightness(rgb, 0.5).mean() < rgb.mean() * 0.55
    phone = cheap_phone(rgb, np.random.default_rng(1))
    assert phone.shape == (480, 640, 3) and phone.dtype == np.uint8
    again = cheap_phone(rgb, np.random.default_rng(1))
    assert np.array_equal(phone, again)
