"""Modality artefacts: what real acquisitions of one modality put on the image.

- Radiographs: anti-scatter grid lines (periodic stripes, often aliased into a moire) and
  burned-in text markers (side markers ``L``/``R``, projection ``AP``/``PA``, numbers).
- Dermoscopy: hair, the black corners of a round lens on a rectangular sensor, and air
  bubbles in the immersion fluid.
- Fundus photography: uneven illumination (a smooth gradient and off-centre fall-off).

Each image gets its own random layout (positions, directions, sizes); the layout is drawn
in full whatever the amount, so a sequence with a fixed seed keeps the same hairs, markers
or bubbles and only fades them in one by one as the amount grows. Counted artefacts use the
amount as a count: amount 2.5 shows two markers and a third at half opacity.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

from workers.perturbations.base import (
    Family,
    Modality,
    Perturbation,
    random_sign,
    short_side,
    uniform,
)

_RADIOGRAPH = frozenset({Modality.RADIOGRAPH})
_DERMOSCOPY = frozenset({Modality.DERMOSCOPY})
_FUNDUS = frozenset({Modality.FUNDUS})

MAX_MARKERS = 5
HAIRS_PER_UNIT = 3
MAX_HAIRS = 5 * HAIRS_PER_UNIT
BUBBLES_PER_UNIT = 2
MAX_BUBBLES = 5 * BUBBLES_PER_UNIT


def _fade(amount: float, k: int, per_unit: int = 1) -> float:
    """Opacity of the ``k``-th counted artefact at an amount (fades in one at a time)."""
    return min(1.0, max(0.0, per_unit * amount - k))


def _centred_coords(
    h: int, w: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Pixel-centre coordinates in units of half the shorter side (the short side spans
    [-1, 1]) as ``[1, H, W]`` grids, and the centre-to-corner distance in those units."""
    half = min(h, w) / 2.0
    xs = (torch.arange(w, dtype=torch.float32, device=device) - (w - 1) / 2.0) / half
    ys = (torch.arange(h, dtype=torch.float32, device=device) - (h - 1) / 2.0) / half
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    corner = math.hypot(w / (2.0 * half), h / (2.0 * half))
    return gx.unsqueeze(0), gy.unsqueeze(0), corner


# --- radiograph -------------------------------------------------------------------------


def _grid_lines(x: torch.Tensor, depth: float, g: torch.Generator) -> torch.Tensor:
    n, _, h, w = x.shape
    dev = x.device
    period = uniform(g, (n,), 3.0, 7.0, dev).view(n, 1, 1)
    phase = uniform(g, (n,), 0.0, 2.0 * math.pi, dev).view(n, 1, 1)
    vertical = (random_sign(g, n, dev) > 0).view(n, 1, 1)
    xs = torch.arange(w, dtype=torch.float32, device=dev).view(1, 1, w)
    ys = torch.arange(h, dtype=torch.float32, device=dev).view(1, h, 1)
    coord = torch.where(vertical, xs.expand(n, h, w), ys.expand(n, h, w))
    stripes = 0.5 + 0.5 * torch.cos(2.0 * math.pi * coord / period + phase)
    # Lead strips absorb: the lines are darker, proportionally to the signal.
    return x * (1.0 - depth * stripes).unsqueeze(1)


# 5 x 7 bitmap glyphs, enough for side markers, projections and numbers.
_GLYPHS: dict[str, tuple[str, ...]] = {
    "L": ("1....", "1....", "1....", "1....", "1....", "1....", "11111"),
    "R": ("1111.", "1...1", "1...1", "1111.", "1.1..", "1..1.", "1...1"),
    "A": (".111.", "1...1", "1...1", "11111", "1...1", "1...1", "1...1"),
    "P": ("1111.", "1...1", "1...1", "1111.", "1....", "1....", "1...."),
    "0": (".111.", "1...1", "1..11", "1.1.1", "11..1", "1...1", ".111."),
    "1": ("..1..", ".11..", "..1..", "..1..", "..1..", "..1..", ".111."),
    "2": (".111.", "1...1", "....1", "...1.", "..1..", ".1...", "11111"),
    "3": ("11111", "...1.", "..1..", "...1.", "....1", "1...1", ".111."),
    "4": ("...1.", "..11.", ".1.1.", "1..1.", "11111", "...1.", "...1."),
    "5": ("11111", "1....", "1111.", "....1", "....1", "1...1", ".111."),
    "6": ("..11.", ".1...", "1....", "1111.", "1...1", "1...1", ".111."),
    "7": ("11111", "....1", "...1.", "..1..", ".1...", ".1...", ".1..."),
    "8": (".111.", "1...1", "1...1", ".111.", "1...1", "1...1", ".111."),
    "9": (".111.", "1...1", "1...1", ".1111", "....1", "...1.", ".11.."),
}
_MARKER_TEXTS = ("L", "R", "AP", "PA", "12", "07", "2024", "3")
_MARKER_VALUE = 0.95


