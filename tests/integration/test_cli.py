"""The robustdx command against the live service: every resource command, the exit codes
(0 ok, 1 policy failed, 2 job failed or cancelled, 3 usage or connection error), --json,
and a release gate on a baseline audit with the signed bundle verified offline."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from models.architectures import build_architecture
from tests.integration.conftest import TinyModel
from tests.support.services import ROOT, Service, free_port

pytestmark = pytest.mark.integration

PGD = "pgd:eps=2/255,steps=5"
PGD_KEY = "pgd:eps=2/255,steps=5"


@pytest.fixture(scope="module")
def live(live_service: Service) -> Service:
    return live_service


@pytest.fixture(scope="module")
def key(live: Service) -> str:
    return live.create_tenant("cli-hospital")


def robustdx(live: Service | None, key: str | None, *args: str,
             cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROBUSTDX_")}
    env["PYTHONPATH"] = str(ROOT)
    if live is not None:
        env["ROBUSTDX_URL"] = live.url
    if key is not None:
        env["ROBUSTDX_API_KEY"] = key
    return subprocess.run([sys.executable, "-m", "app.cli", *args], env=env, cwd=cwd or ROOT,
                          capture_output=True, text=True, timeout=600, check=False)


def _json(done: subprocess.CompletedProcess[str]) -> object:
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.fixture(scope="module")
def registered(live: Service, key: str, tiny_derm: TinyModel,
               tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The good model, a regressed one (untrained, same card) and a dataset, by the CLI."""
    folder = tmp_path_factory.mktemp("cli-files")
    card = folder / "card.json"
    card.write_text(json.dumps(tiny_derm.card))
    good = _json(robustdx(live, key, "models", "upload", str(tiny_derm.weights),
                          "--card", f"@{card}", "--name", "derm-v1", "--json"))
    torch.manual_seed(123)
    net = build_architecture("small_cnn", 3, 1)
    weak_path = folder / "derm-v2.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(weak_path))
    weak = _json(robustdx(live, key, "models", "upload", str(weak_path), "--card", f"@{card}",
                          "--name", "derm-v2", "--json"))
    dataset = _json(robustdx(live, key, "datasets", "upload", str(tiny_derm.archive),
                             "--format", "imagefolder", "--name", "derm-phantoms", "--json"))
    assert isinstance(good, dict)
    assert isinstance(weak, dict)
    assert isinstance(dataset, dict)
    return {"good": good["id"], "weak": weak["id"], "dataset": dataset["id"]}


def test_models_and_datasets_commands(live: Service, key: str, registered: dict[str, str],
                                      tiny_derm: TinyModel, tmp_path: Path) -> None:
    listed = _json(robustdx(live, key, "models", "list", "--json"))
    assert isinstance(listed, list)
    assert {m["name"] for m in listed} == {"derm-v1", "derm-v2"}
    table = robustdx(live, key, "models", "list")
    assert table.returncode == 0
    assert table.stdout.splitlines()[0].split() == ["ID", "NAME", "FORMAT", "TASK", "BYTES",
                                                    "CREATED"]
    assert "derm-v1" in table.stdout
    datasets = _json(robustdx(live, key, "datasets", "list", "--json"))
    assert isinstance(datasets, list)
    assert [(d["name"], d["count"]) for d in datasets] == [("derm-phantoms", 96)]

    from PIL import Image

    image = tmp_path / "lesion.png"
    array = (tiny_derm.test_images[0].permute(1, 2, 0).numpy() * 255).round().astype("uint8")
    Image.fromarray(array).save(image)
    answer = _json(robustdx(live, key, "models", "predict", "derm-v1", str(image), "--json"))
    assert isinstance(answer, dict)
    with torch.inference_mode():
        expected = tiny_derm.model.predict(tiny_derm.test_images[:1])
    labels = tiny_derm.card["labels"]
    assert answer["top_label"] == labels[int(expected[0])]

    dest = tmp_path / "derm.safetensors"
    done = robustdx(live, key, "models", "download", "derm-v1", "--format", "safetensors",
                    "--out", str(dest))
    assert done.returncode == 0, done.stderr
    from safetensors.torch import load_file

    assert set(load_file(str(dest))) == set(load_file(str(tiny_derm.weights)))


