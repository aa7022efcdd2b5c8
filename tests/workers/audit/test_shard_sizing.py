"""Shards sized from the audit's cost hold about the target seconds of work."""

from __future__ import annotations

from app.core.catalogue import attack_params
from app.core.catalogue.attacks import MinEpsParams
from workers.audit.sizing import attack_passes, passes_per_image, shard_size


def test_passes_follow_the_parameters() -> None:
    assert attack_passes("pgd", attack_params("pgd", {"steps": 10})) == 12
    assert attack_passes("pgd", attack_params("pgd", {"steps": 10, "restarts": 3})) == 32
    assert attack_passes("square", attack_params("square", {"queries": 500})) == 500
    assert attack_passes("autoattack", attack_params("autoattack", {
        "steps": 10, "target_classes": 3, "queries": 100})) == 140
    assert attack_passes("gap", attack_params("gap", {})) == 2
    readme = [("pgd", attack_params("pgd", {"eps": e / 255, "steps": 10}))
              for e in (1, 2, 4)]
    readme.append(("gap", attack_params("gap", {})))
    analyses = ["quantitative", "clinical", "sanity"]
    assert passes_per_image(readme, analyses, None) == 1 + 3 * 12 + 2 + 3 * 4
    # The minimum-eps search (20 PGD steps, 8 halvings) dwarfs the attacks themselves.
    with_search = passes_per_image(readme, analyses, MinEpsParams())
    assert with_search - passes_per_image(readme, analyses, None) == 20 * 9 + 2


def test_shards_hold_the_target_in_whole_batches() -> None:
    # 51 passes of 1 ms per image: 51 ms an image, so 5 s is 98 images = 3 batches of 32.
    assert shard_size(200, 32, 51, 0.001, 5.0) == 96
    # Never less than a batch, never more than the dataset.
    assert shard_size(200, 32, 10_000, 0.01, 5.0) == 32
    assert shard_size(50, 32, 1, 1e-6, 5.0) == 50
