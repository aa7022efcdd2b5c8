"""The training loop: seeding, checkpoints, resume after a kill, cancel, progress, inputs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file
from torch.utils.data import TensorDataset

from models.card import Head
from models.errors import (
    ConflictError,
    InvalidDatasetError,
    InvalidParametersError,
    JobCancelledError,
)
from models.wrapper import DiagnosticModel
from workers.defenses import train_defense
from workers.defenses.checkpoint import STATE_FILE

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]

# Small and quick: the point here is the machinery, not robustness.
PARAMS: dict[str, Any] = {
    "epochs": 2,
    "batch_size": 16,
    "optimizer": "adam",
    "lr": 3e-3,
    "eps": 8 / 255,
    "eval_steps": 2,
    "beta": 6.0,
}


@pytest.fixture
def data(make_task: Callable[..., TensorDataset]) -> tuple[TensorDataset, TensorDataset]:
    return make_task(Head.SOFTMAX, 48, seed=1), make_task(Head.SOFTMAX, 16, seed=2)


@pytest.fixture
def model(make_model: Callable[..., DiagnosticModel]) -> DiagnosticModel:
    return make_model(Head.SOFTMAX)


def _params(method: str, **extra: Any) -> dict[str, Any]:
    params = {**PARAMS, **extra}
    if method == "clean":
        params.pop("eps"), params.pop("beta")
    elif method == "pgd_at":
        params.pop("beta")
    elif method == "mpadvt":
        params.pop("eps"), params.pop("beta")
        params.update(steps_max=3, p=1.0)
    if method != "clean" and method != "mpadvt":
        params["steps"] = 2
    return params


def _equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("method", ["clean", "pgd_at", "trades", "mpadvt", "maadvt"])
def test_same_seed_same_weights_other_seed_other_weights(
    method: str, model: DiagnosticModel, data: tuple[TensorDataset, TensorDataset]
) -> None:
    train, val = data
    params = _params(method, epochs=1)
    a = train_defense(model, train, val, method, params, seed=7)
    b = train_defense(model, train, val, method, params, seed=7)
    c = train_defense(model, train, val, method, params, seed=8)
    assert _equal(a.best_state_dict, b.best_state_dict)
    assert [r.loss for r in a.history] == [r.loss for r in b.history]
    assert not _equal(a.best_state_dict, c.best_state_dict)


def test_input_model_is_not_modified_and_result_is_in_eval_mode(
    model: DiagnosticModel, data: tuple[TensorDataset, TensorDataset]
) -> None:
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = train_defense(model, *data, "pgd_at", _params("pgd_at", epochs=1), seed=0)
    assert _equal(before, model.state_dict())
    assert not _equal(before, result.model.state_dict())
    assert not result.model.training
    assert _equal(result.best_state_dict, result.model.net.state_dict())


def test_history_and_result_fields(
    model: DiagnosticModel, data: tuple[TensorDataset, TensorDataset]
) -> None:
    result = train_defense(model, *data, "trades", _params("trades"), seed=0)
    assert [r.epoch for r in result.history] == [1, 2]
    for r in result.history:
        assert 0.0 <= r.robust_acc <= r.clean_acc <= 1.0
        assert r.loss > 0
        assert r.seconds > 0
        assert r.eval_seconds > 0
    best = max(result.history, key=lambda r: (r.robust_acc, r.clean_acc))
    assert result.best.robust_acc == best.robust_acc
    assert result.eval_attack == {
        "norm": "linf",
        "eps": 8 / 255,
        "steps": 2,
        "step_size": pytest.approx(2.5 * 8 / 255 / 2),
    }
    assert result.params["beta"] == 6.0
    assert result.params["epochs"] == 2
    assert result.method == "trades"
    assert result.seed == 0
    assert result.resumed_from_epoch == 0
    json.dumps(result.to_json())  # JSON-able as a whole


def test_checkpoint_layout_keeps_last_and_best_epochs_only(
    model: DiagnosticModel, data: tuple[TensorDataset, TensorDataset], tmp_path: Path
) -> None:
    result = train_defense(
        model, *data, "clean", _params("clean", epochs=3), seed=0, checkpoint_dir=tmp_path
    )
    state = json.loads((tmp_path / STATE_FILE).read_text())
    assert state["epoch"] == 3
    assert state["best_epoch"] == result.best_epoch
    names = {p.name for p in tmp_path.iterdir()}
    expected = {STATE_FILE, "epoch-0003.safetensors", "epoch-0003.optim.pt"}
    expected.add(f"epoch-{result.best_epoch:04d}.safetensors")
    assert names == expected  # no temporary files, no stale epochs
    best = load_file(str(tmp_path / f"epoch-{result.best_epoch:04d}.safetensors"))
    assert _equal(best, result.best_state_dict)
    optim = torch.load(tmp_path / "epoch-0003.optim.pt", weights_only=True)
    assert set(optim) == {"state", "param_groups"}


def test_resume_after_cancel_equals_uninterrupted_run(
    model: DiagnosticModel, data: tuple[TensorDataset, TensorDataset], tmp_path: Path
) -> None:
    params = _params("maadvt")
    full = train_defense(model, *data, "maadvt", params, seed=3, checkpoint_dir=tmp_path / "a")

    def stop_in_epoch_2() -> bool:
        # Poll the checkpoint: stop at the first batch after epoch 1 is committed.
        return (tmp_path / "b" / STATE_FILE).exists()

    with pytest.raises(JobCancelledError):
        train_defense(
            model,
            *data,
            "maadvt",
            params,
            seed=3,
            checkpoint_dir=tmp_path / "b",
            should_stop=stop_in_epoch_2,
        )
    assert json.loads((tmp_path / "b" / STATE_FILE).read_text())["epoch"] == 1
    resumed = train_defense(model, *data, "maadvt", params, seed=3, checkpoint_dir=tmp_path / "b")
    assert resumed.resumed_from_epoch == 1
    last_a = load_file(str(tmp_path / "a" / "epoch-0002.safetensors"))
    last_b = load_file(str(tmp_path / "b" / "epoch-0002.safetensors"))
    assert _equal(last_a, last_b)
    assert _equal(full.best_state_dict, resumed.best_state_dict)
    assert [(r.loss, r.robust_acc) for r in full.history] == [
        (r.loss, r.robust_acc) for r in resumed.history
    ]


_CHILD = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    import torch
    sys.path[:0] = [{root!r}, {here!r}]
    torch.set_num_threads({threads})
    from conftest import shortcut_task, tiny_model
    from models.card import Head
    from workers.defenses import train_defense

    ckpt = Path({ckpt!r})

    def should_stop():
        if (ckpt / "state.json").exists():
            (ckpt / "child-waiting").touch()
            time.sleep(600)  # killed here, in the middle of epoch 2
        return False

    train_defense(
        tiny_model(Head.SOFTMAX), shortcut_task(Head.SOFTMAX, 48, seed=1),
        shortcut_task(Head.SOFTMAX, 16, seed=2), "mpadvt", {params!r}, seed=5,
        checkpoint_dir=ckpt, should_stop=should_stop,
    )
    """
)


