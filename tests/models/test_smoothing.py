"""Randomized smoothing: votes, abstention, the certified radius and what it guarantees."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from scipy.stats import norm
from torch import nn

from models.card import Head, ModelCard
from models.errors import InvalidImageError, InvalidParametersError
from models.smoothing import SmoothingVotes, lower_confidence_bound, smooth_predict
from models.wrapper import DiagnosticModel

SIZE = 16
SIGMA = 0.25


def _card(head: Head, labels: tuple[str, ...] = ("benign", "malignant")) -> ModelCard:
    task = "multi-label" if head == Head.SIGMOID else "single-label"
    return ModelCard(
        name="smooth",
        task=task,
        labels=labels,
        input={"channels": 1, "height": SIZE, "width": SIZE},
        head=head,
    )


class Linear(nn.Module):
    """``W (x - 0.5)`` (plus a bias): on a mid-grey image only the noise decides."""

    def __init__(self, outputs: int, bias: float = 0.0, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.weight = nn.Parameter(torch.randn(outputs, SIZE * SIZE, generator=g))
        self.bias = nn.Parameter(torch.full((outputs,), bias))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return (z.flatten(1) - 0.5) @ self.weight.T + self.bias


class Counting(nn.Module):
    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.calls = 0
        self.images = 0

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        self.images += z.shape[0]
        return self.net(z)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


GREY = torch.full((1, SIZE, SIZE), 0.5)


# --------------------------------------------------------------------------- votes


@pytest.mark.parametrize(
    ("head", "outputs", "labels"),
    [(Head.SOFTMAX, 3, ("a", "b", "c")), (Head.BINARY_LOGIT, 1, ("a", "b"))],
    ids=["softmax", "binary-logit"],
)
def test_abstains_when_only_the_noise_decides(
    head: Head, outputs: int, labels: tuple[str, ...]
) -> None:
    model = DiagnosticModel(Linear(outputs), _card(head, labels), head)
    (pred,) = smooth_predict(model, GREY, sigma=SIGMA, n=200, generator=_gen())
    assert pred.abstained
    assert pred.label is None
    assert pred.index is None
    assert pred.radius == 0.0
    assert sum(pred.votes.values()) == 200
    assert max(pred.vote_shares.values()) < 0.65  # a split vote, not a confident one
    assert pred.p_lower is not None
    assert pred.p_lower <= 0.5


def test_constant_model_gets_the_closed_form_certificate() -> None:
    # Every noisy copy votes "b": k = n, so the Clopper-Pearson bound is alpha^(1/n).
    net = Linear(2, seed=1)
    with torch.no_grad():
        net.weight.zero_()
        net.bias.copy_(torch.tensor([0.0, 5.0]))
    model = DiagnosticModel(net, _card(Head.SOFTMAX, ("a", "b")), Head.SOFTMAX)
    (pred,) = smooth_predict(model, GREY, sigma=SIGMA, n=100, alpha=0.001, generator=_gen())
    assert pred.label == "b"
    assert pred.votes == {"a": 0, "b": 100}
    assert pred.p_lower == pytest.approx(0.001 ** (1 / 100))
    assert pred.radius == pytest.approx(SIGMA * norm.ppf(0.001 ** (1 / 100)))


def test_clopper_pearson_bound_is_below_the_estimate() -> None:
    assert lower_confidence_bound(0, 100, 0.001) == 0.0
    bound = lower_confidence_bound(90, 100, 0.001)
    assert 0.75 < bound < 0.9
    # More samples at the same share give a tighter bound.
    assert lower_confidence_bound(900, 1000, 0.001) > bound


def test_multi_label_votes_per_finding() -> None:
    net = Linear(2, seed=2)
    with torch.no_grad():
        net.weight[0].zero_()
        net.bias.copy_(torch.tensor([6.0, 0.0]))  # finding 0 always present
    model = DiagnosticModel(net, _card(Head.SIGMOID, ("effusion", "nodule")), Head.SIGMOID)
    (pred,) = smooth_predict(model, GREY, sigma=SIGMA, n=200, generator=_gen())
    assert pred.label is None
    assert pred.p_lower is None
    assert pred.votes["effusion"] == 200
    assert pred.positive["effusion"] is True
    assert pred.finding_radius["effusion"] == pytest.approx(SIGMA * norm.ppf(0.001 ** (1 / 200)))
    # Finding 1 is decided by the noise alone: a split vote and no certificate.
    assert 0.35 < pred.vote_shares["nodule"] < 0.65
    assert pred.finding_radius["nodule"] == 0.0
    assert pred.finding_p_lower["effusion"] == pytest.approx(0.001 ** (1 / 200))
    assert pred.finding_p_lower["nodule"] < 0.5


def test_batched_over_images_and_copies_and_seeded() -> None:
    net = Counting(Linear(3))
    model = DiagnosticModel(net, _card(Head.SOFTMAX, ("a", "b", "c")), Head.SOFTMAX)
    x = torch.rand(2, 1, SIZE, SIZE)
    first = smooth_predict(model, x, sigma=SIGMA, n=100, n0=16, batch_size=128, generator=_gen(3))
    # 2 images x (16 + 100) copies in batches of 128: 232 forward images, 2 passes.
    assert (net.images, net.calls) == (232, 2)
    again = smooth_predict(model, x, sigma=SIGMA, n=100, n0=16, batch_size=7, generator=_gen(3))
    assert [p.votes for p in first] == [p.votes for p in again]
    single = smooth_predict(model, x[1], sigma=SIGMA, n=100, generator=_gen(4))
    assert len(single) == 1


def test_chunked_votes_equal_one_go_and_stop_between_chunks() -> None:
    net = Counting(Linear(3))
    model = DiagnosticModel(net, _card(Head.SOFTMAX, ("a", "b", "c")), Head.SOFTMAX)
    x = torch.rand(3, 1, SIZE, SIZE)
    whole = smooth_predict(model, x, sigma=SIGMA, n=50, n0=10, batch_size=16, generator=_gen(5))
    net.calls = net.images = 0
    votes = SmoothingVotes(model, x, sigma=SIGMA, n=50, n0=10, batch_size=16, generator=_gen(5))
    turns = 0
    while not votes.run(model, max_copies=40):
        turns += 1
        with pytest.raises(RuntimeError, match="not complete"):
            votes.results()
    # 3 x 60 = 180 copies, at most 40 (three batches of 16 rounded up: 48) per turn.
    assert turns == 3
    assert net.images == 180
    assert [p.votes for p in votes.results()] == [p.votes for p in whole]


def test_model_mode_is_restored() -> None:
    model = DiagnosticModel(
        nn.Sequential(nn.Flatten(), nn.Linear(SIZE * SIZE, 2)), _card(Head.SOFTMAX), Head.SOFTMAX
    )
    model.train()
    smooth_predict(model, GREY, sigma=SIGMA, n=10)
    assert model.training


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"sigma": 0.0, "n": 10}, "sigma must be in (0, 1]"),
        ({"sigma": 1.5, "n": 10}, "sigma must be in (0, 1]"),
        ({"sigma": 0.1, "n": 0}, "n must be in [1, 10000]"),
        ({"sigma": 0.1, "n": 10_001}, "n must be in [1, 10000]"),
        ({"sigma": 0.1, "n": 10, "alpha": 0.0}, "alpha must be in (0, 0.5)"),
        ({"sigma": 0.1, "n": 10, "n0": 0}, "n0 must be in [1, 10000]"),
    ],
)
def test_parameters_are_validated(kwargs: dict[str, float], message: str) -> None:
    model = DiagnosticModel(Linear(2), _card(Head.SOFTMAX), Head.SOFTMAX)
    with pytest.raises(InvalidParametersError) as info:
        smooth_predict(model, GREY, **kwargs)  # type: ignore[arg-type]
    assert info.value.message == message


def test_wrong_image_shape_is_refused() -> None:
    model = DiagnosticModel(Linear(2), _card(Head.SOFTMAX), Head.SOFTMAX)
    with pytest.raises(InvalidImageError, match=r"expected images \[N, 1, 16, 16\]"):
        smooth_predict(model, torch.rand(3, SIZE, SIZE), sigma=SIGMA, n=10)


# --------------------------------------------------------------------------- certificate


def _blob_task(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A bright (class 1) or dark (class 0) blob of contrast 0.2 on a noisy grey field: faint
    enough under sigma = 0.25 noise that the smoothed votes are not all unanimous, so the
    radii vary and are not just the cap that n sets (sigma * Phi^-1(alpha^(1/n)))."""
    g = _gen(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    yy, xx = torch.meshgrid(torch.arange(SIZE).float(), torch.arange(SIZE).float(), indexing="ij")
    cy = torch.randint(5, SIZE - 5, (n, 1, 1), generator=g).float()
    cx = torch.randint(5, SIZE - 5, (n, 1, 1), generator=g).float()
    blob = torch.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 3.0**2)).unsqueeze(1)
    x = 0.5 + 0.05 * torch.randn(n, 1, SIZE, SIZE, generator=g)
    x = x + 0.2 * (y * 2 - 1).float().view(-1, 1, 1, 1) * blob
    return x.clamp(0, 1), y


