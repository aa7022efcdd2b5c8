"""Safe loading of uploaded models, with a dry run that proves they fit their card.

Nothing in an uploaded file is run as Python. The formats and why each is safe:

- **torch.export** (``.pt2``): a JSON graph of registered operators and raw tensors; the
  archive is checked so that no member needs a full unpickle or is compiled code, and its
  graphs, guard code and shape expressions before loading
  (:mod:`models.formats.torch_export`, :mod:`models.formats.export_program`).
- **TorchScript**: TorchScript's own C++ unpickler and interpreter, no Python; members,
  pickles and source are checked before loading and every graph after it
  (:mod:`models.formats.torchscript`).
- **ONNX**: a protobuf of standard operators, converted with onnx2torch; external data and
  custom domains are refused before anything reads them (:mod:`models.formats.onnx_graph`).

TorchScript and torch.export graphs may call only the operators of an allow-list of
namespaces (:mod:`models.formats.operators`). To run the check in a separate process
under CPU, memory and wall-time limits, use :func:`models.sandbox.check_model_file_isolated`.
- **safetensors / .pth** weights for an allow-listed ``card.architecture``; ``.pth`` only
  through ``torch.load(weights_only=True)`` (:mod:`models.formats.weights`).
- A plain pickle, or a ``torch.save(model)`` of a whole module, is refused with
  :class:`~models.errors.UnsafeModelFileError`.

The dry run (:func:`load_model`) feeds random ``[N, C, H, W]`` images in ``[0, 1]`` at the
card's size and refuses, with :class:`~models.errors.InvalidModelFileError`, a model that
raises on that size, outputs the wrong width for the card's labels and head (a
``binary-logit`` head is one output for two labels), outputs NaN or inf, or gives no
finite gradient with respect to the input pixels (attacks need it). It also finds the batch
sizes the network accepts: a program specialised to one batch size (torch.export without
a dynamic batch dimension, an ONNX graph with a fixed batch) gets
``DiagnosticModel.fixed_batch``, recorded in the model's ``info``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError
from torch import nn

from models.architectures import ARCHITECTURES
from models.card import Head, ModelCard
from models.device import resolve_device
from models.errors import InvalidCardError, InvalidModelFileError
from models.formats import EXTENSIONS, FORMATS, WEIGHT_FORMATS, ModelFormat, detect_format
from models.hashing import sha256_file
from models.wrapper import DiagnosticModel

__all__ = [
    "EXTENSIONS",
    "FORMATS",
    "CheckedModelFile",
    "LoadedModel",
    "check_model_file",
    "detect_format",
    "load_model",
    "parse_card",
    "sha256_file",
]

logger = logging.getLogger(__name__)

_DRY_RUN_BATCH = 2
_MAX_MESSAGE = 400


@dataclass(frozen=True)
class LoadedModel:
    """A model ready to use: ``model`` is in eval mode on its device.

    ``info`` is JSON-able: ``format``, ``head``, ``output_width``, ``fixed_batch`` (``None``
    when any batch size works), ``input`` (``[C, H, W]``), ``parameters``, ``dry_run_ms``
    (one forward of the dry-run batch) and ``device``.
    """

    model: DiagnosticModel
    format: ModelFormat
    info: dict[str, Any]


@dataclass(frozen=True)
class CheckedModelFile:
    """What the registry stores for an accepted upload (see :func:`check_model_file`)."""

    loaded: LoadedModel
    card: ModelCard  # with ``sha256`` filled in
    sha256: str
    size_bytes: int

    @property
    def format(self) -> ModelFormat:
        return self.loaded.format

    @property
    def info(self) -> dict[str, Any]:
        """``loaded.info``: also what :class:`models.sandbox.CheckedUpload` carries."""
        return self.loaded.info

    @property
    def extension(self) -> str:
        return EXTENSIONS[self.loaded.format]


def parse_card(raw: str | bytes | Mapping[str, Any] | ModelCard) -> ModelCard:
    """Validate a model card (JSON text or a mapping).

    Raises:
        InvalidCardError: not JSON, or every validation error listed in the message and in
            ``details["errors"]`` as ``{"loc", "msg", "type"}`` (``loc`` like
            ``"input.height"``; a missing field says ``Field required``). An architecture
            outside the allow-list is refused here too, with the valid names.
    """
    if isinstance(raw, ModelCard):
        card = raw
    else:
        data: object = raw
        if isinstance(raw, (str, bytes)):
            try:
                data = json.loads(raw)
            except ValueError as exc:
                raise InvalidCardError(f"the model card is not valid JSON: {exc}") from exc
        if not isinstance(data, Mapping):
            raise InvalidCardError(
                f"the model card must be a JSON object, got {type(data).__name__}"
            )
        try:
            card = ModelCard.model_validate(dict(data))
        except ValidationError as exc:
            errors = [
                {
                    "loc": ".".join(str(p) for p in e["loc"]) or "card",
                    "msg": e["msg"],
                    "type": e["type"],
                }
                for e in exc.errors(include_url=False)
            ]
            listed = "; ".join(f"{e['loc']}: {e['msg']}" for e in errors)
            raise InvalidCardError(f"invalid model card: {listed}", {"errors": errors}) from exc
    if card.architecture is not None and card.architecture not in ARCHITECTURES:
        valid = ", ".join(sorted(ARCHITECTURES))
        raise InvalidCardError(
            f"invalid model card: architecture: unknown architecture {card.architecture!r}; "
            f"valid: {valid}",
            {
                "errors": [
                    {"loc": "architecture", "msg": "unknown architecture", "type": "value_error"}
                ],
                "valid": sorted(ARCHITECTURES),
            },
        )
    return card


def check_model_file(
    path: Path, card: ModelCard, *, device: torch.device | str | None = None
) -> CheckedModelFile:
    """Everything the registry does to an upload except storing it: hash, load, dry run.

    When the card already carries a ``sha256`` it must be the file's.
    """
    digest = sha256_file(path)
    if card.sha256 is not None and card.sha256.lower() != digest:
        raise InvalidCardError(
            f"card.sha256 {card.sha256} is not the file's sha256 {digest}",
            {
                "errors": [
                    {"loc": "sha256", "msg": "does not match the file", "type": "value_error"}
                ]
            },
        )
    card = card.model_copy(update={"sha256": digest})
    loaded = load_model(path, card, device=device)
    return CheckedModelFile(loaded=loaded, card=card, sha256=digest, size_bytes=path.stat().st_size)


def load_model(
    path: Path,
    card: ModelCard,
    *,
    device: torch.device | str | None = None,
    info: Mapping[str, Any] | None = None,
) -> LoadedModel:
    """Load a model file safely and wrap it as a :class:`DiagnosticModel` for ``card``.

    Args:
        path: the file; its format is detected from the content.
        card: the model card (input size, labels, head, preprocessing, architecture).
        device: where to load it; ``None`` picks CUDA when present.
        info: the ``info`` recorded when this very file was registered. When given, its
            ``head`` and ``fixed_batch`` are trusted and the dry run is skipped (a cache
            miss in the API should not pay for a backward pass).

    Raises:
        UnsafeModelFileError: the file needs more than tensors to load.
        InvalidModelFileError: unreadable, or the dry run failed (see module doc).
        InvalidCardError: weights-only file without an allow-listed ``card.architecture``.
    """
    dev = device if isinstance(device, torch.device) else resolve_device(device)
    fmt = detect_format(path)
    net, static_shape = _load_net(path, fmt, card, dev)
    if info is not None and "head" in info:
        model = DiagnosticModel(net, card, Head(info["head"]), info.get("fixed_batch"))
        model.to(dev).eval()
        return LoadedModel(model=model, format=fmt, info=dict(info))
    _check_static_shape(card, static_shape)
    fixed_batch, width = _probe_batches(net, card, dev, static_shape)
    head = card.resolved_head(width)
    expected = card.expected_outputs(head)
    if width != expected:
        raise InvalidModelFileError(
            _width_message(card, head, width, expected),
            {
                "expected_outputs": expected,
                "got_outputs": width,
                "labels": list(card.labels),
                "head": head.value,
            },
        )
    model = DiagnosticModel(net, card, head, fixed_batch).to(dev).eval()
    dry_run_ms = _dry_run(model, dev)
    return LoadedModel(
        model=model,
        format=fmt,
        info={
            "format": fmt,
            "head": head.value,
            "output_width": width,
            "fixed_batch": fixed_batch,
            "input": list(model.input_shape),
            "parameters": sum(p.numel() for p in model.parameters()),
            "dry_run_ms": round(dry_run_ms, 3),
            "device": str(dev),
        },
    )


# ----------------------------------------------------------------------------- loading


def _load_net(
    path: Path, fmt: ModelFormat, card: ModelCard, device: torch.device
) -> tuple[nn.Module, tuple[Any, ...] | None]:
    if fmt == "torch-export":
        from models.formats.torch_export import load_exported

        return load_exported(path, device)
    if fmt == "torchscript":
        from models.formats.torchscript import load_torchscript

        return load_torchscript(path, device), None
    if fmt == "onnx":
        from models.formats.onnx_graph import load_onnx

        return load_onnx(path, device), None
    assert fmt in WEIGHT_FORMATS
    from models.formats.weights import build_from_weights, read_state_dict, require_architecture

    require_architecture(card)  # before reading a possibly large file
    net = build_from_weights(card, read_state_dict(path, fmt))
    return net.to(device).eval(), None


# ----------------------------------------------------------------------------- dry run


def _card_shape(card: ModelCard, batch: int | str = "N") -> str:
    spec = card.input
    return f"[{batch}, {spec.channels}, {spec.height}, {spec.width}]"


def _check_static_shape(card: ModelCard, shape: tuple[Any, ...] | None) -> None:
    """A torch.export program states its input shape: compare it with the card's first."""
    if shape is None:
        return
    spec = card.input
    expected = (spec.channels, spec.height, spec.width)
    if len(shape) != 4 or any(
        got is not None and got != want for got, want in zip(shape[1:], expected, strict=True)
    ):
        shown = "[" + ", ".join("N" if d is None else str(d) for d in shape) + "]"
        raise InvalidModelFileError(
            f"input size mismatch: the program takes {shown} but the card says {_card_shape(card)}",
            {"expected_input": [None, *expected], "model_input": list(shape)},
        )