def test_resume_after_sigkill_equals_uninterrupted_run(
    model: DiagnosticModel, data: tuple[TensorDataset, TensorDataset], tmp_path: Path
) -> None:
    params = _params("mpadvt")
    ckpt = tmp_path / "killed"
    code = _CHILD.format(
        root=str(ROOT),
        here=str(HERE),
        threads=torch.get_num_threads(),
        ckpt=str(ckpt),
        params=params,
    )
    child = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT)
    try:
        deadline = time.monotonic() + 120
        while not (ckpt / "child-waiting").exists():
            assert child.poll() is None, "the training process died before epoch 1 ended"
            assert time.monotonic() < deadline, "epoch 1 never finished"
            time.sleep(0.1)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL

    resumed = train_defense(model, *data, "mpadvt", params, seed=5, checkpoint_dir=ckpt)
    full = train_defense(model, *data, "mpadvt", params, seed=5, checkpoint_dir=tmp_path / "full")
    assert resumed.resumed_from_epoch == 1
    last_killed = load_file(str(ckpt / "epoch-0002.safetensors"))
    last_full = load_file(str(tmp_path / "full" / "epoch-0002.safetensors"))
    assert _equal(last_killed, last_full)
    assert _equal(full.best_state_dict, resumed.best_state_dict)
    assert [r.loss for r in full.history] == [r.loss for r in resumed.history]


def test_cancel_raises_and_leaves_no_checkpoint(
    model: DiagnosticModel, data: tuple[TensorDataset, TensorDataset], tmp_path: Path
) -> None:
    polls = 0

    def stop() -> bool:
        nonlocal polls
        polls += 1
        return polls > 2

    with pytest.raises(JobCancelledError, match="cancelled during epoch 1/2: training"):
        train_defense(
            model,
            *data,
            "pgd_at",
            _params("pgd_at"),
            seed=0,
            checkpoint_dir=tmp_path,
            should_stop=stop,
        )
    assert polls == 3
    assert not (tmp_path / STATE_FILE).exists()


