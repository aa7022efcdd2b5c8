"""Grid pictures: 8-bit PNGs that decode to the expected pixels."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from models.errors import InvalidParametersError
from workers.reports.images import amplification, perturbation_heatmap, to_png


def decode(png: bytes) -> tuple[str, np.ndarray]:
    img = Image.open(io.BytesIO(png))
    return img.mode, np.asarray(img)


def test_grey_png_round_trips_8_bit_values() -> None:
    values = np.arange(256, dtype=np.float64).reshape(1, 16, 16) / 255
    mode, pixels = decode(to_png(torch.tensor(values)))
    assert mode == "L"
    np.testing.assert_array_equal(pixels, np.arange(256).reshape(16, 16))


def test_rgb_png_keeps_channels() -> None:
    image = np.zeros((3, 4, 5))
    image[0] = 1.0  # red
    image[2, :, 2] = 0.5
    mode, pixels = decode(to_png(image))
    assert mode == "RGB"
    assert pixels.shape == (4, 5, 3)
    assert (pixels[:, :, 0] == 255).all()
    assert (pixels[:, 2, 2] == 128).all()
    assert (pixels[:, 0, 1] == 0).all()


@pytest.mark.parametrize("shape", [(2, 8, 8), (1, 1, 8, 8), (8,)])
def test_bad_shapes_are_refused(shape: tuple[int, ...]) -> None:
    with pytest.raises(InvalidParametersError, match=r"must be \[C, H, W\]"):
        to_png(np.zeros(shape))


def test_nan_pixels_are_refused() -> None:
    with pytest.raises(InvalidParametersError, match="NaN"):
        to_png(np.full((1, 4, 4), np.nan))


def test_heatmap_amplifies_to_full_range() -> None:
    clean = np.full((3, 6, 6), 0.5)
    adv = clean.copy()
    adv[1, 2, 3] += 2 / 255  # the largest change, on one channel
    adv[0, 4, 4] -= 1 / 255  # half as large
    mode, pixels = decode(perturbation_heatmap(clean, adv, colormap="gray"))
    assert mode == "L"
    assert pixels[2, 3] == 255
    assert pixels[4, 4] == 128
    assert pixels[0, 0] == 0
    assert amplification(clean, adv) == pytest.approx(255 / 2)
    mode, rgb = decode(perturbation_heatmap(clean, adv))
    assert mode == "RGB"
    brightness = rgb.astype(int).sum(axis=2)
    assert brightness[2, 3] > brightness[4, 4] > brightness[0, 0]


def test_zero_perturbation_is_black() -> None:
    clean = np.random.default_rng(0).random((1, 5, 5))
    _, pixels = decode(perturbation_heatmap(clean, clean, colormap="gray"))
    assert (pixels == 0).all()
    assert amplification(clean, clean) == float("inf")


def test_heatmap_needs_matching_sizes() -> None:
    with pytest.raises(InvalidParametersError, match="differ in size"):
        perturbation_heatmap(np.zeros((1, 4, 4)), np.zeros((1, 5, 5)))
