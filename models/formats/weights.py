"""Weights for an allow-listed architecture: safetensors, or a ``torch.save(state_dict)`` ``.pth``.

The file carries tensors only; the code is ours (:mod:`models.architectures`). A ``.pth``
is read only with ``torch.load(weights_only=True)``, whose restricted unpickler builds
tensors and plain containers and refuses any other class, so a ``torch.save(model)`` of a
whole module (or any pickle needing more than tensors) is refused with
:class:`~models.errors.UnsafeModelFileError` before anything of it runs.

Keys must match the architecture exactly (``strict``). A state dict saved from a wrapper
whose every key starts with ``module.`` (``DataParallel``) or ``net.``
(:class:`~models.wrapper.DiagnosticModel`) is accepted with that prefix removed.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from models.architectures import ARCHITECTURES, build_architecture
from models.card import ModelCard
from models.errors import InvalidCardError, InvalidModelFileError, UnsafeModelFileError

_WRAPPER_PREFIXES = ("module.", "net.")
_LISTED = 8


def read_state_dict(path: Path, fmt: str) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors or ``.pth`` file, on the CPU."""
    if fmt == "safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except (SafetensorError, ValueError, OSError) as exc:
            raise InvalidModelFileError(f"the safetensors file cannot be read: {exc}") from exc
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise UnsafeModelFileError(
            "the .pth file needs more than tensors to load (for example a whole module saved "
            "with torch.save(model)), and unpickling it could run its author's code; save "
            "torch.save(model.state_dict()) or safetensors instead",
            {"reason": str(exc).splitlines()[-1][:300] if str(exc) else "unpickling refused"},
        ) from exc
    except Exception as exc:  # corrupt zip, truncated storages, ...
        raise InvalidModelFileError(f"the .pth file cannot be read: {exc}") from exc
    return _tensors_only(loaded)


def _tensors_only(loaded: object) -> dict[str, torch.Tensor]:
    if isinstance(loaded, Mapping):
        # Training checkpoints often nest the weights under one of these keys.
        for key in ("state_dict", "model_state_dict", "model"):
            inner = loaded.get(key)
            if (
                isinstance(inner, Mapping)
                and inner
                and all(isinstance(v, torch.Tensor) for v in inner.values())
            ):
                loaded = inner
                break
    if not isinstance(loaded, Mapping) or not loaded:
        raise InvalidModelFileError(
            "the .pth file does not hold a state dict (a mapping of parameter names to "
            f"tensors); it holds a {type(loaded).__name__}"
        )
    bad = [str(k) for k, v in loaded.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise InvalidModelFileError(
            f"the state dict has entries that are not tensors: {bad[:_LISTED]}",
            {"not_tensors": bad[:50]},
        )
    return {str(k): v for k, v in loaded.items()}


def strip_wrapper_prefix(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    for prefix in _WRAPPER_PREFIXES:
        if all(k.startswith(prefix) for k in state):
            return {k[len(prefix) :]: v for k, v in state.items()}
    return state


def require_architecture(card: ModelCard) -> str:
    valid = ", ".join(sorted(ARCHITECTURES))
    if card.architecture is None:
        raise InvalidCardError(
            f"weights-only files (safetensors, .pth) need card.architecture, one of: {valid}",
            {"errors": [{"loc": "architecture", "msg": "required for weights-only files"}]},
        )
    if card.architecture not in ARCHITECTURES:
        raise InvalidCardError(
            f"unknown architecture {card.architecture!r}; valid: {valid}",
            {
                "errors": [{"loc": "architecture", "msg": "unknown architecture"}],
                "valid": sorted(ARCHITECTURES),
            },
        )
    return card.architecture


def build_from_weights(card: ModelCard, state: dict[str, torch.Tensor]) -> nn.Module:
    """Instantiate ``card.architecture`` and load ``state`` into it (strict).

    The output width follows the head (:meth:`ModelCard.expected_outputs`). A two-label
    single-label card without an explicit head is built with two outputs (softmax) or, when
    the weights' classifier has one output, with one (binary-logit).
    """
    name = require_architecture(card)
    state = strip_wrapper_prefix(state)
    channels = card.input.channels
    head = card.resolved_head()
    widths = [card.expected_outputs(head)]
    if card.head is None and card.task == "single-label" and card.num_labels == 2:
        widths.append(1)
    first_problem: dict[str, list[str]] | None = None
    for width in widths:
        net = build_architecture(name, channels, width)
        problem = _mismatch(net, state)
        if problem is None:
            net.load_state_dict(state, strict=True)
            return net
        first_problem = first_problem or problem
    assert first_problem is not None
    parts = [
        f"{label}: {items[:_LISTED]}"
        + (f" and {len(items) - _LISTED} more" if len(items) > _LISTED else "")
        for label, items in first_problem.items()
        if items
    ]
    raise InvalidModelFileError(
        f"the weights do not match architecture {name!r} with {channels} input channel(s) and "
        f"{widths[0]} output(s): " + "; ".join(parts),
        {key: items[:100] for key, items in first_problem.items()},
    )


def _mismatch(net: nn.Module, state: Mapping[str, torch.Tensor]) -> dict[str, list[str]] | None:
    expected = net.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = [
        f"{k} {tuple(state[k].shape)} in the file vs {tuple(expected[k].shape)}"
        for k in sorted(set(expected) & set(state))
        if tuple(state[k].shape) != tuple(expected[k].shape)
    ]
    if not (missing or unexpected or shapes):
        return None
    return {"missing_keys": missing, "unexpected_keys": unexpected, "shape_mismatches": shapes}
