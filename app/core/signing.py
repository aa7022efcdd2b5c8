"""Signed evidence: an Ed25519 signature over an audit's report bundle.

A hospital files a report as evidence for a release; it must be able to prove later, offline,
that the file it kept is the one RobustDx produced. The service signs a *bundle manifest*:
the SHA-256 of ``report.json``, ``report.html`` and ``report.xml`` and of every artifact,
plus the audit id. The signature envelope (``report.sig``, JSON)::

    {"format": "robustdx-evidence/1", "algorithm": "ed25519", "key_id": "<sha256 of the
     public key, 16 hex>", "bundle": {"audit_id": ..., "files": {"report.json": "<sha256>",
     ...}, "artifacts": {"<name>": "<sha256>", ...}}, "signature": "<base64>"}

The signature covers the canonical JSON of ``bundle`` (sorted keys, no whitespace, UTF-8).
:func:`verify` checks the signature with the public key and then that every file given
hashes to its entry, so a changed byte in any of them fails. The key is Ed25519 (RFC 8032):
small, deterministic signatures, and in every verifier's toolbox (``openssl pkeyutl``).

The private key comes from ``ROBUSTDX_SIGNING_KEY_FILE`` (PEM, PKCS#8). In development and
tests a key is generated at first start under the data folder (mode 0600); in production
none is generated: without a configured key the service signs nothing and says so.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from app.core.settings import Settings
from app.core.storage import write_atomic
from models.errors import InvalidInputError, ServiceUnavailableError
from models.hashing import sha256_file

FORMAT = "robustdx-evidence/1"
ALGORITHM = "ed25519"
DEV_KEY_FILE = "signing-key.pem"
SIGNED_REPORTS = ("report.json", "report.html", "report.xml")


class SignatureMismatchError(InvalidInputError):
    """The evidence does not verify: a bad signature, another key, or a changed file."""

    code = "signature_mismatch"


def canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def key_file(settings: Settings) -> Path | None:
    if settings.signing_key_file is not None:
        return settings.signing_key_file
    if settings.environment == "production":
        return None
    return settings.data_dir / DEV_KEY_FILE


def load_signing_key(settings: Settings) -> Ed25519PrivateKey:
    """The service's private key; generated at first use outside production."""
    path = key_file(settings)
    if path is None:
        raise ServiceUnavailableError(
            "no signing key is configured: set ROBUSTDX_SIGNING_KEY_FILE to an Ed25519 PEM key"
        )
    if not path.exists():
        if settings.signing_key_file is not None:
            raise ServiceUnavailableError("the configured signing key file does not exist")
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process made it first
            pass
        else:
            with os.fdopen(fd, "wb") as fh:
                fh.write(pem)
    loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(loaded, Ed25519PrivateKey):
        raise ServiceUnavailableError("the configured signing key is not an Ed25519 key")
    return loaded


def public_pem(key: Ed25519PrivateKey | Ed25519PublicKey) -> bytes:
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return public.public_bytes(serialization.Encoding.PEM,
                               serialization.PublicFormat.SubjectPublicKeyInfo)


def key_id(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    return hashlib.sha256(public_pem(key)).hexdigest()[:16]


def bundle_of(audit_id: str, job_dir: Path, artifacts_dir: Path) -> dict[str, Any]:
    """The manifest of an audit's stored reports and artifacts, with their SHA-256."""
    files = {name: sha256_file(job_dir / name) for name in SIGNED_REPORTS
             if (job_dir / name).is_file()}
    artifacts = {p.relative_to(artifacts_dir).as_posix(): sha256_file(p)
                 for p in sorted(artifacts_dir.rglob("*")) if p.is_file()}
    return {"audit_id": audit_id, "files": files, "artifacts": artifacts}


def sign(key: Ed25519PrivateKey, bundle: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "algorithm": ALGORITHM,
        "key_id": key_id(key),
        "bundle": dict(bundle),
        "signature": base64.b64encode(key.sign(canonical(bundle))).decode(),
    }


def sign_audit(settings: Settings, audit_id: str, job_dir: Path, artifacts_dir: Path) -> bytes:
    """``report.sig`` of a finished audit, made once and kept beside the reports."""
    path = job_dir / "report.sig"
    if path.exists():
        return path.read_bytes()
    envelope = sign(load_signing_key(settings), bundle_of(audit_id, job_dir, artifacts_dir))
    data = json.dumps(envelope, indent=2, sort_keys=True).encode() + b"\n"
    write_atomic(path, data)
    return data


def parse_envelope(data: bytes) -> dict[str, Any]:
    """A ``report.sig`` read back, refusing anything that is not one."""
    try:
        envelope = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidInputError("the signature file is not a RobustDx evidence signature") from exc
    if (not isinstance(envelope, dict) or envelope.get("format") != FORMAT
            or envelope.get("algorithm") != ALGORITHM
            or not isinstance(envelope.get("bundle"), dict)
            or not isinstance(envelope.get("signature"), str)):
        raise InvalidInputError("the signature file is not a RobustDx evidence signature")
    return envelope


def verify(envelope_bytes: bytes, public_key_pem: bytes,
           files: Mapping[str, bytes]) -> dict[str, Any]:
    """Check the signature with ``public_key_pem``, then that each of ``files`` (name ->
    content, names as in the bundle: ``report.json``, ``report.html``, ``report.xml`` or an
    artifact name) hashes to its entry. Returns the verified bundle."""
    envelope = parse_envelope(envelope_bytes)
    try:
        public = serialization.load_pem_public_key(public_key_pem)
    except ValueError as exc:
        raise InvalidInputError("the public key is not a PEM public key") from exc
    if not isinstance(public, Ed25519PublicKey):
        raise InvalidInputError("the public key is not an Ed25519 key")
    try:
        signature = base64.b64decode(envelope["signature"], validate=True)
        public.verify(signature, canonical(envelope["bundle"]))
    except (InvalidSignature, binascii.Error, ValueError) as exc:
        raise SignatureMismatchError(
            "the signature does not match the bundle under this key") from exc
    bundle: dict[str, Any] = envelope["bundle"]
    known = {**bundle.get("files", {}), **bundle.get("artifacts", {})}
    for name, content in files.items():
        if name not in known:
            raise SignatureMismatchError(f"{name} is not part of the signed bundle")
        if hashlib.sha256(content).hexdigest() != known[name]:
            raise SignatureMismatchError(f"{name} was changed after it was signed")
    return bundle
