"""Chest radiograph phantoms (PA view, 1 channel, multi-label).

Anatomy: soft-tissue torso with shoulders and neck, two lung fields with vascular markings
fading to the periphery, hemidiaphragm domes (the right one higher), costophrenic angles,
mediastinum with trachea and aortic knob, a heart projecting to the image's right,
posterior ribs, clavicles and the spine. Each image varies in patient size, position and
rotation, inspiration, exposure (contrast, brightness, gamma), blur and quantum noise.

Findings (ChestX-ray14 names) and how each is drawn:

- ``Cardiomegaly``: cardiothoracic ratio (heart width / inner thoracic width) drawn from
  N(0.555, 0.045) clipped to [0.47, 0.68] instead of N(0.45, 0.045) clipped to [0.34, 0.56]:
  mostly above one half, with borderline cases on both sides as in real reading.
- ``Effusion``: fluid density filling the base of one or both hemithoraces up to a
  meniscus that climbs the lateral wall, blunting the costophrenic angle.
- ``Nodule``: one (sometimes two) small round soft opacities in a lung field.
- ``Pneumothorax``: a lung collapsed toward its hilum, a thin visceral pleural line, and
  no lung markings between it and the chest wall.
- ``Consolidation``: a patchy airspace density in one lung.

Label statistics (the generative model; tested in ``tests/models/phantoms``)::

    P(Cardiomegaly)                       = 0.12
    P(Effusion | Cardiomegaly)            = 0.45     P(Effusion | no Cardiomegaly)  = 0.07
    P(Consolidation | Effusion)           = 0.25     P(Consolidation | no Effusion) = 0.07
    P(Nodule)                             = 0.07     (independent)
    P(Pneumothorax)                       = 0.05     (independent)

giving prevalences Cardiomegaly 0.120, Effusion 0.116, Consolidation 0.091, Nodule 0.070,
Pneumothorax 0.050; "No Finding" (no positive finding) 0.672, the most common case; and the
correlations phi(Cardiomegaly, Effusion) = 0.39, phi(Effusion, Consolidation) = 0.20,
phi(Cardiomegaly, Consolidation) = 0.08 (through effusion), the others 0
(``expected_prevalence`` and ``expected_correlation`` compute them exactly).

The mask covers the heart (Cardiomegaly), the fluid, the nodules, the pneumothorax space
and the consolidation.
"""

from __future__ import annotations

import itertools

import numpy as np
from numpy.typing import ArrayLike

from models.phantoms.base import CHUNK, PhantomKind, Rendered
from models.phantoms.common import F32, col, grid, segments, smooth_noise, soft_inside, to_uint8

LABELS = ("Cardiomegaly", "Effusion", "Nodule", "Pneumothorax", "Consolidation")
CARDIOMEGALY, EFFUSION, NODULE, PNEUMOTHORAX, CONSOLIDATION = range(5)

P_CARDIOMEGALY = 0.12
P_EFFUSION = (0.07, 0.45)  # without, with cardiomegaly
P_CONSOLIDATION = (0.07, 0.25)  # without, with effusion
P_NODULE = 0.07
P_PNEUMOTHORAX = 0.05


def joint_distribution() -> dict[tuple[int, ...], float]:
    """The exact probability of every finding vector (in ``LABELS`` order)."""
    out: dict[tuple[int, ...], float] = {}
    for state in itertools.product((0, 1), repeat=len(LABELS)):
        c, e, nod, ptx, con = state
        p_e = P_EFFUSION[c]
        p_k = P_CONSOLIDATION[e]
        out[state] = (
            (P_CARDIOMEGALY if c else 1 - P_CARDIOMEGALY)
            * (p_e if e else 1 - p_e)
            * (P_NODULE if nod else 1 - P_NODULE)
            * (P_PNEUMOTHORAX if ptx else 1 - P_PNEUMOTHORAX)
            * (p_k if con else 1 - p_k)
        )
    return out


def expected_prevalence() -> dict[str, float]:
    """The exact marginal prevalence of every finding and of "No Finding"."""
    joint = joint_distribution()
    prevalence = {
        name: sum(p for state, p in joint.items() if state[i]) for i, name in enumerate(LABELS)
    }
    prevalence["No Finding"] = joint[(0,) * len(LABELS)]
    return prevalence


