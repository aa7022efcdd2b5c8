"""The layering of ``docs/architecture.md``, enforced on every import (also inside functions):

- ``app.api`` (HTTP) and ``workers`` (the engine and its tasks) both stand on ``app.core`` and
  ``models`` and never import each other (the API enqueues tasks by name);
- ``app.core`` imports neither ``app.api``, ``app.cli`` nor ``workers``;
- ``app.cli`` (the ``robustdx`` command) talks to the API over HTTP and imports no ``app.api``;
- ``models`` imports nothing of ours.

And the one catalogue of names (``app.core.catalogue``) equals the engine's registries.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OURS = ("app", "workers", "models", "tests", "bench")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports_of(path: Path) -> set[str]:
    """Every module ``path`` imports, with relative imports resolved to absolute names."""
    tree = ast.parse(path.read_text(), str(path))
    package = _module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *(node.module.split(".") if node.module else [])])
            found.add(module)
            # ``from app import core`` imports app.core
            found |= {f"{module}.{alias.name}" for alias in node.names}
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and node.func.attr == "import_module" and node.args
              and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            found.add(node.args[0].value)
    return {name for name in found if name.split(".")[0] in OURS}


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def _violations(package: str, forbidden: tuple[str, ...]) -> list[str]:
    offending = []
    for path in sorted((ROOT / package.replace(".", "/")).rglob("*.py")):
        for name in sorted(_imports_of(path)):
            if any(_within(name, f) for f in forbidden):
                offending.append(f"{path.relative_to(ROOT)} imports {name}")
    return offending


@pytest.mark.parametrize(("package", "forbidden"), [
    ("app.api", ("workers", "app.cli", "tests", "bench")),
    ("app.core", ("app.api", "app.cli", "workers", "tests", "bench")),
    ("app.cli", ("app.api", "workers", "tests", "bench")),
    ("workers", ("app.api", "app.cli", "tests", "bench")),
    ("models", ("app", "workers", "tests", "bench")),
])
def test_layering(package: str, forbidden: tuple[str, ...]) -> None:
    assert _violations(package, forbidden) == []


def test_app_has_only_its_three_rooms() -> None:
    loose = sorted(p.name for p in (ROOT / "app").iterdir()
                   if p.name not in {"__init__.py", "api", "core", "cli", "__pycache__"})
    assert loose == []


def test_the_checker_sees_imports_inside_functions(tmp_path: Path) -> None:
    # The checker itself must catch a lazy import and a relative one.
    source = "def f():\n    from app.api import main\n    from ..api import deps\n"
    probe = ROOT / "app" / "core" / "_layering_probe.py"
    probe.write_text(source)
    try:
        assert _violations("app.core", ("app.api",)) == [
            "app/core/_layering_probe.py imports app.api",
            "app/core/_layering_probe.py imports app.api.deps",
            "app/core/_layering_probe.py imports app.api.main",
        ]
    finally:
        probe.unlink()


def test_attack_catalogue_matches_engine() -> None:
    from app.core.catalogue import ATTACK_NAMES
    from workers.attacks import list_attacks

    assert sorted(ATTACK_NAMES) == sorted(list_attacks())


def test_analysis_catalogue_matches_engine() -> None:
    from app.core.catalogue import ANALYSIS_NAMES
    from workers.analyses.registry import list_analyses

    assert sorted(ANALYSIS_NAMES) == sorted(list_analyses())


def test_defense_catalogue_matches_engine() -> None:
    from app.core.catalogue import DEFENSE_METHODS
    from workers.defenses import list_defenses

    assert sorted(DEFENSE_METHODS) == sorted(list_defenses())


def test_policy_catalogue_matches_engine() -> None:
    from app.core.catalogue import POLICY_RULES
    from workers.reports.policy import RULE_NAMES

    assert sorted(POLICY_RULES) == sorted(RULE_NAMES)


def test_format_catalogues_match_the_loaders() -> None:
    from app.core.catalogue import DATASET_FORMATS, MODEL_FORMATS
    from models.datasets import FORMATS as DATASET_LOADER_FORMATS
    from models.formats import FORMATS as MODEL_LOADER_FORMATS

    assert sorted(MODEL_FORMATS) == sorted(MODEL_LOADER_FORMATS)
    assert sorted(DATASET_FORMATS) == sorted(DATASET_LOADER_FORMATS)


def test_published_report_schema_is_the_engines() -> None:
    import json

    from app.api.routes.schemas import REPORT_SCHEMA_FILE
    from workers.reports.schema import REPORT_SCHEMA

    assert json.loads(REPORT_SCHEMA_FILE.read_text()) == REPORT_SCHEMA


def test_perturbation_catalogue_matches_engine() -> None:
    from app.core.catalogue import PERTURBATION_NAMES
    from workers.perturbations import list_perturbations

    assert list(PERTURBATION_NAMES) == list_perturbations()


def test_engine_builds_from_the_catalogues_parameter_models() -> None:
    from app.core.catalogue import ANALYSIS_PARAMS, ATTACK_PARAMS, DEFENSE_PARAMS
    from workers.analyses.registry import analysis_class
    from workers.attacks import attack_class, list_attacks
    from workers.defenses import defense_class, list_defenses

    assert {n: attack_class(n).params_model for n in list_attacks()} == ATTACK_PARAMS
    assert {n: defense_class(n).Params for n in list_defenses()} == DEFENSE_PARAMS
    for name, model in ANALYSIS_PARAMS.items():
        engine = getattr(analysis_class(name), "Params", None)
        if engine is None:  # perturbations validates through its own parse function
            from workers.analyses import perturbations

            engine = perturbations.PerturbationsParams
        # The same model, or the engine's subclass that only adds look-up methods.
        assert issubclass(engine, model), name
        assert engine.model_fields.keys() == model.model_fields.keys(), name


def test_catalogue_is_torch_free() -> None:
    import subprocess
    import sys

    code = ("import sys, app.core.catalogue; "
            "print(sorted(m for m in ('torch', 'numpy', 'workers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, check=True).stdout.strip()
    assert out == "[]"
