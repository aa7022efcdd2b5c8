"""Finding the main blocks of a network and reading their activations.

The feature-level analyses (``features``, ``gradcam``, ``discriminability``) need the
activations of inner layers of whatever network a user uploaded. Three kinds of network
reach the engine as ``DiagnosticModel.net``, and each is read its own way:

- **eager** ``nn.Module`` (allow-listed architectures rebuilt from weights): forward hooks;
- **TorchScript** ``RecursiveScriptModule`` (``torch.jit.load``): script modules refuse
  hooks, so the forward graph is copied, the calls on the path to each tapped submodule
  are inlined, and the graph is cut after the tapped values into two script functions that
  run on the same module object (parameters shared), the second taking the tapped values as
  inputs so that gradients of the logits reach them;
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

:class:`~workers.analyses.layer_taps.LayerReader` runs the wrapper's forward
(normalization and fixed-batch splitting included) with taps and returns the logits and the
tapped tensors of that batch only. The caller's model is never modified, except that eager
networks carry forward hooks for the duration of one call: do not read one eager network
from two threads at once.
Tapped tensors are the live activations (not copies): an in-place op that follows a tapped
layer in the network (``F.relu(x, inplace=True)``) is seen in the tapped value, for clean
and adversarial images alike.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

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


def graph_scope_nodes(gm: torch.fx.GraphModule, path: str) -> list[torch.fx.Node]:
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
