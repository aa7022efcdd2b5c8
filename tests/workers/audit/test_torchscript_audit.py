"""An audit of an uploaded TorchScript model (the zoo's chest architecture, traced): the
attacks run it with gradients, then the report's grid and the perturbation benchmark run it
without."""

from __future__ import annotations

from pathlib import Path

import torch

from models.architectures import build_architecture
from models.card import ModelCard
from models.loading import load_model
from tests.models.model_files import card_dict, write_torchscript
from workers.audit import run_audit


def test_a_torchscript_model_audits_end_to_end(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = build_architecture("densenet_small", 3, 2).eval()  # the zoo's chest architecture
    path = write_torchscript(net, tmp_path / "m.pt")
    model = load_model(path, ModelCard.model_validate(card_dict())).model
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(12, 3, 32, 32, generator=gen)
    labels = torch.randint(0, 2, (12,), generator=gen)
    report, sections = run_audit(
        model, images, labels, [{"name": "pgd", "params": {"eps": 4 / 255, "steps": 5}}],
        analyses=[{"name": "quantitative"}, {"name": "sanity"},
                  {"name": "perturbations", "params": {"perturbations": ["gaussian_noise"],
                                                       "severities": [1], "sequences": []}}],
        batch_size=4,
    )
    names = {s.name: s for s in sections}
    assert names["quantitative"].applicable
    assert names["perturbations"].applicable
    attack = report["attacks"]["pgd:eps=4/255,steps=5"]
    assert 0.0 <= attack["adversarial"]["accuracy"] <= attack["clean"]["accuracy"] + 1e-9
