"""The operators a model graph may call: an allow-list of namespaces, checked by name.

TorchScript and torch.export graphs call registered operators, and any library loaded in
the process can register more (torchvision registers ``image::read_file``, which returns a
file's bytes, as soon as it is imported). A denylist is always one library behind, so a
graph may call only operators of these namespaces, each kept for a reason:

=============  ===========================================================================
namespace      why a diagnostic classifier needs it
=============  ===========================================================================
``aten``       PyTorch's tensor operators: convolution, pooling, linear, activations,
               normalization, reshaping, arithmetic. Every network is made of these.
``prim``       TorchScript's language primitives: constants, lists, tuples, attribute
               access, ``If``/``Loop``, method and function calls, raising exceptions.
``prims``      The primitive decompositions torch.export may leave in a program.
=============  ===========================================================================

Refused, one by one, among namespaces a process may have registered: ``image`` and
``torchvision`` (file decoding and reading, and detection operators such as ``nms`` and
``roi_align`` that a classifier does not call), ``profiler`` and ``cuda`` (process-wide
profiler and stream state), ``quantized``, ``_quantized``, ``quantization``, ``mkldnn``,
``mkldnn_prepacked``, ``onednn``, ``mkl`` and ``sparse`` (backend kernels with
pre-packed, opaque state, reached only through custom classes), ``c10d``,
``_c10d_functional``, ``symm_mem`` and ``_dtensor`` (network communication),
``static_runtime``, ``inductor``, ``inductor_prims`` and ``export`` (compiler internals),
``debugprims`` (``load_tensor`` reads a file), ``onnx``, ``rngprims``, ``_test``, ``_native``
and every namespace nobody has thought of yet.

Inside the allowed namespaces, these operators are refused too (:data:`DENIED_OPERATORS`):
``aten::save`` writes a file and ``aten::from_file`` reads one; ``prim::rpc_async``,
``prim::rpc_sync`` and ``prim::rpc_remote`` call other machines; ``prim::Print`` and
``aten::_print`` write to the server's logs, where patient images must never go;
``aten::manual_seed`` and ``aten::seed`` reset the random generator every other model in
the process shares.

The check reads names only (``"image::read_file"``), never resolves them against the
operators registered in the process, so it gives the same answer whichever libraries are
imported.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from models.errors import UnsafeModelFileError

ALLOWED_NAMESPACES: Final[frozenset[str]] = frozenset({"aten", "prim", "prims"})

DENIED_OPERATORS: Final[frozenset[str]] = frozenset(
    {
        "aten::save",
        "aten::from_file",
        "aten::_print",
        "aten::manual_seed",
        "aten::seed",
        "prim::Print",
        "prim::rpc_async",
        "prim::rpc_sync",
        "prim::rpc_remote",
    }
)

#: The bare names of :data:`DENIED_OPERATORS`, for method calls in TorchScript source
#: (``x.save(path)`` resolves to ``aten::save``) where the namespace is implicit.
DENIED_BARE_NAMES: Final[frozenset[str]] = frozenset(
    name.split("::", 1)[1] for name in DENIED_OPERATORS
)

_LISTED = 5


def is_allowed(qualified: str) -> bool:
    """Whether ``"namespace::name"`` (an overload suffix ``.default`` is ignored) may run."""
    namespace, sep, name = qualified.partition("::")
    if not sep or namespace not in ALLOWED_NAMESPACES:
        return False
    return f"{namespace}::{name.split('.', 1)[0]}" not in DENIED_OPERATORS


def check_operators(kinds: Iterable[str], where: str) -> None:
    """Raise when any operator (``"image::read_file"``) is outside the allow-list.

    Raises:
        UnsafeModelFileError: naming every refused operator (``details["operators"]``).
    """
    refused = sorted({k for k in kinds if not is_allowed(k)})
    if refused:
        raise UnsafeModelFileError(
            f"the {where} calls {', '.join(refused[:_LISTED])}"
            f"{' and more' if len(refused) > _LISTED else ''}, outside the operators a "
            "diagnostic model may use (PyTorch's aten, prim and prims operators, except "
            "those that read or write files, print or reach the network)",
            {"operators": refused[:50], "allowed_namespaces": sorted(ALLOWED_NAMESPACES)},
        )


def torch_op_name(target: object) -> str:
    """``"aten::conv2d"`` for ``torch.ops.aten.conv2d.default`` (or its overload packet)."""
    for attr in ("_name", "_qualified_op_name"):
        name = getattr(target, attr, None)
        if isinstance(name, str):
            return name
    return ""
