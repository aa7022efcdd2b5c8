"""Adversarial images stay within their budget after being saved as 8-bit PNGs."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from tests.workers.attacks.conftest import Trained
from workers.attacks import get_attack
from workers.reports.images import to_png


@pytest.mark.parametrize(("name", "params"), [
    ("pgd", {"eps": 12 / 255, "steps": 10}),
    ("bim", {"eps": 8 / 255, "steps": 10}),
    ("apgd", {"eps": 0.05, "steps": 10}),  # 12.75 grey levels: off the 8-bit grid
    ("fgsm", {"eps": 16 / 255}),
])
def test_saved_pngs_are_within_budget(trained: dict[str, Trained], name: str,
                                      params: dict) -> None:
    t = trained["softmax-2"]
    result = get_attack(name, **params)(t.model, t.images, t.labels)
    eps = params["eps"]
    for i in range(t.images.shape[0]):
        png = to_png(result.images[i].numpy())
        decoded = np.asarray(Image.open(io.BytesIO(png)), dtype=np.float32) / 255.0
        decoded_chw = torch.from_numpy(decoded.reshape(16, 16, -1)).permute(2, 0, 1)[:1]
        # The PNG holds exactly the image the attack judged, and it is within eps.
        assert torch.equal(decoded_chw, result.images[i])
        assert float((decoded_chw - t.images[i]).abs().max()) <= eps + 1e-6
    assert bool(result.success.any())
