"""Names, parameters and the errors that say what is valid."""

from __future__ import annotations

import pytest

from models.errors import InvalidParametersError
from workers.attacks import describe_attacks, get_attack, list_attacks

ALL = [
    "apgd", "autoattack", "bim", "cw_l2", "deepfool", "fgsm", "gap", "min_eps", "pgd",
    "square", "uap",
]  # fmt: skip


def test_every_attack_is_registered() -> None:
    assert list_attacks() == ALL
    described = describe_attacks()
    assert {name for name, info in described.items() if info["requires_fit"]} == {"gap", "uap"}
    assert {name for name, info in described.items() if info["minimum_norm"]} == {
        "cw_l2",
        "deepfool",
        "min_eps",
    }


def test_unknown_name_lists_the_valid_ones() -> None:
    with pytest.raises(InvalidParametersError) as info:
        get_attack("pgd2")
    assert str(info.value) == "unknown attack 'pgd2'; valid: " + ", ".join(ALL)
    assert info.value.details["valid"] == ALL


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        ("pgd", {"eps": 2}, "eps must be in [0, 1]"),
        ("pgd", {"eps": -0.1}, "eps must be in [0, 1]"),
        ("pgd", {"eps": -0.1, "norm": "l2"}, "eps must be in [0, 1000]"),
        ("pgd", {"eps": 1e4, "norm": "l2"}, "eps must be in [0, 1000]"),
        ("fgsm", {"eps": 1.5}, "eps must be in [0, 1]"),
        ("square", {"eps": 1.5}, "eps must be in [0, 1]"),
        ("pgd", {"steps": -1}, "steps must be in [0, 1000]"),
        ("pgd", {"steps": 10**9}, "steps must be in [0, 1000]"),
        ("pgd", {"step_size": 0}, "step_size must be in (0, 1]"),
        ("pgd", {"restarts": 0}, "restarts must be in [1, 20]"),
        ("pgd", {"restarts": 1000}, "restarts must be in [1, 20]"),
        ("apgd", {"steps": 5000}, "steps must be in [1, 1000]"),
        ("autoattack", {"queries": 10**6}, "queries must be in [0, 10000]"),
        ("square", {"queries": 10**6}, "queries must be in [1, 10000]"),
        ("cw_l2", {"search_steps": 100}, "search_steps must be in [1, 30]"),
        ("cw_l2", {"steps": 10**5}, "steps must be in [1, 1000]"),
        ("deepfool", {"steps": 10**5}, "steps must be in [1, 1000]"),
        ("gap", {"epochs": 10**4}, "epochs must be in [1, 100]"),
        ("uap", {"batch_size": 10**6}, "batch_size must be in [1, 4096]"),
        ("min_eps", {"steps": 10**4}, "steps must be in [1, 1000]"),
        ("pgd", {"norm": "l3"}, "norm: Input should be 'linf' or 'l2'"),
        ("pgd", {"eps": "4/0"}, "eps: cannot read '4/0' as a fraction"),
        ("apgd", {"loss": "hinge"}, "loss: Input should be 'ce' or 'dlr'"),
        ("square", {"queries": 0}, "queries must be in [1, 10000]"),
        ("deepfool", {"overshoot": -1}, "overshoot must be in [0, 10]"),
        ("cw_l2", {"c": 0}, "c must be in (0, 1e+10]"),
        ("gap", {"epochs": 0}, "epochs must be in [1, 100]"),
        ("min_eps", {"eps_max": 3}, "eps_max must be in [0, 1]"),
    ],
)
def test_bad_parameters_say_what_is_valid(name: str, params: dict, message: str) -> None:
    with pytest.raises(InvalidParametersError) as info:
        get_attack(name, **params)
    assert str(info.value) == message


def test_unknown_parameter_lists_the_valid_ones() -> None:
    with pytest.raises(InvalidParametersError) as info:
        get_attack("fgsm", epsilon=0.1)
    assert str(info.value) == (
        "unknown parameter 'epsilon' for attack 'fgsm'; "
        "valid: autocast, eps, finding, quantize, seed, target"
    )


def test_parameters_are_frozen_and_fractions_are_read() -> None:
    attack = get_attack("pgd", eps="4/255", steps=5)
    assert attack.params.eps == pytest.approx(4 / 255)
    with pytest.raises(Exception, match="frozen"):
        attack.params.eps = 0.5


def test_every_bound_is_in_the_published_schema() -> None:
    schemas = {name: info["params"]["properties"] for name, info in describe_attacks().items()}
    assert schemas["pgd"]["steps"]["maximum"] == 1000
    assert schemas["pgd"]["restarts"] == {
        "default": 1, "maximum": 20, "minimum": 1, "title": "Restarts", "type": "integer"
    }
    assert schemas["square"]["queries"]["maximum"] == 10_000
    assert schemas["autoattack"]["queries"]["maximum"] == 10_000
    assert schemas["gap"]["epochs"]["maximum"] == 100
    step = [b for b in schemas["pgd"]["step_size"]["anyOf"] if b.get("type") == "number"]
    assert step == [{"type": "number", "exclusiveMinimum": 0.0, "maximum": 1.0}]
    # Every count of work (steps, restarts, queries, epochs, batch sizes) is bounded above.
    for name, props in schemas.items():
        for field in ("steps", "restarts", "queries", "epochs", "batch_size", "search_steps"):
            if field in props:
                assert "maximum" in props[field], (name, field)
