"""Tiny model files in every upload format, written in milliseconds, for loading and API tests.

Every builder writes the same small network (seeded) so that tests can compare a loaded
model's outputs with the network's own forward pass.
"""

from __future__ import annotations

import io
import json
import pickle
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from models.architectures import build_architecture
from models.card import ModelCard

SIZE = 32


def card_dict(
    labels: tuple[str, ...] = ("benign", "malignant"),
    *,
    task: str = "single-label",
    channels: int = 3,
    size: int = SIZE,
    **extra: Any,
) -> dict[str, Any]:
    card: dict[str, Any] = {
        "name": extra.pop("name", "tiny"),
        "task": task,
        "labels": list(labels),
        "input": {"channels": channels, "height": size, "width": size},
        "preprocessing": {"mean": [0.5], "std": [0.25]},
    }
    card.update(extra)
    return card


def make_card(*args: Any, **kwargs: Any) -> ModelCard:
    return ModelCard.model_validate(card_dict(*args, **kwargs))


class TinyNet(nn.Module):
    """Conv, pool, linear: ``[N, C, H, W]`` normalized images to ``[N, outputs]``."""

    def __init__(self, channels: int = 3, outputs: int = 2) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, 8, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(4)
        self.fc = nn.Linear(8 * 16, outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(torch.relu(self.conv(x))), 1))


class FixedBatchNet(TinyNet):
    """Reshapes with a hard-coded batch size, as an ONNX graph exported at batch 2 does."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(torch.relu(self.conv(x))).reshape(2, -1))


def tiny_net(channels: int = 3, outputs: int = 2, seed: int = 0) -> TinyNet:
    torch.manual_seed(seed)
    return TinyNet(channels, outputs).eval()


def write_torchscript(net: nn.Module, path: Path, size: int = SIZE, channels: int = 3) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(net, torch.rand(2, channels, size, size))
        torch.jit.save(traced, str(path))
    return path


def write_export(
    net: nn.Module,
    path: Path,
    *,
    batch: int = 2,
    dynamic: bool = True,
    size: int = SIZE,
    channels: int = 3,
) -> Path:
    example = torch.rand(batch, channels, size, size)
    shapes = {"x": {0: torch.export.Dim("batch", min=1, max=1024)}} if dynamic else None
    program = torch.export.export(net, (example,), dynamic_shapes=shapes)
    torch.export.save(program, str(path))
    return path


def write_onnx(
    net: nn.Module, path: Path, *, batch: int = 1, size: int = SIZE, channels: int = 3
) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            net,
            (torch.rand(batch, channels, size, size),),
            str(path),
            dynamo=False,
            input_names=["x"],
            output_names=["logits"],
            dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"}} if batch == 1 else None,
        )
    return path


def architecture_state(
    name: str = "small_cnn", channels: int = 3, outputs: int = 2, seed: int = 0
) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return build_architecture(name, channels, outputs).state_dict()


def write_safetensors(state: dict[str, torch.Tensor], path: Path) -> Path:
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return path


def write_pth(state: object, path: Path) -> Path:
    torch.save(state, path)
    return path


class _WritesFile:
    """Unpickling this calls ``Path.write_text(marker)``: proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.write_text, (self.marker, "pwned"))


def write_malicious_pickle(path: Path, marker: Path) -> Path:
    """A plain pickle whose loading would create ``marker``."""
    path.write_bytes(pickle.dumps({"weights": _WritesFile(marker)}))
    return path


def write_malicious_pth(path: Path, marker: Path) -> Path:
    """A ``torch.save`` zip (as a whole-module save is) whose unpickling would create ``marker``."""
    torch.save({"fc.weight": torch.zeros(2, 2), "evil": _WritesFile(marker)}, path)
    return path


def write_malicious_export(src: Path, dest: Path, marker: Path) -> Path:
    """A valid ``.pt2`` whose sample inputs are replaced by a pickle that would create ``marker``.

    ``torch.export.load`` falls back to a full unpickle when a weights-only load of the
    sample inputs fails, so this file runs code in a plain ``torch.export.load``.
    """
    buf = io.BytesIO()
    torch.save(_WritesFile(marker), buf)
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dest, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            if item.filename.endswith("data/sample_inputs/model.pt"):
                data = buf.getvalue()
            zout.writestr(item, data)
    return dest


def card_json(**kwargs: Any) -> str:
    return json.dumps(card_dict(**kwargs))


# ----------------------------------------------------------------------------- hostile models
#
# Each builder writes a model that must be refused (or, for the looping and allocating
# models, killed by the sandbox); API-level tests reuse them.


