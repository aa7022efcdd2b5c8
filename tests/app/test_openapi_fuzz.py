"""The API fuzzed from its own OpenAPI document (schemathesis): examples, coverage and
fuzzing phases, derandomized, against a live server on SQLite with real resources, as a
tenant with a real key (the admin key for tenant creation). Every check schemathesis has
must pass (no 5xx, every status and header documented, every response matching its
schema, invalid input refused, missing credentials refused) except
``positive_data_acceptance``: a schema cannot say which bytes make a valid model file or
archive, so a schema-valid upload of random bytes is rightly a 422.

Bounded by ``max-examples`` per operation: 250 (about 4,000 requests, a minute or so on two
cores). ``ROBUSTDX_FUZZ_EXAMPLES=1000`` makes about 14,000 (about five minutes).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.app.http_fixtures import folder_zip
from tests.app.live import ADMIN_KEY, ROOT, create_tenant, live_api
from tests.models.model_files import card_dict, tiny_net, write_torchscript
from tests.support.services import Broker

pytestmark = pytest.mark.slow

EXAMPLES = int(os.environ.get("ROBUSTDX_FUZZ_EXAMPLES", "250"))
#: Ids that name real resources on routes that read them. Deleting and cancelling
#: routes are left to generated ids: the run must not remove what the others read.
READ_ROUTES = (r"^/v1/(models|datasets|audits|jobs|defenses)/\{[^}]+\}"
               r"(/(report.*|artifacts.*|download|predict|check))?$")


def _seed(url: str, key: str, tmp: Path) -> dict[str, str]:
    """A model, a dataset and a queued audit of them (which keeps both from deletion)."""
    auth = {"Authorization": f"Bearer {key}"}
    path = write_torchscript(tiny_net(), tmp / "model.pt")
    model = httpx.post(f"{url}/v1/models", headers=auth, timeout=120,
                       files={"file": ("model.pt", path.read_bytes())},
                       data={"card": json.dumps(card_dict(name="fuzz-target"))})
    assert model.status_code == 201, model.text
    dataset = httpx.post(f"{url}/v1/datasets", headers=auth, timeout=120,
                         files={"file": ("d.zip", folder_zip(("benign", "malignant")))},
                         data={"format": "imagefolder"})
    assert dataset.status_code == 201, dataset.text
    ids = {"model_id": model.json()["id"], "dataset_id": dataset.json()["id"]}
    audit = httpx.post(f"{url}/v1/audits", headers=auth, timeout=60,
                       json={**ids, "attacks": [{"name": "fgsm", "params": {"eps": 0.01}}]})
    assert audit.status_code == 202, audit.text
    return ids | {"audit_id": audit.json()["id"], "job_id": audit.json()["id"]}


def _config(path: Path, key: str, ids: dict[str, str]) -> Path:
    params = ", ".join(f'"path.{name}" = "{value}"' for name, value in ids.items())
    path.write_text(f"""
headers = {{ Authorization = "Bearer {key}" }}
hooks = "tests.app.fuzz_hooks"
workers = 1
request-timeout = 60

[[operations]]
include-path = "/v1/tenants"
headers = {{ Authorization = "Bearer {ADMIN_KEY}" }}

[[operations]]
include-path-regex = '{READ_ROUTES}'
include-method-regex = "^(GET|POST)$"
parameters = {{ {params} }}
""")
    return path


def test_the_openapi_document_survives_its_fuzzer(tmp_path: Path, broker: Broker) -> None:
    broker.flush()
    with live_api(tmp_path / "data", ROBUSTDX_BROKER_URL=broker.url) as url:
        key = create_tenant(url, "fuzzer")
        ids = _seed(url, key, tmp_path)
        config = _config(tmp_path / "schemathesis.toml", key, ids)
        report = tmp_path / "report.json"
        st = Path(sys.executable).with_name("st")
        run = subprocess.run(
            [str(st), "--config-file", str(config), "--no-color", "run", f"{url}/openapi.json",
             "--phases", "examples,coverage,fuzzing", "--checks", "all",
             "--exclude-checks", "positive_data_acceptance", "--mode", "all",
             "--max-examples", str(EXAMPLES), "--generation-deterministic",
             "--suppress-health-check", "all", "--report", "json",
             "--report-json-path", str(report)],
            capture_output=True, text=True, timeout=540, cwd=ROOT,
            env={**os.environ, "ROBUSTDX_FUZZ_IDS": json.dumps(ids),
                 "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT),
                                                             os.environ.get("PYTHONPATH")]))},
        )
        alive = httpx.get(f"{url}/v1/models/{ids['model_id']}",
                          headers={"Authorization": f"Bearer {key}"}, timeout=30)
    assert run.returncode == 0, run.stdout[-20000:] + run.stderr[-3000:]
    assert alive.status_code == 200
    summary = json.loads(report.read_text())
    assert summary["failures"] == []
    assert summary["errors"] == []
    operations = summary["operations"]
    assert operations["tested"] == operations["total"] >= 30
    assert {name: phase["status"] for name, phase in summary["phases"].items()} == {
        "examples": "success", "coverage": "success", "fuzzing": "success", "stateful": "skip"}
    # The fuzzed submissions reached validation with the real ids (the hooks work).
    audits = summary["valid_rates"]["POST /v1/audits"]["fuzzing"]
    assert audits["accepted"] > 0