@pytest.fixture(scope="module")
def noise_trained() -> DiagnosticModel:
    """A small CNN trained with Gaussian noise augmentation at ``SIGMA`` (Cohen et al.)."""
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(32, 2),
    )
    model = DiagnosticModel(net, _card(Head.SOFTMAX, ("dark", "bright")), Head.SOFTMAX)
    x, y = _blob_task(512, seed=1)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = _gen(1)
    for _ in range(6):
        for idx in torch.randperm(len(x), generator=g).split(64):
            noisy = x[idx] + SIGMA * torch.randn(x[idx].shape, generator=g)
            loss = F.cross_entropy(model(noisy), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


def _smoothed_log_probs(model: DiagnosticModel, copies: int, g: torch.Generator):
    """SmoothAdv's objective (Salman et al. 2019): log of the noise-averaged softmax, so
    PGD attacks the smoothed classifier rather than the base network."""

    def forward(x: torch.Tensor) -> torch.Tensor:
        rep = x.repeat_interleave(copies, dim=0)
        noise = torch.randn(rep.shape, generator=g)
        probs = model(rep + SIGMA * noise).softmax(1)
        return probs.view(x.shape[0], copies, -1).mean(1).clamp_min(1e-12).log()

    return forward


def _attack(
    model: DiagnosticModel, x: torch.Tensor, y: torch.Tensor, eps: torch.Tensor
) -> torch.Tensor:
    from workers.attacks.functional import pgd

    return pgd(
        _smoothed_log_probs(model, 16, _gen(11)),
        x,
        lambda logp: F.nll_loss(logp, y, reduction="sum"),
        eps=eps,
        step_size=eps / 4,
        steps=20,
        norm="l2",
        generator=_gen(12),
    )


def test_attacks_inside_the_certified_radius_do_not_change_the_vote(
    noise_trained: DiagnosticModel,
) -> None:
    """The certificate: g(x') = g(x) for ||x' - x||_2 < R, with probability >= 1 - alpha.

    Statistical caveat: the certificate is about the true smoothed classifier; we
    re-estimate it on x' with the same finite n, and near the radius its top-class
    probability may be barely above 1/2, so the estimate can *abstain* there. What must
    not happen is a confident different label, and most votes must simply stay.
    """
    x, y = _blob_task(24, seed=2)
    clean = smooth_predict(noise_trained, x, sigma=SIGMA, n=200, generator=_gen(5))
    certified = [i for i, p in enumerate(clean) if p.label is not None and p.index == int(y[i])]
    assert len(certified) >= 18  # the noise-trained model is accurate and confident
    idx = torch.tensor(certified)
    radius = torch.tensor([clean[i].radius for i in certified])
    assert float(radius.min()) > 0.1

    inside = _attack(noise_trained, x[idx], y[idx], 0.9 * radius)
    norms = (inside - x[idx]).flatten(1).norm(dim=1)
    assert bool((norms <= 0.9 * radius + 1e-4).all())
    after = smooth_predict(noise_trained, inside, sigma=SIGMA, n=200, generator=_gen(6))
    kept = sum(p.index == int(y[i]) for p, i in zip(after, idx, strict=True))
    flipped = sum(p.index not in (None, int(y[i])) for p, i in zip(after, idx, strict=True))
    assert flipped == 0
    assert kept >= 0.75 * len(certified)

    # The attack is not toothless: inside the radius it pushes the votes towards the
    # boundary, and at twice the radius it takes the label away from most images.
    names = noise_trained.labels
    share = [clean[i].vote_shares[names[int(y[i])]] for i in certified]
    share_after = [p.vote_shares[names[int(y[i])]] for p, i in zip(after, idx, strict=True)]
    assert sum(share_after) < sum(share) - 0.05 * len(share)
    outside = _attack(noise_trained, x[idx], y[idx], 2.0 * radius)
    far = smooth_predict(noise_trained, outside, sigma=SIGMA, n=200, generator=_gen(7))
    assert sum(p.index != int(y[i]) for p, i in zip(far, idx, strict=True)) >= len(idx) // 2