class _ReadsFile(nn.Module):
    """Returns the first bytes of a server file as its logits (``image::read_file``)."""

    def __init__(self, target: str) -> None:
        super().__init__()
        self.target = target

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        data = torch.ops.image.read_file(self.target)
        return x.mean((2, 3))[:, :2] + data[:2].float()


class _ReadsFileWhenLoaded(nn.Module):
    """Calls ``image::read_file`` from ``__setstate__``, which ``torch.jit.load`` runs."""

    def __init__(self, target: str) -> None:
        super().__init__()
        self.target = target
        self.register_buffer("weight", torch.ones(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean((2, 3))[:, :2] * self.weight

    @torch.jit.export
    def __getstate__(self) -> tuple[torch.Tensor, str, bool]:
        return (self.weight, self.target, self.training)

    @torch.jit.export
    def __setstate__(self, state: tuple[torch.Tensor, str, bool]) -> None:
        self.weight = state[0] + torch.ops.image.read_file(state[1])[:2].float()
        self.target = state[1]
        self.training = state[2]


def write_read_file_torchscript(path: Path, target: str, *, when_loaded: bool = False) -> Path:
    """A scripted model calling torchvision's ``image::read_file`` (in forward or on load).

    Imports torchvision first: that is what registers the operator in a process.
    """
    import torchvision  # noqa: F401  (registers image::read_file)

    net = _ReadsFileWhenLoaded(target) if when_loaded else _ReadsFile(target)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.script(net.eval()), str(path))
    return path


def write_read_file_export(path: Path, target: str) -> Path:
    """The same file-reading model as a ``torch.export`` program."""
    import torchvision  # noqa: F401  (registers image::read_file)

    program = torch.export.export(_ReadsFile(target).eval(), (torch.rand(2, 3, SIZE, SIZE),))
    torch.export.save(program, str(path))
    return path


def rewrite_program_json(src: Path, dest: Path, edit: Any) -> Path:
    """Copy a ``.pt2`` with ``edit(program_dict)`` applied to its ``models/model.json``."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dest, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            if item.filename.endswith("models/model.json"):
                program = json.loads(data)
                edit(program)
                data = json.dumps(program).encode()
            zout.writestr(item, data)
    return dest


def write_guard_code_export(src: Path, dest: Path, marker: Path) -> Path:
    """A valid ``.pt2`` whose ``guards_code`` would create ``marker`` (it is ``exec``-uted)."""
    code = f"__import__('pathlib').Path({str(marker)!r}).write_text('pwned') is None or True"
    return rewrite_program_json(src, dest, lambda p: p.__setitem__("guards_code", [code]))


class _Loops(nn.Module):
    """A forward that adds zero ``iterations`` times: valid, finite, and very slow."""

    def __init__(self, iterations: int) -> None:
        super().__init__()
        self.iterations = iterations

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x.mean((2, 3))[:, :2]
        for _ in range(self.iterations):
            out = out + 0.0
        return out


class _Allocates(nn.Module):
    """A forward that allocates ``elements`` float32 values before answering."""

    def __init__(self, elements: int) -> None:
        super().__init__()
        self.elements = elements

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        big = torch.ones(self.elements)
        return x.mean((2, 3))[:, :2] + big[0]


def write_looping_torchscript(path: Path, iterations: int = 2_000_000) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.script(_Loops(iterations)), str(path))
    return path


def write_allocating_torchscript(path: Path, elements: int = 1 << 31) -> Path:
    """Default: 8 GiB of float32."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.script(_Allocates(elements)), str(path))
    return path


#: Where an external tensor can hide in an ONNX model (see :func:`write_external_data_onnx`).
ONNX_EXTERNAL_PLACES = (
    "initializer",
    "constant",
    "sparse_constant",
    "sparse_initializer",
    "attribute_tensors",
    "if_branch",
    "loop_body",
    "function",
)


def _external(name: str, location: str, dims: tuple[int, ...] = (2, 3)) -> Any:
    import onnx

    tensor = onnx.TensorProto(name=name, data_type=onnx.TensorProto.FLOAT, dims=list(dims))
    tensor.data_location = onnx.TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", str(4 * 6))):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    return tensor


def write_onnx_graph(
    path: Path, nodes: list[Any], initializers: list[Any], **model_kwargs: Any
) -> Path:
    """Save ``x [N, 3, H, W] -> GlobalAveragePool -> Flatten -> pooled`` plus ``nodes``.

    ``nodes`` must produce ``logits`` [N, 2] from ``pooled`` [N, 3]; nothing is checked.
    """
    import onnx
    from onnx import helper

    head = [
        helper.make_node("GlobalAveragePool", ["x"], ["gap"]),
        helper.make_node("Flatten", ["gap"], ["pooled"]),
    ]
    graph = helper.make_graph(
        head + nodes,
        "hostile",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 3, SIZE, SIZE])],
        [helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, ["N", 2])],
        initializer=initializers,
    )
    model_kwargs.setdefault("opset_imports", [helper.make_opsetid("", 17)])
    onnx.save_model(helper.make_model(graph, **model_kwargs), str(path))
    return path


