"""Rewrite an ONNX graph as ``torch.onnx.export`` writes it into one onnx2torch converts.

Which converter, and why
------------------------
onnx2torch is kept: it builds a ``torch.fx`` graph of ordinary torch modules, so the
converted network is differentiable (attacks need input gradients), it implements every
operator a convolutional classifier exports to, and its output matches the eager model to
float precision. The alternatives were worse kept: ``onnx2pytorch`` has had no release
since 2021 and covers fewer operators, and running the graph in onnxruntime gives no
gradients. What onnx2torch lags is the opsets and a few patterns exporters now write, and
those are rewritten here, each into an equivalent graph:

- ``Identity`` nodes (the legacy exporter's constant folding writes one per deduplicated
  initializer, and onnx2torch has no converter for opset 19's ``Identity``, nor does it find
  an initializer under the Identity's output name): every use of the output is redirected
  to the input, and the node removed (kept only when it produces a graph output).
- ``Reshape`` with ``allowzero=1`` (the dynamo exporter writes it for every ``view``): when
  the target shape is a constant without zeros, ``allowzero`` cannot change the result, so
  the attribute is dropped; onnx2torch refuses it otherwise.
- ``Gelu`` (an operator since opset 20, which both exporters write for ``nn.GELU``; it has
  neither an onnx2torch converter nor a version-converter adapter to older opsets): it is
  rewritten as its definition, ``0.5 x (1 + erf(x / sqrt 2))``, or with ``approximate="tanh"``
  as ``0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3)))`` (Hendrycks and Gimpel, 2016),
  with float32 constants.
- Opsets newer than onnx2torch implements (opset 20's ``AveragePool``, opset 18's
  ``ReduceMean`` with ``axes`` as an input, opset 19's ``Shape``): :func:`candidates` yields
  the normalized graph at its own opset and then converted with ``onnx.version_converter``
  to older ones, normalized again.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    import onnx

#: Opsets to try after the file's own, newest first (onnx2torch 1.5 implements up to 17).
FALLBACK_OPSETS: Final[tuple[int, ...]] = (18, 17)


def candidates(proto: onnx.ModelProto) -> Iterator[tuple[int | None, onnx.ModelProto]]:
    """The normalized graph at its own opset (``None``), then at each fallback opset."""
    from onnx import version_converter

    base = normalize(proto)
    yield None, base
    current = default_opset(proto)
    for opset in FALLBACK_OPSETS:
        if current is not None and opset >= current:
            continue
        try:
            older = version_converter.convert_version(base, opset)
        except Exception:  # the converter has no adapter for some operator: skip this opset
            continue
        yield opset, normalize(older)


def default_opset(proto: onnx.ModelProto) -> int | None:
    for entry in proto.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return int(entry.version)
    return None


def normalize(proto: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``proto`` with the rewrites of the module doc applied to its main graph."""
    import onnx

    out = onnx.ModelProto()
    out.CopyFrom(proto)
    _bypass_identities(out.graph)
    _drop_redundant_allowzero(out.graph)
    _decompose_gelu(out.graph)
    return out


def _bypass_identities(graph: onnx.GraphProto) -> None:
    graph_outputs = {o.name for o in graph.output}
    alias: dict[str, str] = {}
    kept = []
    for node in graph.node:
        _rename_inputs(node, alias)
        if (
            node.op_type == "Identity"
            and node.domain in ("", "ai.onnx")
            and len(node.input) == 1
            and node.output[0] not in graph_outputs
        ):
            alias[node.output[0]] = node.input[0]
            continue
        kept.append(node)
    if len(kept) == len(graph.node):
        return
    del graph.node[:]
    graph.node.extend(kept)


def _rename_inputs(node: onnx.NodeProto, alias: dict[str, str]) -> None:
    """Redirect ``node``'s inputs, and those of its subgraphs (which may read outer names)."""
    if not alias:
        return
    for i, name in enumerate(node.input):
        if name in alias:
            node.input[i] = alias[name]
    for attr in node.attribute:
        graphs = [attr.g] if attr.HasField("g") else list(attr.graphs)
        for sub in graphs:
            for inner in sub.node:
                _rename_inputs(inner, alias)


def _drop_redundant_allowzero(graph: onnx.GraphProto) -> None:
    from onnx import numpy_helper

    constants = {t.name: t for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.output:
            for attr in node.attribute:
                if attr.name == "value" and attr.HasField("t"):
                    constants[node.output[0]] = attr.t
    for node in graph.node:
        if node.op_type != "Reshape" or len(node.input) < 2 or node.input[1] not in constants:
            continue
        shape = numpy_helper.to_array(constants[node.input[1]])
        if (shape == 0).any():
            continue
        keep = [a for a in node.attribute if not (a.name == "allowzero" and a.i == 1)]
        if len(keep) != len(node.attribute):
            del node.attribute[:]
            node.attribute.extend(keep)


def _decompose_gelu(graph: onnx.GraphProto) -> None:
    import math

    from onnx import helper

    if not any(n.op_type == "Gelu" and n.domain in ("", "ai.onnx") for n in graph.node):
        return
    taken = {name for n in graph.node for name in (*n.input, *n.output)}
    taken |= {t.name for t in graph.initializer}
    counter = iter(range(1 << 30))

    def fresh(stem: str) -> str:
        while (name := f"gelu_{stem}_{next(counter)}") in taken:
            pass
        taken.add(name)
        return name

    def constant(value: float) -> str:
        name = fresh("c")
        graph.initializer.append(helper.make_tensor(name, 1, [], [value]))  # 1: FLOAT
        return name

    nodes = []
    for node in graph.node:
        if node.op_type != "Gelu" or node.domain not in ("", "ai.onnx"):
            nodes.append(node)
            continue
        approximate = next((a.s.decode() for a in node.attribute if a.name == "approximate"), "")
        x, y = node.input[0], node.output[0]
        inner, gate, half = fresh("inner"), fresh("gate"), fresh("half")
        if approximate == "tanh":
            square, cube, scaled, summed = fresh("sq"), fresh("cube"), fresh("scaled"), fresh("sum")
            nodes += [
                helper.make_node("Mul", [x, x], [square]),
                helper.make_node("Mul", [square, x], [cube]),
                helper.make_node("Mul", [cube, constant(0.044715)], [scaled]),
                helper.make_node("Add", [x, scaled], [summed]),
                helper.make_node("Mul", [summed, constant(math.sqrt(2 / math.pi))], [inner]),
                helper.make_node("Tanh", [inner], [gate]),
            ]
        else:
            nodes += [
                helper.make_node("Div", [x, constant(math.sqrt(2.0))], [inner]),
                helper.make_node("Erf", [inner], [gate]),
            ]
        one_plus = fresh("one_plus")
        nodes += [
            helper.make_node("Add", [gate, constant(1.0)], [one_plus]),
            helper.make_node("Mul", [x, constant(0.5)], [half]),
            helper.make_node("Mul", [half, one_plus], [y]),
        ]
    del graph.node[:]
    graph.node.extend(nodes)
