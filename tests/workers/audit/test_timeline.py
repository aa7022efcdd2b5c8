"""The report's timings and timeline, from the stages' timing files."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from app.core.storage import Storage
from workers.tasks.audit import _timings


def test_durations_are_summed_and_spans_are_relative_to_submission(tmp_path: Path) -> None:
    storage = Storage(tmp_path)
    folder = storage.job_dir("j") / "timings"
    folder.mkdir(parents=True)
    origin = 1_000_000.0
    records = {
        "plan": {"durations": {"planning": 0.5}, "start": origin + 0.1, "end": origin + 0.6,
                 "worker": "a:1"},
        "shard-00000": {"durations": {"attack:pgd": 2.0, "load_inputs": 0.01},
                        "start": origin + 0.7, "end": origin + 2.8, "worker": "a:1"},
        "shard-00001": {"durations": {"attack:pgd": 1.5, "load_inputs": 0.02},
                        "start": origin + 0.7, "end": origin + 2.3, "worker": "b:2"},
        # A shard finished by a worker of before the timeline: durations only.
        "shard-00002": {"attack:pgd": 1.0},
    }
    for name, record in records.items():
        (folder / f"{name}.json").write_text(json.dumps(record))
    rt: Any = SimpleNamespace(storage=storage)
    totals, line = _timings(rt, "j", origin)
    assert totals == {"planning": 0.5, "attack:pgd": 4.5, "load_inputs": 0.03}
    assert line["plan"] == {"start": 0.1, "end": 0.6, "worker": "a:1"}
    assert [(s["index"], s["worker"]) for s in line["shards"]] == [(0, "a:1"), (1, "b:2")]
    assert line["shards"][0]["start"] == pytest.approx(0.7)
    assert line["shards"][1]["end"] == pytest.approx(2.3)
