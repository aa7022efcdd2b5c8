"""Dermoscopy phantoms (RGB, binary: ``benign`` nevus vs ``melanoma``).

Skin of a tone between light and dark, with texture, pores, a lighting gradient and either
the dark circular frame of a contact dermoscope or a soft vignette; hairs (0 to 5 dark
curved strokes) in both classes. The lesion is drawn by the ABCD rule of dermoscopy, each
cue from a per-lesion *atypia* score whose distribution depends on the class:

- **A**symmetry: low-order harmonics (orders 1 and 3) of the lesion's radius, and an
  off-centre darker blotch.
- **B**order irregularity: high-order harmonics (5 to 13) and a fuzzy, fading edge.
- **C**olour variegation: a benign nevus mixes two close browns; a melanoma mixes up to
  four of dark brown, black, blue-grey, red-brown and white (regression), in patches.
- **D**iameter: the lesion's mean radius.

Atypia is Beta(2, 5) for benign lesions and Beta(5, 2.2) for melanomas, so the classes
overlap (atypical nevi, featureless melanomas) and no single cue separates them; colour
palettes follow atypia too. Labels: ``P(melanoma) = 0.30``. The mask is the lesion.
"""

from __future__ import annotations

import numpy as np

from models.phantoms.base import CHUNK, PhantomKind, Rendered
from models.phantoms.common import F32, col, grid, segments, smooth_noise, soft_inside, to_uint8

LABELS = ("benign", "melanoma")
P_MELANOMA = 0.30

_SKIN_LIGHT = np.array([0.94, 0.80, 0.70], F32)
_SKIN_DARK = np.array([0.60, 0.42, 0.31], F32)
_LIGHT_BROWN = np.array([0.66, 0.45, 0.30], F32)
_MID_BROWN = np.array([0.48, 0.30, 0.18], F32)
_DARK_BROWN = np.array([0.30, 0.17, 0.10], F32)
_BLACK = np.array([0.12, 0.08, 0.07], F32)
_BLUE_GREY = np.array([0.38, 0.42, 0.52], F32)
_RED = np.array([0.66, 0.28, 0.24], F32)
_WHITE = np.array([0.86, 0.82, 0.80], F32)
_MELANOMA_COLOURS = np.stack([_BLACK, _BLUE_GREY, _RED, _WHITE, _DARK_BROWN])


def expected_prevalence() -> dict[str, float]:
    return {"benign": 1 - P_MELANOMA, "melanoma": P_MELANOMA}


def sample_labels(rng: np.random.Generator, n: int) -> np.ndarray:
    """int64 ``[n]``: 0 benign, 1 melanoma."""
    return (rng.random(n) < P_MELANOMA).astype(np.int64)


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


