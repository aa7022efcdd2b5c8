"""Remote models: the URL allow-list (no SSRF) and what an audit of one may ask."""

from __future__ import annotations

from typing import Any

import pytest

from app.core.remote import REMOTE_ANALYSES, check_remote_audit, check_remote_url
from app.core.settings import Settings
from models.errors import InvalidParametersError


def _settings(**kw: Any) -> Settings:
    return Settings(remote_allowed_hosts=["triton.hospital.org", "*.models.example.com",
                                          "127.0.0.1"], **kw)


@pytest.mark.parametrize(("url", "message"), [
    ("ftp://triton.hospital.org/x", "must be http:// or https://"),
    ("file:///etc/passwd", "must be http:// or https://"),
    ("http://user:pw@triton.hospital.org", "must not carry credentials"),
    ("http://triton.hospital.org/?next=http://evil", "must not have a query"),
    ("http:///v2", "names no host"),
    ("http://triton.hospital.org:99999", "invalid port"),
    ("http://evil.org", "not on the remote model allow-list"),
    ("http://triton.hospital.org.evil.org", "not on the remote model allow-list"),
    # '*.' needs a label before the domain
    ("http://models.example.com", "not on the remote model allow-list"),
    ("http://localhost:8000", "not on the remote model allow-list"),
])
def test_urls_outside_the_rules_are_refused(url: str, message: str) -> None:
    with pytest.raises(InvalidParametersError, match=message):
        check_remote_url(url, _settings(), resolve=False)


def test_allow_listed_hosts_pass_without_resolving() -> None:
    settings = _settings()
    assert check_remote_url("https://triton.hospital.org:8000/", settings, resolve=False) \
        == "https://triton.hospital.org:8000"
    assert check_remote_url("http://a.models.example.com", settings, resolve=False) \
        == "http://a.models.example.com"


def test_loopback_is_refused_unless_private_networks_are_allowed() -> None:
    with pytest.raises(InvalidParametersError, match="non-public address"):
        check_remote_url("http://127.0.0.1:8000", _settings())
    allowed = _settings(remote_allow_private_networks=True)
    assert check_remote_url("http://127.0.0.1:8000", allowed) == "http://127.0.0.1:8000"


def test_nothing_is_allowed_by_default() -> None:
    with pytest.raises(InvalidParametersError, match="allow-list"):
        check_remote_url("https://triton.hospital.org", Settings(), resolve=False)


def _request(**kw: Any) -> dict[str, Any]:
    return {"model_id": "m", "dataset_id": "d", "seed": 0,
            "attacks": [{"name": "square", "params": {"eps": 0.03, "queries": 50}}],
            "analyses": None, "options": {"batch_size": 32, "min_eps": True}} | kw


def test_gradient_attacks_and_analyses_are_refused() -> None:
    settings = Settings()
    with pytest.raises(InvalidParametersError, match=r"attack\(s\) fgsm, pgd need gradients"):
        check_remote_audit(_request(attacks=[{"name": "pgd"}, {"name": "square"},
                                             {"name": "fgsm"}]), settings)
    with pytest.raises(InvalidParametersError, match="gradcam, sanity need gradients"):
        check_remote_audit(_request(analyses=[{"name": "gradcam"}, {"name": "sanity"},
                                              {"name": "quantitative"}]), settings)


def test_remote_audits_get_one_shard_a_budget_and_no_bisection() -> None:
    adjusted = check_remote_audit(_request(), Settings(remote_query_budget=500,
                                                       remote_query_rate=20.0))
    options = adjusted["options"]
    assert (options["query_budget"], options["query_rate"]) == (500, 20.0)
    assert options["min_eps"] is False
    assert options["shard_size"] == 2**31 - 1
    assert [a["name"] for a in adjusted["analyses"]] == list(REMOTE_ANALYSES)
    own = check_remote_audit(_request(options={"query_budget": 7, "query_rate": 3.5}),
                             Settings())
    assert (own["options"]["query_budget"], own["options"]["query_rate"]) == (7, 3.5)


def test_budgets_and_rates_have_ceilings() -> None:
    settings = Settings(remote_max_query_budget=1000, remote_max_query_rate=50.0)
    with pytest.raises(InvalidParametersError, match="query_budget must be at most 1000"):
        check_remote_audit(_request(options={"query_budget": 1001}), settings)
    with pytest.raises(InvalidParametersError, match=r"query_rate must be in \(0, 50.0\]"):
        check_remote_audit(_request(options={"query_budget": 10, "query_rate": 51}), settings)
