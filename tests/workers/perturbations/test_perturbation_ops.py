"""Every perturbation: identity at severity 0, range, shape, seeding, batching, severity order."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
import torch

from models.errors import InvalidParametersError
from workers.perturbations import (
    Family,
    Modality,
    SequenceRule,
    get_perturbation,
    list_perturbations,
    perturbations_for,
)
from workers.perturbations.geometry import warp

ALL = list_perturbations()
#: Perturbations that draw random numbers (noise fields, directions, layouts).
RANDOM = {
    "gaussian_noise",
    "shot_noise",
    "speckle_noise",
    "motion_blur",
    "translation",
    "rotation",
    "tilt",
    "scaling",
    "shear",
    "grid_lines",
    "text_markers",
    "hair",
    "black_corners",
    "air_bubbles",
    "uneven_illumination",
}


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_registry_lists_every_family() -> None:
    assert len(ALL) == 24
    assert set(list_perturbations(Family.NOISE)) == {
        "gaussian_noise",
        "shot_noise",
        "speckle_noise",
    }
    assert set(list_perturbations("geometry")) == {
        "translation",
        "rotation",
        "tilt",
        "scaling",
        "shear",
    }
    assert {get_perturbation(n).family for n in ALL} == set(Family)


def test_unknown_name_lists_valid_ones() -> None:
    with pytest.raises(InvalidParametersError, match="unknown perturbation 'fog'") as err:
        get_perturbation("fog")
    assert "gaussian_noise" in err.value.message
    assert err.value.details["valid"] == ALL


def test_noise_compares_with_first_frame_others_consecutive() -> None:
    for name in ALL:
        p = get_perturbation(name)
        expected = SequenceRule.FIRST if p.family == Family.NOISE else SequenceRule.CONSECUTIVE
        assert p.sequence_rule == expected
        assert (p.sweep is None) == (p.family == Family.NOISE)


def test_modality_selection() -> None:
    grey = perturbations_for(1)
    colour = perturbations_for(3)
    assert {"grid_lines", "text_markers"} <= set(grey)
    assert not {"hair", "black_corners", "air_bubbles", "uneven_illumination"} & set(grey)
    assert {"hair", "black_corners", "air_bubbles", "uneven_illumination"} <= set(colour)
    assert not {"grid_lines", "text_markers"} & set(colour)
    fundus = perturbations_for(3, Modality.FUNDUS)
    assert [n for n in fundus if get_perturbation(n).family == Family.ARTEFACT] == [
        "uneven_illumination"
    ]
    # A 3-channel radiograph model (CheXNet-style) still gets the radiograph artefacts.
    assert "grid_lines" in perturbations_for(3, "radiograph")
    generic = [n for n in ALL if get_perturbation(n).family != Family.ARTEFACT]
    assert set(generic) <= set(grey)
    assert set(generic) <= set(colour)


@pytest.mark.parametrize("name", ALL)
def test_severity_zero_is_identity(
    name: str, gray_images: torch.Tensor, rgb_images: torch.Tensor
) -> None:
    p = get_perturbation(name)
    for x in (gray_images, rgb_images):
        out = p(x, 0, generator=_gen())
        assert torch.equal(out, x)
        assert out.data_ptr() != x.data_ptr()


@pytest.mark.parametrize("name", ALL)
def test_output_in_unit_range_same_shape(
    name: str, rgb_images: torch.Tensor, gray_images: torch.Tensor
) -> None:
    p = get_perturbation(name)
    for x in (rgb_images, gray_images):
        for s in range(1, 6):
            out = p(x, s, generator=_gen(s))
            assert out.shape == x.shape
            assert out.dtype == x.dtype
            assert torch.isfinite(out).all()
            assert out.min() >= 0.0
            assert out.max() <= 1.0


@pytest.mark.parametrize("name", ALL)
def test_severity_moves_image_further(name: str, make_blobs: Callable[..., Any]) -> None:
    """With one seed (same layout), severity 5 is further from clean than severity 1, and
    severity 1 already changes 64-pixel images (at 32 pixels the mildest blurs are below a
    pixel)."""
    p = get_perturbation(name)
    x, _ = make_blobs(4, seed=5, channels=3, size=64)
    dist = [float((p(x, s, generator=_gen(3)) - x).abs().mean()) for s in range(1, 6)]
    assert dist[0] > 0
    assert dist[4] > dist[0]


@pytest.mark.parametrize("name", ALL)
def test_seeded(name: str, rgb_images: torch.Tensor) -> None:
    p = get_perturbation(name)
    a = p(rgb_images, 3, generator=_gen(7))
    b = p(rgb_images, 3, generator=_gen(7))
    c = p(rgb_images, 3, generator=_gen(8))
    assert torch.equal(a, b)
    assert (not torch.equal(a, c)) == (name in RANDOM)


def test_default_generator_is_deterministic(gray_images: torch.Tensor) -> None:
    p = get_perturbation("gaussian_noise")
    assert torch.equal(p(gray_images, 2), p(gray_images, 2))


@pytest.mark.parametrize("name", [n for n in ALL if n not in RANDOM])
def test_deterministic_ones_act_per_image(name: str, rgb_images: torch.Tensor) -> None:
    p = get_perturbation(name)
    batched = p(rgb_images, 4)
    for i in range(rgb_images.shape[0]):
        single = p(rgb_images[i : i + 1], 4)[0]
        torch.testing.assert_close(batched[i], single, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", ALL)
def test_non_square_images(name: str) -> None:
    x = torch.rand(3, 3, 24, 40, generator=_gen(1))
    out = get_perturbation(name)(x, 3, generator=_gen())
    assert out.shape == x.shape


def test_invalid_severity_and_images(gray_images: torch.Tensor) -> None:
    p = get_perturbation("brightness")
    with pytest.raises(InvalidParametersError, match=r"severity must be in 0\.\.5"):
        p(gray_images, 6)
    with pytest.raises(InvalidParametersError, match="severity must be an integer"):
        p(gray_images, 1.5)  # type: ignore[arg-type]
    with pytest.raises(InvalidParametersError, match=r"images must be \[N, C, H, W\]"):
        p(gray_images[0], 1)
    with pytest.raises(InvalidParametersError, match="floating point"):
        p((gray_images * 255).to(torch.uint8), 1)


def test_intensity_values_by_hand() -> None:
    x = torch.tensor([0.0, 0.25, 0.5, 0.75]).view(1, 1, 1, 4)
    assert torch.allclose(get_perturbation("brightness")(x, 2), (x + 0.1).clamp(0, 1))
    c = get_perturbation("contrast")(x, 2)  # factor 0.7 around the mean 0.375
    assert torch.allclose(c, (x - 0.375) * 0.7 + 0.375)
    gm = get_perturbation("gamma")(x, 1)
    assert torch.allclose(gm, x ** math.exp(0.15))
    b = get_perturbation("bit_depth")(torch.linspace(0, 1, 256).view(1, 1, 1, -1), 5)
    assert b.unique().numel() == 8  # 3 bits left
    w = get_perturbation("dicom_window_shift")(x, 5)  # centre 0.7, width 0.8
    assert torch.allclose(w, ((x - 0.7) / 0.8 + 0.5).clamp(0, 1))


def test_jpeg_error_grows_as_quality_falls(rgb_images: torch.Tensor) -> None:
    x = rgb_images[2:]
    errors = [float((get_perturbation("jpeg")(x, s) - x).pow(2).mean()) for s in range(1, 6)]
    assert errors == sorted(errors)
    assert errors[0] > 0


def test_noise_level_matches_severity() -> None:
    x = torch.full((8, 1, 32, 32), 0.5)
    sd = float((get_perturbation("gaussian_noise")(x, 3, generator=_gen()) - x).std())
    assert sd == pytest.approx(0.06, rel=0.05)
    shot = get_perturbation("shot_noise")(x, 5, generator=_gen())  # scale 1/25
    assert float(shot.mean()) == pytest.approx(0.5, abs=0.01)
    assert float(shot.var()) == pytest.approx(0.5 / 25, rel=0.1)


def test_blurs_preserve_a_constant_image() -> None:
    x = torch.full((2, 3, 20, 20), 0.3)
    for name in ("gaussian_blur", "defocus_blur", "motion_blur", "zoom_blur"):
        out = get_perturbation(name)(x, 5, generator=_gen())
        torch.testing.assert_close(out, x, atol=1e-5, rtol=0)


def test_warp_translation_by_whole_pixels() -> None:
    x = torch.rand(2, 1, 8, 10, generator=_gen())
    m = torch.eye(3).repeat(2, 1, 1)
    m[:, 0, 2] = -2.0  # output (u, v) samples input (u - 2, v): a shift right by 2
    out = warp(x, m)
    torch.testing.assert_close(out[..., 2:], x[..., :-2], atol=1e-5, rtol=0)
    assert out[..., :2].abs().max() == 0


def test_geometry_turns_about_the_centre() -> None:
    x = torch.zeros(1, 1, 33, 33)
    x[..., 16, 16] = 1.0
    for name in ("rotation", "tilt", "scaling", "shear"):
        out = get_perturbation(name)(x, 4, generator=_gen())
        peak = int(out.flatten().argmax())
        assert divmod(peak, 33) == (16, 16), name


def test_rotation_by_90_degrees_matches_rot90() -> None:
    x = torch.rand(1, 1, 9, 9, generator=_gen())
    p = get_perturbation("rotation")
    out = p.apply(x, 90.0, generator=_gen(0))
    candidates = [torch.rot90(x, 1, dims=(2, 3)), torch.rot90(x, -1, dims=(2, 3))]
    assert any(torch.allclose(out, c, atol=1e-5) for c in candidates)


def test_artefacts_darken_or_mark_where_expected() -> None:
    x = torch.full((4, 3, 64, 64), 0.6)
    hair = get_perturbation("hair")(x, 3, generator=_gen())
    assert float(hair.min()) < 0.2  # dark hairs
    corners = get_perturbation("black_corners")(x, 5, generator=_gen())
    assert float(corners[..., 0, 0].max()) == 0.0  # corners black
    torch.testing.assert_close(corners[..., 32, 32], x[..., 32, 32])  # centre untouched
    grey = torch.full((4, 1, 64, 64), 0.3)
    markers = get_perturbation("text_markers")(grey, 2, generator=_gen())
    assert float(markers.max()) > 0.9  # burned-in white text
    changed = (markers != grey).float().mean()
    assert 0 < float(changed) < 0.2


def test_metadata_for_reports() -> None:
    assert get_perturbation("hair").describe() == {
        "name": "hair",
        "family": "artefact",
        "description": "Dark curved hairs across the lesion.",
        "units": "hair density (3 curved hairs per unit)",
        "severities": [1.0, 2.0, 3.0, 4.0, 5.0],
        "sweep": [0.0, 4.0],
        "sequence_rule": "consecutive",
        "modalities": ["dermoscopy"],
        "channels": [3],
    }
    noise = get_perturbation("shot_noise").describe()
    assert noise["sequence_rule"] == "first"
    assert noise["sweep"] is None
    assert noise["modalities"] == []  # every modality
