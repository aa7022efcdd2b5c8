"""Per-epoch training checkpoints, written atomically, so a killed worker resumes.

Layout of a checkpoint directory::

    state.json                 the commit marker (written last): format, fingerprint of the
                               job (method, params, seed, split sizes), completed epoch,
                               best epoch, history, and the names of the files below
    epoch-0003.safetensors     network weights (``model.net.state_dict()``) after epoch 3
    epoch-0003.optim.pt        optimizer state after epoch 3 (``torch.save``; read back
                               with ``torch.load(weights_only=True)``)

Every file is written to a temporary name in the same directory, flushed to disk and
renamed over its final name (``os.replace`` is atomic on POSIX); ``state.json`` is renamed
last, so a reader sees either the previous complete epoch or the new one, never a mix.
Only the files of the last and of the best epoch are kept. There is no RNG state to save:
the training loop derives every random stream from ``(seed, epoch)``.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from models.errors import ConflictError

logger = logging.getLogger(__name__)

FORMAT = 1
STATE_FILE = "state.json"


def weights_name(epoch: int) -> str:
    return f"epoch-{epoch:04d}.safetensors"


def optimizer_name(epoch: int) -> str:
    return f"epoch-{epoch:04d}.optim.pt"


@dataclass
class Checkpoint:
    """A loaded checkpoint: ``epoch`` epochs are complete (1-based numbering)."""

    epoch: int
    best_epoch: int
    history: list[dict[str, Any]]
    fingerprint: dict[str, Any]
    weights: dict[str, torch.Tensor]
    best_weights: dict[str, torch.Tensor]
    optimizer: dict[str, Any]


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    """Call ``write(tmp)`` then rename ``tmp`` over ``path`` after flushing it to disk."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _cpu_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # safetensors refuses shared or non-contiguous storage; a clone owns its memory.
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}


def save_checkpoint(
    directory: Path,
    *,
    epoch: int,
    best_epoch: int,
    fingerprint: dict[str, Any],
    history: list[dict[str, Any]],
    weights: dict[str, torch.Tensor],
    optimizer: dict[str, Any],
) -> None:
    """Write epoch ``epoch`` and commit it; ``best_epoch``'s weights must already exist
    (written at that epoch) unless it is ``epoch`` itself."""
    directory.mkdir(parents=True, exist_ok=True)
    w_name, o_name = weights_name(epoch), optimizer_name(epoch)
    cpu_weights = _cpu_state(weights)
    atomic_write(directory / w_name, lambda p: save_file(cpu_weights, str(p)))
    atomic_write(directory / o_name, lambda p: torch.save(optimizer, p))
    state = {
        "format": FORMAT,
        "fingerprint": fingerprint,
        "epoch": epoch,
        "best_epoch": best_epoch,
        "history": history,
        "files": {
            "weights": w_name,
            "optimizer": o_name,
            "best_weights": weights_name(best_epoch),
        },
    }
    text = json.dumps(state, indent=2, sort_keys=True)
    atomic_write(directory / STATE_FILE, lambda p: p.write_text(text, encoding="utf-8"))
    _fsync_dir(directory)
    keep = {STATE_FILE, w_name, o_name, weights_name(best_epoch)}
    for path in directory.glob("epoch-*"):
        if path.name not in keep:
            path.unlink(missing_ok=True)


def load_checkpoint(directory: Path) -> Checkpoint | None:
    """The last committed checkpoint in ``directory``, or ``None`` when there is none.

    Raises:
        ConflictError: ``state.json`` exists but is unreadable or names missing files.
    """
    state_path = directory / STATE_FILE
    if not state_path.is_file():
        return None
    try:
        state = json.loads(state_path.read_text(encoding="utf-8"))
        if state.get("format") != FORMAT:
            raise ValueError(f"unsupported checkpoint format {state.get('format')!r}")
        files = state["files"]
        weights = load_file(str(directory / files["weights"]), device="cpu")
        best = (
            weights
            if files["best_weights"] == files["weights"]
            else load_file(str(directory / files["best_weights"]), device="cpu")
        )
        optimizer = torch.load(
            directory / files["optimizer"], map_location="cpu", weights_only=True
        )
        return Checkpoint(
            epoch=int(state["epoch"]),
            best_epoch=int(state["best_epoch"]),
            history=list(state["history"]),
            fingerprint=dict(state["fingerprint"]),
            weights=weights,
            best_weights=best,
            optimizer=optimizer,
        )
    except (OSError, ValueError, KeyError, TypeError, RuntimeError, SafetensorError) as exc:
        raise ConflictError(
            f"checkpoint in {directory} cannot be resumed: {exc}",
            {"checkpoint_dir": str(directory)},
        ) from exc
