"""Per-image arrays keyed by dataset position, robust to how an audit was sharded.

An audit is split into shards of (dataset slice x attack settings), so the clean arrays of a
slice may be collected by several shards and an attack's arrays cover only the shards that
ran it; a redelivered shard may even be merged twice. The analyses of this package
therefore store the dataset positions next to their arrays (``index`` for clean arrays,
``adv_index[<key>]`` for those of one attack) and :func:`clean_rows` / :func:`attack_rows`
line them up again: one row per image, in dataset order, whatever the merge did.
"""

from __future__ import annotations

import numpy as np


def attack_field(field: str, key: str) -> str:
    """The array name of a per-attack field: ``attack_field("adv_probs", "pgd:eps=4/255")``."""
    return f"{field}[{key}]"


def _first_rows(index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    uniq, first = np.unique(np.asarray(index).astype(np.int64), return_index=True)
    return uniq, first


def clean_rows(arrays: dict[str, np.ndarray], anchor: str) -> tuple[np.ndarray, np.ndarray]:
    """``(positions, rows)``: the dataset positions in order and, for each, a row of the
    clean arrays (collected with ``index``); ``anchor`` names any clean array."""
    if "index" in arrays:
        return _first_rows(arrays["index"])
    n = arrays[anchor].shape[0]
    return np.arange(n), np.arange(n)


def attack_rows(
    arrays: dict[str, np.ndarray], key: str, anchor: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(positions, clean_rows, attack_rows)`` for the images both clean and attacked.

    ``anchor`` is the per-attack field whose presence says the attack ran (``adv_probs``).
    """
    positions, rows = clean_rows(arrays, "labels")
    index_name = attack_field("adv_index", key)
    if index_name not in arrays:
        n = arrays[attack_field(anchor, key)].shape[0]
        both = np.arange(min(n, positions.shape[0]))
        return positions[both], rows[both], both
    adv_pos, adv_rows = _first_rows(arrays[index_name])
    where = np.searchsorted(positions, adv_pos)
    where = np.minimum(where, max(positions.shape[0] - 1, 0))
    ok = positions.shape[0] > 0
    found = positions[where] == adv_pos if ok else np.zeros(adv_pos.shape, dtype=bool)
    return adv_pos[found], rows[where[found]], adv_rows[found]