def expected_correlation() -> np.ndarray:
    """The exact phi (Pearson) correlation matrix ``[5, 5]`` of the findings."""
    joint = joint_distribution()
    states = np.array(list(joint), dtype=np.float64)
    p = np.array(list(joint.values()))
    mean = p @ states
    cov = (states * p[:, None]).T @ states - np.outer(mean, mean)
    sd = np.sqrt(np.diag(cov))
    return np.asarray(cov / np.outer(sd, sd))


def sample_labels(rng: np.random.Generator, n: int) -> np.ndarray:
    """uint8 ``[n, 5]`` findings drawn from the documented co-occurrence model."""
    u = rng.random((n, 5))
    cardio = u[:, 0] < P_CARDIOMEGALY
    effusion = u[:, 1] < np.where(cardio, P_EFFUSION[1], P_EFFUSION[0])
    nodule = u[:, 2] < P_NODULE
    ptx = u[:, 3] < P_PNEUMOTHORAX
    consolidation = u[:, 4] < np.where(effusion, P_CONSOLIDATION[1], P_CONSOLIDATION[0])
    return np.stack([cardio, effusion, nodule, ptx, consolidation], axis=1).astype(np.uint8)


def render(n: int, size: int, rng: np.random.Generator) -> Rendered:
    labels = sample_labels(rng, n)
    images = np.empty((n, size, size, 1), np.uint8)
    masks = np.empty((n, size, size), np.uint8)
    for start in range(0, n, CHUNK):
        stop = min(start + CHUNK, n)
        img, mask = _render_chunk(labels[start:stop], size, rng)
        images[start:stop, ..., 0] = to_uint8(img)
        masks[start:stop] = mask
    return images, labels, masks


def _superellipse_sd(
    x: np.ndarray, y: np.ndarray, cx: ArrayLike, cy: ArrayLike, ax: ArrayLike, ay: ArrayLike
) -> np.ndarray:
    """Approximate signed distance to a superellipse (p = 2.4), negative inside."""
    p = F32(2.4)
    cx_, cy_, ax_, ay_ = (np.asarray(v, dtype=F32) for v in (cx, cy, ax, ay))
    f = (np.abs(x - cx_) / ax_) ** p + (np.abs(y - cy_) / ay_) ** p
    return np.asarray((f ** (1 / p) - 1.0) * np.minimum(ax_, ay_))


