"""Finding the main blocks of a network and reading their activations.

The feature-level analyses (``features``, ``gradcam``, ``discriminability``) need the
activations of inner layers of whatever network a user uploaded. Three kinds of network
reach the engine as ``DiagnosticModel.net``, and each is read its own way:

- **eager** ``nn.Module`` (allow-listed architectures rebuilt from weights): forward hooks;
- **TorchScript** ``RecursiveScriptModule`` (``torch.jit.load``): script modules refuse
  hooks, so the forward graph is copied, the calls on the path to each tapped submodule
  are inlined, and the tapped values become extra outputs of a new script function that
  runs on the same module object (parameters shared, gradients flow);
- **graph** ``torch.fx.GraphModule`` (``torch.export`` programs unlifted with
  ``.module()``, ONNX models converted by onnx2torch): run by a :class:`torch.fx.Interpreter`
  that records the tapped nodes. Module paths come from the ``nn_module_stack`` metadata
  torch.export keeps, from the ONNX scope names onnx2torch keeps in its module names
  (``features/features/0/Conv`` is scope ``features.0``), or from ``call_module`` targets.

Layers are named by dotted module paths (``"layer3"``, ``"features.2"``) for every kind;
graph nodes can also be named directly as ``"node:<name>"``.

Blocks are found (:func:`find_blocks`) from a recipe for the allow-listed architectures
(recognised by the card's ``architecture`` or the network's class name, which TorchScript
and torch.export keep), and otherwise from the module tree: the top-level children that
hold convolutions or linear layers, descending into a child that holds most of them (a
``features`` Sequential), the classifier left out.

:class:`LayerReader` runs the wrapper's forward (normalization and fixed-batch splitting
included) with taps and returns the logits and the tapped tensors of that batch only. The
caller's model is never modified, except that eager networks carry forward hooks for the
duration of one call: do not read one eager network from two threads at once.
Tapped tensors are the live activations (not copies): an in-place op that follows a tapped
layer in the network (``F.relu(x, inplace=True)``) is seen in the tapped value, for clean
and adversarial images alike.
"""

from __future__ import annotations

import copy
import logging
import re
import warnings
import weakref
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor, nn

from models.errors import InvalidParametersError
from models.wrapper import DiagnosticModel

logger = logging.getLogger(__name__)

Site = Literal["output", "input"]
NetKind = Literal["eager", "torchscript", "graph"]
NODE_PREFIX = "node:"
#: At most this many automatically found blocks are read (evenly spaced beyond it).
MAX_AUTO_BLOCKS = 24


class LayerAccessError(Exception):
    """A layer cannot be found or read in this network (the analysis does not apply)."""


@dataclass(frozen=True)
class TapPoint:
    """One place to read: the output (or first input) of a module path or graph node."""

    path: str
    site: Site = "output"


# --------------------------------------------------------------------------- recipes

#: Architecture allow-list name -> the network's class name.
ARCHITECTURE_CLASSES: dict[str, str] = {
    "resnet18": "ResNet",
    "resnet34": "ResNet",
    "resnet50": "ResNet",
    "densenet121": "DenseNet",
    "inception_v3": "Inception3",
    "efficientnet_b0": "EfficientNet",
    "attention_vgg": "AttentionVGG",
    "small_cnn": "SmallCNN",
}

#: The main blocks, in depth order, of each allow-listed network class.
BLOCK_RECIPES: dict[str, tuple[str, ...]] = {
    "ResNet": ("layer1", "layer2", "layer3", "layer4"),
    "DenseNet": (
        "features.denseblock1",
        "features.transition1",
        "features.denseblock2",
        "features.transition2",
        "features.denseblock3",
        "features.transition3",
        "features.denseblock4",
    ),
    "Inception3": (
        "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c",
        "Mixed_6d", "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c",
    ),
    "EfficientNet": tuple(f"features.{i}" for i in range(9)),
    "AttentionVGG": ("stage1", "stage2", "stage3", "stage4"),
    "SmallCNN": ("features.0", "features.1", "features.2", "features.3"),
}

