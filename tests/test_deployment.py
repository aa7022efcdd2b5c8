"""There is no Docker engine here: check that the compose file agrees with the settings."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from app.core.settings import Settings

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def compose() -> dict:
    return dict(yaml.safe_load((ROOT / "docker-compose.yml").read_text()))


def test_services_present(compose: dict) -> None:
    assert set(compose["services"]) == {"migrate", "api", "worker", "redis", "postgres", "s3"}


def test_processes_share_no_disk_only_the_bucket(compose: dict) -> None:
    for name in ("api", "worker"):
        service = compose["services"][name]
        assert "volumes" not in service, name
        assert service["environment"]["ROBUSTDX_STORAGE_URL"] == "s3://robustdx/artifacts"
        assert service["environment"]["ROBUSTDX_S3_ENDPOINT_URL"] == "http://s3:8333"
    assert "-s3.port=8333" in compose["services"]["s3"]["command"]
    assert "ports" not in compose["services"]["s3"]


def test_environment_names_are_settings(compose: dict) -> None:
    fields = set(Settings.model_fields)
    for name in ("api", "worker"):
        env = compose["services"][name]["environment"]
        for var in env:
            assert var.startswith("ROBUSTDX_"), var
            assert var.removeprefix("ROBUSTDX_").lower() in fields, var


def test_production_settings_from_compose_validate(compose: dict) -> None:
    env = {k.removeprefix("ROBUSTDX_").lower(): v
           for k, v in compose["services"]["worker"]["environment"].items()}
    env["admin_key"] = "a-real-secret"
    settings = Settings(**env)
    assert settings.environment == "production"
    assert settings.resolved_database_url.startswith("postgresql://")
    assert settings.resolved_broker_url == "redis://redis:6379/0"
    pg = compose["services"]["postgres"]["environment"]
    assert f"{pg['POSTGRES_USER']}:{pg['POSTGRES_PASSWORD']}@postgres:5432/{pg['POSTGRES_DB']}" \
        in settings.resolved_database_url


def test_default_admin_key_refused_in_production() -> None:
    with pytest.raises(ValueError, match="ROBUSTDX_ADMIN_KEY"):
        Settings(environment="production")


def test_commands_are_cli_commands(compose: dict) -> None:
    from typer.main import get_command

    from app.cli.main import cli

    names = set(get_command(cli).commands)  # type: ignore[attr-defined]
    for name in ("migrate", "api", "worker"):
        command = compose["services"][name]["command"]
        assert command[0] == "robustdx"
        assert command[1] in names


def test_migrations_run_before_the_service(compose: dict) -> None:
    assert compose["services"]["migrate"]["command"] == ["robustdx", "db", "upgrade"]
    for name in ("api", "worker"):
        after = compose["services"][name]["depends_on"]["migrate"]
        assert after == {"condition": "service_completed_successfully"}


def test_worker_reserves_a_gpu_and_api_publishes_port(compose: dict) -> None:
    devices = compose["services"]["worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["capabilities"] == ["gpu"]
    assert compose["services"]["api"]["ports"] == ["8000:8000"]
