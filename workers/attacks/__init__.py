"""The RobustDx attack engine, usable as a plain library.

::

    from workers.attacks import get_attack, list_attacks

    attack = get_attack("pgd", eps=4 / 255, steps=10)
    result = attack(model, images, labels)   # model: models.wrapper.DiagnosticModel
    result.images, result.success, result.linf, result.l2, result.iterations, result.loss

Budgets are in pixel units of ``[0, 1]`` images; normalization is the model wrapper's job.
Every attack follows the model's head (softmax, binary-logit, multi-label sigmoid), clips
to ``[0, 1]``, quantizes to 8 bits by default and judges success on the quantized images.
:mod:`workers.attacks.functional` holds the batched primitives (``pgd``, projections,
``quantize_8bit``) that adversarial training reuses.

Support (S = softmax, B = binary-logit, M = multi-label sigmoid)::

    attack      heads    targets                      notes
    fgsm        S B M    class / name / least-likely  M: BCE over findings or `finding`
    pgd, bim    S B M    class / name / least-likely  M: least-likely = every finding flipped
    apgd        S B M    class / name / least-likely  loss='dlr': S only, >= 3 classes
                                                      (targeted >= 4)
    autoattack  S B M    (cascade, untargeted)        targeted-DLR stage: S with >= 4
                                                      classes (3: untargeted DLR; else skipped)
    square      S B M    class / name / least-likely  scores only, never a gradient
    deepfool    S B M    -                            M: nearest finding boundary
    cw_l2       S B M    class / name / least-likely  minimum L2 norm
    gap         S B M    (trained toward least-likely; fit / save / load)
    uap         S B M    class / name / least-likely  fit / save / load
    min_eps     S B M    class / name / least-likely  bisection over PGD, per image

Single-label success: the prediction left the true label (untargeted) or reached the
target. Multi-label success: at least one finding flipped (``AttackResult.flipped``
counts them), every finding with ``target="least-likely"``, the chosen one with
``finding``.
"""

# Importing each attack module registers it.
from workers.attacks import (  # noqa: F401
    apgd,
    autoattack,
    cw,
    deepfool,
    fgsm,
    gap,
    pgd,
    square,
    uap,
)
from workers.attacks.base import Attack
from workers.attacks.context import AttackContext, frozen
from workers.attacks.fitted import FittedAttack
from workers.attacks.min_eps import min_eps
from workers.attacks.objectives import Objective
from workers.attacks.params import AttackParams
from workers.attacks.registry import attack_class, describe_attacks, get_attack, list_attacks
from workers.attacks.result import AttackResult, Outcome

__all__ = [
    "Attack",
    "AttackContext",
    "AttackParams",
    "AttackResult",
    "FittedAttack",
    "Objective",
    "Outcome",
    "attack_class",
    "describe_attacks",
    "frozen",
    "get_attack",
    "list_attacks",
    "min_eps",
]
