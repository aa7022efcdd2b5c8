"""DESIGN.md's layering: ``app`` never imports ``workers``; ``models`` imports neither, and
the API's catalogue of engine names equals the engine's registries."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _imports(package: str) -> set[tuple[str, str]]:
    found: set[tuple[str, str]] = set()
    for path in (ROOT / package).rglob("*.py"):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                found |= {(str(path.relative_to(ROOT)), a.name.split(".")[0]) for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add((str(path.relative_to(ROOT)), node.module.split(".")[0]))
    return found


@pytest.mark.parametrize(("package", "forbidden"), [
    ("app", {"workers"}),
    ("models", {"app", "workers"}),
])
def test_layering(package: str, forbidden: set[str]) -> None:
    offending = sorted(f"{file} imports {mod}" for file, mod in _imports(package)
                       if mod in forbidden)
    assert offending == []


def test_attack_catalogue_matches_engine() -> None:
    from app.schemas.audits import ATTACK_NAMES
    from workers.attacks import list_attacks

    assert sorted(ATTACK_NAMES) == sorted(list_attacks())


def test_analysis_catalogue_matches_engine() -> None:
    from app.schemas.audits import ANALYSIS_NAMES
    from workers.analyses.registry import list_analyses

    assert sorted(ANALYSIS_NAMES) == sorted(list_analyses())


def test_defense_catalogue_matches_engine() -> None:
    from app.schemas.defenses import DEFENSE_METHODS
    from workers.defenses import list_defenses

    assert sorted(DEFENSE_METHODS) == sorted(list_defenses())


def test_published_report_schema_is_the_engines() -> None:
    import json

    from app.routes.schemas import REPORT_SCHEMA_FILE
    from workers.reports.schema import REPORT_SCHEMA

    assert json.loads(REPORT_SCHEMA_FILE.read_text()) == REPORT_SCHEMA
