"""ONNX as ``torch.onnx.export`` writes it: both exporters, dynamic and fixed batch.

Each exported file must register and give the eager model's outputs and input gradients.
The legacy exporter runs with its defaults (constant folding on); the dynamo exporter with
``external_data=False``, since its default writes the weights to a second file that an
upload of one file cannot carry (and that RobustDx refuses to read).
"""

from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from models.loading import load_model
from tests.models.model_files import TinyNet, make_card

CPU = torch.device("cpu")
SIZE = 32
LABELS = ("a", "b", "c")
WAYS = [
    pytest.param("legacy", True, id="legacy-dynamic"),
    pytest.param("legacy", False, id="legacy-fixed"),
    pytest.param("dynamo", True, id="dynamo-dynamic"),
    pytest.param("dynamo", False, id="dynamo-fixed"),
]


def _resnet18() -> nn.Module:
    import torchvision

    torch.manual_seed(0)
    return torchvision.models.resnet18(num_classes=len(LABELS)).eval()


def _small_cnn() -> nn.Module:
    torch.manual_seed(0)
    return TinyNet(outputs=len(LABELS)).eval()


def export_onnx(net: nn.Module, path: Path, exporter: str, dynamic: bool) -> Path:
    """``torch.onnx.export`` as a user calls it, at batch 2."""
    example = (torch.rand(2, 3, SIZE, SIZE),)
    kwargs: dict[str, Any] = {"input_names": ["x"], "output_names": ["logits"]}
    if exporter == "legacy":
        kwargs["dynamo"] = False
        if dynamic:
            kwargs["dynamic_axes"] = {"x": {0: "batch"}, "logits": {0: "batch"}}
    else:
        pytest.importorskip("onnxscript", reason="the dynamo ONNX exporter needs onnxscript")
        kwargs.update(dynamo=True, external_data=False)
        if dynamic:
            kwargs["dynamic_shapes"] = ({0: torch.export.Dim("batch")},)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(net, example, str(path), **kwargs)
    return path


@pytest.fixture(scope="module")
def exported() -> dict[str, tuple[nn.Module, dict]]:
    """Each network, and a lazily filled cache of its exports (one export per way)."""
    return {"resnet18": (_resnet18(), {}), "small_cnn": (_small_cnn(), {})}


def _file(exported: dict, tmp: Path, name: str, exporter: str, dynamic: bool) -> Path:
    net, cache = exported[name]
    key = (exporter, dynamic)
    if key not in cache:
        cache[key] = export_onnx(net, tmp / f"{name}-{exporter}-{dynamic}.onnx", exporter, dynamic)
    return cache[key]


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("onnx-exports")


@pytest.mark.parametrize("name", ["resnet18", "small_cnn"])
@pytest.mark.parametrize(("exporter", "dynamic"), WAYS)
def test_exported_onnx_registers_and_matches_the_eager_model(
    exported: dict, export_dir: Path, name: str, exporter: str, dynamic: bool
) -> None:
    path = _file(exported, export_dir, name, exporter, dynamic)
    net = exported[name][0]
    card = make_card(LABELS)
    loaded = load_model(path, card, device=CPU)
    assert loaded.format == "onnx"
    assert loaded.info["output_width"] == len(LABELS)
    if dynamic:
        assert loaded.info["fixed_batch"] is None
    x = torch.rand(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(5))
    x_ours = x.clone().requires_grad_(True)
    x_eager = x.clone().requires_grad_(True)
    ours = loaded.model(x_ours)
    eager = net((x_eager - 0.5) / 0.25)
    torch.testing.assert_close(ours, eager, rtol=1e-4, atol=1e-5)
    weights = torch.tensor([[1.0, -2.0, 0.5], [0.25, 1.5, -1.0]])
    (ours * weights).sum().backward()
    (eager * weights).sum().backward()
    assert x_eager.grad is not None
    assert x_ours.grad is not None
    assert x_eager.grad.abs().sum() > 0
    torch.testing.assert_close(x_ours.grad, x_eager.grad, rtol=1e-4, atol=1e-6)


def test_the_exporters_write_what_onnx2torch_alone_refuses(
    exported: dict, export_dir: Path
) -> None:
    """Why the graph is normalized: onnx2torch on the raw exports fails."""
    import onnx
    from onnx2torch import convert

    for exporter in ("legacy", "dynamo"):
        path = _file(exported, export_dir, "resnet18", exporter, True)
        with pytest.raises(Exception):  # noqa: B017  (onnx2torch raises several kinds)
            convert(onnx.load_model(str(path)))


class _GeluNet(TinyNet):
    """GELU, which both exporters write as opset 20's ``Gelu``."""

    def __init__(self, approximate: str) -> None:
        super().__init__(outputs=len(LABELS))
        self.gelu = nn.GELU(approximate=approximate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.gelu(self.conv(x))), 1))


@pytest.mark.parametrize("approximate", ["none", "tanh"])
@pytest.mark.parametrize("exporter", ["legacy", "dynamo"])
def test_gelu_is_rewritten_to_its_definition(
    tmp_path: Path, exporter: str, approximate: str
) -> None:
    torch.manual_seed(0)
    net = _GeluNet(approximate).eval()
    path = export_onnx(net, tmp_path / "gelu.onnx", exporter, dynamic=True)
    loaded = load_model(path, make_card(LABELS), device=CPU)
    x = torch.rand(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(6))
    x_ours = x.clone().requires_grad_(True)
    x_eager = x.clone().requires_grad_(True)
    ours, eager = loaded.model(x_ours), net((x_eager - 0.5) / 0.25)
    assert eager.abs().max() > 1e-3  # a network whose outputs say something
    torch.testing.assert_close(ours, eager, rtol=1e-4, atol=1e-5)
    ours.sum().backward()
    eager.sum().backward()
    assert x_ours.grad is not None
    assert x_eager.grad is not None
    torch.testing.assert_close(x_ours.grad, x_eager.grad, rtol=1e-4, atol=1e-6)


def test_the_dynamo_default_of_a_separate_weights_file_is_refused_with_the_fix(
    tmp_path: Path,
) -> None:
    """Its default writes the weights beside the graph; one uploaded file cannot carry them."""
    pytest.importorskip("onnxscript", reason="the dynamo ONNX exporter needs onnxscript")
    from models.errors import UnsafeModelFileError
    from models.formats.onnx_checks import EXTERNAL_DATA_REFUSED

    path = tmp_path / "split.onnx"
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(_small_cnn(), (torch.rand(2, 3, SIZE, SIZE),), str(path), dynamo=True)
    assert (tmp_path / "split.onnx.data").exists()
    with pytest.raises(UnsafeModelFileError) as info:
        load_model(path, make_card(LABELS), device=CPU)
    assert info.value.message == EXTERNAL_DATA_REFUSED
    assert "external_data=False" in info.value.message
