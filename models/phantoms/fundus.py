"""Fundus photograph phantoms (RGB, single-label: five diabetic-retinopathy grades).

A circular field of view on black; an orange-red retina of varying pigmentation with
choroidal texture and uneven illumination; the optic disc (pale, with a brighter cup) on
the nasal side of a left or right eye; the darker macula and fovea about 2.5 disc
diameters temporal to it; a vessel tree leaving the disc (superior and inferior arcades
curving around the macula, nasal vessels, branches; veins darker and wider than arteries).

Grades follow the International Clinical DR scale, scaled down to a 64-pixel image, by the
counts and kinds of lesions (inclusive ranges, uniform)::

    grade                 microaneurysms  haemorrhages  hard exudates  cotton-wool  tufts
    0 No DR                     0              0              0             0          0
    1 Mild                      1-4            0              0             0          0
    2 Moderate                  2-8            1-4            0-6           0-1        0
    3 Severe                    4-12           5-12           3-12          1-3        0
    4 Proliferative DR          2-10           2-10           0-10          0-3        1-2

Proliferative images also get a pre-retinal haemorrhage with probability 0.4. Drusen
(small pale spots that are not DR lesions, 0 to 3 with probability 0.3) appear at every
grade, so a bright spot alone does not give a grade away. Grade prevalences: 0.40, 0.15,
0.22, 0.12, 0.11. The mask covers the DR lesions (not the drusen).
"""

from __future__ import annotations

import numpy as np

from models.phantoms.base import CHUNK, PhantomKind, Rendered
from models.phantoms.common import (
    F32,
    col,
    counts_to_active,
    disks,
    grid,
    smooth_noise,
    soft_inside,
    to_uint8,
)

LABELS = ("No DR", "Mild", "Moderate", "Severe", "Proliferative DR")
PREVALENCE = (0.40, 0.15, 0.22, 0.12, 0.11)

# (low, high) inclusive count ranges per grade, per lesion kind.
COUNTS: dict[str, tuple[tuple[int, int], ...]] = {
    "microaneurysm": ((0, 0), (1, 4), (2, 8), (4, 12), (2, 10)),
    "haemorrhage": ((0, 0), (0, 0), (1, 4), (5, 12), (2, 10)),
    "exudate": ((0, 0), (0, 0), (0, 6), (3, 12), (0, 10)),
    "cotton_wool": ((0, 0), (0, 0), (0, 1), (1, 3), (0, 3)),
    "tuft": ((0, 0), (0, 0), (0, 0), (0, 0), (1, 2)),
}

_RETINA_LIGHT = np.array([0.86, 0.44, 0.18], F32)
_RETINA_DARK = np.array([0.58, 0.24, 0.10], F32)
_DISC = np.array([1.0, 0.86, 0.58], F32)
_CUP = np.array([1.0, 0.95, 0.80], F32)
_ARTERY = np.array([0.78, 0.22, 0.12], F32)
_VEIN = np.array([0.55, 0.10, 0.08], F32)
_RED_LESION = np.array([0.42, 0.05, 0.04], F32)
_EXUDATE = np.array([0.98, 0.88, 0.36], F32)
_COTTON = np.array([0.94, 0.88, 0.78], F32)
_DRUSEN = np.array([0.92, 0.76, 0.42], F32)
_TUFT = np.array([0.70, 0.10, 0.08], F32)


def expected_prevalence() -> dict[str, float]:
    return dict(zip(LABELS, PREVALENCE, strict=True))


def sample_labels(rng: np.random.Generator, n: int) -> np.ndarray:
    """int64 ``[n]`` grades 0..4 with the documented prevalences."""
    return rng.choice(len(LABELS), size=n, p=PREVALENCE).astype(np.int64)


def sample_counts(rng: np.random.Generator, grades: np.ndarray) -> dict[str, np.ndarray]:
    """Lesion counts ``[n]`` per kind, uniform in the grade's inclusive range."""
    out = {}
    for kind, ranges in COUNTS.items():
        lo = np.array([r[0] for r in ranges])[grades]
        hi = np.array([r[1] for r in ranges])[grades]
        out[kind] = rng.integers(lo, hi + 1)
    return out


def render(n: int, size: int, rng: np.random.Generator) -> Rendered:
    labels = sample_labels(rng, n)
    images = np.empty((n, size, size, 3), np.uint8)
    masks = np.empty((n, size, size), np.uint8)
    for start in range(0, n, CHUNK):
        stop = min(start + CHUNK, n)
        img, mask = _render_chunk(labels[start:stop], size, rng)
        images[start:stop] = to_uint8(img)
        masks[start:stop] = mask
    return images, labels, masks


def _paint(img: np.ndarray, coverage: np.ndarray, colour: np.ndarray) -> None:
    """Alpha-blend ``colour`` (``[3]`` or ``[N, 1, 1, 3]``) over ``img`` in place."""
    img += coverage[..., None] * (colour - img)


