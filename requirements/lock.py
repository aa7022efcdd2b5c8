"""Write the lock files: every package pip resolves for the service, pinned.

``make lock`` runs this. ``service.lock`` is what the Docker image installs (the service's
own dependencies); ``dev.lock`` adds the embedded broker of ``make run`` and what the tests
need, and is what ``make run``, ``make test`` and CI install. Both are used as pip
constraints (``pip install -c LOCK -e '.[...]'``), so an install that would need anything
else fails instead of drifting. Resolution is a ``pip install --dry-run --report``: nothing
is installed.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOCKS = {"service.lock": ".", "dev.lock": ".[dev,embedded]"}


def resolve(target: str) -> list[str]:
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        done = subprocess.run(
            [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed",
             "--quiet", "--report", str(report), target],
            cwd=ROOT, capture_output=True, text=True, check=False,
        )
        if done.returncode != 0:
            sys.stderr.write(done.stderr)
            raise SystemExit(done.returncode)
        installs = json.loads(report.read_text())["install"]
    pins = {
        item["metadata"]["name"].lower(): item["metadata"]["version"]
        for item in installs if item["metadata"]["name"].lower() != "robustdx"
    }
    return [f"{name}=={version}" for name, version in sorted(pins.items())]


def main() -> None:
    for name, target in LOCKS.items():
        lines = resolve(target)
        header = (f"# {name}: pinned by `make lock` (requirements/lock.py) for `{target}`.\n"
                  "# Python 3.11 on Linux x86_64. Do not edit by hand.\n")
        (ROOT / "requirements" / name).write_text(header + "\n".join(lines) + "\n")
        sys.stdout.write(f"requirements/{name}: {len(lines)} packages\n")


if __name__ == "__main__":
    main()
