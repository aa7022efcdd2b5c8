"""The score-only remote model: logits from remote probabilities, batching, the budget."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from models.card import ModelCard
from models.errors import QueryBudgetExceededError, RemoteModelError
from models.remote import QueryBudget, RemoteNet, remote_head, remote_model
from tests.models.model_files import card_dict


class FakeEndpoint:
    """Stands for the HTTP client: answers softmax/sigmoid of a fixed linear map, and
    records the batch sizes it was sent (what a real server would have received)."""

    def __init__(self, k: int, kind: str = "softmax") -> None:
        self.k, self.kind = k, kind
        self.batches: list[int] = []
        self.w = torch.randn(3 * 8 * 8, k, generator=torch.Generator().manual_seed(0))

    def scores(self, x: np.ndarray) -> np.ndarray:
        z = torch.from_numpy(x).flatten(1) @ self.w
        p = torch.softmax(z, 1) if self.kind == "softmax" else torch.sigmoid(z)
        return p.numpy().astype(np.float32)

    def infer(self, x: np.ndarray) -> np.ndarray:
        self.batches.append(int(x.shape[0]))
        return self.scores(x)


def _card(**kw: Any) -> ModelCard:
    return ModelCard.model_validate(card_dict(size=8, **kw))


def _x(n: int) -> torch.Tensor:
    return torch.rand(n, 3, 8, 8, generator=torch.Generator().manual_seed(1))


def test_softmax_probabilities_come_back_unchanged_through_the_head() -> None:
    endpoint = FakeEndpoint(3)
    card = _card(labels=("a", "b", "c"))
    model = remote_model(endpoint, card, "probabilities", 3, QueryBudget(limit=100),
                         max_batch=4)
    x = _x(10)
    probs = torch.softmax(model(x), 1)
    np.testing.assert_allclose(probs.numpy(), endpoint.scores(x.numpy()), atol=1e-5)
    assert endpoint.batches == [4, 4, 2]
    assert isinstance(model.net, RemoteNet)
    assert (model.net.budget.queries, model.net.budget.requests) == (10, 3)
    assert not model(x).requires_grad


def test_the_network_sees_pixels_not_normalized_inputs() -> None:
    endpoint = FakeEndpoint(2)
    card = _card(preprocessing={"mean": [0.3], "std": [0.2]})
    model = remote_model(endpoint, card, "probabilities", 2, QueryBudget(limit=10))
    x = _x(2)
    out = model(x)
    # What the endpoint was sent are the pixels: its scores of x itself come back.
    np.testing.assert_allclose(torch.softmax(out, 1).numpy(), endpoint.scores(x.numpy()),
                               atol=1e-5)


def test_sigmoid_and_binary_heads() -> None:
    multi = FakeEndpoint(2, "sigmoid")
    card = _card(task="multi-label", labels=("effusion", "nodule"))
    model = remote_model(multi, card, "probabilities", 2, QueryBudget(limit=10))
    x = _x(3)
    np.testing.assert_allclose(torch.sigmoid(model(x)).numpy(), multi.scores(x.numpy()),
                               atol=1e-5)
    binary = _card(head="binary-logit")
    two = FakeEndpoint(2)
    model = remote_model(two, binary, "probabilities", 2, QueryBudget(limit=10))
    out = model(x)
    assert out.shape == (3, 1)
    np.testing.assert_allclose(torch.sigmoid(out)[:, 0].numpy(), two.scores(x.numpy())[:, 1],
                               atol=1e-5)


def test_output_widths_that_do_not_fit_the_card_are_refused() -> None:
    with pytest.raises(RemoteModelError, match="3 outputs per image"):
        remote_head(_card(), "probabilities", 3)
    with pytest.raises(RemoteModelError, match="4 outputs"):
        remote_head(_card(), "logits", 4)
    assert remote_head(_card(), "logits", 1).value == "binary-logit"


def test_the_budget_stops_queries_before_they_are_sent() -> None:
    endpoint = FakeEndpoint(2)
    model = remote_model(endpoint, _card(), "probabilities", 2, QueryBudget(limit=5),
                         max_batch=4)
    with pytest.raises(QueryBudgetExceededError, match="query budget of 5 images"):
        model(_x(6))
    assert endpoint.batches == [4]  # the second request (2 images) was never sent


def test_the_rate_paces_requests(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [100.0]
    sleeps: list[float] = []
    monkeypatch.setattr("models.remote.time.monotonic", lambda: clock[0])
    monkeypatch.setattr("models.remote.time.sleep", lambda s: sleeps.append(s))
    budget = QueryBudget(limit=100, rate=10.0)
    budget.take(5)  # at once
    budget.take(5)  # 5 images at 10/s: half a second after the first
    budget.take(10)
    assert sleeps == pytest.approx([0.5, 1.0])
    assert budget.usage()["queries"] == 20