def test_progress_is_monotonic_and_reaches_one(
    model: DiagnosticModel, data: tuple[TensorDataset, TensorDataset]
) -> None:
    seen: list[tuple[float, str]] = []
    train_defense(
        model,
        *data,
        "clean",
        _params("clean"),
        seed=0,
        progress=lambda f, stage: seen.append((f, stage)),
    )
    fractions = [f for f, _ in seen]
    assert fractions == sorted(fractions)
    assert fractions[-1] == 1.0
    assert fractions[0] > 0
    # 48 images / 16 per batch = 3 training batches, 1 validation batch, per epoch.
    assert len(seen) == 2 * (3 + 1)
    assert seen[0][1] == "epoch 1/2: training"
    assert seen[-1][1] == "epoch 2/2: validating"


def test_checkpoint_of_another_job_is_refused(
    model: DiagnosticModel, data: tuple[TensorDataset, TensorDataset], tmp_path: Path
) -> None:
    params = _params("clean", epochs=1)
    train_defense(model, *data, "clean", params, seed=0, checkpoint_dir=tmp_path)
    with pytest.raises(ConflictError, match="belongs to a different job"):
        train_defense(model, *data, "clean", params, seed=1, checkpoint_dir=tmp_path)


def test_finished_checkpoint_returns_without_training(
    model: DiagnosticModel, data: tuple[TensorDataset, TensorDataset], tmp_path: Path
) -> None:
    params = _params("clean", epochs=1)
    first = train_defense(model, *data, "clean", params, seed=0, checkpoint_dir=tmp_path)
    again = train_defense(
        model,
        *data,
        "clean",
        params,
        seed=0,
        checkpoint_dir=tmp_path,
        should_stop=lambda: pytest.fail("no batch should run"),
    )
    assert again.resumed_from_epoch == 1
    assert _equal(first.best_state_dict, again.best_state_dict)


def test_from_scratch_needs_an_allow_listed_architecture(
    model: DiagnosticModel, data: tuple[TensorDataset, TensorDataset]
) -> None:
    with pytest.raises(InvalidParametersError, match="from_scratch needs the card"):
        train_defense(model, *data, "clean", _params("clean", from_scratch=True), seed=0)


def test_from_scratch_builds_the_card_architecture_seeded(
    data: tuple[TensorDataset, TensorDataset], make_card: Callable[..., Any]
) -> None:
    from models.architectures import SmallCNN

    # The network given is a placeholder: from_scratch builds the card's architecture.
    model = DiagnosticModel(torch.nn.Identity(), make_card(Head.SOFTMAX, "small_cnn"), Head.SOFTMAX)
    params = _params("clean", epochs=1, from_scratch=True)
    a = train_defense(model, *data, "clean", params, seed=0)
    b = train_defense(model, *data, "clean", params, seed=0)
    assert isinstance(a.model.net, SmallCNN)
    assert _equal(a.best_state_dict, b.best_state_dict)


@pytest.mark.parametrize(
    ("images", "labels", "message"),
    [
        (torch.rand(8, 3, 32, 32), torch.zeros(8, dtype=torch.long), "must be \\[N, 1, 32, 32\\]"),
        (torch.rand(8, 1, 32, 32) * 2, torch.zeros(8, dtype=torch.long), "in \\[0, 1\\]"),
        (torch.rand(8, 1, 32, 32), torch.full((8,), 2), "class indices in \\[0, 1\\]"),
    ],
)
def test_bad_datasets_are_refused(
    model: DiagnosticModel, images: torch.Tensor, labels: torch.Tensor, message: str
) -> None:
    bad = TensorDataset(images, labels)
    with pytest.raises(InvalidDatasetError, match=message):
        train_defense(model, bad, bad, "clean", {"epochs": 1}, seed=0)


def test_uint8_images_and_plain_datasets_are_accepted(
    model: DiagnosticModel, data: tuple[TensorDataset, TensorDataset]
) -> None:
    train, val = data
    as_uint8 = TensorDataset((train.tensors[0] * 255).round().to(torch.uint8), train.tensors[1])
    as_list = [(val.tensors[0][i], val.tensors[1][i]) for i in range(len(val))]
    result = train_defense(model, as_uint8, as_list, "clean", _params("clean", epochs=1), seed=0)
    assert len(result.history) == 1


def test_negative_seed_is_refused(
    model: DiagnosticModel, data: tuple[TensorDataset, TensorDataset]
) -> None:
    with pytest.raises(InvalidParametersError, match="seed must be >= 0"):
        train_defense(model, *data, "clean", {"epochs": 1}, seed=-1)
