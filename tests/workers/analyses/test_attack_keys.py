"""Attack keys: parsing, groups, and the eps matching policies rely on."""

from __future__ import annotations

import pytest

from workers.analyses.attack_keys import (
    attack_infos,
    parse_attack_key,
    parse_number,
    selector_matches,
    values_match,
)


def test_parse_key_with_fraction_eps() -> None:
    info = parse_attack_key("pgd:eps=4/255,steps=10")
    assert info.name == "pgd"
    assert info.eps == pytest.approx(4 / 255)
    assert info.params == {"eps": pytest.approx(4 / 255), "steps": 10}
    assert info.group == "pgd:steps=10"
    assert parse_attack_key("square").eps is None


def test_parse_number() -> None:
    assert parse_number("8/255") == pytest.approx(8 / 255)
    assert parse_number("0.03") == 0.03
    assert parse_number("1e-2") == 0.01
    assert parse_number("ce") is None


def test_bad_key_is_rejected() -> None:
    with pytest.raises(ValueError, match="expected param=value"):
        parse_attack_key("pgd:eps")


@pytest.mark.parametrize(
    ("written", "value", "expected"),
    [
        ("4/255", 4 / 255, True),
        ("0.0157", 4 / 255, True),
        ("0.0039", 1 / 255, True),
        ("0.02", 4 / 255, False),  # a different budget, though 4/255 rounds to it
        ("5/255", 4 / 255, False),
        ("4/255", 0.0157, True),  # a float budget counts as the decimal it was written as
    ],
)
def test_eps_spellings(written: str, value: float, expected: bool) -> None:
    assert values_match(written, value) is expected


def test_selector_by_name_and_by_partial_key() -> None:
    info = parse_attack_key("pgd:eps=4/255,steps=10")
    assert selector_matches("pgd", info)
    assert selector_matches("pgd:eps=0.0157", info)
    assert selector_matches("pgd:eps=4/255,steps=10", info)
    assert not selector_matches("pgd:eps=8/255", info)
    assert not selector_matches("pgd:steps=50", info)
    assert not selector_matches("fgsm", info)


def test_metadata_overrides_parsing() -> None:
    meta = {"gap:eps=8/255": {"name": "gap", "eps": 8 / 255, "params": {"eps": 8 / 255}}}
    infos = attack_infos(["gap:eps=8/255", "fgsm:eps=2/255"], meta)
    assert infos["gap:eps=8/255"].eps == pytest.approx(8 / 255)
    assert infos["fgsm:eps=2/255"].name == "fgsm"
