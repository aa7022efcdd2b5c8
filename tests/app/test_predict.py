"""Predict over HTTP: heads, several files, image formats, bad images (each followed by a good
request), micro-batching under concurrency, and randomized smoothing."""

from __future__ import annotations

import asyncio
import io
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image
from scipy.stats import norm
from torch import nn

from app.api.metrics import BATCH_SIZE
from app.api.services.inference import InferenceService
from models.card import Head, ModelCard
from models.imaging import decode_image, to_model_input
from models.wrapper import DiagnosticModel
from tests.app.models_fixtures import (
    MAX_FILES,
    MAX_IMAGE_BYTES,
    Api,
    api,
    client,
    dicom_bytes,
    jpeg_bytes,
    make_settings,
    new_tenant,
    open_client,
    png_bytes,
    png_header_only,
)
from tests.models.model_files import (
    SIZE,
    TinyNet,
    card_dict,
    tiny_net,
    write_export,
    write_torchscript,
)

__all__ = ["api", "client"]  # fixtures


def model_input(data: bytes, card: dict) -> torch.Tensor:
    decoded = decode_image(data, max_bytes=1 << 24, max_pixels=1 << 24)
    return to_model_input(decoded, ModelCard.model_validate(card))


def direct_probabilities(net: nn.Module, data: bytes, card: dict, head: str) -> list[float]:
    """The raw network's answer for an image, computed here without the service."""
    x = model_input(data, card)[None]
    with torch.no_grad():
        logits = net((x - 0.5) / 0.25)
    if head == "softmax":
        return torch.softmax(logits, 1)[0].tolist()
    p = torch.sigmoid(logits)[0]
    if head == "binary-logit":
        return [1 - float(p[0]), float(p[0])]
    return p.tolist()


def probs_of(body: dict) -> list[float]:
    return [p["probability"] for p in body["predictions"]]


def shares_of(body: dict) -> list[float]:
    assert [p["probability"] for p in body["predictions"]] == [None] * len(body["predictions"])
    return [p["vote_share"] for p in body["predictions"]]


@pytest.fixture
def softmax_model(api: Api, tmp_path: Path) -> tuple[str, TinyNet]:
    net = tiny_net(seed=1)
    return api.register(write_torchscript(net, tmp_path / "s.pt"), card_dict())["id"], net


def assert_serving(api: Api, model_id: str) -> None:
    response = api.predict(model_id, ("ok.png", png_bytes(9)))
    assert response.status_code == 200, response.text


# ----------------------------------------------------------------------------- heads


def test_softmax(api: Api, softmax_model: tuple[str, TinyNet]) -> None:
    model_id, net = softmax_model
    data = png_bytes(1)
    body = api.predict(model_id, ("lesion.png", data)).json()
    assert list(body) == ["model_id", "predictions", "top_label", "smoothing"]
    assert body["model_id"] == model_id
    expected = direct_probabilities(net, data, card_dict(), "softmax")
    assert probs_of(body) == pytest.approx(expected, abs=1e-6)
    top = max(range(2), key=lambda i: expected[i])
    assert body["top_label"] == ("benign", "malignant")[top]
    assert [p["positive"] for p in body["predictions"]] == [i == top for i in range(2)]
    assert body["smoothing"] is None


def test_binary_logit(api: Api, tmp_path: Path) -> None:
    net = tiny_net(outputs=1, seed=2)
    model = api.register(write_torchscript(net, tmp_path / "b.pt"), card_dict())
    assert model["info"]["head"] == "binary-logit"
    data = png_bytes(2)
    body = api.predict(model["id"], ("x.png", data)).json()
    expected = direct_probabilities(net, data, card_dict(), "binary-logit")
    assert probs_of(body) == pytest.approx(expected, abs=1e-6)
    assert body["top_label"] == ("benign", "malignant")[int(expected[1] > expected[0])]


class _Shifted(TinyNet):
    """A multi-label net whose findings' logits are pushed by fixed offsets."""

    def __init__(self, offsets: list[float]) -> None:
        super().__init__(3, len(offsets))
        with torch.no_grad():
            self.fc.weight.mul_(0.01)
            self.fc.bias.copy_(torch.tensor(offsets))


