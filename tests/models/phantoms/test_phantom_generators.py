"""Phantom generators: deterministic, documented label statistics, masks on the lesions,
and the visual cues each label is drawn with."""

from __future__ import annotations

import numpy as np
import pytest

from models.errors import InvalidParametersError
from models.phantoms import PHANTOMS, chest, derm, fundus, generate


@pytest.mark.parametrize("kind", sorted(PHANTOMS))
def test_same_seed_same_bytes_other_seed_other_bytes(kind: str) -> None:
    a = generate(kind, 24, 32, seed=11)
    b = generate(kind, 24, 32, seed=11)
    c = generate(kind, 24, 32, seed=12)
    assert a.images.tobytes() == b.images.tobytes()
    assert a.masks.tobytes() == b.masks.tobytes()
    assert np.array_equal(a.labels, b.labels)
    assert a.images.tobytes() != c.images.tobytes()


@pytest.mark.parametrize("kind", sorted(PHANTOMS))
@pytest.mark.parametrize("size", [32, 64, 128])
def test_shapes_dtypes_and_ranges(kind: str, size: int) -> None:
    spec = PHANTOMS[kind]
    ps = generate(kind, 6, size, seed=1)
    assert ps.images.shape == (6, size, size, spec.channels)
    assert ps.images.dtype == np.uint8
    assert ps.masks.shape == (6, size, size)
    assert ps.masks.dtype == np.uint8
    assert set(np.unique(ps.masks)) <= {0, 1}
    assert ps.label_names == spec.label_names
    if ps.task == "multi-label":
        assert ps.labels.shape == (6, len(spec.label_names))
        assert ps.labels.dtype == np.uint8
    else:
        assert ps.labels.shape == (6,)
        assert ps.labels.dtype == np.int64
    # Real images use the dynamic range: neither blank nor saturated.
    assert ps.images.std() > 20
    assert 30 < ps.images.mean() < 200


def test_generate_draws_labels_from_the_documented_model() -> None:
    for spec in PHANTOMS.values():
        ps = generate(spec.name, 50, 32, seed=7)
        module = {"chest": chest, "derm": derm, "fundus": fundus}[spec.name]
        expected = module.sample_labels(np.random.default_rng([7, spec.salt]), 50)
        assert np.array_equal(ps.labels, expected)


def _binomial_ok(observed: float, p: float, n: int) -> bool:
    return abs(observed - p) <= 4 * np.sqrt(p * (1 - p) / n)


def test_chest_label_statistics() -> None:
    n = 40_000
    labels = chest.sample_labels(np.random.default_rng(0), n)
    expected = chest.expected_prevalence()
    for i, name in enumerate(chest.LABELS):
        assert _binomial_ok(labels[:, i].mean(), expected[name], n), name
    no_finding = (labels.sum(axis=1) == 0).mean()
    assert _binomial_ok(no_finding, expected["No Finding"], n)
    # "No Finding" is the most common case, as in ChestX-ray14.
    assert no_finding > max(labels.mean(axis=0))
    assert expected["No Finding"] == pytest.approx(0.6724, abs=1e-4)
    # Co-occurrence: effusion goes with cardiomegaly, consolidation with effusion.
    observed = np.corrcoef(labels.T.astype(float))
    exact = chest.expected_correlation()
    np.testing.assert_allclose(observed, exact, atol=0.03)
    assert exact[chest.CARDIOMEGALY, chest.EFFUSION] == pytest.approx(0.386, abs=1e-3)
    assert exact[chest.EFFUSION, chest.CONSOLIDATION] == pytest.approx(0.200, abs=1e-3)
    assert abs(exact[chest.NODULE, chest.PNEUMOTHORAX]) < 1e-9


def test_derm_and_fundus_label_statistics() -> None:
    n = 40_000
    mel = derm.sample_labels(np.random.default_rng(0), n)
    assert _binomial_ok(mel.mean(), derm.P_MELANOMA, n)
    grades = fundus.sample_labels(np.random.default_rng(0), n)
    freq = np.bincount(grades, minlength=5) / n
    for g, p in enumerate(fundus.PREVALENCE):
        assert _binomial_ok(freq[g], p, n)