def _random_images(card: ModelCard, n: int, device: torch.device, seed: int = 0) -> torch.Tensor:
    c, h, w = card.input.channels, card.input.height, card.input.width
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(n, c, h, w, generator=gen).to(device)


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= _MAX_MESSAGE else text[: _MAX_MESSAGE - 3] + "..."


def _first_output(out: object) -> object:
    if isinstance(out, (tuple, list)) and out:
        return out[0]
    return out


def _probe(net: nn.Module, z: torch.Tensor) -> tuple[torch.Tensor | None, BaseException | None]:
    """Run ``net`` on normalized ``z``; the output, or why it failed."""
    try:
        with torch.no_grad():
            out = _first_output(net(z))
    except Exception as exc:  # any failure of the uploaded graph is the upload's fault
        return None, exc
    if not isinstance(out, torch.Tensor):
        return None, TypeError(f"the model returned a {type(out).__name__}, not a tensor")
    if out.shape[:1] != z.shape[:1]:
        return None, ValueError(
            f"the model returned {tuple(out.shape)} for a batch of {z.shape[0]} images"
        )
    return out, None


def _probe_batches(
    net: nn.Module, card: ModelCard, device: torch.device, static: tuple[Any, ...] | None
) -> tuple[int | None, int]:
    """The batch size the network is fixed to (``None``: any) and its output width."""
    mean = torch.tensor(card.preprocessing.mean, device=device).view(1, -1, 1, 1)
    std = torch.tensor(card.preprocessing.std, device=device).view(1, -1, 1, 1)
    z = (_random_images(card, _DRY_RUN_BATCH, device) - mean) / std
    out1, err1 = _probe(net, z[:1])
    out2, err2 = _probe(net, z)
    out: torch.Tensor | None
    fixed: int | None
    if out1 is not None and out2 is not None:
        fixed, out = None, out2
    elif out1 is not None:
        fixed, out = 1, out1
    elif out2 is not None:
        fixed, out = 2, out2
    else:
        fixed = static[0] if static and isinstance(static[0], int) else None
        out, err = None, err2 or err1
        if fixed is not None and fixed > 2:
            out, err = _probe(net, z[:1].expand(fixed, *z.shape[1:]))
        if out is None:
            raise InvalidModelFileError(
                f"the model fails on images of the card's input size {_card_shape(card, 2)}: "
                f"{_short(err or RuntimeError('unknown error'))}",
                {"expected_input": [None, *card_input(card)]},
            ) from err
    if not out.is_floating_point():
        raise InvalidModelFileError(
            f"the model outputs {out.dtype} values; expected floating-point logits"
        )
    if out.dim() == 1:
        width = 1
    elif out.dim() == 2:
        width = int(out.shape[1])
    else:
        raise InvalidModelFileError(
            f"the model outputs shape {list(out.shape)} for a batch of images; expected "
            f"logits [N, K] with K = {card.num_labels} labels (or [N, 1] for a binary-logit head)"
        )
    if fixed is not None:
        logger.info("model accepts only batches of %d; batches will be split and padded", fixed)
    return fixed, width


