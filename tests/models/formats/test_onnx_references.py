"""ONNX uploads never reach past the file: external data anywhere, custom domains, functions."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from models.errors import UnsafeModelFileError
from models.formats.onnx_checks import EXTERNAL_DATA_REFUSED
from models.loading import check_model_file, load_model
from tests.models.model_files import (
    ONNX_EXTERNAL_PLACES,
    make_card,
    tiny_net,
    write_custom_domain_onnx,
    write_external_data_onnx,
    write_onnx,
)

CPU = torch.device("cpu")
SECRET = b"rdx_dev_0123456789abcdef"  # 24 bytes: exactly the [2, 3] float32 weight


def assert_a_normal_onnx_still_loads(tmp_path: Path) -> None:
    net = tiny_net()
    path = write_onnx(net, tmp_path / "normal.onnx")
    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    loaded = load_model(path, make_card(), device=CPU)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x), net((x - 0.5) / 0.25), rtol=1e-4, atol=1e-5)


@pytest.fixture
def server_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory laid out as the API's: ``data/dev-api-key`` holds a secret."""
    cwd = tmp_path / "server"
    (cwd / "data").mkdir(parents=True)
    (cwd / "data" / "dev-api-key").write_bytes(SECRET)
    monkeypatch.chdir(cwd)
    return cwd


def test_constant_pointing_at_the_dev_key_is_refused_without_an_oracle(
    server_cwd: Path, tmp_path: Path
) -> None:
    """The finding: a Constant whose external data is ``data/dev-api-key`` of the cwd."""
    uploads = tmp_path / "uploads"
    uploads.mkdir()
    existing = write_external_data_onnx(uploads / "key.onnx", "data/dev-api-key")
    missing = write_external_data_onnx(uploads / "none.onnx", "data/no-such-file")
    messages = []
    for path in (existing, missing):
        with pytest.raises(UnsafeModelFileError) as info:
            check_model_file(path, make_card(), device=CPU)
        messages.append((info.value.message, info.value.details))
    # One message for a file that exists and one that does not: nothing to learn from it.
    assert messages[0] == messages[1]
    message = messages[0][0]
    assert message == EXTERNAL_DATA_REFUSED
    for leak in (SECRET.decode(), "dev-api-key", str(len(SECRET)), "exist", "not found", "size"):
        assert leak not in message
    assert (server_cwd / "data" / "dev-api-key").read_bytes() == SECRET
    assert_a_normal_onnx_still_loads(tmp_path)


def test_the_reference_would_read_the_key(server_cwd: Path, tmp_path: Path) -> None:
    """Why the check exists: onnx's own tensor reader follows the path from the cwd."""
    import onnx
    from onnx import numpy_helper

    path = write_external_data_onnx(tmp_path / "key.onnx", "data/dev-api-key")
    proto = onnx.load_model(str(path), load_external_data=False)
    tensor = proto.graph.node[2].attribute[0].t
    assert numpy_helper.to_array(tensor, base_dir="").tobytes() == SECRET


@pytest.mark.parametrize("place", ONNX_EXTERNAL_PLACES)
def test_external_data_is_refused_wherever_it_hides(
    server_cwd: Path, tmp_path: Path, place: str
) -> None:
    path = write_external_data_onnx(tmp_path / f"{place}.onnx", "data/dev-api-key", place)
    with pytest.raises(UnsafeModelFileError) as info:
        load_model(path, make_card(), device=CPU)
    assert info.value.message == EXTERNAL_DATA_REFUSED
    assert info.value.details == {"reason": "external_data"}
    assert_a_normal_onnx_still_loads(tmp_path)


@pytest.mark.parametrize("location", ["/etc/passwd", "../../etc/passwd", "w.bin"])
def test_any_location_gets_the_same_refusal(tmp_path: Path, location: str) -> None:
    (tmp_path / "w.bin").write_bytes(SECRET)  # inside the upload's own folder: still refused
    path = write_external_data_onnx(tmp_path / "m.onnx", location, "initializer")
    with pytest.raises(UnsafeModelFileError) as info:
        load_model(path, make_card(), device=CPU)
    assert info.value.message == EXTERNAL_DATA_REFUSED


def test_custom_domain_operators_are_refused_by_name(tmp_path: Path) -> None:
    path = write_custom_domain_onnx(tmp_path / "custom.onnx", "com.example.files")
    with pytest.raises(UnsafeModelFileError, match=r"com\.example\.files::ReadFile") as info:
        load_model(path, make_card(), device=CPU)
    assert info.value.details["operators"] == ["com.example.files::ReadFile"]
    assert_a_normal_onnx_still_loads(tmp_path)


def test_microsoft_contrib_operators_are_refused(tmp_path: Path) -> None:
    path = write_custom_domain_onnx(tmp_path / "ms.onnx", "com.microsoft")
    with pytest.raises(UnsafeModelFileError, match=r"com\.microsoft::ReadFile"):
        load_model(path, make_card(), device=CPU)


def test_local_functions_are_refused(tmp_path: Path) -> None:
    import onnx
    from onnx import helper

    path = write_custom_domain_onnx(tmp_path / "fn.onnx", "local.fn")
    model = onnx.load_model(str(path))
    const = helper.make_node(
        "Constant", [], ["y"], value=helper.make_tensor("t", onnx.TensorProto.FLOAT, [1], [0.0])
    )
    model.functions.append(helper.make_function("local.fn", "ReadFile", ["p"], ["y"], [const], []))
    onnx.save_model(model, str(path))
    with pytest.raises(UnsafeModelFileError, match=r"local\.fn::ReadFile"):
        load_model(path, make_card(), device=CPU)