#: The last convolutional block (the Grad-CAM layer) of each allow-listed network class.
CAM_RECIPES: dict[str, str] = {
    "ResNet": "layer4",
    "DenseNet": "features",
    "Inception3": "Mixed_7c",
    "EfficientNet": "features",
    "AttentionVGG": "stage4",
    "SmallCNN": "features",
}

_CONV_CLASSES = frozenset({"Conv1d", "Conv2d", "Conv3d", "ConvTranspose2d", "LazyConv2d"})
_LINEAR_CLASSES = frozenset({"Linear", "LazyLinear", "OnnxGemm"})
_CONV_OPS = re.compile(r"(^|[._])(conv\d?d|convolution|_convolution)($|[._])")
_LINEAR_OPS = frozenset({"aten.linear.default", "aten.addmm.default"})


# --------------------------------------------------------------------------- module tree


@dataclass
class ModuleTree:
    """The module hierarchy of a network, whatever its kind.

    Attributes:
        kind: how the network is run (see the module docstring).
        class_name: the network's own class name when known (``"ResNet"``).
        children: path -> child paths in order (``""`` is the root).
        weight: path -> number of convolution and linear layers in its subtree.
        last_linear: the last linear layer (a module path, or ``node:<name>`` in graphs).
        head_path: the module path of that layer (``None`` when a graph node has none).
        nodes: graph node names (graphs only), in execution order.
    """

    kind: NetKind
    class_name: str | None
    children: dict[str, list[str]] = field(default_factory=dict)
    weight: dict[str, int] = field(default_factory=dict)
    last_linear: str | None = None
    head_path: str | None = None
    nodes: list[str] = field(default_factory=list)

    @property
    def paths(self) -> list[str]:
        """Every module path except the root, parents before children."""
        out: list[str] = []
        stack = list(reversed(self.children.get("", [])))
        while stack:
            p = stack.pop()
            out.append(p)
            stack.extend(reversed(self.children.get(p, [])))
        return out

    def has(self, path: str) -> bool:
        if path.startswith(NODE_PREFIX):
            return path[len(NODE_PREFIX):] in self.nodes
        return path in self.weight

    def add(self, path: tuple[str, ...], conv: int = 0, linear: int = 0) -> None:
        for depth in range(len(path) + 1):
            p = ".".join(path[:depth])
            self.weight[p] = self.weight.get(p, 0) + conv + linear
            self.children.setdefault(p, [])
            if depth:
                parent = ".".join(path[: depth - 1])
                if p not in self.children[parent]:
                    self.children[parent].append(p)


def net_kind(net: nn.Module) -> NetKind:
    if isinstance(net, torch.jit.ScriptModule):
        return "torchscript"
    if isinstance(net, torch.fx.GraphModule):
        return "graph"
    return "eager"


def _class_of(module: nn.Module) -> str:
    if isinstance(module, torch.jit.ScriptModule):
        return str(getattr(module, "original_name", type(module).__name__))
    return type(module).__name__


def module_tree(net: nn.Module) -> ModuleTree:
    """The :class:`ModuleTree` of an eager, TorchScript or graph network."""
    kind = net_kind(net)
    if kind == "graph":
        assert isinstance(net, torch.fx.GraphModule)
        return _graph_tree(net)
    tree = ModuleTree(kind=kind, class_name=_class_of(net))
    tree.add(())
    for name, module in net.named_modules():
        if not name:
            continue
        cls = _class_of(module)
        conv = int(cls in _CONV_CLASSES)
        linear = int(cls in _LINEAR_CLASSES)
        tree.add(tuple(name.split(".")), conv, linear)
        if linear:
            tree.last_linear = tree.head_path = name
    return tree


_CALL_SUFFIX = re.compile(r"@\d+$")


def _onnx_scope(target: str) -> tuple[str, ...] | None:
    """The module path of an onnx2torch module name, ``None`` when it has no scope.

    The ONNX exporter names a node by its scopes and op (``/layer1/layer1.0/conv1/Conv``):
    a scope is either the full dotted path of the module or its name under the previous
    scope. onnx2torch turns the dots into slashes (``layer1/layer1/0/conv1/Conv``), so a
    full path is recognised as the previous path plus one name.
    """
    tokens = target.split("/")
    if len(tokens) < 2:
        return None
    path: list[str] = []
    i = 0
    last = len(tokens) - 1  # the op type
    while i < last:
        k = len(path) + 1
        if path and i + k <= last and tokens[i : i + k - 1] == path:
            path = tokens[i : i + k]
            i += k
        else:
            path = [*path, tokens[i]]
            i += 1
    return tuple(path)


