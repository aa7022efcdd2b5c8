"""The CLI's attack syntax."""

import pytest

from app.cli.client import parse_attack


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
