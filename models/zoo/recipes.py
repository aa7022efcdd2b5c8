"""The documented, seeded recipes of the demo zoo (see ``models/zoo/README.md``).

Every model trains on freshly generated phantoms (train seed 1), picks its per-finding
thresholds on a validation set (seed 2), and is measured on a held-out test set (seed 3)
and a small check set (seed 4) that the tests regenerate. Optimizer: AdamW with a
one-cycle learning-rate schedule, batch 64, the loss of the model's head
(``models.heads.loss``), no early stopping (the last epoch is kept).
"""

from __future__ import annotations

from dataclasses import dataclass

from models.card import Head

TRAIN_SEED, VAL_SEED, TEST_SEED, CHECK_SEED = 1, 2, 3, 4
TEST_SIZE, CHECK_SIZE = 2000, 300


@dataclass(frozen=True)
class Recipe:
    """How one zoo model is made.

    ``flips``: augmentations drawn per batch, ``h`` (left-right), ``v`` (up-down) and
    ``rot90``. Chest radiographs get none: their laterality (the heart on the patient's
    left) is anatomy, not noise.
    """

    name: str
    kind: str
    architecture: str
    head: Head
    epochs: int
    n_train: int
    n_val: int = 600
    size: int = 64
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 1e-4
    flips: tuple[str, ...] = ()
    torch_seed: int = 0
    linear_c: float = 0.01


RECIPES: tuple[Recipe, ...] = (
    Recipe(
        name="chest-densenet",
        kind="chest",
        architecture="densenet_small",
        head=Head.SIGMOID,
        epochs=10,
        n_train=4000,
    ),
    Recipe(
        name="derm-attention-vgg",
        kind="derm",
        architecture="attention_vgg_small",
        head=Head.BINARY_LOGIT,
        epochs=6,
        n_train=2500,
        flips=("h", "v", "rot90"),
    ),
    Recipe(
        name="fundus-inception",
        kind="fundus",
        architecture="inception_small",
        head=Head.SOFTMAX,
        epochs=8,
        n_train=4000,
        flips=("h", "v"),
    ),
)


def recipe(name: str) -> Recipe:
    for r in RECIPES:
        if r.name == name:
            return r
    valid = ", ".join(r.name for r in RECIPES)
    raise ValueError(f"unknown zoo model {name!r}; valid: {valid}")
