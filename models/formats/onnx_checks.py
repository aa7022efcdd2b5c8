"""What an ONNX upload may contain: standard operators and tensors that live inside the file.

Two things in an ONNX protobuf reach beyond the numbers it carries:

- **External data.** Any ``TensorProto`` (an initializer, a sparse initializer's values or
  indices, a ``Constant`` node's ``value``/``sparse_value``, a tensor in any attribute of any
  node, in the bodies of ``If``/``Loop``/``Scan``, in a local function or a training-info
  graph) may say ``data_location: EXTERNAL`` with a ``location`` path. ``onnx.load``,
  ``onnx.numpy_helper.to_array`` (which onnx2torch calls for ``Constant`` attributes) and
  the ONNX checker then open that path relative to a base directory, which for an upload is
  the server's working directory: a ``Constant`` pointing at ``data/dev-api-key`` turns a
  server file into the model's logits, and the checker's complaints would say whether a path
  exists and how large it is. Every external reference is therefore refused, before anything
  reads, converts or checks the tensors, with one fixed message that names no path and
  says nothing about the referenced file.
- **Operator domains.** A node names its operator by ``(domain, op_type)``. Only the
  default domain (``""``, also spelled ``"ai.onnx"``) is the standard operator set that
  onnx2torch maps to torch code of its own; any other domain (``com.microsoft``,
  ``ai.onnx.ml``, a custom one) is an operator set that converter does not implement or that
  a runtime would resolve to a library's kernels, so it is refused, naming the operator.
  Local functions (``ModelProto.functions``) are refused too: their nodes are called
  through a custom domain, and onnx2torch does not inline them.

:func:`check_references` walks the whole message tree by protobuf reflection rather than
the fields known today, so a tensor nested in a field added later is found as well.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Final

from models.errors import UnsafeModelFileError

if TYPE_CHECKING:
    import onnx
    from google.protobuf.message import Message

#: The standard operator set, under both of its names.
ALLOWED_DOMAINS: Final[frozenset[str]] = frozenset({"", "ai.onnx"})

#: The one message for every external reference (see the module doc for why it is fixed).
EXTERNAL_DATA_REFUSED: Final[str] = (
    "the ONNX model refers to tensor data outside the uploaded file (external data), which "
    "RobustDx never reads; save the model with every tensor inside the file (torch.onnx."
    "export(..., external_data=False), or onnx.save_model(model, path, "
    "save_as_external_data=False) after onnx.load_external_data_for_model)"
)

_LISTED = 5


def check_references(proto: onnx.ModelProto) -> None:
    """Refuse external data, non-standard operator domains and local functions.

    Raises:
        UnsafeModelFileError: with :data:`EXTERNAL_DATA_REFUSED` for any external tensor;
            naming the operators (``domain::op_type``) for a non-standard domain.
    """
    import onnx

    foreign: set[str] = set()
    for message in _messages(proto):
        if isinstance(message, onnx.TensorProto):
            if message.data_location == onnx.TensorProto.EXTERNAL or len(message.external_data):
                raise UnsafeModelFileError(EXTERNAL_DATA_REFUSED, {"reason": "external_data"})
        elif isinstance(message, onnx.NodeProto) and message.domain not in ALLOWED_DOMAINS:
            foreign.add(f"{message.domain}::{message.op_type}")
    if foreign:
        found = sorted(foreign)
        raise UnsafeModelFileError(
            f"the ONNX model calls operators outside the standard ONNX operator set: "
            f"{', '.join(found[:_LISTED])}; only the default domain ('' / 'ai.onnx') is "
            "accepted",
            {"operators": found[:50]},
        )
    if len(proto.functions):
        names = sorted(f"{f.domain}::{f.name}" for f in proto.functions)
        raise UnsafeModelFileError(
            f"the ONNX model defines local functions ({', '.join(names[:_LISTED])}); export "
            "it without them (they are called through a custom operator domain)",
            {"functions": names[:50]},
        )


def _messages(root: Message) -> Iterator[Message]:
    """Every message in the tree under ``root`` (``root`` included), depth first.

    Iterative, so a deeply nested graph (an ``If`` in a ``Loop`` in ...) cannot exhaust
    Python's recursion limit.
    """
    from google.protobuf.descriptor import FieldDescriptor
    from google.protobuf.message import Message as ProtoMessage

    stack: list[Message] = [root]
    while stack:
        message = stack.pop()
        yield message
        for field, value in message.ListFields():
            if field.type != FieldDescriptor.TYPE_MESSAGE:
                continue
            if isinstance(value, ProtoMessage):
                stack.append(value)
            elif hasattr(value, "values") and callable(value.values):  # a map field
                stack.extend(v for v in value.values() if isinstance(v, ProtoMessage))
            else:  # a repeated field
                stack.extend(value)
