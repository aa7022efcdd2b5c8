"""Model graphs may call only allow-listed operators, whichever libraries are imported.

torchvision is imported first in every test here: importing it registers
``image::read_file``, the operator the hostile models call.
"""

from __future__ import annotations

import contextlib
import warnings
from pathlib import Path

import pytest
import torch
import torchvision  # noqa: F401  (registers image::read_file before any model is built)
from torch import nn

from models.errors import InvalidModelFileError, UnsafeModelFileError
from models.formats.operators import ALLOWED_NAMESPACES, check_operators, is_allowed
from models.formats.torchscript import graph_operators
from models.loading import load_model
from tests.models.model_files import (
    make_card,
    rewrite_program_json,
    tiny_net,
    write_export,
    write_guard_code_export,
    write_read_file_export,
    write_read_file_torchscript,
    write_torchscript,
)

CPU = torch.device("cpu")


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    path = tmp_path / "other-tenant" / "model.pt"
    path.parent.mkdir()
    path.write_bytes(b"\x07\x09 another tenant's bytes")
    return path


def assert_normal_models_still_load(tmp_path: Path) -> None:
    net = tiny_net()
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    for path in (
        write_torchscript(net, tmp_path / "normal.pt"),
        write_export(net, tmp_path / "normal.pt2"),
    ):
        loaded = load_model(path, make_card(), device=CPU)
        with torch.no_grad():
            torch.testing.assert_close(loaded.model(x), net((x - 0.5) / 0.25))


def test_the_operator_works_when_torchvision_is_imported(secret: Path) -> None:
    """Why the allow-list exists: the operator really returns a server file's bytes."""
    data = torch.ops.image.read_file(str(secret))
    assert bytes(data.tolist()) == secret.read_bytes()


@pytest.mark.parametrize("when_loaded", [False, True], ids=["forward", "setstate"])
def test_torchscript_reading_a_file_is_refused(
    tmp_path: Path, secret: Path, when_loaded: bool
) -> None:
    path = write_read_file_torchscript(tmp_path / "r.pt", str(secret), when_loaded=when_loaded)
    with pytest.raises(UnsafeModelFileError, match="image::read_file") as info:
        load_model(path, make_card(), device=CPU)
    assert info.value.details["operators"] == ["image::read_file"]
    assert secret.name not in info.value.message
    assert_normal_models_still_load(tmp_path)


def test_export_reading_a_file_is_refused(tmp_path: Path, secret: Path) -> None:
    path = write_read_file_export(tmp_path / "r.pt2", str(secret))
    with pytest.raises(UnsafeModelFileError, match="image::read_file") as info:
        load_model(path, make_card(), device=CPU)
    assert info.value.details["operators"] == ["image::read_file"]
    assert_normal_models_still_load(tmp_path)


def _script(module: nn.Module, path: Path) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.script(module), str(path))
    return path


def _read(path: str) -> torch.Tensor:
    return torch.ops.image.read_file(path)[:2].float()


class _ReadsInHelper(nn.Module):
    """The call hides in a free function called from a submodule's exported method."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = _Inner()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean((2, 3))[:, :2] + self.inner.extra()


class _Inner(nn.Module):
    @torch.jit.export
    def extra(self) -> torch.Tensor:
        return _read("/etc/hostname")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class _ReadsInBranch(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x.mean((2, 3))[:, :2]
        for i in range(2):
            if i > 5:
                out = out + torch.ops.image.read_file("/etc/hostname")[:2].float()
        return out


class _SavesByMethod(nn.Module):
    """``x.save(path)`` resolves to ``aten::save`` without naming ``torch`` or ``ops``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean((2, 3))[:, :2]

    @torch.jit.export
    def dump(self, x: torch.Tensor) -> None:
        torch.save(x, "/tmp/robustdx-test-dump")


@pytest.mark.parametrize(
    ("module", "operator"),
    [
        (_ReadsInHelper, "image::read_file"),
        (_ReadsInBranch, "image::read_file"),
        (_SavesByMethod, "aten::save"),
    ],
)
def test_every_code_path_of_a_torchscript_archive_is_checked(
    tmp_path: Path, module: type[nn.Module], operator: str
) -> None:
    path = _script(module().eval(), tmp_path / "m.pt")
    with pytest.raises(UnsafeModelFileError, match=operator):
        load_model(path, make_card(), device=CPU)
    assert_normal_models_still_load(tmp_path)


