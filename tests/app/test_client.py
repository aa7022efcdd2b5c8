"""The CLI's attack and parameter syntax."""

import pytest

from app.cli.client import parse_attack, parse_value


def test_parse_attack_reads_fractions_lists_and_types() -> None:
    spec = parse_attack("pgd:eps=2/255|4/255,steps=10,random_start=false,target=least-likely")
    assert spec["name"] == "pgd"
    assert spec["params"]["eps"] == pytest.approx([2 / 255, 4 / 255])
    assert spec["params"]["steps"] == 10
    assert spec["params"]["random_start"] is False
    assert spec["params"]["target"] == "least-likely"


def test_parse_attack_without_params() -> None:
    assert parse_attack("square") == {"name": "square", "params": {}}


def test_parse_attack_refuses_a_bare_word() -> None:
    with pytest.raises(ValueError, match="key=value"):
        parse_attack("pgd:eps")


@pytest.mark.parametrize(("text", "value"), [
    ("3", 3), ("0.5", 0.5), ("true", True), ("pgd", "pgd"),
    ('[{"name": "fgsm", "params": {"eps": "4/255"}}]',
     [{"name": "fgsm", "params": {"eps": "4/255"}}]),
    ('{"a": [1, 2]}', {"a": [1, 2]}),
    ("[not json", "[not json"),  # kept as text: the service says what is wrong with it
])
def test_param_values(text: str, value: object) -> None:
    assert parse_value(text) == value


def test_param_fraction() -> None:
    assert parse_value("8/255") == pytest.approx(8 / 255)
