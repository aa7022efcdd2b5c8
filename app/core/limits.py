"""Per-tenant budgets: audit cost at submission, concurrent jobs, predict rate, smoothing size.

One tenant must not be able to stall the service for the others, so every way of asking for
work has a bound (the settings named below; ``docs/security.md`` lists each default):

- **Audit cost** (``max_audit_cost``): estimated at submission in *image-passes* (one
  forward and backward pass of one image through the model), before anything is queued:
  ``images x (1 clean pass + sum over attacks of settings x passes per image) + analyses``,
  where *settings* is the number of values of a list parameter (one setting per eps), and
  *passes per image* is ``steps x restarts`` for gradient attacks, ``queries`` for
  score-based ones, ``search_steps x steps`` for C&W and the minimum-eps search, and
  ``epochs + 1`` for the fitted universal attacks (GAP, UAP). Missing parameters take the
  engine's defaults (:data:`ATTACK_DEFAULTS`, kept equal to the engine's parameter models by
  a test). The estimate is an upper-bound-minded count, not a time: it is what the refusal
  (422) reports, term by term, so a user can see what to reduce.
- **Concurrent jobs** (``max_active_jobs_per_tenant``): queued and running jobs of every
  kind; one more is refused with 429 and ``Retry-After``. Counted after taking a per-tenant
  write lock (a no-op ``UPDATE`` of the tenant's row), so two concurrent submissions cannot
  both slip under the cap on PostgreSQL or SQLite.
- **Predict rate** (``predict_rate_per_second``, ``predict_burst``): a token bucket per tenant
  and process, charged per image forward pass (a plain image costs 1, a smoothed one
  ``n0 + n``); an empty bucket answers 429 with the seconds until the request would fit.
- **Smoothing size** (``max_smoothing_samples``): ``n x files`` per request.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from app.core.db import JobRow, Tenant
from models.errors import BudgetExceededError, InvalidParametersError, RateLimitedError

#: The engine's defaults of the parameters that set an attack's cost (a test compares them
#: with ``workers.attacks``' parameter models).
ATTACK_DEFAULTS: dict[str, dict[str, int]] = {
    "apgd": {"steps": 100, "restarts": 1},
    "autoattack": {"steps": 100, "target_classes": 9, "queries": 5000},
    "bim": {"steps": 10},
    "cw_l2": {"search_steps": 5, "steps": 100},
    "deepfool": {"steps": 50},
    "fgsm": {},
    "gap": {"epochs": 10},
    "min_eps": {"search_steps": 8, "steps": 20},
    "pgd": {"steps": 10, "restarts": 1},
    "square": {"queries": 1000},
    "uap": {"epochs": 5},
}
#: Passes per image of the analyses that run the model again (the others reuse the
#: attacks' outputs). ``perturbations`` is computed from its parameters.
ANALYSIS_PASSES: dict[str, int] = {
    "clinical": 0,
    "discriminability": 1,
    "features": 1,
    "gradcam": 2,
    "label_correlation": 1,
    "quantitative": 0,
    "sanity": 2,
}
#: Analyses that run only when named (the engine's ``OPT_IN_ANALYSES``; a test compares).
OPT_IN_ANALYSES: tuple[str, ...] = ("perturbations",)
#: Perturbations and severities the perturbation benchmark runs when not told.
DEFAULT_PERTURBATIONS = 24
DEFAULT_SEVERITIES = 5


def _count(value: Any, default: int, name: str) -> int:
    """A cost factor from a request value; non-numbers keep the default (the engine
    refuses them with its own message when the job starts)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return default
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidParametersError(f"{name} must be a finite number, got {value!r}")
    return max(int(value), 1)


def attack_passes(name: str, params: Mapping[str, Any]) -> int:
    """Passes per image for one setting of attack ``name`` (see the module docstring)."""
    defaults = ATTACK_DEFAULTS.get(name, {})

    def get(key: str) -> int:
        return _count(params.get(key), defaults.get(key, 1), f"{name}.{key}")

    if name == "fgsm":
        return 1
    if name in ("gap", "uap"):
        return get("epochs") + 1
    if name in ("cw_l2", "min_eps"):
        return get("search_steps") * get("steps")
    if name == "square":
        return get("queries")
    if name == "autoattack":
        return get("steps") * (1 + get("target_classes")) + get("queries")
    return get("steps") * get("restarts")


