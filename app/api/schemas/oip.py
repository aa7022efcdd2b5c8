"""Open Inference Protocol v2 (KServe / Triton HTTP) request and response bodies.

Only the parts RobustDx serves: one input tensor (``image``) and one output tensor
(``probabilities``) per model; JSON tensors (``data`` flattened in row-major order) and the
binary tensor extension (``parameters.binary_data_size``).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

#: The datatypes an input may use, and their numpy dtypes (little-endian for binary data).
INPUT_DATATYPES = {"FP32": "<f4", "UINT8": "u1"}
INPUT_NAME = "image"
OUTPUT_NAME = "probabilities"


class TensorMetadata(BaseModel):
    name: str
    datatype: str
    shape: list[int] = Field(description="-1 marks the batch dimension")


class ModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]
    parameters: dict[str, Any] = Field(default_factory=dict)


class ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


class InferInput(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: str = Field(max_length=200)
    shape: list[int] = Field(max_length=8)
    datatype: str = Field(max_length=16)
    parameters: dict[str, Any] | None = None
    data: list[Any] | None = None


class RequestedOutput(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: str = Field(max_length=200)
    parameters: dict[str, Any] | None = None


class InferRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: str | None = Field(default=None, max_length=200)
    parameters: dict[str, Any] | None = None
    inputs: list[InferInput] = Field(min_length=1, max_length=8)
    outputs: list[RequestedOutput] | None = Field(default=None, max_length=8)
