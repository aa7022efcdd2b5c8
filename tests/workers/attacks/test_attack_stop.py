"""A stop callback ends an attack inside its loop, within one iteration of saying stop."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from models.errors import JobCancelledError
from tests.workers.attacks.conftest import Trained
from workers.attacks import FittedAttack, get_attack
from workers.attacks import functional as F
from workers.attacks.fitted import TensorSource
from workers.attacks.uap import UAP


class Counter:
    """Answers ``False`` ``allow`` times, then ``True``; counts its calls."""

    def __init__(self, allow: int) -> None:
        self.allow = allow
        self.calls = 0

    def __call__(self) -> bool:
        self.calls += 1
        return self.calls > self.allow


class Forwards(nn.Module):
    """Wraps a model and counts its forward passes."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.inner = model
        self.calls = 0

    def forward(self, x: Tensor) -> Tensor:
        self.calls += 1
        return self.inner(x)


def _fitted(name: str, **params: Any) -> FittedAttack[Any]:
    attack = get_attack(name, **params)
    assert isinstance(attack, FittedAttack)
    return attack


def test_pgd_loop_stops_at_the_iteration_the_callback_says_stop() -> None:
    model = Forwards(nn.Sequential(nn.Flatten(), nn.Linear(16, 2)))
    x = torch.rand(4, 1, 4, 4)

    def loss(out: Tensor) -> Tensor:
        return out[:, 0].sum()

    stop = Counter(allow=3)
    with pytest.raises(F.AttackStoppedError):
        F.pgd(model, x, loss, eps=0.1, step_size=0.01, steps=10**6, should_stop=stop)
    # Polled before every step: three steps ran, the fourth poll stopped it.
    assert stop.calls == 4
    assert model.calls == 3
    # Without a stop, the same loop runs every step.
    model.calls = 0
    F.pgd(model, x, loss, eps=0.1, step_size=0.01, steps=7, should_stop=Counter(10**9))
    assert model.calls == 7


@pytest.mark.parametrize(("name", "params", "allow"), [
    ("pgd", {"steps": 1000}, 5),
    ("apgd", {"steps": 1000}, 5),
    ("square", {"queries": 10_000}, 5),
    ("cw_l2", {"steps": 1000, "search_steps": 30}, 5),
    ("deepfool", {"steps": 1000}, 1),  # fools the tiny model in a few linearizations
    ("min_eps", {"steps": 1000}, 5),
    ("autoattack", {"steps": 1000}, 5),
])
def test_each_attack_stops_within_its_loop(
    trained: dict[str, Trained], name: str, params: dict, allow: int
) -> None:
    t = trained["softmax-4"]
    model = Forwards(t.model)
    stop = Counter(allow=allow)
    attack = get_attack(name, **params)
    with pytest.raises(JobCancelledError):
        attack(model, t.images[:8], t.labels[:8], head=t.model.head, should_stop=stop)
    # Square polls every tenth query round; the others every iteration. Either way far
    # fewer passes than the parameters ask for.
    per_poll = 10 if name == "square" else 1
    assert stop.calls == allow + 1
    assert model.calls <= 2 + allow * per_poll + 3


@pytest.mark.parametrize("name", ["gap", "uap"])
def test_fitting_stops_between_batches(trained: dict[str, Trained], name: str) -> None:
    t = trained["softmax-2"]
    attack = _fitted(name, epochs=100, batch_size=8)
    stop = Counter(allow=2)
    source = TensorSource(t.train_images[:64], t.train_labels[:64])
    with pytest.raises(F.AttackStoppedError):
        attack.fit(t.model, source, should_stop=stop)
    assert stop.calls == 3
    assert not attack.fitted


def test_fitting_reads_a_source_batch_by_batch(trained: dict[str, Trained]) -> None:
    t = trained["softmax-2"]
    taken: list[int] = []

    class Recording(TensorSource):
        def take(self, index: np.ndarray) -> tuple[Tensor, Tensor, Tensor | None]:
            taken.append(len(index))
            return super().take(index)

    images, labels = t.train_images[:40], t.train_labels[:40]
    from_source = get_attack("uap", epochs=2, batch_size=16)
    from_tensors = get_attack("uap", epochs=2, batch_size=16)
    assert isinstance(from_source, UAP)
    assert isinstance(from_tensors, UAP)
    from_source.fit(t.model, Recording(images, labels), generator=torch.Generator().manual_seed(1))
    from_tensors.fit(t.model, images, labels, generator=torch.Generator().manual_seed(1))
    # Never more than a batch at a time (plus a one-image probe of the shape).
    assert max(taken) == 16
    assert sorted(set(taken)) == [1, 8, 16]
    assert from_source.delta is not None
    assert from_tensors.delta is not None
    assert torch.equal(from_source.delta, from_tensors.delta)


