"""Reading the activations of a network at tap points, whatever kind of network it is.

See :mod:`workers.analyses.layers` for how the points are found. Eager networks are read
with forward hooks, TorchScript networks through a copy of their forward graph cut in two
after the tapped values (the second part takes them as inputs), and ``torch.fx`` graphs by
an interpreter that records the tapped nodes. :class:`LayerReader` runs the wrapper's
forward (normalization and fixed-batch splitting included) with taps and returns the logits
and the tapped tensors of that batch only; the caller's model is never modified, except
that eager networks carry forward hooks for the duration of one call.
"""

from __future__ import annotations

import copy
import warnings
import weakref
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from models.wrapper import DiagnosticModel
from workers.analyses.layers import (
    NODE_PREFIX,
    LayerAccessError,
    TapPoint,
    graph_scope_nodes,
    net_kind,
)


def _first_tensor(value: Any) -> Tensor:
    if isinstance(value, Tensor):
        return value
    if isinstance(value, (tuple, list)) and value and isinstance(value[0], Tensor):
        return value[0]
    raise LayerAccessError(f"tapped value is not a tensor ({type(value).__name__})")


class _EagerTapper:
    def __init__(self, net: nn.Module, points: Sequence[TapPoint]) -> None:
        self.points = tuple(points)
        for p in self.points:
            try:
                net.get_submodule(p.path)
            except AttributeError as exc:
                raise LayerAccessError(f"no submodule {p.path!r}") from exc

    def __call__(self, net: nn.Module, z: Tensor) -> tuple[Any, list[Tensor]]:
        got: dict[int, Tensor] = {}
        handles = []

        def out_hook(i: int) -> Callable[..., None]:
            def hook(_m: nn.Module, _inp: Any, out: Any) -> None:
                got[i] = _first_tensor(out)  # a module called twice: the last call counts

            return hook

        def in_hook(i: int) -> Callable[..., None]:
            def hook(_m: nn.Module, inp: Any) -> None:
                got[i] = _first_tensor(inp)

            return hook

        try:
            for i, p in enumerate(self.points):
                module = net.get_submodule(p.path)
                if p.site == "output":
                    handles.append(module.register_forward_hook(out_hook(i)))
                else:
                    handles.append(module.register_forward_pre_hook(in_hook(i)))
            out = net(z)
        finally:
            for h in handles:
                h.remove()
        missing = [self.points[i].path for i in range(len(self.points)) if i not in got]
        if missing:
            raise LayerAccessError(f"layer(s) {missing} did not run in the forward pass")
        return out, [got[i] for i in range(len(self.points))]


class _GraphTapper:
    def __init__(self, gm: torch.fx.GraphModule, points: Sequence[TapPoint]) -> None:
        by_name = {n.name: n for n in gm.graph.nodes}
        # Node names, not nodes: a node holds its graph and module, and the tapper cache
        # must not keep the network alive.
        self.targets = [self._resolve(gm, by_name, p).name for p in points]

    @staticmethod
    def _resolve(
        gm: torch.fx.GraphModule, by_name: dict[str, torch.fx.Node], p: TapPoint
    ) -> torch.fx.Node:
        if p.path.startswith(NODE_PREFIX):
            name = p.path[len(NODE_PREFIX):]
            if name not in by_name:
                raise LayerAccessError(f"no graph node {name!r}")
            scope = [by_name[name]]
        else:
            scope = graph_scope_nodes(gm, p.path)
            if not scope:
                raise LayerAccessError(f"no graph nodes belong to module {p.path!r}")
        if p.site == "output":
            return scope[-1]
        inside = set(scope)
        for node in scope:
            for arg in node.args:
                # The data input: skip parameters (get_attr) and values computed inside.
                if isinstance(arg, torch.fx.Node) and arg not in inside and arg.op != "get_attr":
                    return arg
        raise LayerAccessError(f"no input found for {p.path!r}")

    def __call__(self, net: nn.Module, z: Tensor) -> tuple[Any, list[Tensor]]:
        assert isinstance(net, torch.fx.GraphModule)
        wanted = set(self.targets)
        got: dict[str, Tensor] = {}

        class _Recorder(torch.fx.Interpreter):
            def run_node(self, n: torch.fx.Node) -> Any:
                result = super().run_node(n)
                if n.name in wanted:
                    got[n.name] = _first_tensor(result)
                return result

        out = _Recorder(net).run(z)
        missing = sorted(wanted - set(got))
        if missing:
            raise LayerAccessError(f"graph node(s) {missing} did not run")
        return out, [got[name] for name in self.targets]