def test_connection_usage_and_service_errors_are_one_line_and_exit_3(
    live: Service, key: str
) -> None:
    nobody = f"http://127.0.0.1:{free_port()}"
    refused = robustdx(None, key, "models", "list", "--url", nobody)
    assert refused.returncode == 3
    assert refused.stderr.strip().startswith(
        f"error: cannot reach the RobustDx service at {nobody}")
    assert len(refused.stderr.strip().splitlines()) == 1
    usage = robustdx(live, key, "audit", "submit", "--model", "derm-v1")
    assert usage.returncode == 3
    unknown = robustdx(live, key, "audit", "status", "0" * 32)
    assert unknown.returncode == 3
    assert unknown.stderr.strip().splitlines() == [f"error: HTTP 404: audit '{'0' * 32}' not found"]
    no_such_model = robustdx(live, key, "models", "predict", "nope", "x.png")
    assert no_such_model.returncode == 3
    bad_key = robustdx(live, "rdx_wrong", "models", "list")
    assert bad_key.returncode == 3
    assert "HTTP 401" in bad_key.stderr


def _submit(live: Service, key: str, model: str, out: Path, *extra: str
            ) -> subprocess.CompletedProcess[str]:
    return robustdx(live, key, "audit", "submit", "--model", model, "--dataset",
                    "derm-phantoms", "--attack", PGD, "--analysis", "quantitative",
                    "--seed", "5", "--wait", "--out", str(out), *extra)


def test_release_gate_on_a_baseline(live: Service, key: str, registered: dict[str, str],
                                    tmp_path: Path) -> None:
    base = _submit(live, key, "derm-v1", tmp_path / "base")
    assert base.returncode == 0, base.stderr
    assert "verdict: no policy" in base.stdout
    baseline_id = json.loads((tmp_path / "base" / "report.json").read_text())["job"]["id"]
    policy = json.dumps({"baseline": baseline_id,
                         "max_regression": {"accuracy": {PGD_KEY: 0.02, "clean": 0.02}}})

    # The same model again: no regression on any image, the gate passes.
    same = _submit(live, key, "derm-v1", tmp_path / "same", "--policy", policy)
    assert same.returncode == 0, same.stderr + same.stdout
    # The regressed candidate: exit 1 and failing JUnit cases, one per rule.
    worse = _submit(live, key, "derm-v2", tmp_path / "worse", "--policy", policy)
    assert worse.returncode == 1, worse.stderr + worse.stdout
    assert "verdict: fail" in worse.stdout
    suite = ET.parse(tmp_path / "worse" / "report.xml").getroot()
    failed = {c.get("name"): c.find("failure") is not None for c in suite.iter("testcase")}
    report = json.loads((tmp_path / "worse" / "report.json").read_text())
    rows = {(r["metric"], r["setting"]): r for r in report["sections"]["comparison"]["rows"]}
    # One JUnit case per rule, failing exactly when the comparison row is not within margin.
    assert failed == {f"max_regression.accuracy[{setting}]": not rows[("accuracy", setting)][
        "passed"] for setting in (PGD_KEY, "clean")}
    clean = rows[("accuracy", "clean")]
    assert failed["max_regression.accuracy[clean]"] is True  # an untrained model: worse
    assert clean["regression"] == pytest.approx(clean["baseline"] - clean["candidate"])
    assert clean["regression"] > clean["margin"]
    assert clean["ci"][0] <= clean["regression"] <= clean["ci"][1]
    assert clean["ci"][1] > clean["margin"]

    candidate_id = report["job"]["id"]
    as_json = robustdx(live, key, "audit", "compare", candidate_id, baseline_id, "--json")
    assert as_json.returncode == 1  # a rule of the candidate's policy fails
    compared = json.loads(as_json.stdout)
    assert compared["rows"] == report["sections"]["comparison"]["rows"]
    table = robustdx(live, key, "audit", "compare", candidate_id, baseline_id)
    assert table.returncode == 1
    assert "FAIL" in table.stdout

    # The filed evidence verifies offline with the published key.
    with live.client(key) as c:
        (tmp_path / "public.pem").write_bytes(c.get("/v1/signing-key").content)
    verified = robustdx(None, None, "audit", "verify", str(tmp_path / "worse" / "report.json"),
                        str(tmp_path / "worse" / "report.sig"), "--key",
                        str(tmp_path / "public.pem"), "--also",
                        str(tmp_path / "worse" / "report.xml"))
    assert verified.returncode == 0, verified.stderr