def _in_retina(rng: np.random.Generator, n: int, k: int, radius: float) -> tuple[np.ndarray, ...]:
    rho = radius * np.sqrt(rng.random((n, k)))
    phi = rng.uniform(0, 2 * np.pi, (n, k))
    return rho * np.cos(phi), rho * np.sin(phi)


def _render_chunk(
    grades: np.ndarray, size: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    n = int(grades.shape[0])
    x, y = grid(size)
    counts = sample_counts(rng, grades)

    # Retina: pigmentation, choroidal texture, illumination falling off to the rim.
    ox, oy = col(rng.normal(0, 0.02, n)), col(rng.normal(0, 0.02, n))
    xr, yr = x - ox, y - oy
    rr = np.sqrt(xr * xr + yr * yr)
    pigment = rng.uniform(0, 1, n).astype(F32)[:, None]
    base = _RETINA_LIGHT[None] * (1 - pigment) + _RETINA_DARK[None] * pigment
    texture = 1.0 + 0.05 * smooth_noise(rng, n, size, 0.06)
    tilt = rng.uniform(0, 2 * np.pi, n)
    illum = (
        1.05
        - col(rng.uniform(0.25, 0.45, n)) * rr * rr
        + col(rng.uniform(0, 0.12, n)) * (xr * col(np.cos(tilt)) + yr * col(np.sin(tilt)))
    )
    img = base[:, None, None, :] * (texture * illum)[..., None]

    # Optic disc (nasal) and macula (temporal), for a right or a left eye.
    side = np.where(rng.random(n) < 0.5, -1.0, 1.0)
    disc_x = col(side * rng.uniform(0.36, 0.46, n))
    disc_y = col(rng.normal(0, 0.04, n))
    disc_r = col(rng.uniform(0.10, 0.13, n))
    mac_x = disc_x - col(side * rng.uniform(0.55, 0.65, n))
    mac_y = disc_y + col(rng.normal(0.04, 0.02, n))
    macula = np.exp(-((xr - mac_x) ** 2 + (yr - mac_y) ** 2) / F32(2 * 0.11**2))
    img = img * (1 - 0.28 * macula)[..., None]

    # Vessels: curves phi(rho) = theta0 + kappa * rho in polar coordinates around the disc.
    ddx, ddy = xr - disc_x, yr - disc_y
    rho = np.sqrt(ddx * ddx + ddy * ddy)
    phi = np.arctan2(ddy, ddx)
    to_macula = np.where(side < 0, 0.0, np.pi)  # direction from the disc to the macula
    vessels_a = np.zeros_like(rho)
    vessels_v = np.zeros_like(rho)
    mains = []
    for up in (-1.0, 1.0):  # superior and inferior arcades, artery and vein
        for is_vein in (0, 1):
            theta0 = to_macula + up * rng.uniform(0.85, 1.25, n) + is_vein * rng.normal(0, 0.12, n)
            kappa = -up * rng.uniform(0.9, 1.4, n) * np.where(side < 0, 1.0, -1.0)
            mains.append((theta0, kappa, is_vein))
    for up in (-1.0, 1.0):  # nasal vessels
        theta0 = to_macula + np.pi + up * rng.uniform(0.3, 0.9, n)
        mains.append((theta0, rng.normal(0, 0.5, n), int(up > 0)))
    strokes = []
    for theta0, kappa, is_vein in mains:
        strokes.append((theta0, kappa, is_vein, np.zeros(n), 1.0))
        start = rng.uniform(0.25, 0.55, n)
        turn = rng.choice([-1.0, 1.0], n) * rng.uniform(0.6, 1.2, n)
        k2 = kappa + turn
        strokes.append((theta0 + kappa * start - k2 * start, k2, is_vein, start, 0.7))
    for theta0, kappa, is_vein, start, width_scale in strokes:
        centre = col(theta0) + col(kappa) * rho
        turns = (phi - centre) * F32(1 / (2 * np.pi))
        delta = (turns - np.rint(turns)) * F32(2 * np.pi)
        width = col(0.024 + 0.012 * is_vein) * width_scale * np.clip(1.0 - 0.5 * rho, 0.3, 1.0)
        on = (rho > col(start)) & (rho > disc_r * 0.6) & (rho < 1.6)
        cover = soft_inside(rho * np.abs(delta) - width / 2, size) * on
        if is_vein:
            np.maximum(vessels_v, cover, out=vessels_v)
        else:
            np.maximum(vessels_a, cover, out=vessels_a)
    _paint(img, 0.8 * vessels_a, _ARTERY * base.mean(1)[:, None, None, None] * 1.4)
    _paint(img, 0.85 * vessels_v, _VEIN * base.mean(1)[:, None, None, None] * 1.4)

    disc = soft_inside(rho - disc_r, size, 0.02)
    cup = soft_inside(rho - disc_r * col(rng.uniform(0.35, 0.55, n)), size, 0.02)
    _paint(img, 0.9 * disc, _DISC)
    _paint(img, 0.7 * cup, _CUP)
    _paint(img, 0.6 * np.maximum(vessels_v, vessels_a) * disc, _VEIN)

    lesions = np.zeros((n, size, size), F32)

    # Drusen: distractors at every grade.
    dx_, dy_ = _in_retina(rng, n, 3, 0.7)
    drusen_on = counts_to_active(np.where(rng.random(n) < 0.3, rng.integers(1, 4, n), 0), 3)
    drusen = disks(
        xr, yr, dx_, dy_, rng.uniform(0.015, 0.03, (n, 3)), drusen_on, size, profile="gauss"
    )
    _paint(img, 0.55 * drusen, _DRUSEN)

    # Hard exudates cluster (often around the macula); cotton-wool spots are soft and pale.
    near_macula = rng.random(n) < 0.6
    cluster_x = np.where(near_macula, mac_x[:, 0, 0], rng.uniform(-0.5, 0.5, n))
    cluster_y = np.where(near_macula, mac_y[:, 0, 0], rng.uniform(-0.5, 0.5, n))
    ex_x = cluster_x[:, None] + rng.normal(0, 0.14, (n, 12))
    ex_y = cluster_y[:, None] + rng.normal(0, 0.14, (n, 12))
    ex_on = counts_to_active(counts["exudate"], 12)
    exudates = disks(xr, yr, ex_x, ex_y, rng.uniform(0.018, 0.035, (n, 12)), ex_on, size)
    _paint(img, 0.9 * exudates, _EXUDATE)
    np.maximum(lesions, exudates, out=lesions)

    for kind, k, lo, hi, profile, colour, alpha in (
        ("cotton_wool", 3, 0.04, 0.07, "gauss", _COTTON, 0.75),
        ("haemorrhage", 12, 0.035, 0.065, "flat", _RED_LESION, 0.85),
        ("microaneurysm", 12, 0.02, 0.03, "gauss", _RED_LESION, 0.95),
    ):
        lx, ly = _in_retina(rng, n, k, 0.8)
        radius = rng.uniform(lo, hi, (n, k))
        cover = disks(xr, yr, lx, ly, radius, counts_to_active(counts[kind], k), size, profile)
        if kind == "haemorrhage":  # blot haemorrhages have ragged edges
            idx = np.flatnonzero(counts[kind] > 0)
            ragged = np.clip(1.2 + 0.5 * smooth_noise(rng, idx.size, size, 0.02), 0, 1)
            cover[idx] *= ragged
        _paint(img, alpha * cover, colour)
        np.maximum(lesions, cover, out=lesions)

    # Neovascular tufts (grade 4): tangles of fine vessels at the disc or along an arcade,
    # sometimes with a boat-shaped pre-retinal haemorrhage below the first one.
    tuft_on = counts_to_active(counts["tuft"], 2)
    near_disc = rng.random((n, 2)) < 0.5
    tx_far, ty_far = _in_retina(rng, n, 2, 0.6)
    tx = np.where(near_disc, disc_x[:, 0, 0, None] + rng.normal(0, 0.08, (n, 2)), tx_far)
    ty = np.where(near_disc, disc_y[:, 0, 0, None] + rng.normal(0, 0.12, (n, 2)), ty_far)
    tr = rng.uniform(0.08, 0.13, (n, 2))
    area = disks(xr, yr, tx, ty, tr, tuft_on, size)
    idx = np.flatnonzero(counts["tuft"] > 0)
    if idx.size:
        m = idx.size
        xs, ys = xr[idx], yr[idx]
        a = col(rng.uniform(0, np.pi, m))
        freq = col(rng.uniform(26, 34, m))
        wiggle = smooth_noise(rng, m, size, 0.03)
        lines = np.abs(np.sin(freq * (xs * np.cos(a) + ys * np.sin(a)) + 2.5 * wiggle))
        tangle = np.clip((0.45 - lines) / 0.25, 0, 1) * area[idx]
        sub = img[idx]
        _paint(sub, 0.85 * tangle, _TUFT)
        pre = rng.random(m) < 0.4
        boat = disks(
            xs,
            ys,
            tx[idx, :1],
            ty[idx, :1] + 0.12,
            rng.uniform(0.06, 0.1, (m, 1)),
            pre[:, None],
            size,
        ) * soft_inside(ty[idx, :1, None] - ys - 0.06, size)
        _paint(sub, 0.8 * boat, _RED_LESION)
        img[idx] = sub
        lesions[idx] = np.maximum(lesions[idx], np.maximum(area[idx] * 0.6, boat))

    # Field of view, camera gain and noise.
    fov = soft_inside(rr - col(rng.uniform(0.90, 0.98, n)), size, 0.02)
    gain = col(rng.uniform(0.85, 1.12, n))[..., None]
    img = img * gain * fov[..., None]
    img = img + col(rng.uniform(0.005, 0.02, n))[..., None] * rng.standard_normal(
        img.shape, dtype=F32
    )
    mask = ((lesions > 0.5) & (fov > 0.5)).astype(np.uint8)
    return np.clip(img, 0.0, 1.0), mask


KIND = PhantomKind(
    name="fundus",
    task="single-label",
    label_names=LABELS,
    channels=3,
    description="fundus photograph, 5 diabetic-retinopathy grades by lesion counts",
    render=render,
    salt=3,
)