class _ScriptTapper:
    """Taps a TorchScript module by graph surgery (script modules take no hooks).

    The forward graph is copied; calls along the path to each tapped submodule are inlined
    (``prim::CallMethod`` replaced by the callee's graph) until the call of the tapped
    submodule itself is in the top-level graph; its output (or first argument) is the tapped
    value. The graph is then cut after the deepest tapped value into two script functions
    called with the module, the second taking the tapped values as inputs, so that the
    logits' gradients reach them (:func:`_split_at_taps`).
    """

    def __init__(self, net: torch.jit.ScriptModule, points: Sequence[TapPoint]) -> None:
        forward: Any = net.forward
        try:
            graph = forward.graph.copy()
        except Exception as exc:  # scripted modules without a forward graph
            raise LayerAccessError(f"TorchScript module has no forward graph: {exc}") from exc
        inputs = list(graph.inputs())
        if len(inputs) != 2:
            raise LayerAccessError("TorchScript forward must take exactly one input")
        self_value = inputs[0]
        # Shallow paths first: resolving "features.1" inlines the call of "features", so
        # "features" must already be an output by then (inlining updates outputs).
        order = sorted(range(len(points)), key=lambda i: points[i].path.count("."))
        for i in order:
            p = points[i]
            if p.path.startswith(NODE_PREFIX):
                raise LayerAccessError("node: names apply to graph programs, not TorchScript")
            graph.registerOutput(self._resolve(graph, self_value, net, p))
        outputs = list(graph.outputs())
        tapped = [outputs[1 + order.index(i)] for i in range(len(points))]
        try:
            self.head, self.tail, self.slots = _split_at_taps(graph, tapped)
        except LayerAccessError:
            raise
        except Exception as exc:  # graph surgery the IR refuses (a value still in use)
            raise LayerAccessError(f"TorchScript graph could not be tapped: {exc}") from exc

    @staticmethod
    def _attr_values(graph: Any, owners: set[int], attr: str) -> set[int]:
        """Values ``owner.attr`` (``prim::GetAttr``) read in the top-level graph."""
        return {
            node.output().unique()
            for node in graph.nodes()
            if node.kind() == "prim::GetAttr"
            and node.s("name") == attr
            and node.inputsAt(0).unique() in owners
        }

    @staticmethod
    def _calls_on(graph: Any, targets: set[int]) -> list[Any]:
        """Top-level ``prim::CallMethod`` nodes whose module is one of ``targets``."""
        return [
            node
            for node in graph.nodes()
            if node.kind() == "prim::CallMethod" and node.inputsAt(0).unique() in targets
        ]

    @staticmethod
    def _inline(graph: Any, node: Any, module: Any) -> None:
        method: Any = getattr(module, node.s("name"))
        graph.setInsertPoint(node)
        outs = graph.insertGraph(method.graph, list(node.inputs()))
        for old, new in zip(node.outputs(), outs, strict=True):
            old.replaceAllUsesWith(new)
        node.destroy()

    def _inline_all(self, graph: Any, targets: set[int], module: Any) -> None:
        # Methods calling methods of the same module (ResNet.forward -> _forward_impl).
        for _ in range(64):
            calls = self._calls_on(graph, targets)
            if not calls:
                return
            for node in calls:
                self._inline(graph, node, module)
        raise LayerAccessError("TorchScript methods nest too deeply to tap")

    def _resolve(self, graph: Any, self_value: Any, net: Any, p: TapPoint) -> Any:
        owners = {self_value.unique()}
        module = net
        parts = p.path.split(".")
        for depth, name in enumerate(parts):
            self._inline_all(graph, owners, module)
            child = dict(module.named_children()).get(name)
            if child is None:
                raise LayerAccessError(f"TorchScript module has no child {p.path!r}")
            values = self._attr_values(graph, owners, name)
            if depth < len(parts) - 1:
                owners, module = values, child
                continue
            calls = [n for n in self._calls_on(graph, values) if n.s("name") == "forward"]
            if not calls:
                raise LayerAccessError(
                    f"no call of {p.path!r} in the TorchScript forward graph (calls inside "
                    "control flow cannot be tapped)"
                )
            node = calls[-1]  # a module called twice: the last call counts
            if p.site == "output":
                return node.output()
            if node.inputsSize() < 2:
                raise LayerAccessError(f"{p.path!r} takes no input")
            return node.inputsAt(1)
        raise LayerAccessError(f"empty layer path {p.path!r}")

    def __call__(self, net: nn.Module, z: Tensor) -> tuple[Any, list[Tensor]]:
        assert isinstance(net, torch.jit.ScriptModule)
        live = self.head(net._c, z)
        live = live if isinstance(live, tuple) else (live,)
        # The tail takes the tapped tensors as inputs, so they are ancestors of the logits
        # in the autograd graph whatever the executor fuses inside either function.
        out = self.tail(net._c, *live)
        return out, [_first_tensor(live[slot]) for slot in self.slots]