def card_input(card: ModelCard) -> list[int]:
    return [card.input.channels, card.input.height, card.input.width]


def _width_message(card: ModelCard, head: Head, got: int, expected: int) -> str:
    labels = ", ".join(card.labels)
    if head == Head.BINARY_LOGIT:
        need = "1 (a single logit for the second label)"
    else:
        need = f"{expected} (one per label)"
    return (
        f"output width mismatch: the model outputs {got} value(s) per image but the card's "
        f"{card.num_labels} labels ({labels}) with head '{head.value}' need {need}"
    )


def _dry_run(model: DiagnosticModel, device: torch.device) -> float:
    """Forward and backward on a random batch; returns the forward time in ms."""
    x = _random_images(model.card, _DRY_RUN_BATCH, device, seed=1).requires_grad_(True)
    with torch.enable_grad():
        try:
            start = time.perf_counter()
            out = model(x)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            elapsed = (time.perf_counter() - start) * 1000.0
        except Exception as exc:
            raise InvalidModelFileError(
                f"the model fails on images of the card's input size "
                f"{_card_shape(model.card, _DRY_RUN_BATCH)}: {_short(exc)}"
            ) from exc
        if not torch.isfinite(out).all():
            bad = int((~torch.isfinite(out)).sum())
            raise InvalidModelFileError(
                f"the model outputs NaN or infinite values ({bad} of {out.numel()}) on random "
                f"images in [0, 1] of the card's size {_card_shape(model.card, _DRY_RUN_BATCH)}",
                {"non_finite_outputs": bad},
            )
        try:
            (grad,) = torch.autograd.grad(out.float().sum(), x, allow_unused=True)
        except RuntimeError as exc:
            grad, reason = None, _short(exc)
        else:
            reason = "the input pixels do not reach the outputs through differentiable operations"
        if grad is None:
            raise InvalidModelFileError(
                "no gradient flows from the model's outputs to its input pixels "
                f"({reason}); attacks and defenses need one"
            )
        if not torch.isfinite(grad).all():
            raise InvalidModelFileError(
                "the gradient of the model's outputs with respect to its input is not finite"
            )
    return elapsed