@functools.cache
def _stamps_cpu() -> tuple[torch.Tensor, torch.Tensor]:
    return _render_stamps()


def _stamps(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    stamps, widths = _stamps_cpu()
    return stamps.to(device), widths.to(device)


def _render_stamps() -> tuple[torch.Tensor, torch.Tensor]:
    """All marker texts as ``[T, 1, 9, Wmax]`` bitmaps (1-pixel zero border, left aligned)
    and their widths in glyph pixels ``[T]``."""
    widths = [6 * len(t) + 1 for t in _MARKER_TEXTS]
    wmax = max(widths)
    out = torch.zeros(len(_MARKER_TEXTS), 1, 9, wmax)
    for i, text in enumerate(_MARKER_TEXTS):
        for j, ch in enumerate(text):
            rows = _GLYPHS[ch]
            for r, row in enumerate(rows):
                for col, bit in enumerate(row):
                    if bit == "1":
                        out[i, 0, 1 + r, 1 + 6 * j + col] = 1.0
    return out, torch.tensor(widths, dtype=torch.float32)


def _text_markers(x: torch.Tensor, amount: float, g: torch.Generator) -> torch.Tensor:
    n, _, h, w = x.shape
    dev = x.device
    m = MAX_MARKERS
    stamps, widths = _stamps(dev)
    choice = torch.randint(0, len(_MARKER_TEXTS), (n, m), generator=g, device=g.device).to(dev)
    u_x = uniform(g, (n, m), 0.0, 1.0, dev)
    u_y = uniform(g, (n, m), 0.0, 1.0, dev)
    scale = max(5.0, 0.07 * short_side(x)) / 7.0  # image pixels per glyph pixel
    st_h, st_w = stamps.shape[-2], stamps.shape[-1]
    box_w = widths[choice] * scale
    box_h = st_h * scale
    x0 = u_x * (w - box_w).clamp_min(0.0)
    y0 = u_y * max(0.0, h - box_h)
    px = torch.arange(w, dtype=torch.float32, device=dev) + 0.5
    py = torch.arange(h, dtype=torch.float32, device=dev) + 0.5
    # Stamp coordinates of every image pixel, normalized for grid_sample.
    sx = (px.view(1, 1, 1, w) - x0.view(n, m, 1, 1)) / scale * (2.0 / st_w) - 1.0
    sy = (py.view(1, 1, h, 1) - y0.view(n, m, 1, 1)) / scale * (2.0 / st_h) - 1.0
    grid = torch.stack([sx.expand(n, m, h, w), sy.expand(n, m, h, w)], dim=-1)
    masks = F.grid_sample(
        stamps[choice.reshape(-1)],
        grid.reshape(n * m, h, w, 2),
        mode="bilinear",
        padding_mode="zeros",
        align_corners=False,
    ).reshape(n, m, h, w)
    alpha = torch.tensor([_fade(amount, k) for k in range(m)], device=dev).view(1, m, 1, 1)
    coverage = 1.0 - torch.prod(1.0 - alpha * masks, dim=1, keepdim=True)
    return x * (1.0 - coverage) + _MARKER_VALUE * coverage


# --- dermoscopy --------------------------------------------------------------------------


def _splat(points: torch.Tensor, weights: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Bilinearly splat ``[N, P, 2]`` pixel positions with ``[N, P]`` weights into ``[N, H, W]``."""
    n = points.shape[0]
    canvas = torch.zeros(n * h * w, device=points.device)
    base = (torch.arange(n, device=points.device) * (h * w)).view(n, 1)
    p = points - 0.5  # pixel i has its centre at i + 0.5
    fx, fy = torch.floor(p[..., 0]), torch.floor(p[..., 1])
    for dx in (0, 1):
        for dy in (0, 1):
            xi, yi = fx + dx, fy + dy
            wgt = (1.0 - (p[..., 0] - xi).abs()) * (1.0 - (p[..., 1] - yi).abs()) * weights
            inside = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
            idx = base + yi.clamp(0, h - 1).long() * w + xi.clamp(0, w - 1).long()
            canvas.index_add_(0, idx.reshape(-1), (wgt * inside).reshape(-1))
    return canvas.view(n, h, w)


def _hair(x: torch.Tensor, amount: float, g: torch.Generator) -> torch.Tensor:
    n, c, h, w = x.shape
    dev = x.device
    m = MAX_HAIRS
    s = float(short_side(x))
    start = torch.stack(
        [uniform(g, (n, m), 0.0, float(w), dev), uniform(g, (n, m), 0.0, float(h), dev)], -1
    )
    angle = uniform(g, (n, m), 0.0, 2.0 * math.pi, dev)
    length = uniform(g, (n, m), 0.3, 0.8, dev) * s
    bend = uniform(g, (n, m), -0.25, 0.25, dev) * length
    direction = torch.stack([torch.cos(angle), torch.sin(angle)], -1)
    normal_dir = torch.stack([-torch.sin(angle), torch.cos(angle)], -1)
    end = start + length.unsqueeze(-1) * direction
    control = 0.5 * (start + end) + bend.unsqueeze(-1) * normal_dir
    # Points every half pixel along each quadratic Bezier curve.
    p = math.ceil(2.0 * 0.8 * s) + 1
    t = torch.linspace(0.0, 1.0, p, device=dev).view(1, 1, p, 1)
    curve = (
        (1 - t) ** 2 * start.unsqueeze(2)
        + 2 * (1 - t) * t * control.unsqueeze(2)
        + t**2 * end.unsqueeze(2)
    )  # [N, M, P, 2]
    alpha = torch.tensor([_fade(amount, k, HAIRS_PER_UNIT) for k in range(m)], device=dev)
    weights = alpha.view(1, m, 1).expand(n, m, p)
    mask = _splat(curve.reshape(n, m * p, 2), weights.reshape(n, m * p), h, w)
    mask = mask.clamp(0.0, 1.0).unsqueeze(1)
    thickness = round(s / 300.0)  # hair is about 1 pixel wide up to ~300 px images
    if thickness >= 1:
        mask = F.max_pool2d(mask, 2 * thickness + 1, stride=1, padding=thickness)
    colour = torch.tensor([0.12, 0.08, 0.05], device=dev).view(1, 3, 1, 1)
    if c != 3:
        colour = colour.mean().view(1, 1, 1, 1)
    mask = 0.9 * mask
    return x * (1.0 - mask) + colour * mask


def _black_corners(x: torch.Tensor, amount: float, g: torch.Generator) -> torch.Tensor:
    n, _, h, w = x.shape
    dev = x.device
    gx, gy, corner = _centred_coords(h, w, dev)
    offset = uniform(g, (n, 2), -0.05, 0.05, dev)
    d = torch.sqrt((gx - offset[:, 0:1, None]) ** 2 + (gy - offset[:, 1:2, None]) ** 2)
    edge = 0.04
    # At amount 0 the lens circle clears the farthest corner by one edge width, so the
    # mask is exactly 1 and the sweep starts from the identity.
    radius = (corner + 0.05 * math.sqrt(2.0) + edge) * (1.0 - 0.08 * amount)
    mask = ((radius - d) / edge).clamp(0.0, 1.0)
    return x * mask.unsqueeze(1)


def _air_bubbles(x: torch.Tensor, amount: float, g: torch.Generator) -> torch.Tensor:
    n, c, h, w = x.shape
    dev = x.device
    m = MAX_BUBBLES
    s = float(short_side(x))
    cx = uniform(g, (n, m), 0.0, float(w), dev)
    cy = uniform(g, (n, m), 0.0, float(h), dev)
    radius = uniform(g, (n, m), 0.04, 0.12, dev) * s
    # Each bubble is drawn in a square window around it (its ring fades below 1e-6 within
    # 1.3 radii), gathered from and scattered back to a canvas padded by the window size,
    # so every window is in bounds and no two pixels of one window alias.
    side = 2 * math.ceil(1.3 * 0.12 * s) + 2
    canvas = F.pad(x, (side, side, side, side))
    wp = w + 2 * side
    flat = canvas.view(n, c, -1)
    offsets = torch.arange(side, device=dev)
    for k in range(m):
        alpha = _fade(amount, k, BUBBLES_PER_UNIT)
        if alpha == 0.0:
            break
        x0 = torch.floor(cx[:, k]).long() - side // 2  # window corner, image pixels
        y0 = torch.floor(cy[:, k]).long() - side // 2
        cols = (x0.view(n, 1) + offsets.view(1, -1)).view(n, 1, side)
        rows = (y0.view(n, 1) + offsets.view(1, -1)).view(n, side, 1)
        index = ((rows + side) * wp + (cols + side)).reshape(n, 1, -1).expand(n, c, -1)
        # Pixel-centre coordinates relative to the bubble centre, in radii.
        rk = radius[:, k].view(n, 1, 1)
        dx = (cols.float() + 0.5 - cx[:, k].view(n, 1, 1)) / rk
        dy = (rows.float() + 0.5 - cy[:, k].view(n, 1, 1)) / rk
        d = torch.sqrt(dx**2 + dy**2)
        # The bubble wall refracts light away (a dark ring); the dome shows a specular
        # highlight up-left and a slightly lighter inside.
        rim = torch.exp(-(((d - 1.0) / 0.08) ** 2)).reshape(n, 1, -1)
        inside = torch.sigmoid((1.0 - d) / 0.04).reshape(n, 1, -1)
        spot = torch.exp(-((dx + 0.35) ** 2 + (dy + 0.35) ** 2) / (2.0 * 0.12**2))
        spot = spot.reshape(n, 1, -1)
        values = flat.gather(2, index)
        values = values * (1.0 - 0.45 * alpha * rim)
        values = values + alpha * 0.08 * inside * (1.0 - values)
        values = values + alpha * 0.8 * spot * (1.0 - values)
        flat.scatter_(2, index, values)
    return canvas[..., side : side + h, side : side + w]


# --- fundus ------------------------------------------------------------------------------


def _uneven_illumination(x: torch.Tensor, amount: float, g: torch.Generator) -> torch.Tensor:
    n, _, h, w = x.shape
    dev = x.device
    gx, gy, corner = _centred_coords(h, w, dev)
    phi = uniform(g, (n,), 0.0, 2.0 * math.pi, dev).view(n, 1, 1)
    centre = uniform(g, (n, 2), -0.3, 0.3, dev)
    gradient = (torch.cos(phi) * gx + torch.sin(phi) * gy) / corner
    falloff = ((gx - centre[:, 0:1, None]) ** 2 + (gy - centre[:, 1:2, None]) ** 2) / corner**2
    # Multiplicative (the black surround stays black) and log-linear in the amount.
    field = torch.exp(amount * (gradient - 0.5 * falloff))
    return x * field.unsqueeze(1)


PERTURBATIONS: tuple[Perturbation, ...] = (
    Perturbation(
        name="grid_lines",
        family=Family.ARTEFACT,
        fn=_grid_lines,
        severities=(0.03, 0.06, 0.1, 0.15, 0.2),
        units="stripe depth (fraction of the signal absorbed at a line)",
        description="Anti-scatter grid lines: periodic stripes of random period and axis.",
        sweep=(0.0, 0.15),
        modalities=_RADIOGRAPH,
        channels=frozenset({1, 3}),
    ),
    Perturbation(
        name="text_markers",
        family=Family.ARTEFACT,
        fn=_text_markers,
        severities=(1.0, 2.0, 3.0, 4.0, 5.0),
        units="number of burned-in markers (fractions fade the last one in)",
        description="Burned-in text markers (L/R, AP/PA, numbers) at random positions.",
        sweep=(0.0, 4.0),
        modalities=_RADIOGRAPH,
        channels=frozenset({1, 3}),
    ),
    Perturbation(
        name="hair",
        family=Family.ARTEFACT,
        fn=_hair,
        severities=(1.0, 2.0, 3.0, 4.0, 5.0),
        units=f"hair density ({HAIRS_PER_UNIT} curved hairs per unit)",
        description="Dark curved hairs across the lesion.",
        sweep=(0.0, 4.0),
        modalities=_DERMOSCOPY,
        channels=frozenset({3}),
    ),
    Perturbation(
        name="black_corners",
        family=Family.ARTEFACT,
        fn=_black_corners,
        severities=(1.0, 2.0, 3.0, 4.0, 5.0),
        units="lens vignette strength (the circle radius shrinks 8% per unit)",
        description="Black corners of a round dermatoscope lens on a rectangular sensor.",
        sweep=(0.0, 4.0),
        modalities=_DERMOSCOPY,
        channels=frozenset({3}),
    ),
    Perturbation(
        name="air_bubbles",
        family=Family.ARTEFACT,
        fn=_air_bubbles,
        severities=(1.0, 2.0, 3.0, 4.0, 5.0),
        units=f"bubble density ({BUBBLES_PER_UNIT} bubbles per unit)",
        description="Air bubbles in the immersion fluid (dark ring, specular highlight).",
        sweep=(0.0, 4.0),
        modalities=_DERMOSCOPY,
        channels=frozenset({3}),
    ),
    Perturbation(
        name="uneven_illumination",
        family=Family.ARTEFACT,
        fn=_uneven_illumination,
        severities=(0.1, 0.2, 0.3, 0.45, 0.6),
        units="log-illumination range (gradient and off-centre fall-off)",
        description="Uneven fundus illumination: a smooth gradient and an off-centre fall-off.",
        sweep=(0.0, 0.45),
        modalities=_FUNDUS,
        channels=frozenset({3}),
    ),
)
