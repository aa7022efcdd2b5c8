"""The CI recipes in docs/integrations run as written against the live service: the gate's
exit status follows the policy, the JUnit XML is there either way, the evidence verifies,
and a retried job (same Idempotency-Key) reuses its audit."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.integration.conftest import TinyModel
from tests.support.services import ROOT, Service

pytestmark = pytest.mark.integration

RECIPES = ROOT / "docs" / "integrations"
BIN = Path(sys.executable).parent


def recipe_block(path: Path, name: str) -> str:
    """The shell commands between ``robustdx-recipe: <name>begin`` and ``...end``."""
    marker = f"robustdx-recipe: {name + ' ' if name else ''}"
    lines = path.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip().endswith(marker + "begin"))
    end = next(i for i, line in enumerate(lines) if line.strip().endswith(marker + "end"))
    commands = [re.sub(r"^\s*(- )?", "", line) for line in lines[start + 1:end]]
    return "\n".join(commands)


@pytest.fixture(scope="module")
def live(live_service: Service) -> Service:
    return live_service


@pytest.fixture(scope="module")
def tenant(live: Service, tiny_derm: TinyModel) -> dict[str, str]:
    key = live.create_tenant("ci-hospital")
    with live.client(key) as c:
        with tiny_derm.weights.open("rb") as fh:
            card = dict(tiny_derm.card, name="derm-candidate")
            assert c.post("/v1/models", files={"file": ("m.safetensors", fh)},
                          data={"card": json.dumps(card)}).status_code == 201
        with tiny_derm.archive.open("rb") as fh:
            assert c.post("/v1/datasets", files={"file": ("d.zip", fh)},
                          data={"format": "imagefolder", "name": "derm-ci"}).status_code == 201
    return {"key": key}


def run(block: str, live: Service, key: str, workdir: Path, policy: dict,
        idempotency_key: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROBUSTDX_")}
    env.update({
        "PATH": f"{BIN}:{env.get('PATH', '/usr/bin:/bin')}", "PYTHONPATH": str(ROOT),
        "ROBUSTDX_URL": live.url, "ROBUSTDX_API_KEY": key, "ROBUSTDX_MODEL": "derm-candidate",
        "ROBUSTDX_DATASET": "derm-ci", "ROBUSTDX_POLICY": json.dumps(policy),
        "IDEMPOTENCY_KEY": idempotency_key,
    })
    return subprocess.run(["bash", "-eu", "-c", block], cwd=workdir, env=env, text=True,
                          capture_output=True, timeout=600, check=False)


@pytest.mark.parametrize(("recipe", "policy", "gate_status"), [
    ("gitlab-ci.yml", {"min_clean_accuracy": 0.5}, 0),
    ("github-actions.yml", {"min_accuracy": {"*": 0.99}}, 1),
    ("Jenkinsfile", {"min_clean_accuracy": 0.5}, 0),
])
def test_recipe(recipe: str, policy: dict, gate_status: int, live: Service,
                tenant: dict[str, str], tmp_path: Path) -> None:
    path = RECIPES / recipe
    gate = run(recipe_block(path, ""), live, tenant["key"], tmp_path, policy,
               f"{recipe}-run-1")
    assert gate.returncode == gate_status, gate.stderr + gate.stdout
    report = tmp_path / "robustdx-report"
    suite = ET.parse(report / "report.xml").getroot()
    failures = [c.get("name") for c in suite.iter("testcase") if c.find("failure") is not None]
    assert bool(failures) == (gate_status == 1)
    evidence = run(recipe_block(path, "evidence"), live, tenant["key"], tmp_path, policy,
                   f"{recipe}-run-1")
    assert evidence.returncode == 0, evidence.stderr
    assert "verified: audit" in evidence.stdout
    audit_id = json.loads((report / "report.json").read_text())["job"]["id"]

    # The CI system retries the job: the same key returns the first audit, no second one.
    with live.client(tenant["key"]) as c:
        before = c.get("/v1/audits").json()["total"]
    retry_dir = tmp_path / "retry"
    retry_dir.mkdir()
    again = run(recipe_block(path, ""), live, tenant["key"], retry_dir, policy,
                f"{recipe}-run-1")
    assert again.returncode == gate_status, again.stderr
    retried = json.loads((tmp_path / "retry" / "robustdx-report" / "report.json").read_text())
    assert retried["job"]["id"] == audit_id
    with live.client(tenant["key"]) as c:
        assert c.get("/v1/audits").json()["total"] == before
