"""Defenses: adversarial training methods and the training loop that runs them.

Methods (one module each, registry by name): ``clean`` (plain fine-tuning baseline),
``pgd_at`` (Madry et al. 2018), ``trades`` (Zhang et al. 2019), ``mpadvt`` (the paper's
multi-perturbation adversarial training), ``maadvt`` (the paper's misclassification-aware
adversarial training, i.e. MART, Wang et al. 2020), ``noise`` (Gaussian augmentation for
randomized smoothing, Cohen et al. 2019). Budgets are L-infinity in [0, 1] pixel
units. Usable as a plain library::

    from workers.defenses import train_defense
    result = train_defense(model, train_ds, val_ds, "mpadvt", {"epochs": 5}, seed=0,
                           checkpoint_dir=Path("ckpt"))
    result.model, result.best_epoch, result.history
"""

from workers.defenses.base import Defense, DefenseRandom, TrainingParams
from workers.defenses.registry import defense_class, get_defense, list_defenses
from workers.defenses.training import DefenseResult, EpochRecord, evaluate, train_defense

__all__ = [
    "Defense",
    "DefenseRandom",
    "DefenseResult",
    "EpochRecord",
    "TrainingParams",
    "defense_class",
    "evaluate",
    "get_defense",
    "list_defenses",
    "train_defense",
]
