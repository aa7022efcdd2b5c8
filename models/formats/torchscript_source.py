"""What a TorchScript archive may hold, checked before ``torch.jit.load`` runs any of it.

``torch.jit.load`` compiles the archive's source (``code/**.py``) and runs part of it while
loading (a class's ``__setstate__`` is called when its object is unpickled), so the
archive is checked first, without running anything:

- **Members.** Only what ``torch.jit.save`` writes: the pickles ``data.pkl`` and
  ``constants.pkl``, source and its debug pickles under ``code/``, tensor storages under
  ``data/`` and ``constants/``, the version markers and ``extra/`` files (bytes that are
  never interpreted). Anything else (mobile bytecode, stray members) is refused.
- **Pickled classes.** The pickles are read opcode by opcode (:mod:`pickletools`, which
  executes nothing); one that names a C++ custom class (``torch.classes.*``, whose
  ``__setstate__`` is native code of whatever library registered it) is refused.
- **Operators in the source.** The source is parsed with :mod:`ast` (TorchScript's
  serialized code is Python syntax) and every operator it can reach is named:
  ``torch.X`` is ``aten::X`` (``torch.autograd.X`` too), ``ops.NS.X`` and ``torch.ops.NS.X``
  are ``NS::X``, ``math.X`` is ``aten::X``, and the global forms ``print`` and ``rpc_*`` are
  ``prim::Print`` and ``prim::rpc_*``. Those are checked against
  the allow-list (:mod:`models.formats.operators`). ``ops`` or ``torch`` used any other way
  (passed to ``getattr``, aliased) is refused, since it could reach any namespace. A method
  or ``getattr`` name that is a denied operator's bare name (``x.save(...)`` resolves to
  ``aten::save``) is refused as well.

After loading, the graphs are checked again by operator kind
(:mod:`models.formats.torchscript`): that check sees what the compiler resolved, this one
runs before anything can execute.
"""

from __future__ import annotations

import ast
import pickletools
import re
from collections.abc import Iterator
from typing import Final

from models.errors import InvalidModelFileError, UnsafeModelFileError
from models.formats.archive import ZipMembers
from models.formats.operators import DENIED_BARE_NAMES, check_operators

_MEMBERS: Final[re.Pattern[str]] = re.compile(
    r"^(data\.pkl|constants\.pkl|version|byteorder|\.data/version|\.data/serialization_id"
    r"|code/.+\.py|code/.+\.py\.debug_pkl|data/\d+|constants/\d+|extra/.+"
    r"|traced_inputs\.pkl|traced_inputs/\d+)$"
)
#: TorchScript's global special forms that are operators (the rest are language forms).
_GLOBAL_FORMS: Final[dict[str, str]] = {
    "print": "prim::Print",
    "rpc_async": "prim::rpc_async",
    "rpc_sync": "prim::rpc_sync",
    "rpc_remote": "prim::rpc_remote",
    "remote": "prim::rpc_remote",
}
_LISTED = 5


def check_archive(members: ZipMembers) -> None:
    """Refuse a TorchScript archive that could reach past the allow-list (module doc)."""
    unexpected = sorted(n for n in members.names if not _MEMBERS.match(n))
    if unexpected:
        raise UnsafeModelFileError(
            "the TorchScript archive has members torch.jit.save does not write: "
            f"{unexpected[:_LISTED]}; save the model with torch.jit.save",
            {"members": unexpected[:20]},
        )
    for name in sorted(members.names):
        if name.endswith((".pkl", ".debug_pkl")):
            _check_pickle(name, members.read_member(name))
    operators: set[str] = set()
    for name in members.under("code/"):
        if name.endswith(".py"):
            operators |= source_operators(name, members.read_member(name))
    check_operators(operators, "TorchScript code")


def source_operators(name: str, data: bytes) -> set[str]:
    """The operators the serialized source ``data`` (member ``name``) can call."""
    try:
        tree = ast.parse(data.decode("utf-8"), filename=name)
    except (SyntaxError, UnicodeDecodeError, ValueError) as exc:
        raise InvalidModelFileError(f"the TorchScript code in {name} cannot be parsed") from exc
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            found |= _name_operators(node, parents, name)
        elif isinstance(node, ast.Attribute) and node.attr in DENIED_BARE_NAMES:
            found.add(f"aten::{node.attr}")
        elif isinstance(node, ast.Call) and _called_name(node) == "getattr":
            found |= {f"aten::{s}" for s in _literal_strings(node) if s in DENIED_BARE_NAMES}
    return found


def _name_operators(node: ast.Name, parents: dict[ast.AST, ast.AST], member: str) -> set[str]:
    if node.id in _GLOBAL_FORMS:
        return {_GLOBAL_FORMS[node.id]}
    if node.id == "__torch__":
        chain = _chain(node, parents)
        if chain[1:3] == ["torch", "classes"]:
            raise UnsafeModelFileError(
                f"the TorchScript code in {member} uses a C++ custom class "
                f"({'.'.join(chain[1:5])}); a diagnostic model may only compute on tensors",
                {"member": member},
            )
        return set()
    if node.id not in ("ops", "torch", "math"):
        return set()
    chain = _chain(node, parents)
    if chain[:2] == ["torch", "classes"]:
        raise UnsafeModelFileError(
            f"the TorchScript code in {member} uses a C++ custom class "
            f"({'.'.join(chain[:4])}); a diagnostic model may only compute on tensors",
            {"member": member},
        )
    if chain[:2] == ["torch", "ops"]:
        chain = chain[1:]
    if chain[:2] == ["torch", "autograd"]:
        chain = ["torch", *chain[2:]]
    if chain[0] == "ops" and len(chain) >= 3:
        return {f"{chain[1]}::{chain[2]}"}
    if chain[0] in ("torch", "math") and len(chain) >= 2:  # both resolve to aten
        return {f"aten::{chain[1]}"}
    raise UnsafeModelFileError(
        f"the TorchScript code in {member} uses '{node.id}' other than to call an operator "
        "by name, which could reach any operator namespace",
        {"member": member},
    )


def _chain(node: ast.Name, parents: dict[ast.AST, ast.AST]) -> list[str]:
    """``["ops", "image", "read_file"]`` for the attribute chain ``node`` starts."""
    chain = [node.id]
    current: ast.AST = node
    while isinstance(parent := parents.get(current), ast.Attribute) and parent.value is current:
        chain.append(parent.attr)
        current = parent
    return chain


def _called_name(node: ast.Call) -> str:
    return node.func.id if isinstance(node.func, ast.Name) else ""


def _literal_strings(node: ast.Call) -> Iterator[str]:
    for arg in node.args:
        if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
            yield arg.value


def _check_pickle(name: str, data: bytes) -> None:
    """Refuse a pickle that names a C++ custom class.

    A class name cannot be computed while unpickling, so it is in the stream as a literal
    string (a ``GLOBAL`` argument, or a string a ``STACK_GLOBAL`` takes, memoized or not):
    every string the stream holds is looked at.
    """
    try:
        for _opcode, arg, _pos in pickletools.genops(data):
            if isinstance(arg, str) and "torch.classes" in arg:
                raise UnsafeModelFileError(
                    f"the TorchScript archive's {name} holds an object of a C++ custom class; "
                    "a diagnostic model may only hold tensors and TorchScript objects",
                    {"member": name},
                )
    except (ValueError, EOFError) as exc:  # pickletools' errors on a malformed stream
        raise InvalidModelFileError(f"the TorchScript archive's {name} is not a pickle") from exc
