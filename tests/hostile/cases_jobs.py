"""Job bodies: absurd budgets and parameters, unknown names, policies of the wrong type."""

from __future__ import annotations

from typing import Any

from tests.hostile.corpus import Case, Request, Target, attack, audit


def _audit(**body: Any) -> Any:
    return lambda t: audit(t, **body)


def _attack(name: str, **params: Any) -> Any:
    return lambda t: attack(t, name, **params)


def _options(**options: Any) -> Any:
    return lambda t: audit(t, options=options)


def _policy(policy: Any) -> Any:
    return lambda t: audit(t, policy=policy)


def another_tenants_model(t: Target) -> Request:
    return audit(t, model_id=t.other_model_id)


def defense(t: Target, **body: Any) -> Request:
    request = {"model_id": t.model_id, "train_dataset_id": t.dataset_id,
               "eval_dataset_id": t.dataset_id, "method": "pgd_at", **body}
    return Request("POST", "/v1/defenses", json=request)


CASES = [
    Case("eps-nan", "job bodies", _attack("fgsm", eps=float("nan")), (422, 422)),
    Case("eps-infinite", "job bodies", _attack("fgsm", eps=float("inf")), (422, 422)),
    Case("eps-negative", "job bodies", _attack("fgsm", eps=-0.1), (422, 422)),
    Case("eps-over-one", "job bodies", _attack("pgd", eps=3), (422, 422)),
    Case("eps-divided-by-zero", "job bodies", _attack("pgd", eps="4/0"), (422, 422)),
    Case("eps-list-with-a-string", "job bodies", _attack("pgd", eps=["2/255", "x"]), (422, 422)),
    Case("step-size-negative", "job bodies", _attack("pgd", eps=0.01, step_size=-1), (422, 422)),
    Case("no-attacks", "job bodies", _audit(attacks=[]), (422, 422)),
    Case("33-attacks", "job bodies",
         _audit(attacks=[{"name": "fgsm", "params": {"eps": 0.01}}] * 33), (422, 422)),
    Case("unknown-attack", "job bodies", _audit(attacks=[{"name": "nuke"}]), (422, 422)),
    Case("attack-as-a-string", "job bodies", _audit(attacks=["fgsm"]), (422, 422)),
    Case("unknown-analysis", "job bodies", _audit(analyses=["astrology"]), (422, 422)),
    Case("analysis-named-twice", "job bodies", _audit(analyses=["clinical", "clinical"]),
         (422, 422)),
    Case("policy-of-the-wrong-type", "job bodies", _policy("strict"), (422, 422)),
    Case("policy-unknown-rule", "job bodies", _policy({"min_vibes": 0.5}), (422, 422)),
    Case("policy-threshold-a-string", "job bodies", _policy({"min_accuracy": {"fgsm": "high"}}),
         (422, 422)),
    Case("policy-threshold-over-one", "job bodies", _policy({"min_clean_accuracy": 7}),
         (422, 422)),
    Case("policy-threshold-nan", "job bodies", _policy({"max_fooling_rate": float("nan")}),
         (422, 422)),
    Case("policy-flag-not-boolean", "job bodies", _policy({"require_reliable": "yes"}),
         (422, 422)),
    Case("seed-negative", "job bodies", _audit(seed=-1), (422, 422)),
    Case("seed-boolean", "job bodies", _audit(seed=True), (422, 422)),
    Case("seed-over-2-to-the-31", "job bodies", _audit(seed=2**40), (422, 422)),
    Case("batch-size-zero", "job bodies", _options(batch_size=0), (422, 422)),
    Case("max-images-negative", "job bodies", _options(max_images=-5), (422, 422)),
    Case("max-images-nan", "job bodies", _options(max_images=float("nan")), (422, 422)),
    Case("samples-absurd", "job bodies", _options(samples=10**9), (422, 422)),
    Case("unknown-option", "job bodies", _options(turbo=True), (422, 422)),
    Case("unknown-top-level-field", "job bodies", _audit(priority="urgent"), (422, 422)),
    Case("unknown-model", "job bodies", _audit(model_id="0" * 32), (404, 404)),
    Case("another-tenants-model", "job bodies", another_tenants_model, (404, 404)),
    Case("unknown-defense-method", "job bodies", lambda t: defense(t, method="prayer"),
         (422, 422)),
    Case("steps-a-billion", "job bodies", _attack("pgd", eps=0.01, steps=10**9), (422, 422)),
    Case("restarts-a-thousand", "job bodies", _attack("apgd", eps=0.01, restarts=1000),
         (422, 422)),
    Case("queries-a-billion", "job bodies", _attack("square", eps=0.01, n_queries=10**9),
         (422, 422)),
    Case("200-eps-values", "job bodies", _attack("pgd", eps=[i / 1000 for i in range(200)]),
         (422, 422)),
    Case("misspelt-attack-parameter", "job bodies", _attack("fgsm", epsilon=0.01), (422, 422)),
    Case("defense-epochs-zero", "job bodies", lambda t: defense(t, params={"epochs": 0}),
         (422, 422)),
]