def attack_settings(params: Mapping[str, Any]) -> int:
    """Settings one attack entry runs: the product of the lengths of its list values."""
    settings = 1
    for value in params.values():
        if isinstance(value, list):
            settings *= max(len(value), 1)
    return settings


def _analysis_passes(name: str, params: Mapping[str, Any]) -> int:
    if name == "perturbations":
        chosen = params.get("perturbations")
        severities = params.get("severities")
        return (len(chosen) if isinstance(chosen, list) and chosen else DEFAULT_PERTURBATIONS) * (
            len(severities) if isinstance(severities, list) and severities else DEFAULT_SEVERITIES
        )
    return ANALYSIS_PASSES.get(name, 1)


def estimate_audit_cost(request: Mapping[str, Any], dataset_images: int) -> dict[str, Any]:
    """The cost of an audit request (``AuditRequest`` as JSON) in image-passes, term by term.

    Returns ``{"total", "images", "clean", "attacks": [...], "analyses": [...], "min_eps"}``;
    each attack term is ``{"name", "settings", "passes_per_image", "cost"}``.
    """
    options = request.get("options") or {}
    max_images = options.get("max_images")
    images = dataset_images if not max_images else min(dataset_images, int(max_images))
    attacks: list[dict[str, Any]] = []
    for spec in request.get("attacks") or []:
        params = spec.get("params") or {}
        settings, passes = attack_settings(params), attack_passes(spec["name"], params)
        attacks.append({"name": spec["name"], "settings": settings, "passes_per_image": passes,
                        "cost": images * settings * passes})
    # As the engine: none named (or an empty list) means all but the opt-in ones.
    named = request.get("analyses")
    specs: list[dict[str, Any]] = named or [
        {"name": n} for n in ANALYSIS_PASSES if n not in OPT_IN_ANALYSES
    ]
    analyses: list[dict[str, Any]] = []
    for spec in specs:
        passes = _analysis_passes(spec["name"], spec.get("params") or {})
        analyses.append({"name": spec["name"], "passes_per_image": passes,
                         "cost": images * passes})
    min_eps = 0
    if options.get("min_eps", True):
        min_eps = images * attack_passes("min_eps", {})
    total = (
        images + sum(int(a["cost"]) for a in attacks) + sum(int(a["cost"]) for a in analyses)
        + min_eps
    )
    return {"total": total, "images": images, "clean": images, "attacks": attacks,
            "analyses": analyses, "min_eps": min_eps}


def check_audit_budget(estimate: Mapping[str, Any], limit: int) -> None:
    """Refuse (422, with the estimate) an audit whose cost is over ``limit`` image-passes."""
    if estimate["total"] > limit:
        biggest = max(
            [*estimate["attacks"], *estimate["analyses"]], key=lambda t: t["cost"], default=None
        )
        hint = f"; the largest term is {biggest['name']} ({biggest['cost']:,})" if biggest else ""
        raise BudgetExceededError(
            f"the audit's estimated cost of {estimate['total']:,} image-passes is over the "
            f"tenant's limit of {limit:,} (max_audit_cost){hint}; reduce images "
            "(options.max_images), settings, steps, restarts or queries",
            {"estimate": dict(estimate), "limit": limit},
        )