def test_indirect_use_of_ops_in_torchscript_source_is_refused(tmp_path: Path) -> None:
    import zipfile

    good = write_torchscript(tiny_net(), tmp_path / "good.pt")
    evil = tmp_path / "evil.pt"
    with zipfile.ZipFile(good) as zin, zipfile.ZipFile(evil, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            if "code/__torch__/tests/" in item.filename and item.filename.endswith(".py"):
                data += b"\ndef f(x: Tensor) -> Tensor:\n  return getattr(ops, 'image')(x)\n"
            zout.writestr(item, data)
    with pytest.raises(UnsafeModelFileError, match="other than to call an operator"):
        load_model(evil, make_card(), device=CPU)
    assert_normal_models_still_load(tmp_path)


def test_loaded_graph_check_sees_nested_blocks() -> None:
    scripted = torch.jit.script(_ReadsInBranch())
    graph = scripted._c._get_method("forward").graph
    assert "image::read_file" in set(graph_operators(graph))


def test_export_guard_code_is_refused_and_runs_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    good = write_export(tiny_net(), tmp_path / "good.pt2")
    evil = write_guard_code_export(good, tmp_path / "guards.pt2", marker)
    with pytest.raises(UnsafeModelFileError, match="guard code"):
        load_model(evil, make_card(), device=CPU)
    assert not marker.exists()
    assert_normal_models_still_load(tmp_path)


def test_plain_export_load_would_run_guard_code(tmp_path: Path) -> None:
    """Why the guard check exists: turning the program into a module ``exec``-s it."""
    marker = tmp_path / "pwned"
    good = write_export(tiny_net(), tmp_path / "good.pt2")
    evil = write_guard_code_export(good, tmp_path / "guards.pt2", marker)
    with contextlib.suppress(Exception):  # only the marker matters
        torch.export.load(str(evil)).module()(torch.rand(2, 3, 32, 32))
    if not marker.exists():
        pytest.skip("this torch no longer executes guard code on load")
    assert marker.read_text() == "pwned"


def _set_first_target(program: dict, target: str) -> None:
    program["graph_module"]["graph"]["nodes"][0]["target"] = target


@pytest.mark.parametrize(
    "target", ["torch.load", "builtins.open", "torch.ops.image.read_file.default", "#ext"]
)
def test_export_targets_outside_the_allow_list_are_refused_before_loading(
    tmp_path: Path, target: str
) -> None:
    good = write_export(tiny_net(), tmp_path / "good.pt2")
    evil = rewrite_program_json(good, tmp_path / "t.pt2", lambda p: _set_first_target(p, target))
    with pytest.raises(UnsafeModelFileError, match="outside the operators"):
        load_model(evil, make_card(), device=CPU)
    assert_normal_models_still_load(tmp_path)


def test_operators_passed_as_arguments_are_checked(tmp_path: Path) -> None:
    good = write_export(tiny_net(), tmp_path / "good.pt2")

    def edit(program: dict) -> None:
        node = program["graph_module"]["graph"]["nodes"][0]
        node["inputs"].append({"name": "fn", "arg": {"as_operator": "torch.load"}, "kind": 1})

    evil = rewrite_program_json(good, tmp_path / "arg.pt2", edit)
    with pytest.raises(UnsafeModelFileError, match=r"torch\.load"):
        load_model(evil, make_card(), device=CPU)
    assert_normal_models_still_load(tmp_path)


def test_symbolic_expressions_that_are_not_arithmetic_are_refused(tmp_path: Path) -> None:
    good = write_export(tiny_net(), tmp_path / "good.pt2")

    marker = tmp_path / "pwned"
    payload = f"__import__('pathlib').Path({str(marker)!r}).write_text('pwned')"

    def edit(tree: object) -> None:
        if isinstance(tree, dict):
            for key, value in tree.items():
                if key == "expr_str":
                    tree[key] = payload
                edit(value)
        elif isinstance(tree, list):
            for value in tree:
                edit(value)

    evil = rewrite_program_json(good, tmp_path / "sym.pt2", edit)
    assert payload.encode() in evil.read_bytes()
    with pytest.raises(UnsafeModelFileError, match="symbolic shape expression"):
        load_model(evil, make_card(), device=CPU)
    assert not marker.exists()
    assert_normal_models_still_load(tmp_path)


def test_control_flow_branches_are_checked(tmp_path: Path) -> None:
    class Branches(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = x.mean((2, 3))[:, :2]
            return torch.cond(
                y.sum() > 0,
                lambda a: a + torch.ops.image.read_file("/etc/hostname")[:2].float(),
                lambda a: a * 2,
                (y,),
            )

    program = torch.export.export(Branches(), (torch.rand(2, 3, 32, 32),))
    torch.export.save(program, str(tmp_path / "cond.pt2"))
    with pytest.raises(UnsafeModelFileError, match="image::read_file"):
        load_model(tmp_path / "cond.pt2", make_card(), device=CPU)
    assert_normal_models_still_load(tmp_path)


def test_the_policy_reads_names_only() -> None:
    assert {"aten", "prim", "prims"} == ALLOWED_NAMESPACES
    assert is_allowed("aten::conv2d")
    assert is_allowed("prims::add.default")
    for name in (
        "aten::save",
        "aten::from_file",
        "prim::rpc_async",
        "prim::Print",
        "torchvision::nms",
        "quantized::conv2d",
        "profiler::_record_function_enter",
        "nonamespace",
        "never_registered::op",
    ):
        assert not is_allowed(name), name
    with pytest.raises(UnsafeModelFileError, match="never_registered::op"):
        check_operators(["aten::relu", "never_registered::op"], "test graph")


def test_unparseable_torchscript_source_is_refused(tmp_path: Path) -> None:
    import zipfile

    good = write_torchscript(tiny_net(), tmp_path / "good.pt")
    bad = tmp_path / "bad.pt"
    with zipfile.ZipFile(good) as zin, zipfile.ZipFile(bad, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            if "code/__torch__/tests/" in item.filename and item.filename.endswith(".py"):
                data = b"def (:\n"
            zout.writestr(item, data)
    with pytest.raises(InvalidModelFileError, match="cannot be parsed"):
        load_model(bad, make_card(), device=CPU)


@pytest.mark.parametrize(
    "snippet",
    [
        b"\ndef f(x: Tensor) -> Tensor:\n  c = torch.classes.myns.Reader()\n  return x\n",
        b"\ndef f(x: __torch__.torch.classes.myns.Reader) -> int:\n  return 1\n",
    ],
    ids=["constructed", "annotated"],
)
def test_custom_classes_in_torchscript_source_are_refused(tmp_path: Path, snippet: bytes) -> None:
    import zipfile

    good = write_torchscript(tiny_net(), tmp_path / "good.pt")
    evil = tmp_path / "evil.pt"
    with zipfile.ZipFile(good) as zin, zipfile.ZipFile(evil, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            if "code/__torch__/tests/" in item.filename and item.filename.endswith(".py"):
                data += snippet
            zout.writestr(item, data)
    with pytest.raises(UnsafeModelFileError, match="C\\+\\+ custom class"):
        load_model(evil, make_card(), device=CPU)
    assert_normal_models_still_load(tmp_path)


def test_custom_classes_in_torchscript_pickles_are_refused(tmp_path: Path) -> None:
    import pickle
    import zipfile

    good = write_torchscript(tiny_net(), tmp_path / "good.pt")
    evil = tmp_path / "evil.pt"
    payload = pickle.dumps(("__torch__.torch.classes.myns.Reader", 1), protocol=2)
    with zipfile.ZipFile(good) as zin, zipfile.ZipFile(evil, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            if item.filename.endswith("/constants.pkl"):
                data = payload
            zout.writestr(item, data)
    with pytest.raises(UnsafeModelFileError, match=r"constants\.pkl holds an object of a C"):
        load_model(evil, make_card(), device=CPU)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("def f(x: Tensor) -> Tensor:\n  return torch.relu(x)\n", {"aten::relu"}),
        ("def f(x: Tensor) -> Tensor:\n  return ops.image.read_file('a')\n", {"image::read_file"}),
        ("def f(x: Tensor) -> Tensor:\n  return torch.ops.quantized.add(x)\n", {"quantized::add"}),
        ("def f(x: Tensor) -> Tensor:\n  return torch.autograd.save(x)\n", {"aten::save"}),
        ("def f(x: float) -> float:\n  return math.sqrt(x)\n", {"aten::sqrt"}),
        ("def f(x: Tensor) -> None:\n  print(x)\n", {"prim::Print"}),
        ("def f(x: Tensor) -> None:\n  rpc_async('w', g)\n", {"prim::rpc_async"}),
        ("def f(x: Tensor) -> None:\n  x.save('p')\n", {"aten::save"}),
        ("def f(x: Tensor) -> None:\n  getattr(x, 'from_file')\n", {"aten::from_file"}),
    ],
)
def test_source_operators_name_what_the_importer_would_resolve(
    source: str, expected: set[str]
) -> None:
    from models.formats.torchscript_source import source_operators

    assert source_operators("code/m.py", source.encode()) == expected
