"""The Kubernetes manifests in deploy/ agree with the settings, the CLI and the queues."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from app.core.queue import TASK_QUEUES
from app.core.settings import Settings

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"


def _docs() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in sorted(DEPLOY.glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def _kind(kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in _docs() if d["kind"] == kind}


def _settings_env() -> dict[str, str]:
    env = dict(_kind("ConfigMap")["robustdx-config"]["data"])
    env.update(_kind("Secret")["robustdx-secrets"]["stringData"])
    return env


def test_every_variable_is_a_setting_and_the_production_settings_validate() -> None:
    fields = set(Settings.model_fields)
    env = _settings_env()
    for deployment in _kind("Deployment").values():
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        env |= {e["name"]: e["value"] for e in container.get("env", [])}
    for name in env:
        assert name.removeprefix("ROBUSTDX_").lower() in fields, name
    values: dict[str, Any] = {k.removeprefix("ROBUSTDX_").lower(): v for k, v in env.items()}
    values["admin_key"] = "a-real-secret"
    settings = Settings(**values)
    assert settings.storage_url == "s3://robustdx/artifacts"
    with pytest.raises(ValueError, match="ROBUSTDX_ADMIN_KEY"):
        Settings(environment="production")


def test_deployments_run_cli_commands_and_share_no_volume() -> None:
    from typer.main import get_command

    from app.cli.main import cli

    names = set(get_command(cli).commands)  # type: ignore[attr-defined]
    deployments = _kind("Deployment")
    assert set(deployments) == {"robustdx-api", "robustdx-worker"}
    for deployment in deployments.values():
        spec = deployment["spec"]["template"]["spec"]
        (container,) = spec["containers"]
        assert container["command"][0] == "robustdx"
        assert container["command"][1] in names
        assert all("emptyDir" in v for v in spec["volumes"])  # a cache, never a shared disk
    worker = deployments["robustdx-worker"]["spec"]["template"]["spec"]["containers"][0]
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == 1


def test_api_probes_are_the_health_routes() -> None:
    from app.api.main import create_app

    paths = set(create_app(Settings(run_dispatcher=False)).openapi()["paths"])
    (container,) = _kind("Deployment")["robustdx-api"]["spec"]["template"]["spec"]["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health/live"
    assert {"/health/ready", "/health/live"} <= paths


def test_the_autoscaler_watches_the_worker_queues() -> None:
    (scaled,) = _kind("ScaledObject").values()
    assert scaled["spec"]["scaleTargetRef"]["name"] == "robustdx-worker"
    lists = {t["metadata"]["listName"] for t in scaled["spec"]["triggers"]}
    assert lists == set(TASK_QUEUES.values())
    assert scaled["spec"]["minReplicaCount"] >= 1
    kustomize = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    assert "secret.example.yaml" not in kustomize["resources"]
    assert {p.name for p in DEPLOY.glob("*.yaml")} - {"kustomization.yaml",
                                                       "secret.example.yaml"} \
        == set(kustomize["resources"])
