"""ONNX models, converted to a torch graph with onnx2torch so that gradients exist.

An ONNX file is a protobuf of standard operators and tensors: parsing it runs no code.
What it can do is point at files by path (*external data*) and call operators outside the
standard set; both are refused before anything reads, converts or checks the graph
(:mod:`models.formats.onnx_checks`). The graph is then rewritten into one onnx2torch
converts (:mod:`models.formats.onnx_normalize`, which also says why onnx2torch).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from models.errors import InvalidModelFileError
from models.formats.onnx_checks import check_references
from models.formats.onnx_normalize import candidates

if TYPE_CHECKING:
    import onnx

logger = logging.getLogger(__name__)


def read_onnx(path: Path) -> onnx.ModelProto:
    """Parse and check an ONNX file without reading anything it refers to."""
    import onnx

    try:
        proto = onnx.load_model(str(path), load_external_data=False)
    except Exception as exc:  # protobuf DecodeError and onnx's own errors
        raise InvalidModelFileError("the file is not a readable ONNX model") from exc
    check_references(proto)  # before the checker, which would open external files
    if not proto.graph.node:
        raise InvalidModelFileError("the ONNX model has an empty graph")
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
    return proto


def load_onnx(path: Path, device: torch.device) -> nn.Module:
    net = _convert(read_onnx(path))
    return net.to(device).eval()


def _convert(proto: onnx.ModelProto) -> nn.Module:
    """onnx2torch on the normalized graph, at its own opset and then at older ones."""
    from onnx2torch import convert

    first: Exception | None = None
    for opset, graph in candidates(proto):
        try:
            net = convert(graph)
        except Exception as exc:  # onnx2torch raises NotImplementedError, KeyError, ...
            first = first or exc
            continue
        if opset is not None:
            logger.info("converted the ONNX graph at opset %d for onnx2torch", opset)
        return net
    raise InvalidModelFileError(
        f"the ONNX graph cannot be converted to a differentiable torch graph: {first}"
    ) from first
