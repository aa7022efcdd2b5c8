"""Signed evidence: sign a bundle, verify it offline, and fail on any changed byte."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from app.core import signing
from app.core.settings import Settings
from models.errors import InvalidInputError, ServiceUnavailableError


@pytest.fixture
def audit(tmp_path: Path) -> tuple[Settings, Path, Path]:
    job_dir = tmp_path / "jobs" / "a1"
    artifacts = job_dir / "artifacts"
    (artifacts / "pgd").mkdir(parents=True)
    (job_dir / "report.json").write_bytes(b'{"summary": {"verdict": "pass"}}')
    (job_dir / "report.html").write_bytes(b"<html>report</html>")
    (job_dir / "report.xml").write_bytes(b"<testsuite/>")
    (artifacts / "pgd" / "0.png").write_bytes(b"\x89PNG fake")
    settings = Settings(data_dir=tmp_path / "data", environment="test")
    return settings, job_dir, artifacts


def test_a_signed_bundle_verifies_with_the_public_key(audit: tuple[Settings, Path, Path]) -> None:
    settings, job_dir, artifacts = audit
    envelope = signing.sign_audit(settings, "a1", job_dir, artifacts)
    public = signing.public_pem(signing.load_signing_key(settings))
    files = {name: (job_dir / name).read_bytes() for name in signing.SIGNED_REPORTS}
    files["pgd/0.png"] = (artifacts / "pgd" / "0.png").read_bytes()

    bundle = signing.verify(envelope, public, files)

    assert bundle["audit_id"] == "a1"
    assert sorted(bundle["files"]) == ["report.html", "report.json", "report.xml"]
    assert list(bundle["artifacts"]) == ["pgd/0.png"]
    # Signing again gives the same bytes (kept beside the reports; Ed25519 is deterministic).
    assert signing.sign_audit(settings, "a1", job_dir, artifacts) == envelope


@pytest.mark.parametrize("position", [0, 10, -1])
def test_a_tampered_byte_fails(audit: tuple[Settings, Path, Path], position: int) -> None:
    settings, job_dir, artifacts = audit
    envelope = signing.sign_audit(settings, "a1", job_dir, artifacts)
    public = signing.public_pem(signing.load_signing_key(settings))
    report = bytearray((job_dir / "report.json").read_bytes())
    report[position] ^= 0x01
    with pytest.raises(signing.SignatureMismatchError, match=r"report\.json was changed"):
        signing.verify(envelope, public, {"report.json": bytes(report)})


def test_a_tampered_bundle_or_another_key_fails(audit: tuple[Settings, Path, Path]) -> None:
    settings, job_dir, artifacts = audit
    envelope = json.loads(signing.sign_audit(settings, "a1", job_dir, artifacts))
    public = signing.public_pem(signing.load_signing_key(settings))
    forged = dict(envelope, bundle=dict(envelope["bundle"], audit_id="a2"))
    with pytest.raises(signing.SignatureMismatchError, match="does not match"):
        signing.verify(json.dumps(forged).encode(), public, {})
    other = signing.public_pem(Ed25519PrivateKey.generate())
    with pytest.raises(signing.SignatureMismatchError, match="does not match"):
        signing.verify(json.dumps(envelope).encode(), other, {})
    with pytest.raises(signing.SignatureMismatchError, match="not part of the signed bundle"):
        signing.verify(json.dumps(envelope).encode(), public, {"evil.png": b"x"})


@pytest.mark.parametrize("data", [b"", b"not json", b"[]", b'{"format": "other"}',
                                  b'{"format": "robustdx-evidence/1", "algorithm": "rsa"}'])
def test_a_file_that_is_not_a_signature_is_refused(data: bytes) -> None:
    public = signing.public_pem(Ed25519PrivateKey.generate())
    with pytest.raises(InvalidInputError, match="not a RobustDx evidence signature"):
        signing.verify(data, public, {})


def test_the_development_key_is_made_once_and_private(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, environment="development")
    first = signing.public_pem(signing.load_signing_key(settings))
    assert signing.public_pem(signing.load_signing_key(settings)) == first
    assert (tmp_path / signing.DEV_KEY_FILE).stat().st_mode & 0o777 == 0o600


def test_production_signs_nothing_without_a_configured_key(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, environment="production", admin_key="a-real-secret")
    with pytest.raises(ServiceUnavailableError, match="ROBUSTDX_SIGNING_KEY_FILE"):
        signing.load_signing_key(settings)
    assert not (tmp_path / signing.DEV_KEY_FILE).exists()
