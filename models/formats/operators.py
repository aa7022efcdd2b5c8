"""Operators a model graph may not contain.

TorchScript and torch.export graphs call registered operators only, never Python, but a
few registered operators reach outside the tensors: ``aten::save`` writes a file,
``aten::from_file`` and ``debugprims::load_tensor`` read one. A diagnostic model has no
business doing either, so graphs that name them are refused before they run.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final

from models.errors import UnsafeModelFileError

DENIED_OPERATORS: Final[frozenset[str]] = frozenset(
    {"aten::save", "aten::from_file", "debugprims::load_tensor"}
)

#: The bare names, as they appear in serialized TorchScript source (``torch.save(...)``,
#: ``ops.aten.from_file(...)``). Matching the bare word also catches aliases, since
#: TorchScript cannot build an operator name at run time.
DENIED_NAMES: Final[re.Pattern[str]] = re.compile(r"\b(save|from_file|load_tensor)\b")


def check_operators(kinds: Iterable[str], where: str) -> None:
    """Raise when any operator kind (``"aten::save"``) is denied."""
    found = sorted(set(kinds) & DENIED_OPERATORS)
    if found:
        raise UnsafeModelFileError(
            f"the {where} calls {', '.join(found)}, which read or write files; "
            "a diagnostic model may only compute on tensors",
            {"operators": found},
        )


def torch_op_name(target: object) -> str:
    """``"aten::save"`` for ``torch.ops.aten.save.default`` (or its overload packet)."""
    for attr in ("_name", "_qualified_op_name"):
        name = getattr(target, attr, None)
        if isinstance(name, str):
            return name
    return ""