def _render_chunk(
    labels: np.ndarray, size: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    n = int(labels.shape[0])
    mel = labels == 1
    x, y = grid(size)

    # Skin: tone, texture, pores, lighting gradient.
    tone = rng.beta(2.0, 3.0, n).astype(F32)
    skin = _SKIN_LIGHT[None] * (1 - tone[:, None]) + _SKIN_DARK[None] * tone[:, None]  # [n, 3]
    texture = (
        1.0 + 0.035 * smooth_noise(rng, n, size, 0.08) + 0.02 * smooth_noise(rng, n, size, 0.012)
    )
    light_angle = rng.uniform(0, 2 * np.pi, n)
    light = 1.0 + col(rng.uniform(0.0, 0.12, n)) * (
        x * col(np.cos(light_angle)) + y * col(np.sin(light_angle))
    )

    # Lesion geometry: atypia drives asymmetry (A), border (B), colours (C), diameter (D).
    atypia = np.where(mel, rng.beta(5.0, 2.2, n), rng.beta(2.0, 5.0, n)).astype(F32)
    cue = lambda: np.clip(atypia + rng.normal(0, 0.12, n), 0, 1).astype(F32)  # noqa: E731
    a_cue, b_cue, c_cue, d_cue = cue(), cue(), cue(), cue()
    radius = 0.22 + 0.30 * d_cue + rng.normal(0, 0.03, n)
    cx, cy = col(rng.normal(0, 0.10, n)), col(rng.normal(0, 0.10, n))
    dx, dy = x - cx, y - cy
    r = np.sqrt(dx * dx + dy * dy)
    theta = np.arctan2(dy, dx)
    elong = col(rng.uniform(0.0, 0.18, n))
    shape = 1.0 + elong * np.cos(2 * (theta - col(rng.uniform(0, np.pi, n))))
    for order, weight in ((1, 0.20), (3, 0.10)):
        amp = col(a_cue * weight * rng.uniform(0.5, 1.0, n))
        shape = shape + amp * np.cos(order * theta + col(rng.uniform(0, 2 * np.pi, n)))
    for order in range(5, 14, 2):
        amp = col(b_cue**1.5 * 0.075 * rng.uniform(0.3, 1.0, n))
        shape = shape + amp * np.cos(order * theta + col(rng.uniform(0, 2 * np.pi, n)))
    boundary = col(radius) * shape
    edge_blur = col(0.01 + 0.06 * b_cue)
    lesion = soft_inside(r - boundary, size, edge_blur)

    # Colour: patchy mixture of a per-lesion palette of four colours.
    palette = np.empty((n, 4, 3), F32)
    base_brown = np.where(
        rng.random(n)[:, None] < 0.5, _LIGHT_BROWN[None], _MID_BROWN[None]
    ) * rng.uniform(0.9, 1.08, (n, 1)).astype(F32)
    palette[:] = base_brown[:, None, :]
    darker = base_brown * F32(0.78)
    palette[:, 1] = darker
    # Variegation: the more atypical, the more of the melanoma colours replace browns.
    n_var = np.clip(np.floor(c_cue * 4.2 + rng.normal(0, 0.4, n)), 0, 3).astype(int)
    picks = np.argsort(rng.random((n, len(_MELANOMA_COLOURS))), axis=1)
    for slot in range(3):
        colours = _MELANOMA_COLOURS[picks[:, slot]]
        palette[:, slot + 1] = np.where((n_var > slot)[:, None], colours, palette[:, slot + 1])
    fields = np.stack([smooth_noise(rng, n, size, 0.09) for _ in range(4)], axis=1)
    fields[:, 0] += 0.8  # the base colour dominates
    sharp = col(4.0 + 4.0 * c_cue)[:, None]
    weights = np.exp(sharp * fields)
    weights /= weights.sum(axis=1, keepdims=True)
    lesion_rgb = np.einsum("nkhw,nkc->nhwc", weights, palette)

    # An off-centre darker blotch (asymmetric pigmentation) and a pigment network.
    bx = cx + col(a_cue * rng.uniform(-0.5, 0.5, n)) * col(radius)
    by = cy + col(a_cue * rng.uniform(-0.5, 0.5, n)) * col(radius)
    blotch = np.exp(-((x - bx) ** 2 + (y - by) ** 2) / (F32(2) * (col(radius) * 0.45) ** 2))
    warp = 0.6 * col(atypia) * smooth_noise(rng, n, size, 0.06)
    freq = col(rng.uniform(9.0, 12.0, n))
    net = np.cos(freq * np.pi * (x + 0.05 * warp)) + np.cos(freq * np.pi * (y - 0.05 * warp))
    network = np.clip(net - 1.2, 0.0, 1.0) * col(rng.uniform(0.05, 0.16, n))
    shade = 1.0 - 0.25 * blotch - network
    lesion_rgb = lesion_rgb * shade[..., None]

    skin_rgb = skin[:, None, None, :] * (texture * light)[..., None]
    img = skin_rgb * (1 - lesion[..., None]) + lesion_rgb * lesion[..., None]

    # Hairs, in both classes.
    k = 5
    hairs = segments(
        x,
        y,
        rng.uniform(-1.1, 1.1, (n, k)),
        rng.uniform(-1.1, 1.1, (n, k)),
        rng.uniform(0, 2 * np.pi, (n, k)),
        rng.uniform(0.6, 1.8, (n, k)),
        rng.uniform(-0.5, 0.5, (n, k)),
        rng.uniform(0.015, 0.03, (n, k)),
        np.arange(k)[None] < rng.integers(0, k + 1, n)[:, None],
        size,
    )
    hair_rgb = np.array([0.16, 0.11, 0.08], F32)
    img = img * (1 - 0.85 * hairs[..., None]) + 0.85 * hairs[..., None] * hair_rgb

    # Dermoscope frame (a dark circle) or a soft vignette.
    rr = np.sqrt(x * x + y * y)
    framed = rng.random(n) < 0.5
    frame_r = col(rng.uniform(0.95, 1.25, n))
    frame = soft_inside(rr - frame_r, size, 0.04)
    vignette = 1.0 - col(rng.uniform(0.05, 0.3, n)) * rr * rr
    light_field = np.where(col(framed), frame * 0.96 + 0.04, vignette)
    img = img * light_field[..., None]
    img = img + col(rng.uniform(0.005, 0.02, n))[..., None] * rng.standard_normal(
        img.shape, dtype=F32
    )
    mask = (lesion > 0.5).astype(np.uint8)
    return np.clip(img, 0.0, 1.0), mask


KIND = PhantomKind(
    name="derm",
    task="single-label",
    label_names=LABELS,
    channels=3,
    description="dermoscopy, benign nevus vs melanoma by the ABCD cues",
    render=render,
    salt=2,
)