def test_bad_baselines_are_refused(live: Service, key: str, registered: dict[str, str],
                                   tmp_path: Path) -> None:
    done = _submit(live, key, "derm-v1", tmp_path / "b")
    assert done.returncode == 0, done.stderr
    baseline_id = json.loads((tmp_path / "b" / "report.json").read_text())["job"]["id"]
    body = {"model_id": registered["weak"], "dataset_id": registered["dataset"], "seed": 5,
            "attacks": [{"name": "pgd", "params": {"eps": 2 / 255, "steps": 5}}],
            "analyses": ["quantitative"]}
    other = live.create_tenant()
    with live.client(key) as c:
        settings = c.post("/v1/audits", json=body | {"policy": {
            "baseline": baseline_id, "max_regression": {"accuracy": {"*": 0.02}}},
            "attacks": [{"name": "fgsm", "params": {"eps": 2 / 255}}]})
        assert settings.status_code == 422
        assert "other attack settings" in settings.json()["error"]["message"]
        unknown_setting = c.post("/v1/audits", json=body | {"policy": {
            "baseline": baseline_id, "max_regression": {"accuracy": {"fgsm:eps=1/255": 0.02}}}})
        assert unknown_setting.status_code == 422
        running = c.post("/v1/audits", json=body)
        assert running.status_code == 202
        still = c.post("/v1/audits", json=body | {"policy": {"baseline": running.json()["id"]}})
        assert still.status_code == 409
    with live.client(other) as c:
        theirs = c.post("/v1/audits", json=body | {"policy": {"baseline": baseline_id}})
        assert theirs.status_code == 404


def test_status_list_cancel_download_and_a_cancelled_wait_exits_2(
    live: Service, key: str, registered: dict[str, str], tmp_path: Path
) -> None:
    waiting = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "audit", "submit", "--model", "derm-v1",
         "--dataset", "derm-phantoms", "--attack", "pgd:eps=8/255,steps=400,restarts=4",
         "--wait", "--out", str(tmp_path / "never")],
        env={**{k: v for k, v in os.environ.items() if not k.startswith("ROBUSTDX_")},
             "ROBUSTDX_URL": live.url, "ROBUSTDX_API_KEY": key, "PYTHONPATH": str(ROOT)},
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert waiting.stderr is not None
    first = waiting.stderr.readline()  # "audit <id> submitted", before any progress
    match = re.match(r"audit ([0-9a-f]{32}) submitted", first)
    assert match is not None, first
    audit_id = match.group(1)
    status = _json(robustdx(live, key, "audit", "status", audit_id, "--json"))
    assert isinstance(status, dict)
    assert status["id"] == audit_id
    cancelled = robustdx(live, key, "audit", "cancel", audit_id)
    assert cancelled.returncode == 0, cancelled.stderr
    _, stderr = waiting.communicate(timeout=300)
    assert waiting.returncode == 2, stderr
    assert "error: audit cancelled" in stderr

    finished = _json(robustdx(live, key, "audit", "list", "--json"))
    assert isinstance(finished, list)
    done_id = next(a["id"] for a in finished if a["status"] == "succeeded")
    got = robustdx(live, key, "audit", "download", done_id, "--out", str(tmp_path / "dl"))
    assert got.returncode == 0, got.stderr
    assert sorted(p.name for p in (tmp_path / "dl").iterdir()) == [
        "report.html", "report.json", "report.sig", "report.xml"]


def test_defense_commands(live: Service, key: str, registered: dict[str, str]) -> None:
    submitted = _json(robustdx(live, key, "defense", "submit", "--model", "derm-v1",
                               "--train-dataset", "derm-phantoms", "--eval-dataset",
                               "derm-phantoms", "--method", "clean", "--param", "epochs=1",
                               "--param", 'eval_attacks=[{"name": "fgsm", "params": '
                               '{"eps": "4/255"}}]', "--wait", "--json"))
    assert isinstance(submitted, dict)
    assert submitted["status"] == "succeeded", submitted
    # The JSON value reached the job: the evaluation ran the one attack it names.
    with live.client(key) as c:
        report = c.get(f"/v1/defenses/{submitted['id']}/report").json()
    assert list(report["after"]["attacks"]) == ["fgsm:eps=4/255"], report["after"]
    status = _json(robustdx(live, key, "defense", "status", submitted["id"], "--json"))
    assert isinstance(status, dict)
    assert status["result"] == submitted["result"]