def test_multi_label_thresholds_and_top_label(api: Api, tmp_path: Path) -> None:
    labels = ("effusion", "nodule", "edema")
    # sigmoid(2) = 0.88, sigmoid(0.4) = 0.60, sigmoid(-3) = 0.05 (weights are tiny).
    torch.manual_seed(0)
    net = _Shifted([0.4, 2.0, -3.0]).eval()
    card = card_dict(labels, task="multi-label", thresholds={"effusion": 0.7})
    model = api.register(write_torchscript(net, tmp_path / "m.pt"), card)
    assert model["info"]["head"] == "sigmoid"
    data = png_bytes(3)
    body = api.predict(model["id"], ("cxr.png", data)).json()
    expected = direct_probabilities(net, data, card, "sigmoid")
    assert probs_of(body) == pytest.approx(expected, abs=1e-6)
    # effusion (~0.6) is under its own 0.7 threshold; nodule (~0.88) is over the default 0.5.
    assert [p["positive"] for p in body["predictions"]] == [False, True, False]
    assert body["top_label"] == "nodule"


def test_multi_label_with_no_positive_finding_has_no_top_label(api: Api, tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = _Shifted([-4.0, -5.0]).eval()
    card = card_dict(("effusion", "nodule"), task="multi-label")
    model = api.register(write_torchscript(net, tmp_path / "m.pt"), card)
    body = api.predict(model["id"], ("cxr.png", png_bytes(4))).json()
    assert not any(p["positive"] for p in body["predictions"])
    assert body["top_label"] is None


# ----------------------------------------------------------------------------- files and formats


def test_several_files_keep_their_order_and_names(
    api: Api, softmax_model: tuple[str, TinyNet]
) -> None:
    model_id, net = softmax_model
    images = [
        ("a.png", png_bytes(10)),
        ("b.jpg", jpeg_bytes(11)),
        ("c.dcm", dicom_bytes(12)),
        ("d.png", png_bytes(13, mode="L")),
    ]
    body = api.predict(model_id, *images).json()
    assert body["model_id"] == model_id
    assert [r["filename"] for r in body["results"]] == ["a.png", "b.jpg", "c.dcm", "d.png"]
    for (_, data), result in zip(images, body["results"], strict=True):
        expected = direct_probabilities(net, data, card_dict(), "softmax")
        assert probs_of(result) == pytest.approx(expected, abs=1e-6)
    one = api.predict(model_id, images[0], several=True).json()
    assert len(one["results"]) == 1


def test_fixed_batch_export_serves_any_number_of_files(api: Api, tmp_path: Path) -> None:
    net = tiny_net(seed=4)
    model = api.register(write_export(net, tmp_path / "f.pt2", batch=2, dynamic=False), card_dict())
    assert model["info"]["fixed_batch"] == 2
    images = [(f"{i}.png", png_bytes(20 + i)) for i in range(3)]
    body = api.predict(model["id"], *images).json()
    for (_, data), result in zip(images, body["results"], strict=True):
        expected = direct_probabilities(net, data, card_dict(), "softmax")
        assert probs_of(result) == pytest.approx(expected, abs=1e-5)


# ----------------------------------------------------------------------------- bad images


BAD_IMAGES = {
    "empty": (b"", 415, "empty"),
    "truncated-png": (png_bytes(5)[:60], 415, ""),
    "text-named-png": (b"this is not an image, whatever its name says\n", 415, "not a PNG"),
    "20000x20000-png": (png_header_only(20000, 20000), 413, "pixels"),
    "dicom-without-pixels": (dicom_bytes(with_pixels=False), 415, "pixel"),
}


@pytest.mark.parametrize("case", list(BAD_IMAGES))
def test_bad_images_get_a_clear_4xx(
    api: Api, softmax_model: tuple[str, TinyNet], case: str
) -> None:
    model_id, _ = softmax_model
    content, status, words = BAD_IMAGES[case]
    response = api.predict(model_id, ("scan.png", content))
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["message"].startswith("scan.png")
    assert words.lower() in error["message"].lower()
    assert error["details"]["filename"] == "scan.png"
    assert_serving(api, model_id)


def test_a_bad_file_among_several_is_named(api: Api, softmax_model: tuple[str, TinyNet]) -> None:
    model_id, _ = softmax_model
    response = api.predict(model_id, ("a.png", png_bytes()), ("b.png", b"nope"))
    assert response.status_code == 415
    assert response.json()["error"]["details"] == {
        **response.json()["error"]["details"],
        "filename": "b.png",
        "index": 1,
    }
    assert_serving(api, model_id)


def test_image_limits(api: Api, softmax_model: tuple[str, TinyNet]) -> None:
    model_id, _ = softmax_model
    big = api.predict(model_id, ("big.png", b"\x89PNG" + b"\0" * MAX_IMAGE_BYTES))
    assert big.status_code == 413
    assert big.json()["error"]["code"] == "image_too_large"
    many = api.predict(model_id, *[(f"{i}.png", png_bytes(i)) for i in range(MAX_FILES + 1)])
    assert many.status_code == 422
    assert f"at most {MAX_FILES}" in many.json()["error"]["message"]
    both = api.client.post(
        f"/v1/models/{model_id}/predict",
        headers=api.auth,
        files=[("file", ("a.png", png_bytes())), ("files", ("b.png", png_bytes()))],
    )
    assert both.status_code == 422
    none = api.client.post(
        f"/v1/models/{model_id}/predict",
        headers=api.auth,
        files=[("image", ("a.png", png_bytes()))],
    )
    assert none.status_code == 422
    assert "unexpected form field 'image'" in none.text
    assert_serving(api, model_id)


# ----------------------------------------------------------------------------- batching


def _batch_histogram() -> tuple[float, float, float]:
    """(forward passes, images, passes of exactly one image) observed so far."""
    count = total = singles = 0.0
    for metric in BATCH_SIZE.collect():
        for sample in metric.samples:
            if sample.name.endswith("_count"):
                count = sample.value
            elif sample.name.endswith("_sum"):
                total = sample.value
            elif sample.name.endswith("_bucket") and sample.labels.get("le") == "1.0":
                singles = sample.value
    return count, total, singles


@pytest.fixture
def patient_client(tmp_path: Path) -> Iterator[TestClient]:
    """A generous batch wait: on a shared 2-core machine threads start far apart."""
    yield from open_client(
        make_settings(tmp_path / "data", batch_max_wait_ms=300.0, batch_max_size=16)
    )


def test_concurrent_requests_are_batched_and_each_gets_its_answer(
    patient_client: TestClient, tmp_path: Path
) -> None:
    api = Api(patient_client, new_tenant(patient_client, "busy"), tmp_path / "data")
    net = tiny_net(seed=6)
    model_id = api.register(write_torchscript(net, tmp_path / "m.pt"), card_dict())["id"]
    assert_serving(api, model_id)  # load it first: the batch should not wait on loading
    images = [png_bytes(100 + i) for i in range(16)]
    results: dict[int, list[float]] = {}
    barrier = threading.Barrier(len(images))
    passes, total, singles = _batch_histogram()

    def worker(i: int) -> None:
        barrier.wait()
        response = api.predict(model_id, (f"{i}.png", images[i]))
        assert response.status_code == 200, response.text
        results[i] = probs_of(response.json())

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(images))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    passes2, total2, singles2 = _batch_histogram()
    assert total2 - total == len(images)
    assert passes2 - passes < len(images)  # some forward pass carried several images
    assert singles2 - singles < passes2 - passes or passes2 - passes == 1
    for i, data in enumerate(images):
        expected = direct_probabilities(net, data, card_dict(), "softmax")
        assert results[i] == pytest.approx(expected, abs=1e-6)


