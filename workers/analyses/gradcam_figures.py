"""The Grad-CAM gallery: clean and adversarial images with their class-activation maps."""

from __future__ import annotations

import numpy as np

from workers.analyses.alignment import attack_field
from workers.analyses.base import Figure
from workers.analyses.feature_arrays import unique_rows
from workers.analyses.plotting import new_grid, render_png


def _display(image: np.ndarray) -> tuple[np.ndarray, str | None]:
    """``[C, h, w]`` uint8 -> what ``imshow`` takes, and the colour map for grey images."""
    if image.shape[0] == 1:
        return image[0], "gray"
    return np.transpose(image[:3], (1, 2, 0)), None


def _spread(rows: np.ndarray, k: int) -> list[int]:
    """Up to ``k`` of ``rows``, evenly spaced."""
    if k <= 0 or rows.size == 0:
        return []
    if rows.size <= k:
        return [int(r) for r in rows]
    picks = np.round(np.linspace(0.0, float(rows.size - 1), k)).astype(np.int64)
    return [int(rows[p]) for p in picks]


def gallery_figure(
    arrays: dict[str, np.ndarray],
    key: str,
    labels: list[str],
    kind: str,
    size: int,
    name: str,
) -> Figure | None:
    """Clean and adversarial images with their Grad-CAM overlays, one row per image."""
    if attack_field("sample_adv", key) not in arrays:
        return None
    rows = unique_rows(arrays["sample_index"])
    fooled = arrays["sample_fooled"][rows].astype(bool)
    # Fooled images first, each group spread over the dataset.
    chosen = _spread(rows[fooled], size)
    chosen += _spread(rows[~fooled], size - len(chosen))
    ordered = np.asarray(chosen, dtype=np.int64)
    if ordered.size == 0:
        return None
    fig, axes = new_grid(len(ordered), 2, 5.0, 2.5 * len(ordered))

    def label_of(target: int) -> str:
        return labels[target] if 0 <= target < len(labels) else str(target)

    for r, row in enumerate(ordered):
        panels = [
            ("clean", arrays["sample_image"][row], arrays["sample_cam"][row],
             int(arrays["sample_target"][row])),
            ("adversarial", arrays[attack_field("sample_adv", key)][row],
             arrays[attack_field("sample_adv_cam", key)][row],
             int(arrays[attack_field("sample_adv_target", key)][row])),
        ]
        for c, (what, image, cam, target) in enumerate(panels):
            ax = axes[r, c]
            shown, cmap = _display(image)
            ax.imshow(shown, cmap=cmap, vmin=0, vmax=255, interpolation="nearest")
            ax.imshow(cam, cmap="jet", alpha=0.45, vmin=0, vmax=255, interpolation="bilinear")
            ax.set_title(f"{what} #{int(arrays['sample_index'][row])}\n"
                         f"{kind}: {label_of(target)}", fontsize=8)
            ax.set_axis_off()
    return Figure(
        name=name,
        title=f"Grad-CAM gallery: {key}",
        png=render_png(fig),
        caption=f"Grad-CAM overlays on clean (left) and adversarial ({key}, right) images; "
        "images the attack fooled come first.",
    )
