"""ONNX models, converted to a torch graph with onnx2torch so that gradients exist.

An ONNX file is a protobuf of standard operators and tensors: parsing it runs no code.
What it can do is point at *external data* files by path, which ``onnx.load`` would read
from the server's disk; external data is therefore not loaded and a model that needs it is
refused (re-save it with every tensor inside the file).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from models.errors import InvalidModelFileError

if TYPE_CHECKING:
    import onnx

logger = logging.getLogger(__name__)

_FALLBACK_OPSETS = (18, 17, 13)


def load_onnx(path: Path, device: torch.device) -> nn.Module:
    import onnx

    try:
        proto = onnx.load_model(str(path), load_external_data=False)
    except Exception as exc:  # protobuf DecodeError and onnx's own errors
        raise InvalidModelFileError(f"the file is not a readable ONNX model: {exc}") from exc
    if not proto.graph.node:
        raise InvalidModelFileError("the ONNX model has an empty graph")
    external = [
        t.name for t in proto.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL
    ]
    if external:
        raise InvalidModelFileError(
            "the ONNX model keeps tensors in external data files, which are not uploaded "
            f"with it ({external[:3]}); save it with all tensors inside the file",
            {"external_tensors": external[:20]},
        )
    initializers = {t.name for t in proto.graph.initializer}
    inputs = [i.name for i in proto.graph.input if i.name not in initializers]
    if len(inputs) != 1:
        raise InvalidModelFileError(
            f"the ONNX model must take one image tensor; it takes {len(inputs)}: {inputs[:5]}"
        )
    try:
        onnx.checker.check_model(proto)
    except onnx.checker.ValidationError as exc:
        raise InvalidModelFileError(f"the ONNX model is not valid: {exc}") from exc
    net = _convert(proto)
    return net.to(device).eval()


def _convert(proto: onnx.ModelProto) -> nn.Module:
    """onnx2torch, retried on the graph converted to older opsets.

    onnx2torch lags the ONNX opsets that exporters now write (torch 2.14 writes opset 20,
    whose ``AveragePool`` it cannot convert); the ONNX version converter rewrites such a
    graph to an equivalent one at an older opset.
    """
    from onnx import version_converter
    from onnx2torch import convert

    try:
        return convert(proto)
    except Exception as exc:  # onnx2torch raises NotImplementedError, KeyError, ...
        first = exc
    for opset in _FALLBACK_OPSETS:
        try:
            older = version_converter.convert_version(proto, opset)
            net = convert(older)
        except Exception:  # try the next opset; report the first error if none works
            continue
        logger.info("converted the ONNX graph at opset %d for onnx2torch", opset)
        return net
    raise InvalidModelFileError(
        f"the ONNX graph cannot be converted to a differentiable torch graph: {first}"
    ) from first