def test_service_batches_announced_requests_together() -> None:
    """Without HTTP: 16 requests announced before they are decoded form one batch."""
    torch.manual_seed(0)
    net = tiny_net(seed=7)
    model = DiagnosticModel(net, ModelCard.model_validate(card_dict()), Head.SOFTMAX).eval()
    service = InferenceService(device=torch.device("cpu"), max_batch=16, max_wait_ms=2000.0)
    sizes: list[int] = []
    original = model.forward

    def counting(x: torch.Tensor) -> torch.Tensor:
        sizes.append(int(x.shape[0]))
        return original(x)

    model.forward = counting  # type: ignore[method-assign]
    xs = [torch.rand(3, SIZE, SIZE, generator=torch.Generator().manual_seed(i)) for i in range(16)]

    def prepare(x: torch.Tensor) -> Callable[[], list[torch.Tensor]]:
        return lambda: [x]

    async def run() -> list[list[list[float]]]:
        return await asyncio.gather(
            *[service.predict("m", lambda: model, 1, prepare(x)) for x in xs]
        )

    try:
        answers = asyncio.run(run())
    finally:
        service.close()
    assert sizes == [16]
    with torch.no_grad():
        expected = torch.softmax(net((torch.stack(xs) - 0.5) / 0.25), 1)
    for answer, row in zip(answers, expected, strict=True):
        assert answer[0] == pytest.approx(row.tolist(), abs=1e-6)


