"""Matplotlib without pyplot: figures rendered to PNG bytes with the Agg backend.

The object-oriented API (``matplotlib.figure.Figure`` + ``FigureCanvasAgg``) keeps no global
state, so analyses can draw from worker threads; PNGs carry no timestamp, so a re-run gives
the same bytes.
"""

from __future__ import annotations

import io
from typing import Any

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure as MplFigure

#: Colour cycle used by every RobustDx plot (colour-blind safe, Okabe-Ito).
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000")


def new_figure(width: float = 6.4, height: float = 4.0) -> tuple[MplFigure, Axes]:
    """A figure with one axes, sized in inches (rendered at 100 dpi)."""
    fig = MplFigure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    return fig, ax


def render_png(fig: MplFigure) -> bytes:
    """PNG bytes of a figure (tight layout, no metadata beyond matplotlib's name)."""
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()


def new_grid(
    nrows: int, ncols: int, width: float, height: float, *, sharex: bool = False
) -> tuple[MplFigure, Any]:
    """A figure with an ``nrows x ncols`` array of axes (numpy object array)."""
    fig = MplFigure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, sharex=sharex, squeeze=False)
    return fig, axes
