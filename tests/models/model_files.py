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