def test_lru_cache_is_bounded(tmp_path: Path) -> None:
    for lru_client in open_client(make_settings(tmp_path / "data", model_cache_size=2)):
        api = Api(lru_client, new_tenant(lru_client, "lru"), tmp_path / "data")
        path = write_torchscript(tiny_net(), tmp_path / "m.pt")
        ids = [api.register(path, card_dict(name=f"m{i}"))["id"] for i in range(3)]
        for model_id in ids:
            assert_serving(api, model_id)
        service = lru_client.app.state.robustdx.extras["inference"]  # type: ignore[attr-defined]
        assert service.cached() == ids[1:]
        assert_serving(api, ids[0])  # evicted models load again
        assert service.cached() == [ids[2], ids[0]]


# ----------------------------------------------------------------------------- smoothing


class _Constant(TinyNet):
    """Always the same class, whatever the noise: the vote is unanimous."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tensor([[0.0, 5.0]]).expand(x.shape[0], 2) + 0.0 * x.mean()


class _NoiseReader(TinyNet):
    """Decides by the sign of one pixel against the image mean: noise makes it a coin toss."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d = (x[:, 0, 0, 0] - x.mean(dim=(1, 2, 3))) * 100.0
        return torch.stack([d, -d], dim=1)


def test_smoothing_certifies_a_constant_model(api: Api, tmp_path: Path) -> None:
    model = api.register(write_torchscript(_Constant().eval(), tmp_path / "c.pt"), card_dict())
    body = api.predict(
        model["id"],
        ("x.png", png_bytes()),
        defense="smoothing",
        sigma=0.25,
        n=100,
        alpha=0.001,
        seed=0,
    ).json()
    s = body["smoothing"]
    assert s["label"] == body["top_label"] == "malignant"
    assert not s["abstained"]
    assert shares_of(body) == [0.0, 1.0]
    # Unanimous votes: p_lower = alpha ** (1 / n) (Clopper-Pearson), radius = sigma Phi^-1.
    p_lower = 0.001 ** (1 / 100)
    assert s["p_lower"] == pytest.approx(p_lower, rel=1e-6)
    assert s["certified_radius"] == pytest.approx(0.25 * norm.ppf(p_lower), rel=1e-6)
    # The plain model says "malignant" too: no warning.
    assert s["agreement_with_plain"] == 1.0
    assert s["warnings"] == []


def test_smoothing_abstains_on_a_coin_toss(api: Api, tmp_path: Path) -> None:
    model = api.register(write_torchscript(_NoiseReader().eval(), tmp_path / "n.pt"), card_dict())
    # On a flat grey image the pixel sits exactly at the mean: each noisy vote is a coin toss.
    buf = io.BytesIO()
    Image.new("RGB", (SIZE, SIZE), (128, 128, 128)).save(buf, format="PNG")
    body = api.predict(
        model["id"], ("grey.png", buf.getvalue()), defense="smoothing", sigma=0.5, n=200, seed=1
    ).json()
    assert body["smoothing"]["abstained"] is True
    assert body["smoothing"]["certified_radius"] == 0.0
    assert body["smoothing"]["p_lower"] < 0.5
    assert body["top_label"] is None
    assert not any(p["positive"] for p in body["predictions"])
    assert 0.3 < shares_of(body)[0] < 0.7


