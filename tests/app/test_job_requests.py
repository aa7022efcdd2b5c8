"""Audit and defense requests are checked at submission with the catalogue's parameter
models: unknown names and out-of-range values are 422 naming what is valid, and the
bounds are in the OpenAPI document."""

from __future__ import annotations

from typing import Any

import pytest

from tests.app.models_fixtures import Api, api, client

__all__ = ["api", "client"]  # fixtures

PGD = {"name": "pgd", "params": {"eps": "4/255", "steps": 10}}


def _audit(api: Api, **body: Any) -> Any:
    request = {"model_id": "no-such-model", "dataset_id": "no-such-dataset",
               "attacks": [PGD]} | body
    return api.client.post("/v1/audits", json=request, headers=api.auth)


def _message(response: Any) -> str:
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    return str(error["message"])


@pytest.mark.parametrize(("params", "expected"), [
    ({"eps": "4/255", "steps": 10**9}, "steps must be in [0, 1000]"),
    ({"eps": "4/255", "restarts": 1000}, "restarts must be in [1, 20]"),
    ({"eps": 2.0}, "eps must be in [0, 1]"),
    ({"eps": "4/0"}, "eps: cannot read '4/0' as a fraction"),
])
def test_absurd_attack_parameters_are_refused(api: Api, params: dict, expected: str) -> None:
    message = _message(_audit(api, attacks=[{"name": "pgd", "params": params}]))
    assert message.endswith(expected)


def test_square_and_autoattack_queries_are_bounded(api: Api) -> None:
    square = {"name": "square", "params": {"queries": 10**6}}
    assert _message(_audit(api, attacks=[square])).endswith("queries must be in [1, 10000]")
    aa = {"name": "autoattack", "params": {"queries": 10**6}}
    assert _message(_audit(api, attacks=[aa])).endswith("queries must be in [0, 10000]")


def test_a_typo_is_refused_naming_the_valid_parameters(api: Api) -> None:
    message = _message(_audit(api, attacks=[{"name": "pgd", "params": {"epsilon": 0.1}}]))
    assert "unknown parameter 'epsilon' for attack 'pgd'; valid: " in message
    valid = message.split("valid: ")[1].split(", ")
    assert "eps" in valid
    assert "steps" in valid
    assert "restarts" in valid


def test_eps_lists_and_settings_are_bounded(api: Api) -> None:
    many = {"name": "fgsm", "params": {"eps": [i / 1000 for i in range(200)]}}
    assert _message(_audit(api, attacks=[many])).endswith(
        "eps lists must hold 1 to 16 values, got 200")
    sixteen = [i / 255 for i in range(1, 17)]
    names = ("fgsm", "pgd", "bim", "apgd", "square")
    wide = [{"name": n, "params": {"eps": sixteen}} for n in names]
    assert "at most 64 attack settings" in _message(_audit(api, attacks=wide))


def test_analysis_parameters_are_checked(api: Api) -> None:
    bad = [{"name": "quantitative", "params": {"n_bootstrap": 10**7}}]
    assert _message(_audit(api, analyses=bad)).endswith("n_bootstrap must be in [0, 100000]")
    typo = [{"name": "gradcam", "params": {"layers": ["x"]}}]
    assert "unknown parameter 'layers' for analysis 'gradcam'; valid: " in _message(
        _audit(api, analyses=typo))


def test_an_audit_without_attacks_needs_analyses_that_need_none(api: Api) -> None:
    assert "sanity need attacks" in _message(
        _audit(api, attacks=[], analyses=["quantitative", "sanity"]))
    assert "name them in analyses" in _message(_audit(api, attacks=[]))
    # The perturbation benchmark, or clean metrics, pass validation: the model look-up
    # comes next.
    for analyses in (["perturbations"], ["quantitative"]):
        response = _audit(api, attacks=[], analyses=analyses)
        assert response.status_code == 404, response.text


def test_good_requests_pass_validation(api: Api) -> None:
    response = _audit(api, attacks=[PGD, {"name": "gap", "params": {"eps": "4/255"}}],
                      analyses=["quantitative", {"name": "sanity", "params": {"atol": 0.001}}])
    assert response.status_code == 404, response.text  # past validation, unknown model


def test_defense_parameters_are_checked(api: Api) -> None:
    body = {"model_id": "m", "train_dataset_id": "t", "eval_dataset_id": "e"}
    post = api.client.post
    r = post("/v1/defenses", json=body | {"method": "pgd_at", "params": {"epochs": 10**6}},
             headers=api.auth)
    assert _message(r).endswith("epochs must be in [1, 1000]")
    r = post("/v1/defenses", json=body | {"method": "noise", "params": {"eps": 0.1}},
             headers=api.auth)
    assert "unknown parameter 'eps' for defense 'noise'; valid: " in _message(r)
    r = post("/v1/defenses", json=body | {"method": "noise", "params": {
        "sigma": 0.25, "eval_attacks": [{"name": "pgd", "params": {"steps": 10**5}}]}},
        headers=api.auth)
    assert _message(r).endswith("steps must be in [0, 1000]")
    r = post("/v1/defenses", json=body | {"method": "noise", "params": {"sigma": 0.25}},
             headers=api.auth)
    assert r.status_code == 404, r.text


def test_the_openapi_document_states_the_bounds(api: Api) -> None:
    schemas = api.client.get("/openapi.json").json()["components"]["schemas"]
    attacks = schemas["AttackSpec"]["properties"]["params"]["x-parameters"]
    assert attacks["pgd"]["properties"]["steps"]["maximum"] == 1000
    assert attacks["pgd"]["properties"]["restarts"]["maximum"] == 20
    assert attacks["square"]["properties"]["queries"]["maximum"] == 10_000
    defenses = schemas["DefenseRequest"]["properties"]["params"]["x-parameters"]
    assert defenses["noise"]["properties"]["sigma"]["exclusiveMinimum"] == 0.0
    analyses = schemas["AnalysisSpec"]["properties"]["params"]["x-parameters"]
    assert analyses["quantitative"]["properties"]["n_bootstrap"]["maximum"] == 100_000
