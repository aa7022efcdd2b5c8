"""Budgets: the audit cost estimate term by term, the engine's defaults it assumes, the token
bucket, and the per-tenant cap on active jobs (SQLite and PostgreSQL, under concurrency)."""

from __future__ import annotations

import math
import threading
import uuid

import pytest

from app.core.catalogue import ANALYSIS_NAMES
from app.core.db import Database
from app.core.db.migrate import upgrade as upgrade_schema
from app.core.jobs import create_job
from app.core.limits import (
    ANALYSIS_PASSES,
    ATTACK_DEFAULTS,
    OPT_IN_ANALYSES,
    RateLimiter,
    TokenBucket,
    attack_passes,
    check_active_jobs,
    check_audit_budget,
    check_smoothing_samples,
    estimate_audit_cost,
)
from app.core.tenants import create_tenant
from models.errors import BudgetExceededError, InvalidParametersError, RateLimitedError


def test_engine_defaults_are_the_ones_the_estimate_assumes() -> None:
    from workers.attacks import attack_class, list_attacks

    assert sorted(ATTACK_DEFAULTS) == list_attacks()
    for name, defaults in ATTACK_DEFAULTS.items():
        fields = attack_class(name).params_model.model_fields
        assert {k: fields[k].default for k in defaults} == defaults, name


def test_every_analysis_has_a_cost_and_the_opt_in_ones_are_the_engines() -> None:
    from workers.audit.engine import OPT_IN_ANALYSES as ENGINE_OPT_IN

    assert sorted({*ANALYSIS_PASSES, "perturbations"}) == sorted(ANALYSIS_NAMES)
    assert OPT_IN_ANALYSES == ENGINE_OPT_IN
    default = estimate_audit_cost({"attacks": [], "options": {"min_eps": False}}, 10)
    assert sorted(a["name"] for a in default["analyses"]) == sorted(
        n for n in ANALYSIS_PASSES if n not in OPT_IN_ANALYSES
    )
    assert default["total"] == 10 + 10 * sum(ANALYSIS_PASSES.values())
    assert estimate_audit_cost({"attacks": [], "analyses": [],
                                "options": {"min_eps": False}}, 10) == default


def test_attack_passes() -> None:
    assert attack_passes("fgsm", {}) == 1
    assert attack_passes("pgd", {}) == 10
    assert attack_passes("pgd", {"steps": 40, "restarts": 5}) == 200
    assert attack_passes("apgd", {"steps": 1e9, "restarts": 1000}) == 10**12
    assert attack_passes("square", {"queries": 300}) == 300
    assert attack_passes("autoattack", {}) == 100 * 10 + 5000
    assert attack_passes("cw_l2", {"steps": 7}) == 35
    assert attack_passes("gap", {"epochs": 3}) == 4
    assert attack_passes("pgd", {"steps": "ten"}) == 10  # the engine refuses it later
    with pytest.raises(InvalidParametersError, match="finite"):
        attack_passes("pgd", {"steps": math.inf})


def test_estimate_terms() -> None:
    request = {
        "attacks": [
            {"name": "pgd", "params": {"eps": [0.01, 0.02, 0.03], "steps": 10, "restarts": 2}},
            {"name": "fgsm", "params": {"eps": 0.01}},
        ],
        "analyses": [{"name": "perturbations", "params": {"severities": [1, 3]}},
                     {"name": "quantitative"}],
        "options": {"min_eps": False, "max_images": 50},
    }
    estimate = estimate_audit_cost(request, dataset_images=200)
    assert estimate["images"] == 50
    assert [a["cost"] for a in estimate["attacks"]] == [50 * 3 * 20, 50]
    assert [a["cost"] for a in estimate["analyses"]] == [50 * 24 * 2, 0]
    assert estimate["min_eps"] == 0
    assert estimate["total"] == 50 + 3000 + 50 + 2400
    with_min_eps = estimate_audit_cost({**request, "options": {}}, dataset_images=10)
    assert with_min_eps["min_eps"] == 10 * 8 * 20


def test_budget_refusal_carries_the_estimate() -> None:
    request = {"attacks": [{"name": "apgd", "params": {"steps": 10**9, "restarts": 1000,
                                                        "eps": [0.01] * 200}}],
               "analyses": [{"name": "quantitative"}], "options": {"min_eps": False}}
    estimate = estimate_audit_cost(request, dataset_images=96)
    with pytest.raises(BudgetExceededError) as info:
        check_audit_budget(estimate, 50_000_000)
    assert info.value.details["estimate"]["total"] == 96 + 96 * 200 * 10**12
    assert info.value.details["limit"] == 50_000_000
    assert "apgd" in info.value.message
    check_audit_budget(estimate_audit_cost({**request, "attacks": [{"name": "fgsm"}]}, 96), 1000)


def test_smoothing_cap() -> None:
    check_smoothing_samples(100, 4, 400)
    with pytest.raises(BudgetExceededError) as info:
        check_smoothing_samples(10_000, 4, 10_000)
    assert info.value.details["samples"] == 40_000


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_token_bucket_refills_at_its_rate() -> None:
    clock = Clock()
    bucket = TokenBucket(rate=10, capacity=100, clock=clock)
    assert bucket.take(100) == 0.0
    assert bucket.take(20) == pytest.approx(2.0)  # 20 tokens at 10/s
    clock.now = 1.0
    assert bucket.take(20) == pytest.approx(1.0)
    clock.now = 2.0
    assert bucket.take(20) == 0.0
    assert math.isinf(bucket.take(101))


def test_rate_limiter_is_per_tenant_and_says_when_to_retry() -> None:
    clock = Clock()
    limiter = RateLimiter(rate=5, capacity=10, clock=clock)
    limiter.charge("a", 10)
    with pytest.raises(RateLimitedError) as info:
        limiter.charge("a", 3)
    assert info.value.retry_after == 1  # 3 tokens at 5/s: 0.6 s, rounded up
    limiter.charge("b", 10)  # another tenant's bucket is full
    with pytest.raises(BudgetExceededError):
        limiter.charge("a", 11)


@pytest.fixture
def db(database_url: str) -> Database:
    database = Database(database_url)
    upgrade_schema(database)
    return database


def test_active_jobs_cap_holds_under_concurrent_submissions(db: Database) -> None:
    with db.session() as s:
        tenant, _ = create_tenant(s, f"t-{uuid.uuid4().hex[:8]}")
        tenant_id = tenant.id
    accepted: list[str] = []
    refused: list[RateLimitedError] = []
    barrier = threading.Barrier(8)

    def submit() -> None:
        barrier.wait()
        try:
            with db.session() as s:
                check_active_jobs(s, tenant_id, limit=3, retry_after=30)
                accepted.append(create_job(s, tenant_id, "check", {}).id)
        except RateLimitedError as exc:
            refused.append(exc)

    threads = [threading.Thread(target=submit) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(accepted) == 3
    assert len(refused) == 5
    assert {e.retry_after for e in refused} == {30}
    assert {e.details["limit"] for e in refused} == {3}


def test_a_burst_smaller_than_the_largest_allowed_predict_is_refused() -> None:
    from pydantic import ValidationError

    from app.core.settings import Settings

    defaults = Settings()
    largest = defaults.max_smoothing_samples + 16 * defaults.max_files_per_request
    assert defaults.predict_burst >= largest
    with pytest.raises(ValidationError, match="PREDICT_BURST"):
        Settings(predict_burst=largest - 1)
    assert Settings(predict_burst=largest).predict_burst == largest