def _node_path(gm: torch.fx.GraphModule, node: torch.fx.Node) -> tuple[str, ...] | None:
    stack = node.meta.get("nn_module_stack")
    if stack:
        fqn = str(list(stack.values())[-1][0])
        parts = tuple(_CALL_SUFFIX.sub("", p) for p in fqn.split(".") if p)
        return parts
    if node.op == "call_module":
        target = str(node.target)
        if "/" in target:
            return _onnx_scope(target)
        parts = tuple(target.split("."))
        # A symbolic trace calls leaf modules by path; the module itself is the leaf.
        return parts
    return None


def _node_root_class(node: torch.fx.Node) -> str | None:
    stack = node.meta.get("nn_module_stack")
    if not stack:
        return None
    for fqn, cls in stack.values():
        if fqn == "":
            name = cls if isinstance(cls, str) else getattr(cls, "__name__", str(cls))
            return str(name).rsplit(".", 1)[-1]
    return None


def _is_conv_node(gm: torch.fx.GraphModule, node: torch.fx.Node) -> bool:
    if node.op == "call_function":
        return bool(_CONV_OPS.search(str(node.target)))
    if node.op == "call_module":
        return _class_of(gm.get_submodule(str(node.target))) in _CONV_CLASSES
    return False


def _is_linear_node(gm: torch.fx.GraphModule, node: torch.fx.Node) -> bool:
    if node.op == "call_function":
        return str(node.target) in _LINEAR_OPS
    if node.op == "call_module":
        return _class_of(gm.get_submodule(str(node.target))) in _LINEAR_CLASSES
    return False


def _graph_tree(gm: torch.fx.GraphModule) -> ModuleTree:
    tree = ModuleTree(kind="graph", class_name=None)
    tree.add(())
    for node in gm.graph.nodes:
        if node.op in ("placeholder", "output", "get_attr"):
            continue
        tree.nodes.append(node.name)
        if tree.class_name is None:
            tree.class_name = _node_root_class(node)
        path = _node_path(gm, node)
        conv = int(_is_conv_node(gm, node))
        linear = int(_is_linear_node(gm, node))
        if linear:
            tree.last_linear = NODE_PREFIX + node.name
            tree.head_path = ".".join(path) if path else None
        if path is not None:
            tree.add(path, conv, linear)
    return tree


def _graph_scope_nodes(gm: torch.fx.GraphModule, path: str) -> list[torch.fx.Node]:
    want = tuple(path.split("."))
    out = []
    for node in gm.graph.nodes:
        if node.op in ("placeholder", "output", "get_attr"):
            continue
        p = _node_path(gm, node)
        if p is not None and p[: len(want)] == want:
            out.append(node)
    return out


# --------------------------------------------------------------------------- discovery


@dataclass(frozen=True)
class Blocks:
    """The layers chosen for an analysis and how they were chosen."""

    names: tuple[str, ...]
    source: str  # "recipe:<Class>", "module tree", "user"


def recipe_class(model: DiagnosticModel, tree: ModuleTree) -> str | None:
    """The allow-listed class this network is, if it is one."""
    arch = model.card.architecture
    if arch and ARCHITECTURE_CLASSES.get(arch) in BLOCK_RECIPES:
        return ARCHITECTURE_CLASSES[arch]
    if tree.class_name in BLOCK_RECIPES:
        return tree.class_name
    return None