#: Nodes the tail recomputes instead of taking as inputs: constants and attribute reads
#: (submodules and parameters of ``self``), which cannot cross a function boundary as values.
_RECOMPUTED = frozenset({"prim::Constant", "prim::GetAttr"})

_Position = tuple[int, int]  # (top-level node index, output index); node -1: graph inputs


def _top_level(node: Any) -> Any:
    while node.owningBlock().owningNode() is not None:
        node = node.owningBlock().owningNode()
    return node


def _value_at(graph: Any, nodes: list[Any], pos: _Position) -> Any:
    return list(graph.inputs())[pos[1]] if pos[0] < 0 else nodes[pos[0]].outputsAt(pos[1])


def _recomputed(graph: Any, nodes: list[Any]) -> set[int]:
    """``self`` and the values of ``nodes`` the tail can recompute from ``self`` alone."""
    out = {next(iter(graph.inputs())).unique()}
    for node in nodes:
        if node.kind() in _RECOMPUTED and all(v.unique() in out for v in node.inputs()):
            out.update(v.unique() for v in node.outputs())
    return out


def _live_across(graph: Any, cut: int, tapped: set[int]) -> list[_Position]:
    """Values made at or before top-level node ``cut`` (or graph inputs) that later nodes or
    the return use, and the tapped ones; not those the tail recomputes."""
    nodes = list(graph.nodes())
    recomputed = _recomputed(graph, nodes[: cut + 1])
    sources = [((-1, j), v) for j, v in enumerate(graph.inputs())]
    for k, node in enumerate(nodes[: cut + 1]):
        sources.extend(((k, j), v) for j, v in enumerate(node.outputs()))
    live: list[_Position] = []
    for pos, v in sources:
        if v.unique() in recomputed:
            continue
        users = [_top_level(u.user) for u in v.uses()]
        later = any(cut < 0 or u.kind() == "prim::Return" or u.isAfter(nodes[cut])
                    for u in users)
        if later or v.unique() in tapped:
            if isinstance(v.type(), torch._C.ClassType):
                raise LayerAccessError("an object crosses the tapped layer in the "
                                       "TorchScript graph; it cannot be tapped")
            live.append(pos)
    return live


def _split_at_taps(graph: Any, tapped: list[Any]) -> tuple[Any, Any, list[int]]:
    """Two script functions from a forward graph whose outputs are ``[out, *tapped]``.

    Returning a tapped value as an extra output of one graph does not make it an ancestor
    of the logits for autograd: the profiling executor fuses the graph into differentiable
    subgraphs, and a value the subgraph both uses and returns comes back as a sibling
    output of one backward node, so gradients of the logits never reach it (measured: zero
    or unused gradients from the second call on). So the graph is cut after the deepest
    tapped node: the head ``(self, x) -> live`` returns every value the rest needs (the
    tapped ones among them) and the tail ``(self, *live) -> out`` computes the logits from
    them. Returns the head, the tail and the slot of each tapped value in ``live``.
    """
    for i in reversed(range(1, len(list(graph.outputs())))):
        graph.eraseOutput(i)
    nodes = list(graph.nodes())
    index = {v.unique(): (-1, j) for j, v in enumerate(graph.inputs())}
    for k, node in enumerate(nodes):
        index.update({v.unique(): (k, j) for j, v in enumerate(node.outputs())})
    if any(v.unique() not in index for v in tapped):
        raise LayerAccessError("a tapped value is inside control flow in the TorchScript graph")
    cut = max(index[v.unique()][0] for v in tapped)
    live = _live_across(graph, cut, {v.unique() for v in tapped})
    slots = [live.index(index[v.unique()]) for v in tapped]

    head = graph.copy()
    head_nodes = list(head.nodes())
    head.eraseOutput(0)
    for pos in live:
        head.registerOutput(_value_at(head, head_nodes, pos))
    for node in reversed(head_nodes[cut + 1:]):
        node.destroy()
    head.makeMultiOutputIntoTuple()

    tail = graph.copy()
    tail_nodes = list(tail.nodes())
    for pos in live:
        old = _value_at(tail, tail_nodes, pos)
        new = tail.addInput()
        new.setType(old.type())
        old.replaceAllUsesWith(new)
    kept = _recomputed(tail, tail_nodes[: cut + 1])
    for node in reversed(tail_nodes[: cut + 1]):
        if not node.outputsSize() or any(v.unique() not in kept for v in node.outputs()):
            node.destroy()
    tail.eraseInput(1)  # x: its uses are now inputs of their own (or gone)
    torch._C._jit_pass_dce(tail)
    return (torch._C._create_function_from_graph("robustdx_taps_head", head),
            torch._C._create_function_from_graph("robustdx_taps_tail", tail), slots)


