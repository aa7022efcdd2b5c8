"""The Open Inference Protocol routes, spoken to by Triton's own client (``tritonclient``)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import torch

from app.core.settings import DEV_ADMIN_KEY
from models.imaging import decode_image
from tests.app.models_fixtures import make_settings, png_bytes
from tests.models.model_files import SIZE, TinyNet, card_dict, tiny_net, write_torchscript
from tests.support.live_server import live_api

httpclient = pytest.importorskip("tritonclient.http")
from tritonclient.utils import InferenceServerException  # noqa: E402


class Served:
    def __init__(self, url: str, key: str, model_id: str, net: TinyNet, other_key: str) -> None:
        self.url, self.key, self.model_id, self.net = url, key, model_id, net
        self.other_key = other_key

    @property
    def auth(self) -> dict[str, str]:
        """A fresh dict each time: tritonclient adds its own headers to the one it gets."""
        return {"Authorization": f"Bearer {self.key}"}

    def triton(self, **kwargs: Any) -> Any:
        return httpclient.InferenceServerClient(self.url.removeprefix("http://"), **kwargs)


def _tenant(url: str, name: str) -> str:
    r = httpx.post(f"{url}/v1/tenants", json={"name": name},
                   headers={"Authorization": f"Bearer {DEV_ADMIN_KEY}"})
    assert r.status_code == 201, r.text
    return str(r.json()["api_key"])


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("oip")
    settings = make_settings(tmp / "data", batch_max_wait_ms=20.0)
    net = tiny_net(seed=3)
    path = write_torchscript(net, tmp / "m.pt")
    with live_api(settings) as url:
        key, other = _tenant(url, "st-mary"), _tenant(url, "elsewhere")
        with path.open("rb") as fh:
            r = httpx.post(f"{url}/v1/models", headers={"Authorization": f"Bearer {key}"},
                           files={"file": ("m.pt", fh)}, data={"card": json.dumps(card_dict())})
        assert r.status_code == 201, r.text
        yield Served(url, key, r.json()["id"], net, other)


def _expected(net: TinyNet, x: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return torch.softmax(net((x - 0.5) / 0.25), 1).numpy()


def _images(n: int, seed: int = 0) -> np.ndarray:
    return torch.rand(n, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed)).numpy()


def _infer(served: Served, x: np.ndarray, *, binary: bool = True,
           datatype: str = "FP32") -> np.ndarray:
    inp = httpclient.InferInput("image", list(x.shape), datatype)
    inp.set_data_from_numpy(x, binary_data=binary)
    out = httpclient.InferRequestedOutput("probabilities", binary_data=binary)
    result = served.triton().infer(served.model_id, [inp], outputs=[out],
                                   headers=served.auth)
    probs: np.ndarray = result.as_numpy("probabilities")
    return probs


def test_health_and_metadata(served: Served) -> None:
    client = served.triton()
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.get_server_metadata()["extensions"] == ["binary_tensor_data"]
    meta = client.get_model_metadata(served.model_id, headers=served.auth)
    assert meta["name"] == served.model_id
    assert meta["inputs"] == [{"name": "image", "datatype": "FP32", "shape": [-1, 3, SIZE, SIZE]}]
    assert meta["outputs"] == [{"name": "probabilities", "datatype": "FP32", "shape": [-1, 2]}]
    assert meta["parameters"]["labels"] == ["benign", "malignant"]
    assert client.is_model_ready(served.model_id, headers=served.auth)
    assert client.is_model_ready(served.model_id, model_version="1", headers=served.auth)
    assert not client.is_model_ready(served.model_id, model_version="2", headers=served.auth)


@pytest.mark.parametrize("binary", [True, False])
def test_infer_matches_the_network(served: Served, binary: bool) -> None:
    x = _images(3, seed=1)
    probs = _infer(served, x, binary=binary)
    assert probs.shape == (3, 2)
    assert probs.dtype == np.float32
    np.testing.assert_allclose(probs, _expected(served.net, torch.from_numpy(x)), atol=1e-5)


def test_uint8_tensors(served: Served) -> None:
    pixels = (np.arange(3 * SIZE * SIZE, dtype=np.int64) % 256).astype(np.uint8)
    x = pixels.reshape(1, 3, SIZE, SIZE)
    probs = _infer(served, x, datatype="UINT8")
    expected = _expected(served.net, torch.from_numpy(x.astype(np.float32) / 255.0))
    np.testing.assert_allclose(probs, expected, atol=1e-5)


def test_v2_and_v1_agree_on_the_same_pixels(served: Served) -> None:
    from models.card import ModelCard
    from models.imaging import to_model_input

    data = png_bytes(4)
    x = to_model_input(decode_image(data, max_bytes=1 << 20, max_pixels=1 << 20),
                       ModelCard.model_validate(card_dict()))[None].numpy()
    v2 = _infer(served, x)
    r = httpx.post(f"{served.url}/v1/models/{served.model_id}/predict", headers=served.auth,
                   files={"file": ("x.png", data)})
    v1 = [p["probability"] for p in r.json()["predictions"]]
    np.testing.assert_allclose(v2[0], v1, atol=1e-6)


def test_concurrent_requests_share_batches_and_keep_their_rows(served: Served) -> None:
    client = served.triton(concurrency=8)
    xs = [_images(1, seed=10 + i) for i in range(8)]
    pending = []
    for x in xs:
        inp = httpclient.InferInput("image", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        pending.append(client.async_infer(served.model_id, [inp], headers=served.auth))
    for x, request in zip(xs, pending, strict=True):
        got = request.get_result().as_numpy("probabilities")
        np.testing.assert_allclose(got, _expected(served.net, torch.from_numpy(x)), atol=1e-5)


def test_errors_reach_tritonclient_in_the_protocol_shape(served: Served) -> None:
    x = _images(1)
    inp = httpclient.InferInput("image", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    client = served.triton()
    with pytest.raises(InferenceServerException) as unknown:
        client.infer("no-such-model", [inp], headers=served.auth)
    assert unknown.value.status() == "404"
    assert "not found" in unknown.value.message()
    with pytest.raises(InferenceServerException) as foreign:  # another tenant's model
        client.infer(served.model_id, [inp], headers={"Authorization":
                                                      f"Bearer {served.other_key}"})
    assert foreign.value.status() == "404"
    with pytest.raises(InferenceServerException) as anonymous:
        client.get_model_metadata(served.model_id)
    assert anonymous.value.status() == "401"
    wrong = httpclient.InferInput("image", [1, 3, 16, 16], "FP32")
    wrong.set_data_from_numpy(np.zeros((1, 3, 16, 16), dtype=np.float32))
    with pytest.raises(InferenceServerException) as shape:
        client.infer(served.model_id, [wrong], headers=served.auth)
    assert "must have shape [N, 3, 32, 32]" in shape.value.message()


_BINARY_HEADER = json.dumps({"inputs": [{"name": "image", "shape": [1, 3, 32, 32],
                                         "datatype": "FP32",
                                         "parameters": {"binary_data_size": 12288}}]}).encode()


@pytest.mark.parametrize(("body", "headers", "message"), [
    (b"{not json", {}, "not an inference request"),
    (b'{"inputs": []}', {}, "not an inference request: inputs"),
    (json.dumps({"inputs": [{"name": "x", "shape": [1, 3, 32, 32], "datatype": "FP32",
                             "data": [0.0] * 3072}]}).encode(), {}, "exactly one input"),
    (json.dumps({"inputs": [{"name": "image", "shape": [1, 3, 32, 32], "datatype": "FP32",
                             "data": [2.0] * 3072}]}).encode(), {}, "in [0, 1]"),
    (json.dumps({"inputs": [{"name": "image", "shape": [1, 3, 32, 32], "datatype": "FP32",
                             "data": [0.5] * 100}]}).encode(), {}, "100 values"),
    (json.dumps({"inputs": [{"name": "image", "shape": [1, 3, 32, 32], "datatype": "FP64",
                             "data": [0.5] * 3072}]}).encode(), {}, "datatype must be"),
    (json.dumps({"inputs": [{"name": "image", "shape": [99, 3, 32, 32], "datatype": "UINT8",
                             "parameters": {"binary_data_size": 4}}]}).encode(), {},
     "batch must hold 1 to 6"),
    (_BINARY_HEADER + b"\x00" * 10,  # 10 bytes where 12288 were announced
     {"Inference-Header-Content-Length": str(len(_BINARY_HEADER))},
     "binary_data_size must be 12288"),
    (b"{}", {"Inference-Header-Content-Length": "999"}, "outside the body"),
    (b"{}", {"Inference-Header-Content-Length": "-1"}, "byte count"),
])
def test_hostile_requests_get_protocol_errors(
    served: Served, body: bytes, headers: dict[str, str], message: str
) -> None:
    r = httpx.post(f"{served.url}/v2/models/{served.model_id}/infer", content=body,
                   headers={**served.auth, **headers})
    assert 400 <= r.status_code < 500, r.text
    error = r.json()["error"]
    assert isinstance(error, str)
    assert message in error
    assert _infer(served, _images(1)).shape == (1, 2)  # still serving


def test_non_finite_binary_values_are_refused(served: Served) -> None:
    x = _images(1)
    x[0, 0, 0, 0] = np.nan
    with pytest.raises(InferenceServerException, match=r"finite and in \[0, 1\]"):
        _infer(served, x)


def test_bodies_over_the_limit_are_refused(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data", oip_max_request_bytes=2048)
    path = write_torchscript(tiny_net(), tmp_path / "m.pt")
    with live_api(settings) as url:
        key = _tenant(url, "t")
        with path.open("rb") as fh:
            model = httpx.post(f"{url}/v1/models", headers={"Authorization": f"Bearer {key}"},
                               files={"file": ("m.pt", fh)},
                               data={"card": json.dumps(card_dict())}).json()["id"]
        r = httpx.post(f"{url}/v2/models/{model}/infer", content=b"x" * 4096,
                       headers={"Authorization": f"Bearer {key}"})
        assert r.status_code == 413
        assert r.json() == {"error": "the request is larger than the limit of 2048 bytes"}
        unknown = httpx.get(f"{url}/v2/nothing-here")
        assert unknown.status_code == 404
        assert isinstance(unknown.json()["error"], str)
        v1 = httpx.get(f"{url}/v1/models/none", headers={"Authorization": f"Bearer {key}"})
        assert set(v1.json()["error"]) == {"code", "message", "details"}


def test_server_timing_names_each_stage(served: Served) -> None:
    x = _images(1)
    body = json.dumps({"inputs": [{"name": "image", "shape": list(x.shape), "datatype": "FP32",
                                   "data": x.ravel().tolist()}]}).encode()
    r = httpx.post(f"{served.url}/v2/models/{served.model_id}/infer", content=body,
                   headers=served.auth)
    assert r.status_code == 200, r.text
    stages = dict(part.strip().split(";dur=") for part in
                  r.headers["server-timing"].split(","))
    assert list(stages) == ["auth", "read", "decode", "infer", "encode"]
    assert all(float(v) >= 0 for v in stages.values())
    assert r.json()["outputs"][0]["shape"] == [1, 2]


def test_v1_predict_names_its_stages_too(served: Served) -> None:
    r = httpx.post(f"{served.url}/v1/models/{served.model_id}/predict", headers=served.auth,
                   files={"file": ("x.png", png_bytes(1))})
    assert r.status_code == 200, r.text
    names = [part.strip().split(";")[0] for part in r.headers["server-timing"].split(",")]
    assert names == ["auth", "read", "predict"]
