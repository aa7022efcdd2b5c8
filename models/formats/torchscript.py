"""TorchScript archives (``torch.jit.save``).

Why loading one is safe here
----------------------------
A TorchScript archive holds TorchScript source (``code/``), pickles (``data.pkl``,
``constants.pkl``, ``*.debug_pkl``) and raw tensor storages. :func:`torch.jit.load` reads
the pickles with TorchScript's own C++ unpickler, not Python's: it can build tensors,
containers and instances of the TorchScript classes compiled from ``code/``, and it cannot
import a Python module or call a Python callable. The source is compiled by the TorchScript
compiler and runs in its interpreter, which can call registered operators only.

That interpreter runs some of the file's code *while loading*: a class's ``__setstate__``
is called when its object is unpickled. Among the registered operators, ``aten::save``
writes a file and ``aten::from_file`` reads one. So, before :func:`torch.jit.load`, the
source in ``code/`` is refused when it names one of those operators
(:data:`~models.formats.operators.DENIED_NAMES`); after loading, every method graph of every
submodule is checked again by operator kind.

``torch.jit.load`` is deprecated in torch 2.14 and warns; the warning is filtered around
that one call only.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path

import torch

from models.errors import InvalidModelFileError, UnsafeModelFileError
from models.formats.archive import ZipMembers
from models.formats.operators import DENIED_NAMES, check_operators

#: torch 2.14's deprecation notices for TorchScript entry points.
DEPRECATION = r"`torch\.jit\.\w+` is deprecated"


def check_source(path: Path) -> None:
    """Refuse TorchScript source that names a file-touching operator (see module doc)."""
    members = ZipMembers.read(path)
    for name in members.under("code/"):
        if not name.endswith(".py"):
            continue
        text = members.read_member(name).decode("utf-8", errors="replace")
        match = DENIED_NAMES.search(text)
        if match:
            raise UnsafeModelFileError(
                f"the TorchScript code in {name} calls '{match.group(1)}', an operator that "
                "reads or writes files; a diagnostic model may only compute on tensors",
                {"member": name, "operator": match.group(1)},
            )


def load_torchscript(path: Path, device: torch.device) -> torch.jit.ScriptModule:
    check_source(path)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=DEPRECATION, category=FutureWarning)
            module = torch.jit.load(str(path), map_location=device)
    except Exception as exc:  # torch raises RuntimeError and friends on bad archives
        raise InvalidModelFileError(f"torch.jit.load could not read the archive: {exc}") from exc
    check_operators(_node_kinds(module), "TorchScript model")
    return module


def _node_kinds(module: torch.jit.ScriptModule) -> Iterator[str]:
    for sub in module.modules():
        cmod = getattr(sub, "_c", None)
        if cmod is None:
            continue
        for method in cmod._method_names():
            yield from _graph_kinds(cmod._get_method(method).graph)


def _graph_kinds(graph: torch.Graph) -> Iterator[str]:
    for node in graph.nodes():
        yield node.kind()
        for block in node.blocks():
            yield from _block_kinds(block)


def _block_kinds(block: torch.Block) -> Iterator[str]:
    for node in block.nodes():
        yield node.kind()
        for inner in node.blocks():
            yield from _block_kinds(inner)