def test_smoothing_multi_label_reports_findings(api: Api, tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = _Shifted([3.0, -3.0]).eval()
    card = card_dict(("effusion", "nodule"), task="multi-label")
    model = api.register(write_torchscript(net, tmp_path / "m.pt"), card)
    body = api.predict(
        model["id"],
        ("x.png", png_bytes()),
        ("y.png", png_bytes(1)),
        defense="smoothing",
        n=50,
        seed=0,
    ).json()
    # n0 = 16 selection copies and n = 50 counted ones, all unanimous on both findings.
    p_lower = 0.001 ** (1 / 50)
    for result in body["results"]:
        smoothing = result["smoothing"]
        findings = {f["label"]: f for f in smoothing["findings"]}
        assert findings["effusion"]["positive"]
        assert not findings["nodule"]["positive"]
        assert findings["effusion"]["vote_share"] == 1.0
        assert findings["nodule"]["vote_share"] == 0.0
        for finding in findings.values():
            assert finding["p_lower"] == pytest.approx(p_lower, rel=1e-6)
            assert finding["certified_radius"] == pytest.approx(0.12 * norm.ppf(p_lower))
            assert finding["abstained"] is False
        assert result["top_label"] == smoothing["label"] == "effusion"
        assert smoothing["certified_radius"] == pytest.approx(0.12 * norm.ppf(p_lower))
        assert smoothing["p_lower"] == pytest.approx(p_lower, rel=1e-6)
        assert smoothing["abstained"] is False
        assert smoothing["agreement_with_plain"] == 1.0
        assert smoothing["warnings"] == []


class _NoiseFlips(TinyNet):
    """Every finding present on a clean image, absent as soon as the image is noisy (a model
    never trained under noise, at its worst): smoothing and plain diagnosis disagree."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Neighbouring pixels of a phantom differ little; noise makes them differ a lot.
        roughness = (x[:, :, 1:, :] - x[:, :, :-1, :]).abs().mean(dim=(1, 2, 3))
        logit = 4.0 - 400.0 * roughness
        return torch.stack([logit, logit, logit], dim=1)


def test_smoothing_warns_when_it_disagrees_with_the_plain_diagnosis(
    api: Api, tmp_path: Path
) -> None:
    card = card_dict(("effusion", "nodule", "edema"), task="multi-label")
    model = api.register(write_torchscript(_NoiseFlips().eval(), tmp_path / "f.pt"), card)
    flat = io.BytesIO()
    Image.new("RGB", (SIZE, SIZE), (120, 120, 120)).save(flat, format="PNG")
    plain = api.predict(model["id"], ("flat.png", flat.getvalue())).json()
    assert [p["positive"] for p in plain["predictions"]] == [True, True, True]
    body = api.predict(
        model["id"], ("flat.png", flat.getvalue()), defense="smoothing", sigma=0.25, n=40, seed=0
    ).json()
    smoothing = body["smoothing"]
    assert [f["positive"] for f in smoothing["findings"]] == [False, False, False]
    assert smoothing["agreement_with_plain"] == 0.0
    assert len(smoothing["warnings"]) == 1
    assert "disagrees with the plain diagnosis on 3 of 3 findings" in smoothing["warnings"][0]
    assert "not trained under Gaussian noise" in smoothing["warnings"][0]


def test_smoothing_parameters_are_checked(api: Api, softmax_model: tuple[str, TinyNet]) -> None:
    model_id, _ = softmax_model
    cases: list[dict[str, Any]] = [{"sigma": 2}, {"n": 0}, {"alpha": 0.7}, {"defense": "dropout"}]
    for params in cases:
        response = api.predict(
            model_id, ("x.png", png_bytes()), **{"defense": "smoothing", **params}
        )
        assert response.status_code == 422, params
    assert_serving(api, model_id)


def test_fhir_results_parse_as_r4_and_carry_the_answer(api: Api, tmp_path: Path) -> None:
    import pydicom
    from fhir.resources.R4B.bundle import Bundle

    torch.manual_seed(0)
    net = _Shifted([0.4, 2.0, -3.0]).eval()
    card = card_dict(("effusion", "nodule", "edema"), task="multi-label",
                     thresholds={"effusion": 0.7})
    model = api.register(write_torchscript(net, tmp_path / "m.pt"), card)
    dicom = dicom_bytes(5)
    study = str(pydicom.dcmread(io.BytesIO(dicom)).StudyInstanceUID)
    plain = api.predict(model["id"], ("cxr.png", png_bytes(3)), ("cxr.dcm", dicom)).json()
    response = api.predict(model["id"], ("cxr.png", png_bytes(3)), ("cxr.dcm", dicom),
                           format="fhir")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/fhir+json")
    bundle = Bundle.model_validate(response.json())
    kinds = [e.resource.get_resource_type() for e in bundle.entry]
    assert kinds.count("Device") == 1
    assert kinds.count("DiagnosticReport") == 2
    assert kinds.count("Observation") == 6
    reports = [e.resource for e in bundle.entry
               if e.resource.get_resource_type() == "DiagnosticReport"]
    assert reports[0].imagingStudy is None  # the PNG
    assert reports[1].imagingStudy[0].identifier.value == f"urn:oid:{study}"
    observations = {e.fullUrl: e.resource for e in bundle.entry
                    if e.resource.get_resource_type() == "Observation"}
    for report, result in zip(reports, plain["results"], strict=True):
        got = [observations[r.reference] for r in report.result]
        assert [o.code.text for o in got] == [p["label"] for p in result["predictions"]]
        assert [float(o.valueQuantity.value) for o in got] == pytest.approx(
            [p["probability"] for p in result["predictions"]], abs=1e-6)
        assert [o.interpretation[0].coding[0].code for o in got] == [
            "POS" if p["positive"] else "NEG" for p in result["predictions"]]
    effusion = next(o for o in observations.values() if o.code.text == "effusion")
    assert float(effusion.referenceRange[0].high.value) == 0.7