def check_active_jobs(session: Session, tenant_id: str, limit: int, retry_after: float) -> None:
    """Refuse (429) a new job while the tenant has ``limit`` queued or running ones.

    Takes the tenant's row lock first (PostgreSQL row lock, SQLite write lock), so the count
    and the caller's insert are one step for concurrent submissions of the same tenant.
    """
    session.execute(
        update(Tenant).where(Tenant.id == tenant_id).values(name=Tenant.name)
        .execution_options(synchronize_session=False)
    )
    active = session.scalar(
        select(func.count()).select_from(JobRow).where(
            JobRow.tenant_id == tenant_id, JobRow.status.in_(("queued", "running"))
        )
    ) or 0
    if active >= limit:
        raise RateLimitedError(
            f"the tenant already has {active} queued or running jobs, the most allowed "
            f"(max_active_jobs_per_tenant={limit}); retry when one has finished",
            retry_after,
            {"active_jobs": int(active), "limit": limit},
        )


def check_smoothing_samples(n: int, files: int, limit: int) -> None:
    """Refuse (422) a smoothed predict whose ``n x files`` is over ``limit``."""
    if n * files > limit:
        raise BudgetExceededError(
            f"randomized smoothing of {files} file(s) with n={n} needs {n * files:,} noisy "
            f"copies, over the limit of {limit:,} per request (max_smoothing_samples); "
            "send fewer files or a smaller n",
            {"n": n, "files": files, "samples": n * files, "limit": limit},
        )


class TokenBucket:
    """``capacity`` tokens, refilled at ``rate`` per second (thread-safe)."""

    def __init__(self, rate: float, capacity: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.rate, self.capacity, self._clock = rate, capacity, clock
        self._tokens, self._at = capacity, clock()
        self._lock = threading.Lock()

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.capacity, self._tokens + (now - self._at) * self.rate)
        self._at = now

    def wait_for(self, cost: float) -> float:
        """Seconds until ``cost`` tokens are there (0.0 now), taking none."""
        with self._lock:
            self._refill()
            return 0.0 if cost <= self._tokens else (cost - self._tokens) / self.rate

    def take(self, cost: float) -> float:
        """Take ``cost`` tokens: 0.0 when taken, else the seconds until they would be there
        (``inf`` for a cost over the capacity)."""
        with self._lock:
            self._refill()
            if cost <= self._tokens:
                self._tokens -= cost
                return 0.0
            if cost > self.capacity:
                return math.inf
            return (cost - self._tokens) / self.rate


class RateLimiter:
    """One :class:`TokenBucket` per key (tenant), the ``max_keys`` most recent kept."""

    def __init__(self, rate: float, capacity: float, *, max_keys: int = 10_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.rate, self.capacity, self.max_keys, self._clock = rate, capacity, max_keys, clock
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()
        self._lock = threading.Lock()

    def _bucket(self, key: str) -> TokenBucket:
        with self._lock:
            bucket = self._buckets.get(key)
            if bucket is None:
                bucket = self._buckets[key] = TokenBucket(self.rate, self.capacity, self._clock)
                while len(self._buckets) > self.max_keys:
                    self._buckets.popitem(last=False)
            self._buckets.move_to_end(key)
            return bucket

    def require(self, key: str, cost: float = 1.0, what: str = "predict") -> None:
        """Raise :class:`RateLimitedError` unless ``cost`` tokens are there (none taken): a
        cheap check before a request's body is read."""
        wait = self._bucket(key).wait_for(min(cost, self.capacity))
        if wait > 0.0:
            self._refuse(cost, wait, what)

    def charge(self, key: str, cost: float, what: str = "predict") -> None:
        """Take ``cost`` tokens from ``key``'s bucket or raise :class:`RateLimitedError`."""
        wait = self._bucket(key).take(cost)
        if wait == 0.0:
            return
        if math.isinf(wait):
            raise BudgetExceededError(
                f"this {what} costs {cost:,.0f} image passes, over the burst of "
                f"{self.capacity:,.0f} (predict_burst)",
                {"cost": cost, "burst": self.capacity},
            )
        self._refuse(cost, wait, what)

    def _refuse(self, cost: float, wait: float, what: str) -> None:
        raise RateLimitedError(
            f"{what} rate limit: {self.rate:g} image passes per second per tenant "
            f"(predict_rate_per_second); retry in {math.ceil(wait)} s",
            wait,
            {"cost": cost, "rate_per_second": self.rate},
        )

