"""Open Inference Protocol v2: tensors in, probabilities out, through the same lanes as
``/v1/models/{id}/predict``.

A model answers to its id. It takes one input, ``image``: ``[N, C, H, W]`` at the card's
channels and size, ``FP32`` in [0, 1] (the same pixels ``/v1`` feeds the network after
decoding and resizing an image) or ``UINT8`` in 0..255; and gives one output,
``probabilities``: ``FP32 [N, K]`` in the card's label order (softmax, or per-finding
sigmoid for multi-label cards, exactly as ``/v1`` reports them).

Tensors travel as JSON (``data``, flattened row-major) or, with the binary tensor
extension, as raw little-endian bytes after the JSON header, whose length the
``Inference-Header-Content-Length`` header gives.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np
import torch
from pydantic import ValidationError

from app.api.schemas.oip import (
    INPUT_DATATYPES,
    INPUT_NAME,
    OUTPUT_NAME,
    InferInput,
    InferRequest,
    ModelMetadata,
    TensorMetadata,
)
from app.core.db import ModelRow
from app.core.registry import row_card
from models.card import ModelCard
from models.errors import InvalidInputError

VERSION = "1"


def model_metadata(row: ModelRow) -> ModelMetadata:
    card = row_card(row)
    spec = card.input
    return ModelMetadata(
        name=row.id, versions=[VERSION], platform=f"robustdx_{row.format}",
        inputs=[TensorMetadata(name=INPUT_NAME, datatype="FP32",
                               shape=[-1, spec.channels, spec.height, spec.width])],
        outputs=[TensorMetadata(name=OUTPUT_NAME, datatype="FP32",
                                shape=[-1, len(card.labels)])],
        parameters={"labels": list(card.labels), "task": card.task, "display_name": row.name},
    )


@dataclass(frozen=True)
class ParsedInfer:
    request_id: str | None
    images: list[torch.Tensor]  # each [C, H, W], float32 in [0, 1]
    binary_output: bool


def parse_infer(body: bytes, header_length: int | None, card: ModelCard,
                max_batch: int) -> ParsedInfer:
    """Validate an infer request against the card and turn its tensor into images.

    Raises:
        InvalidInputError: anything that is not a well-formed request for this model.
    """
    if header_length is not None and not 0 < header_length <= len(body):
        raise InvalidInputError("Inference-Header-Content-Length is outside the body")
    header = body[:header_length] if header_length is not None else body
    binary = memoryview(body)[header_length:] if header_length is not None else memoryview(b"")
    try:
        request = InferRequest.model_validate_json(header)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "body"
        raise InvalidInputError(f"not an inference request: {where}: {first['msg']}") from exc
    if len(request.inputs) != 1 or request.inputs[0].name != INPUT_NAME:
        raise InvalidInputError(f"send exactly one input, named {INPUT_NAME!r}")
    array = _input_array(request.inputs[0], binary, card, max_batch)
    return ParsedInfer(request.id, list(torch.from_numpy(array).unbind(0)),
                       _binary_output(request))


def _input_array(tensor: InferInput, binary: memoryview, card: ModelCard,
                 max_batch: int) -> np.ndarray:
    spec = card.input
    expected = [spec.channels, spec.height, spec.width]
    if len(tensor.shape) != 4 or tensor.shape[1:] != expected:
        raise InvalidInputError(
            f"input {INPUT_NAME!r} must have shape [N, {', '.join(map(str, expected))}], "
            f"got {tensor.shape}")
    n = tensor.shape[0]
    if not 1 <= n <= max_batch:
        raise InvalidInputError(f"the batch must hold 1 to {max_batch} images, got {n}")
    dtype = INPUT_DATATYPES.get(tensor.datatype)
    if dtype is None:
        raise InvalidInputError(
            f"input datatype must be one of {', '.join(INPUT_DATATYPES)}, got "
            f"{tensor.datatype!r}")
    count = math.prod(tensor.shape)
    size = (tensor.parameters or {}).get("binary_data_size")
    if size is not None:
        if tensor.data is not None:
            raise InvalidInputError("an input carries either data or binary_data_size")
        if not isinstance(size, int) or size != count * np.dtype(dtype).itemsize \
                or size != len(binary):
            raise InvalidInputError(
                f"binary_data_size must be {count * np.dtype(dtype).itemsize} bytes and match "
                "the binary part of the body")
        flat = np.frombuffer(binary, dtype=dtype)
    else:
        if binary.nbytes:
            raise InvalidInputError("binary data after the header, but no binary_data_size")
        flat = _json_data(tensor.data, dtype, count)
    return _to_unit(flat, tensor.datatype).reshape(tensor.shape)


def _json_data(data: list[object] | None, dtype: str, count: int) -> np.ndarray:
    if data is None:
        raise InvalidInputError(f"input {INPUT_NAME!r} has no data")
    try:
        flat = np.asarray(data, dtype=np.float64).ravel()
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"input {INPUT_NAME!r}: data must be numbers") from exc
    if flat.size != count:
        raise InvalidInputError(
            f"input {INPUT_NAME!r}: {flat.size} values for a shape of {count}")
    if dtype == "u1" and (np.any(flat != np.round(flat)) or flat.min() < 0 or flat.max() > 255):
        raise InvalidInputError("UINT8 data must be integers in 0..255")
    return flat


def _to_unit(flat: np.ndarray, datatype: str) -> np.ndarray:
    if datatype == "UINT8":
        return (flat.astype(np.float32) / 255.0).astype(np.float32)
    values = flat.astype(np.float32)
    if not np.all(np.isfinite(values)) or values.min() < 0.0 or values.max() > 1.0:
        raise InvalidInputError("FP32 image values must be finite and in [0, 1]")
    return values


def _binary_output(request: InferRequest) -> bool:
    default = bool((request.parameters or {}).get("binary_data_output", False))
    if not request.outputs:
        return default
    names = [o.name for o in request.outputs]
    if names != [OUTPUT_NAME]:
        raise InvalidInputError(f"unknown output(s) {names}; this model has {OUTPUT_NAME!r}")
    params = request.outputs[0].parameters or {}
    return bool(params.get("binary_data", default))


def encode_infer(model_id: str, request_id: str | None, rows: list[list[float]],
                 binary: bool) -> tuple[bytes, dict[str, str]]:
    """The response body and its headers (content type, and the JSON header's length)."""
    array = np.asarray(rows, dtype="<f4")
    output: dict[str, object] = {"name": OUTPUT_NAME, "datatype": "FP32",
                                 "shape": list(array.shape)}
    if binary:
        output["parameters"] = {"binary_data_size": int(array.nbytes)}
    else:
        output["data"] = [float(v) for row in rows for v in row]
    body: dict[str, object] = {"model_name": model_id, "model_version": VERSION,
                               "outputs": [output]}
    if request_id is not None:
        body["id"] = request_id
    header = json.dumps(body, separators=(",", ":")).encode()
    if not binary:
        return header, {"content-type": "application/json"}
    return header + array.tobytes(), {
        "content-type": "application/octet-stream",
        "inference-header-content-length": str(len(header)),
    }