def _stages(tree: ModuleTree) -> list[str]:
    level = list(tree.children.get("", []))
    for _ in range(6):
        total = sum(tree.weight.get(c, 0) for c in level)
        if total == 0:
            return []
        heavy = max(level, key=lambda c: tree.weight.get(c, 0))
        sub = [c for c in tree.children.get(heavy, []) if tree.weight.get(c, 0) > 0]
        # Descend into a child that holds most of the network (a "features" Sequential,
        # an encoder) so that the blocks are its stages, not one opaque container.
        if tree.weight[heavy] >= 0.75 * total and len(sub) >= 2:
            i = level.index(heavy)
            level[i : i + 1] = tree.children[heavy]
        else:
            break
    head = tree.head_path
    blocks = []
    for c in level:
        if tree.weight.get(c, 0) == 0:
            continue
        if head is not None and (head == c or head.startswith(c + ".")):
            continue
        blocks.append(c)
    return blocks


def validate_layers(tree: ModuleTree, layers: Iterable[str]) -> None:
    """Raise :class:`InvalidParametersError` for names that are not layers of the net."""
    unknown = [name for name in layers if not tree.has(name)]
    if unknown:
        valid = tree.paths[:40] + [NODE_PREFIX + n for n in tree.nodes[:20]]
        more = "" if len(valid) < len(tree.paths) + len(tree.nodes) else ", ..."
        raise InvalidParametersError(
            f"unknown layer(s) {unknown}; valid: {', '.join(valid)}{more}",
            details={"unknown": unknown},
        )


def find_blocks(model: DiagnosticModel, layers: Sequence[str] | None = None) -> Blocks:
    """The main blocks of ``model.net`` in depth order, or the user's ``layers``.

    Raises:
        InvalidParametersError: a named layer does not exist.
        LayerAccessError: no block could be found (the analysis does not apply).
    """
    tree = module_tree(model.net)
    if layers:
        validate_layers(tree, layers)
        return Blocks(tuple(layers), "user")
    cls = recipe_class(model, tree)
    if cls is not None and all(tree.has(p) for p in BLOCK_RECIPES[cls]):
        return Blocks(BLOCK_RECIPES[cls], f"recipe:{cls}")
    blocks = _stages(tree)
    if not blocks:
        raise LayerAccessError(
            "no blocks found: the network exposes no submodules holding convolutions or "
            f"linear layers ({tree.kind} network); name layers with the 'layers' parameter"
        )
    if len(blocks) > MAX_AUTO_BLOCKS:
        # A graph without hierarchy gives one "block" per layer: keep an even spread,
        # first and last included, so that a batch's tapped activations stay bounded.
        keep = sorted({round(i * (len(blocks) - 1) / (MAX_AUTO_BLOCKS - 1))
                       for i in range(MAX_AUTO_BLOCKS)})
        return Blocks(tuple(blocks[i] for i in keep),
                      f"module tree ({len(keep)} of {len(blocks)} layers, evenly spaced)")
    return Blocks(tuple(blocks), "module tree")


def cam_candidates(model: DiagnosticModel) -> list[str]:
    """Candidate Grad-CAM layers, preferred first (the caller keeps the first 4-D one)."""
    tree = module_tree(model.net)
    cls = recipe_class(model, tree)
    out: list[str] = []
    if cls is not None and tree.has(CAM_RECIPES[cls]):
        out.append(CAM_RECIPES[cls])
    out.extend(reversed(_stages(tree)))
    if not out:
        raise LayerAccessError(
            "no convolutional block found for Grad-CAM; name one with the 'layer' parameter"
        )
    return list(dict.fromkeys(out))


def penultimate_point(model: DiagnosticModel) -> TapPoint:
    """The input of the last linear layer (the penultimate features)."""
    tree = module_tree(model.net)
    if tree.last_linear is None:
        raise LayerAccessError(
            "no linear layer found for penultimate features; name a layer with 'layer'"
        )
    return TapPoint(tree.last_linear, "input")


# --------------------------------------------------------------------------- tapping


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
            scope = _graph_scope_nodes(gm, p.path)
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
    submodule itself is in the top-level graph; its output (or first argument) becomes an
    extra graph output. The new graph becomes a script function called with the module.
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
        graph.makeMultiOutputIntoTuple()
        self.slots = [1 + order.index(i) for i in range(len(points))]
        try:
            self.fn = torch._C._create_function_from_graph("robustdx_taps", graph)
        except Exception as exc:
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
        result = self.fn(net._c, z)
        return result[0], [_first_tensor(result[slot]) for slot in self.slots]


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
