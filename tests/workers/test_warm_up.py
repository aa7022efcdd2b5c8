"""A worker pays for its imports and connections before it takes a task, and a warm-up
that fails never stops it (the job that needs the broken part fails with the real error)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROBE = """
import logging, sys
logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(name)s %(message)s")
before = {"workers.analyses.quantitative", "scipy.stats", "workers.reports.html"} & set(sys.modules)
from workers.runtime import warm_up
warm_up()
after = {"workers.analyses.quantitative", "scipy.stats", "workers.reports.html"} & set(sys.modules)
print("BEFORE", sorted(before))
print("AFTER", sorted(after))
"""


def _probe(tmp_path: Path, **env: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True, text=True, timeout=120,
        env={**os.environ, "ROBUSTDX_DATA_DIR": str(tmp_path), "ROBUSTDX_DEVICE": "cpu", **env},
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_warm_up_imports_what_the_first_job_needs(tmp_path: Path) -> None:
    out = _probe(tmp_path)
    assert "BEFORE []" in out
    assert "AFTER ['scipy.stats', 'workers.analyses.quantitative', 'workers.reports.html']" in out
    assert "worker warmed up in" in out
    assert (tmp_path / "robustdx.db").exists()  # the database was opened (and migrated)


def test_a_failed_warm_up_is_not_fatal(tmp_path: Path) -> None:
    out = _probe(tmp_path, ROBUSTDX_DATABASE_URL="postgresql://nobody@127.0.0.1:1/none")
    assert "worker warm-up stopped early" in out
    assert "AFTER []" in out