Tapper = _EagerTapper | _GraphTapper | _ScriptTapper

_TAPPERS: weakref.WeakKeyDictionary[nn.Module, dict[tuple[TapPoint, ...], Tapper]] = (
    weakref.WeakKeyDictionary()
)


def _tapper(net: nn.Module, points: tuple[TapPoint, ...]) -> Tapper:
    cache = _TAPPERS.setdefault(net, {})
    if points not in cache:
        kind = net_kind(net)
        tapper: Tapper
        if kind == "torchscript":
            assert isinstance(net, torch.jit.ScriptModule)
            tapper = _ScriptTapper(net, points)
        elif kind == "graph":
            assert isinstance(net, torch.fx.GraphModule)
            tapper = _GraphTapper(net, points)
        else:
            tapper = _EagerTapper(net, points)
        cache[points] = tapper
    return cache[points]


class _TappedNet(nn.Module):
    """Stands in for ``model.net`` for one call of the wrapper; keeps the tapped values of
    every call (a fixed-batch network is called once per chunk)."""

    def __init__(self, net: nn.Module, tapper: Tapper) -> None:
        super().__init__()
        self.inner = net
        self.tapper = tapper
        self.calls: list[list[Tensor]] = []

    def forward(self, z: Tensor) -> Any:
        out, taps = self.tapper(self.inner, z)
        self.calls.append(taps)
        return out


class LayerReader:
    """Runs a model and returns its logits and the activations at ``points``.

    ``reader(x)`` takes ``[N, C, H, W]`` images in ``[0, 1]`` and returns the head-shaped
    logits ``[N, K]`` and one tensor per point (first dimension N) for this batch only.
    Gradients flow through both when the caller enables them.

    Raises:
        LayerAccessError: a point cannot be read in this network.
    """

    def __init__(self, model: DiagnosticModel, points: Sequence[TapPoint]) -> None:
        self.model = model
        self.points = tuple(points)
        with warnings.catch_warnings():
            # torch.jit prints deprecation warnings in 2.14 when graphs are built.
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            self.tapper = _tapper(model.net, self.points)

    def run(self, x: Tensor) -> tuple[Tensor, list[list[Tensor]]]:
        """Logits and, per point, the tapped tensor of each call of the network (one call,
        or one per chunk of a fixed-batch network, the last chunk padded). Gradients with
        respect to activations must be taken on these parts: they are what the logits were
        computed from."""
        tapped = _TappedNet(self.model.net, self.tapper)
        view = copy.copy(self.model)
        # A shallow view whose own module table holds the tapped net: the caller's model
        # is never modified, so concurrent users of it are unaffected.
        view._modules = dict(self.model._modules)
        view._modules["net"] = tapped
        logits = view(x)
        parts = [[call[i] for call in tapped.calls] for i in range(len(self.points))]
        return logits, parts

    def __call__(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        logits, parts = self.run(x)
        return logits, [join_parts(p, x.shape[0], self.points[i].path)
                        for i, p in enumerate(parts)]


def join_parts(parts: list[Tensor], n: int, what: str = "layer") -> Tensor:
    """One ``[n, ...]`` tensor from the per-call parts (padding rows come last)."""
    act = parts[0] if len(parts) == 1 else torch.cat(parts, dim=0)
    if act.shape[0] < n:
        raise LayerAccessError(f"{what!r} has batch dimension {act.shape[0]}, expected {n}")
    return act if act.shape[0] == n else act[:n]
