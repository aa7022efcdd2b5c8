"""Array conventions of the feature-level analyses (features, gradcam, discriminability,
label_correlation).

**Rows by dataset position.** Per-image arrays are stored with the dataset positions of
their images (``index`` for clean-only arrays, ``adv_index[<attack key>]`` for the arrays of
one attack, as in :mod:`workers.analyses.alignment`); :func:`unique_rows` picks one row per
image in dataset order, so a shard merged twice counts once.

**Short texts in array names.** ``summarize`` sees only the merged per-image arrays, yet
some analyses must tell it a few strings decided on the worker: the layers that were read,
or why the analysis turned out not to apply to this network. Storing such a string as a
per-image text array would cost bytes per image; instead it travels in the *name* of an
empty per-image array (``[N, 0]``, zero bytes), which concatenates across batches and shards
like any other array and survives ``np.savez``/``np.load`` (the text is percent-encoded, so
the name is plain ASCII).

::

    arrays.update(text_array("layer", "layer4", n))   # key "text[layer]=layer4"
    read_text(arrays, "layer")                         # -> "layer4"
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import quote, unquote

import numpy as np

_PREFIX = "text["
NOT_APPLICABLE = "not_applicable"


def unique_rows(index: np.ndarray) -> np.ndarray:
    """Row numbers of the first occurrence of each position, in increasing position."""
    _, first = np.unique(np.asarray(index).astype(np.int64), return_index=True)
    return first


def text_array(name: str, value: str, n: int) -> dict[str, np.ndarray]:
    """One zero-byte per-image array whose key carries ``value``."""
    return {f"{_PREFIX}{name}]={quote(value, safe='')}": np.zeros((n, 0), dtype=np.uint8)}


def read_text(arrays: Mapping[str, np.ndarray], name: str) -> str | None:
    """The text stored under ``name`` (the first one when batches disagree)."""
    head = f"{_PREFIX}{name}]="
    found = sorted(k for k in arrays if k.startswith(head))
    return unquote(found[0][len(head):]) if found else None


def not_applicable_arrays(reason: str, n: int) -> dict[str, np.ndarray]:
    """What ``collect`` returns when it finds, on the worker, that it cannot run."""
    return text_array(NOT_APPLICABLE, reason, n)


def not_applicable_reason(arrays: Mapping[str, np.ndarray]) -> str | None:
    return read_text(arrays, NOT_APPLICABLE)