def test_fundus_lesion_counts_follow_the_grade_table() -> None:
    rng = np.random.default_rng(1)
    grades = np.repeat(np.arange(5), 400)
    counts = fundus.sample_counts(rng, grades)
    for kind, ranges in fundus.COUNTS.items():
        for g, (lo, hi) in enumerate(ranges):
            c = counts[kind][grades == g]
            assert c.min() == lo, (kind, g)
            assert c.max() == hi, (kind, g)
    # Only proliferative retinopathy has neovascular tufts.
    assert (counts["tuft"][grades < 4] == 0).all()
    assert (counts["tuft"][grades == 4] >= 1).all()


def test_chest_masks_mark_findings_and_only_findings() -> None:
    ps = generate("chest", 300, 64, seed=3)
    has = ps.labels.sum(axis=1) > 0
    area = ps.masks.reshape(len(ps), -1).sum(axis=1)
    assert (area[~has] == 0).all()
    assert (area[has] > 0).all()


def test_chest_cues() -> None:
    ps = generate("chest", 600, 64, seed=5)
    img = ps.images[..., 0].astype(float)
    # Cardiomegaly: the heart (its mask) is wider than half the thorax. The inner thoracic
    # width is 2 x 0.71 half-widths x patient scale (0.74..1, mean 0.87) at 32 px each.
    cardio = ps.labels[:, chest.CARDIOMEGALY] == 1
    only_cardio = cardio & (ps.labels.sum(axis=1) == 1)
    width = (ps.masks[only_cardio].max(axis=1)).sum(axis=1)
    assert width.mean() > 0.5 * (2 * 0.71 * 32 * 0.87)
    # Effusion: fluid fills the lung bases, which become brighter.
    eff = ps.labels[:, chest.EFFUSION] == 1
    base = img[:, 34:46, 6:58].mean(axis=(1, 2))
    assert base[eff].mean() > base[ps.labels.sum(axis=1) == 0].mean() + 5


def test_derm_masks_and_cues() -> None:
    ps = generate("derm", 400, 64, seed=6)
    area = ps.masks.reshape(len(ps), -1).sum(axis=1)
    assert (area > 0).all()
    img = ps.images.astype(float)
    lesion = ps.masks.astype(bool)
    inside = np.array([img[i][lesion[i]].mean() for i in range(len(ps))])
    outside = np.array([img[i][~lesion[i]].mean() for i in range(len(ps))])
    assert (inside < outside).mean() > 0.95  # pigmented lesions on lighter skin
    mel = ps.labels == 1
    # D: melanomas are larger; C: their colours vary more inside the lesion.
    assert area[mel].mean() > 1.3 * area[~mel].mean()
    spread = np.array([img[i][lesion[i]].std(axis=0).mean() for i in range(len(ps))])
    assert spread[mel].mean() > 1.3 * spread[~mel].mean()


def test_fundus_masks_and_cues() -> None:
    ps = generate("fundus", 400, 64, seed=8)
    area = ps.masks.reshape(len(ps), -1).sum(axis=1)
    assert (area[ps.labels == 0] == 0).all()
    assert (area[ps.labels >= 2] > 0).all()
    means = [area[ps.labels == g].mean() for g in range(5)]
    assert means[0] < means[1] < means[2] < means[3]
    # The field of view is dark at the corners.
    assert ps.images[:, :3, :3].mean() < 10


def test_invalid_parameters_are_refused_with_the_valid_names() -> None:
    with pytest.raises(InvalidParametersError, match="valid: chest, derm, fundus"):
        generate("xray", 3)
    with pytest.raises(InvalidParametersError, match=r"size must be in \[32, 512\]"):
        generate("chest", 3, size=16)
    with pytest.raises(InvalidParametersError, match="n must be"):
        generate("chest", 0)
