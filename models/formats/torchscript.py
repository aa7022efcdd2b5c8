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
is called when its object is unpickled. So, before :func:`torch.jit.load`, the archive's
members, pickles and source are checked against the operator allow-list without running
anything (:mod:`models.formats.torchscript_source`). After loading, every graph the model
can run is checked again by the operator kinds the compiler resolved: every method of
every submodule (``forward``, ``__setstate__``, ``__getstate__``, exported methods), each
also with its calls inlined (so called functions and methods of TorchScript classes are
seen), every nested block and every subgraph attribute (:func:`graph_operators`).

``torch.jit.load`` is deprecated in torch 2.14 and warns; the warning is filtered around
that one call only.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path

import torch

from models.errors import InvalidModelFileError
from models.formats.archive import ZipMembers
from models.formats.operators import check_operators
from models.formats.torchscript_source import check_archive

#: torch 2.14's deprecation notices for TorchScript entry points.
DEPRECATION = r"`torch\.jit\.\w+` is deprecated"


def check_source(path: Path) -> None:
    """Refuse an archive whose members, pickles or source reach past the allow-list."""
    check_archive(ZipMembers.read(path))


def load_torchscript(path: Path, device: torch.device) -> torch.jit.ScriptModule:
    check_source(path)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=DEPRECATION, category=FutureWarning)
            module = torch.jit.load(str(path), map_location=device)
    except Exception as exc:  # torch raises RuntimeError and friends on bad archives
        raise InvalidModelFileError(f"torch.jit.load could not read the archive: {exc}") from exc
    check_operators(module_operators(module), "TorchScript model")
    return module


def module_operators(module: torch.jit.ScriptModule) -> Iterator[str]:
    """The operator kinds of every graph of every method of ``module`` and its submodules."""
    for sub in module.modules():
        cmod = getattr(sub, "_c", None)
        if cmod is None:
            continue
        for name in cmod._method_names():
            method = cmod._get_method(name)
            yield from graph_operators(method.graph)
            yield from graph_operators(_inlined(sub, name, method.graph))


def _inlined(sub: torch.nn.Module, name: str, graph: torch.Graph) -> torch.Graph:
    script_method = getattr(sub, name, None)
    inlined = getattr(script_method, "inlined_graph", None)
    if isinstance(inlined, torch.Graph):
        return inlined
    copy = graph.copy()
    torch._C._jit_pass_inline(copy)
    return copy


def graph_operators(graph: torch.Graph) -> Iterator[str]:
    """Every node kind in ``graph``: nested blocks and subgraph attributes included."""
    stack: list[torch.Block | torch.Graph] = [graph]
    while stack:
        for node in stack.pop().nodes():
            yield node.kind()
            stack.extend(node.blocks())
            for attr in node.attributeNames():
                kind = node.kindOf(attr)
                if kind == "g":
                    stack.append(node.g(attr))
                elif kind == "gs":
                    stack.extend(node.gs(attr))
