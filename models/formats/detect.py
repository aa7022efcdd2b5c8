"""Which kind of model file this is, read from its content (never from its name).

=================  ==========================================================  =========
format             how it is recognised                                         extension
=================  ==========================================================  =========
``torch-export``   zip with ``archive_format`` (``pt2``) and ``models/*.json``  ``.pt2``
``torchscript``    zip with ``code/`` and ``constants.pkl``                     ``.pt``
``pth``            zip with ``data.pkl`` only (``torch.save`` of a state dict)  ``.pth``
                   or the legacy (pre-1.6) ``torch.save`` stream
``safetensors``    8-byte little-endian header length, then a JSON header       ``.safetensors``
``onnx``           a ``ModelProto`` protobuf (field 1, ``ir_version``, first)   ``.onnx``
=================  ==========================================================  =========

A plain Python pickle is refused here with :class:`~models.errors.UnsafeModelFileError`:
unpickling can run any code the uploader wrote. A ``torch.save(model)`` of a whole module is
a ``pth``-shaped zip; it is refused when :func:`torch.load` with ``weights_only=True``
meets the module's class (see :mod:`models.formats.weights`).
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Final, Literal

from models.errors import InvalidModelFileError, UnsafeModelFileError
from models.formats.archive import ZipMembers

ModelFormat = Literal["torch-export", "torchscript", "pth", "safetensors", "onnx"]

FORMATS: Final[tuple[ModelFormat, ...]] = (
    "torch-export",
    "torchscript",
    "onnx",
    "safetensors",
    "pth",
)
EXTENSIONS: Final[dict[str, str]] = {
    "torch-export": ".pt2",
    "torchscript": ".pt",
    "onnx": ".onnx",
    "safetensors": ".safetensors",
    "pth": ".pth",
}
#: Formats that carry weights only and need ``card.architecture``.
WEIGHT_FORMATS: Final[frozenset[str]] = frozenset({"safetensors", "pth"})

SUPPORTED = (
    "torch.export programs (.pt2), TorchScript (torch.jit.save), ONNX, or weights for an "
    "allow-listed architecture as safetensors or a torch.save(state_dict) .pth"
)

# ``torch.save(..., _use_new_zipfile_serialization=False)`` starts with the pickled magic
# number 0x1950a86a20f9469cfc6c (protocol 2, LONG1 of 10 bytes).
_LEGACY_TORCH_MAGIC = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"
# Opcodes a protocol 0/1 pickle starts with: MARK, GLOBAL, EMPTY_LIST, EMPTY_DICT, INT, ...
_PICKLE_V0_FIRST = frozenset(b"(c]}IJKLNFSVX")

PICKLE_REFUSED = (
    "the file is a Python pickle, and unpickling runs whatever code its author put in it; "
    "RobustDx never loads pickles. Upload the weights (safetensors, or "
    "torch.save(model.state_dict()) as .pth) with card.architecture, or export the model "
    "with torch.export, TorchScript or ONNX"
)


def detect_format(path: Path) -> ModelFormat:
    """The model format of the file at ``path``, from its content.

    Raises:
        UnsafeModelFileError: a plain pickle.
        InvalidModelFileError: empty, or none of the supported formats.
    """
    size = path.stat().st_size
    if size == 0:
        raise InvalidModelFileError("the model file is empty")
    with path.open("rb") as fh:
        head = fh.read(64)
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        return _detect_zip(path)
    if head.startswith(_LEGACY_TORCH_MAGIC):
        return "pth"
    if _is_pickle(path, head, size):
        raise UnsafeModelFileError(PICKLE_REFUSED, {"detected": "pickle"})
    if _is_safetensors(head, size):
        return "safetensors"
    if _is_onnx(head):
        return "onnx"
    raise InvalidModelFileError(
        f"unrecognised model file (starts with {head[:8]!r}); supported: {SUPPORTED}",
        {"supported": list(FORMATS)},
    )


def _detect_zip(path: Path) -> ModelFormat:
    members = ZipMembers.read(path)
    if members.has("archive_format") or (members.has(".data/version") and members.under("models/")):
        return "torch-export"
    if members.has("constants.pkl") or members.under("code/"):
        return "torchscript"
    if members.has("data.pkl"):
        return "pth"
    raise InvalidModelFileError(
        "a zip archive that is not a PyTorch model archive (no archive_format, code/ or "
        f"data.pkl inside); supported: {SUPPORTED}",
        {"supported": list(FORMATS)},
    )


def _is_pickle(path: Path, head: bytes, size: int) -> bool:
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return True
    if head[:1] and head[0] in _PICKLE_V0_FIRST:
        with path.open("rb") as fh:
            fh.seek(size - 1)
            return fh.read(1) == b"."  # STOP
    return False


def _is_safetensors(head: bytes, size: int) -> bool:
    if len(head) < 9:
        return False
    (header_len,) = struct.unpack("<Q", head[:8])
    return 2 <= header_len <= size - 8 and head[8:9] == b"{"


def _is_onnx(head: bytes) -> bool:
    # ModelProto field 1 (ir_version, varint): tag 0x08, then a small version number.
    return len(head) >= 2 and head[0] == 0x08 and 1 <= head[1] <= 64
