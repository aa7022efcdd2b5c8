"""An audit may run no attack when it asks only for analyses that need none."""

from __future__ import annotations

import pytest

from models.errors import InvalidParametersError
from tests.workers.attacks.conftest import train_model
from workers.audit import run_audit
from workers.audit.engine import expand_attacks


def test_the_perturbation_benchmark_alone_runs_without_attacks() -> None:
    t = train_model("softmax-2")
    analyses = [{"name": "perturbations", "params": {
        "perturbations": ["gaussian_noise", "brightness"], "severities": [1, 5],
        "sequences": []}}, {"name": "quantitative"}, {"name": "sanity"}]
    report, sections = run_audit(t.model, t.images[:32], t.labels[:32], [], analyses=analyses)
    by_name = {s.name: s for s in sections}
    assert by_name["sanity"].applicable is False
    assert by_name["sanity"].reason == "the audit runs no attack"
    # Clean metrics alone: every fixture image is classified right.
    clean = by_name["quantitative"]
    assert clean.applicable is True
    assert clean.data["n_images"] == 32
    assert clean.data["clean"]["accuracy"] == 1.0
    assert clean.data["attacks"] == {}
    perturbations = by_name["perturbations"]
    assert perturbations.applicable is True
    assert report["attacks"] == {}
    data = perturbations.data
    assert data["n_images"] == 32
    assert data["clean"]["accuracy"] == 1.0  # the fixture keeps images classified right
    assert sorted(data["perturbations"]) == ["brightness", "gaussian_noise"]
    noise = data["perturbations"]["gaussian_noise"]["severities"]
    assert [s["severity"] for s in noise] == [1, 5]
    # Stronger noise changes at least as many predictions as weaker noise.
    assert noise[1]["changed"] >= noise[0]["changed"]


def test_eps_lists_and_settings_are_bounded_in_the_engine_too() -> None:
    with pytest.raises(InvalidParametersError, match="eps lists must hold 1 to 16 values"):
        expand_attacks([{"name": "fgsm", "params": {"eps": [i / 1000 for i in range(17)]}}])
    eps = [i / 255 for i in range(1, 17)]
    with pytest.raises(InvalidParametersError, match="at most 64 attack settings"):
        expand_attacks([{"name": n, "params": {"eps": eps}}
                        for n in ("fgsm", "pgd", "bim", "apgd", "square")])
    assert expand_attacks([]) == []
