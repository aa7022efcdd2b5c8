"""The serialized graph of a torch.export program (``models/*.json``), checked before loading.

A program's JSON names each node's operator as a dotted path (``torch.ops.aten.conv2d.default``)
that ``torch.export.load`` resolves with ``getattr`` from the ``torch``, ``operator`` or
``math`` module: a path like ``torch.load`` or ``torch.ops.image.read_file`` would resolve to
that function. The JSON also carries Python source and expressions that loading evaluates:
``guards_code`` is ``exec``-uted when the program is turned into a module, and symbolic
shape expressions (``expr_str``, range-constraint names) go through ``sympy.sympify``,
which is ``eval``. So, before anything is loaded, :func:`check_program_json`:

- walks every node of every graph (higher-order operators such as ``cond``, ``map`` and
  ``while_loop`` carry their branches and bodies as nested graphs), and every operator
  passed as an argument, and accepts only
  targets of the form ``torch.ops.<namespace>.<op>[.<overload>]`` allowed by
  :mod:`models.formats.operators`, the control-flow operators of :data:`HIGHER_ORDER`, and
  the pure scalar functions of :data:`PYTHON_TARGETS` (symbolic-shape arithmetic);
- refuses any ``guards_code`` (``torch.export.export`` writes none for a plain program, and
  it is Python source);
- accepts a symbolic expression only when every name in it is a shape symbol (``s77``) or
  one of the shape functions torch's deserializer defines, with no quotes, attributes or
  dunder names, so that ``eval`` can only build arithmetic.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any, Final

from models.errors import InvalidModelFileError, UnsafeModelFileError
from models.formats.operators import check_operators

#: Control flow a classifier may be exported with; their bodies are checked as graphs.
HIGHER_ORDER: Final[frozenset[str]] = frozenset(
    {"cond", "while_loop", "map_impl", "scan", "wrap_with_set_grad_enabled", "wrap_with_autocast"}
)

#: Python functions of symbolic sizes (``x.shape[0] * 2``) that a program may call.
PYTHON_TARGETS: Final[frozenset[str]] = frozenset(
    {
        f"_operator.{n}"
        for n in (
            "getitem",
            "add",
            "sub",
            "mul",
            "floordiv",
            "truediv",
            "mod",
            "neg",
            "pos",
            "pow",
            "eq",
            "ne",
            "lt",
            "le",
            "gt",
            "ge",
            "and_",
            "or_",
            "not_",
            "abs",
        )
    }
    | {f"math.{n}" for n in ("ceil", "floor", "trunc", "sqrt")}
    | {
        f"torch.{n}"
        for n in (
            "sym_int",
            "sym_float",
            "sym_max",
            "sym_min",
            "sym_not",
            "sym_ite",
            "sym_sqrt",
            "sym_sum",
            "_sym_sqrt",
        )
    }
)

_OP_TARGET: Final[re.Pattern[str]] = re.compile(r"^torch\.ops\.(\w+)\.(\w+)(?:\.(\w+))?$")
_HOP_TARGET: Final[re.Pattern[str]] = re.compile(r"^torch\.ops\.higher_order\.(\w+)$")
#: Names sympify may see: shape symbols and torch.utils._sympy.functions' classes.
_SYMBOL: Final[re.Pattern[str]] = re.compile(r"^[a-z]{1,3}\d+$")
_SHAPE_FUNCTIONS: Final[frozenset[str]] = frozenset(
    {
        "FloorDiv",
        "ModularIndexing",
        "Where",
        "PythonMod",
        "Mod",
        "CleanDiv",
        "CeilToInt",
        "FloorToInt",
        "CeilDiv",
        "LShift",
        "RShift",
        "PowByNatural",
        "FloatPow",
        "FloatTrueDiv",
        "IntTrueDiv",
        "IsNonOverlappingAndDenseIndicator",
        "TruncToFloat",
        "TruncToInt",
        "RoundToInt",
        "RoundDecimal",
        "ToFloat",
        "Identity",
        "Max",
        "Min",
        "Abs",
        "Eq",
        "Ne",
        "Lt",
        "Le",
        "Gt",
        "Ge",
        "And",
        "Or",
        "Not",
        "oo",
        "True",
        "False",
        "Integer",
        "Float",
        "Rational",
        # sympy's srepr, in which torch writes expressions: Symbol('s77', positive=True, ...)
        "Symbol",
        "Add",
        "Mul",
        "Pow",
        "precision",
        "positive",
        "negative",
        "nonnegative",
        "nonpositive",
        "integer",
        "real",
        "finite",
        "infinite",
        "zero",
        "nonzero",
        "even",
        "odd",
        "rational",
        "commutative",
    }
)
#: A quoted string in an expression may only be a symbol name or a number.
_QUOTED: Final[re.Pattern[str]] = re.compile(r"'([a-z]{1,3}\d+|[0-9.eE+\-]+)'")
_EXPRESSION: Final[re.Pattern[str]] = re.compile(r"^[\w\s+\-*/%(),.<>=!&|~^]*$")
_LISTED = 5


def check_program_json(name: str, data: bytes) -> None:
    """Refuse a serialized program that could run more than allow-listed operators."""
    try:
        program = json.loads(data)
    except ValueError as exc:
        raise InvalidModelFileError(f"the .pt2 member {name} is not JSON") from exc
    if not isinstance(program, dict):
        raise InvalidModelFileError(f"the .pt2 member {name} is not an exported program")
    if program.get("guards_code"):
        raise UnsafeModelFileError(
            "the exported program carries guard code (Python source that loading would "
            "execute); export the model with torch.export.export and save it with "
            "torch.export.save",
            {"member": name},
        )
    operators: set[str] = set()
    foreign: set[str] = set()
    for target in _targets(program):
        _classify(target, operators, foreign)
    if foreign:
        found = sorted(foreign)
        raise UnsafeModelFileError(
            f"the exported program calls {', '.join(found[:_LISTED])}, outside the operators "
            "a diagnostic model may use (PyTorch's aten and prims operators and control flow)",
            {"operators": found[:50]},
        )
    check_operators(operators, "exported program")
    for expression in _expressions(program):
        _check_expression(expression)


def _classify(target: str, operators: set[str], foreign: set[str]) -> None:
    if target in PYTHON_TARGETS:
        return
    hop = _HOP_TARGET.match(target)
    if hop:
        if hop.group(1) not in HIGHER_ORDER:
            foreign.add(f"higher_order::{hop.group(1)}")
        return
    op = _OP_TARGET.match(target)
    if op:
        operators.add(f"{op.group(1)}::{op.group(2)}")
    else:
        foreign.add(target[:120])


def _targets(tree: Any) -> Iterator[str]:
    """Every operator name the loader resolves, at any depth (nested graphs included).

    That is each node's ``target`` (nothing else in the schema has one) and each argument
    passed as an operator (``as_operator``), which is resolved the same way.
    """
    stack = [tree]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for key in ("target", "as_operator"):
                if key in item:
                    if not isinstance(item[key], str):
                        raise InvalidModelFileError(
                            f"a node of the exported program has a {key} that is not a name"
                        )
                    yield item[key]
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def _expressions(tree: Any) -> Iterator[str]:
    """Strings loading hands to ``sympy.sympify``: ``expr_str`` values, constraint names."""
    stack = [tree]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for key, value in item.items():
                if key == "expr_str" and isinstance(value, str):
                    yield value
                elif key == "range_constraints" and isinstance(value, dict):
                    yield from (str(k) for k in value)
                stack.append(value)
        elif isinstance(item, list):
            stack.extend(item)


def _check_expression(expression: str) -> None:
    unquoted = _QUOTED.sub(" s0 ", expression)
    names = re.findall(r"[A-Za-z_]\w*", unquoted)
    bad = [n for n in names if n not in _SHAPE_FUNCTIONS and not _SYMBOL.match(n)]
    if bad or not _EXPRESSION.match(unquoted) or "__" in expression or len(expression) > 4096:
        raise UnsafeModelFileError(
            "the exported program has a symbolic shape expression that is not arithmetic over "
            "shape symbols (loading would evaluate it as Python)",
            {"names": sorted(set(bad))[:_LISTED]},
        )