def write_external_data_onnx(path: Path, location: str, place: str = "constant") -> Path:
    """An ONNX model whose ``[2, 3]`` classifier weight is external data at ``location``.

    ``place`` is one of :data:`ONNX_EXTERNAL_PLACES`: where the external tensor sits.
    """
    import onnx
    from onnx import helper

    gemm = helper.make_node("Gemm", ["pooled", "w"], ["logits"], transB=1)
    nodes: list[Any] = [gemm]
    inits: list[Any] = []
    extra: dict[str, Any] = {}
    ext = _external("w", location)
    if place == "initializer":
        inits = [ext]
    elif place == "constant":
        nodes.insert(0, helper.make_node("Constant", [], ["w"], value=ext))
    elif place in ("sparse_constant", "sparse_initializer"):
        indices = helper.make_tensor("i", onnx.TensorProto.INT64, [6], list(range(6)))
        values = _external("v", location, (6,))
        sparse = helper.make_sparse_tensor(values, indices, [2, 3])
        if place == "sparse_constant":
            nodes.insert(0, helper.make_node("Constant", [], ["w"], sparse_value=sparse))
        else:
            extra["sparse"] = sparse
    elif place == "attribute_tensors":
        holder = helper.make_node("Identity", ["wi"], ["w"])
        holder.attribute.append(helper.make_attribute("payload", [ext]))
        nodes.insert(0, holder)
        inits = [helper.make_tensor("wi", onnx.TensorProto.FLOAT, [2, 3], [0.0] * 6)]
    elif place in ("if_branch", "loop_body", "function"):
        nodes[:0] = _nested_constants(place, ext)
        if place == "function":
            extra["functions"] = [_function_with(ext)]
    else:
        raise ValueError(f"unknown place {place!r}")
    sparse_inits = [extra.pop("sparse")] if "sparse" in extra else []
    out = write_onnx_graph(path, nodes, inits, **extra)
    if sparse_inits:
        model = onnx.load_model(str(out), load_external_data=False)
        model.graph.sparse_initializer.extend(sparse_inits)
        onnx.save_model(model, str(out))
    return out


def _nested_constants(place: str, ext: Any) -> list[Any]:
    """Nodes producing ``w`` whose external tensor sits in a subgraph or a local function."""
    import onnx
    from onnx import helper

    if place == "function":
        return [helper.make_node("ExternalWeight", [], ["w"], domain="local.fn")]
    const = helper.make_node("Constant", [], ["w_inner"], value=ext)
    w_out = helper.make_tensor_value_info("w_inner", onnx.TensorProto.FLOAT, [2, 3])
    if place == "loop_body":
        keep = helper.make_node("Identity", ["cond_in"], ["cond_out"])
        body = helper.make_graph(
            [keep, const],
            "loop",
            [
                helper.make_tensor_value_info("i", onnx.TensorProto.INT64, []),
                helper.make_tensor_value_info("cond_in", onnx.TensorProto.BOOL, []),
            ],
            [helper.make_tensor_value_info("cond_out", onnx.TensorProto.BOOL, []), w_out],
        )
        trip = helper.make_node("Constant", [], ["trip"], value_int=1)
        return [trip, helper.make_node("Loop", ["trip", ""], ["w"], body=body)]
    then_branch = helper.make_graph([const], "then", [], [w_out])
    else_branch = helper.make_graph([const], "else", [], [w_out])
    cond = helper.make_node(
        "Constant", [], ["c"], value=helper.make_tensor("c", onnx.TensorProto.BOOL, [], [True])
    )
    return [
        cond,
        helper.make_node("If", ["c"], ["w"], then_branch=then_branch, else_branch=else_branch),
    ]


def _function_with(ext: Any) -> Any:
    from onnx import helper

    const = helper.make_node("Constant", [], ["w"], value=ext)
    return helper.make_function(
        "local.fn", "ExternalWeight", [], ["w"], [const], [helper.make_opsetid("", 17)]
    )


def write_custom_domain_onnx(path: Path, domain: str = "com.example.files") -> Path:
    """An ONNX model whose classifier is an operator of a custom domain (``ReadFile``)."""
    from onnx import helper

    node = helper.make_node("ReadFile", ["pooled"], ["logits"], domain=domain)
    return write_onnx_graph(
        path,
        [node],
        [],
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(domain, 1)],
    )