def _render_chunk(
    labels: np.ndarray, size: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    n = int(labels.shape[0])
    has = {i: col(labels[:, i].astype(F32)) for i in range(5)}
    gx, gy = grid(size)

    # Patient pose: size, shift and a small rotation, applied to the anatomical frame.
    scale = col(rng.uniform(0.74, 1.0, n))
    dx, dy = col(rng.normal(0, 0.06, n)), col(rng.normal(0.02, 0.05, n))
    theta = rng.normal(0, 0.05, n)
    ct, st = col(np.cos(theta)), col(np.sin(theta))
    x = ((gx - dx) * ct + (gy - dy) * st) / scale
    y = (-(gx - dx) * st + (gy - dy) * ct) / scale

    # Torso with shoulders narrowing into the neck.
    shoulder = np.clip((-0.62 - y) / 0.45, 0.0, 1.0) ** 1.5
    body = soft_inside(np.abs(x) - (0.97 - 0.62 * shoulder), size, 0.03)

    # Lungs: superellipses cut by the diaphragm domes.
    inspiration = col(rng.normal(0, 0.035, n))
    lung_ay = col(rng.uniform(0.58, 0.66, n))
    lungs = []
    domes = []
    for side, base in ((-1.0, 0.40), (1.0, 0.46)):
        cx = F32(side * 0.40)
        dome = base + inspiration + 0.9 * (x - F32(side * 0.30)) ** 2
        sd = np.maximum(_superellipse_sd(x, y, cx, F32(-0.08), F32(0.31), lung_ay), y - dome)
        lungs.append(sd)
        domes.append(dome)
    lung_r = soft_inside(lungs[0], size, 0.02)
    lung_l = soft_inside(lungs[1], size, 0.02)

    # Heart: width set by the cardiothoracic ratio (inner thoracic width ~ 2 x 0.71).
    ctr = np.where(
        labels[:, CARDIOMEGALY] == 1,
        np.clip(rng.normal(0.555, 0.045, n), 0.47, 0.68),
        np.clip(rng.normal(0.45, 0.045, n), 0.34, 0.56),
    )
    hw = col(ctr * 0.71)
    hh = F32(0.22) + F32(0.35) * (hw - F32(0.30))
    hx = F32(0.11) + F32(0.6) * (hw - F32(0.30)) + col(rng.normal(0, 0.03, n))
    hy = F32(0.42) + inspiration - hh * 0.9 + col(rng.normal(0, 0.02, n))
    heart_sd = np.sqrt(((x - hx) / hw) ** 2 + ((y - hy) / hh) ** 2) - 1.0
    heart = soft_inside(heart_sd * np.minimum(hw, hh), size, 0.015)

    mediastinum = soft_inside(np.abs(x - 0.02) - 0.12, size, 0.02) * (y < hy) * (y > -0.9)
    knob = soft_inside(np.sqrt((x - 0.13) ** 2 + (y + 0.30) ** 2) - 0.075, size, 0.01)
    trachea = soft_inside(np.abs(x) - 0.035, size, 0.01) * (y < -0.32)
    spine = soft_inside(np.abs(x) - 0.075, size, 0.01)

    # Posterior ribs slope down laterally; clavicles run up and out from the sternum.
    rib_phase = col(rng.uniform(0, 1, n))
    phase = (y - 0.22 * np.abs(x) - 0.25 * x * x) * F32(5.2) + rib_phase
    ribs = np.clip((np.cos(2 * np.pi * phase) - 0.55) / 0.45, 0.0, 1.0)
    cage = soft_inside(np.abs(x) - 0.76, size, 0.03) * (y > -0.82) * (y < 0.55)
    clav_y = col(rng.normal(-0.66, 0.03, n))
    cl_px = np.stack([np.full(n, -0.07), np.full(n, 0.07)], axis=1)
    cl_py = np.concatenate([clav_y, clav_y], axis=1).reshape(n, 2)
    cl_angle = np.stack([np.full(n, np.pi + 0.22), np.full(n, -0.22)], axis=1)
    clavicles = segments(
        x,
        y,
        cl_px,
        cl_py,
        cl_angle,
        np.full((n, 2), 0.62),
        np.stack([np.full(n, -0.25), np.full(n, 0.25)], axis=1),
        np.full((n, 2), 0.055),
        np.ones((n, 2), bool),
        size,
    )

    # Vascular markings: branching-looking texture, dense at the hila, fading outwards.
    markings = smooth_noise(rng, n, size, 0.035)
    hilum_dist = np.minimum(np.hypot(x + 0.2, y + 0.02), np.hypot(x - 0.2, y + 0.02))
    # Zero-mean (E[max(z, 0)] = 0.399): where markings vanish the texture goes, not the mean.
    markings = (np.clip(markings, 0, None) - F32(0.399)) * np.clip(
        1.1 - hilum_dist / 0.55, 0.15, 1.0
    )

    lung = np.maximum(lung_r, lung_l) * (1.0 - heart) * (1.0 - mediastinum)
    mask = np.zeros((n, size, size), F32)

    # -- Pneumothorax: lung collapsed toward its hilum; no markings beyond the pleural line.
    ptx_side = np.where(rng.random(n) < 0.5, -1.0, 1.0)
    depth = col(rng.uniform(0.12, 0.30, n))
    hilum_x = col(ptx_side * 0.22)
    hilum_y = F32(0.0)
    cx_side = col(ptx_side * 0.40)
    xs = (x - hilum_x) / (1 - depth) + hilum_x
    ys = (y - hilum_y) / (1 - depth) + hilum_y
    dome_side = np.where(col(ptx_side) < 0, domes[0], domes[1])
    collapsed_sd = np.maximum(
        _superellipse_sd(xs, ys, cx_side, F32(-0.08), F32(0.31), lung_ay), y - dome_side
    )
    lung_side = np.where(col(ptx_side) < 0, lung_r, lung_l)
    collapsed = soft_inside(collapsed_sd, size, 0.005)
    ptx_space = has[PNEUMOTHORAX] * lung_side * (1.0 - collapsed) * (1.0 - heart)
    pleural_line = has[PNEUMOTHORAX] * lung_side * soft_inside(np.abs(collapsed_sd) - 0.022, size)
    markings = markings * (1.0 - ptx_space)
    np.maximum(mask, (ptx_space > 0.5).astype(F32), out=mask)

    # Radiographic density: brighter is denser.
    density = (
        0.06
        + 0.52 * body
        - 0.34 * lung
        + 0.07 * lung * markings
        + 0.07 * heart
        + 0.05 * mediastinum * (1 - heart)
        + 0.10 * knob
        - 0.10 * trachea
        + 0.10 * spine * body
        + 0.09 * ribs * cage * body
        + 0.18 * clavicles * body
        - 0.025 * ptx_space
        + 0.015 * has[PNEUMOTHORAX] * collapsed * lung_side
        + 0.17 * pleural_line
    )
    np.maximum(mask, has[CARDIOMEGALY] * (heart > 0.5), out=mask)

    # -- Effusion: fluid at the base, a meniscus climbing the lateral wall.
    eff_side = rng.integers(0, 3, n)  # 0 right, 1 left, 2 both
    height = col(rng.uniform(0.10, 0.30, n))
    for index, side in enumerate((-1.0, 1.0)):
        on = has[EFFUSION] * col((eff_side == index) | (eff_side == 2))
        lateral = np.clip((side * x - 0.30) / 0.38, 0.0, 1.0)
        cp_level = domes[index] - 0.9 * (x - F32(side * 0.30)) ** 2 + 0.18
        top = cp_level - height - 0.8 * height * lateral
        # Fluid replaces the air of the lung base: the angle and the dome disappear.
        fluid = on * soft_inside(top - y, size, 0.03) * (lung_r if side < 0 else lung_l)
        density = density + 0.31 * fluid * (1 - heart)
        np.maximum(mask, (fluid > 0.5).astype(F32), out=mask)

    # -- Nodules: one, sometimes two, soft round opacities in a lung field.
    k = 2
    nod_side = np.where(rng.random((n, k)) < 0.5, -1.0, 1.0)
    nod_x = nod_side * rng.uniform(0.18, 0.62, (n, k))
    nod_y = rng.uniform(-0.60, 0.22, (n, k))
    nod_r = rng.uniform(0.075, 0.115, (n, k))
    nod_i = rng.uniform(0.20, 0.32, (n, k))
    nod_on = np.stack([labels[:, NODULE] == 1, (labels[:, NODULE] == 1) & (rng.random(n) < 0.2)], 1)
    for j in range(k):
        d2 = (x - col(nod_x[:, j])) ** 2 + (y - col(nod_y[:, j])) ** 2
        r = col(nod_r[:, j])
        # A round opacity with a soft edge: flat-topped, unlike the vessel markings.
        spot = np.exp(-((d2 / (r * r)) ** 2)) * col(nod_on[:, j])
        density = density + col(nod_i[:, j]) * spot
        np.maximum(mask, (d2 < r * r) * col(nod_on[:, j]), out=mask)

    # -- Consolidation: a patchy airspace opacity in one lung.
    con_side = np.where(rng.random(n) < 0.5, -1.0, 1.0)
    con_x = col(con_side * rng.uniform(0.28, 0.52, n))
    con_y = col(rng.uniform(-0.35, 0.25, n))
    con_r = col(rng.uniform(0.17, 0.28, n))
    patch = smooth_noise(rng, n, size, 0.05)
    d2 = ((x - con_x) ** 2 + (y - con_y) ** 2) / (con_r * con_r)
    alpha = np.clip(0.6 * patch + 1.3 - 1.8 * d2, 0.0, 1.0)
    alpha = has[CONSOLIDATION] * alpha * np.where(col(con_side) < 0, lung_r, lung_l)
    density = density + col(rng.uniform(0.13, 0.26, n)) * alpha
    np.maximum(mask, (alpha > 0.35).astype(F32), out=mask)

    # Exposure and detector: contrast, brightness, gamma, blur-free quantum noise.
    contrast = col(rng.uniform(0.85, 1.15, n))
    offset = col(rng.normal(0.0, 0.03, n))
    gamma = col(rng.uniform(0.8, 1.25, n))
    img = np.clip(density * contrast + offset, 0.0, 1.0) ** gamma
    noise_sd = col(rng.uniform(0.008, 0.03, n))
    img = img + noise_sd * rng.standard_normal(img.shape, dtype=F32)
    return np.clip(img, 0.0, 1.0), mask.astype(np.uint8)


KIND = PhantomKind(
    name="chest",
    task="multi-label",
    label_names=LABELS,
    channels=1,
    description="PA chest radiograph, 5 co-occurring findings (ChestX-ray14 names)",
    render=render,
    salt=1,
)
