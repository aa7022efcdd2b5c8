"""``sanity``: is this robustness evaluation to be trusted?

Checks in the spirit of AutoAttack's (Croce & Hein, 2020, *Reliable evaluation of adversarial
robustness with an ensemble of diverse parameter-free attacks*, ICML; ``autoattack/checks.py``)
and of Carlini et al. (2019), *On Evaluating Adversarial Robustness*: symptoms that the
attacks did not really test the model (gradient masking, a broken or randomized model), so
that the adversarial accuracy overstates its robustness.

Checks (each one ``flagged`` or not; any flag sets ``reliable: false``):

- ``accuracy_vs_eps``: for each group of settings that differ only in eps, the accuracy at a
  larger eps exceeds the accuracy at a smaller one (clean accuracy counts as eps 0) by more
  than ``accuracy_tolerance``; or no white-box attack lowers the accuracy at all up to an
  eps of at least ``min_effective_eps`` (when the clean accuracy is above 0). A single weak
  attack (FGSM) beside a white-box attack that works is listed as ``ineffective``, not
  flagged.
- ``black_box_beats_white_box``: a black-box attack (``black_box_attacks``, by default
  ``square``) reaches a lower accuracy than every white-box attack at the same eps: the
  gradients the white-box attacks follow are probably misleading.
- ``zero_gradients``: the input gradient of the head's loss is exactly zero for more than
  ``max_zero_gradient_fraction`` of the clean images (saturated softmax, masked gradients).
- ``nonfinite_gradients`` / ``nonfinite_outputs``: NaN or infinite input gradients / logits.
- ``vanishing_gradients``: the input gradient's L2 norm is below ``min_gradient_norm`` on
  more than ``max_vanishing_fraction`` of the images (a rounding or other
  non-differentiable step inside the graph, ``torch.round(x * 255) / 255``, a saturated
  output): the attacks' steps go nowhere. A straight-through rounding
  (``x + (round(x) - x).detach()``) keeps the gradient and is not flagged.
- ``loss_vs_steps``: a short probe of ``probe_steps`` L-infinity PGD steps at
  ``probe_eps`` (no random start, so only the gradient can move the image) does not raise
  the loss above the clean loss on more than ``max_stalled_fraction`` of the images right
  on clean: following the gradient does not make the model worse, so the gradient is
  uninformative (masked, shattered or randomized; Athalye et al., 2018, *Obfuscated
  gradients give a false sense of security*, ICML).
- ``nondeterministic_outputs``: two identical calls on the same clean batch, in the mode the
  audit runs the model (eval), differ by more than ``atol + rtol * |logit|`` on some image
  (randomized defenses, dropout left on, non-deterministic layers).

A check with nothing to compare (no black-box attack at a white-box budget, no eps to
sweep) is ``not applicable`` rather than passed; each check has ``status`` ``"flagged"``,
``"passed"`` or ``"not applicable"``.

Arrays: ``index``, ``clean_correct``, ``probe_loss`` ``[N, probe_steps + 1]`` (the loss at
each probe step, step 0 = clean), ``grad_norm`` (L2 norm of the input gradient),
``grad_zero``, ``grad_nonfinite``, ``output_nonfinite``, ``repeat_max_diff`` (max absolute
logit difference between the two calls), ``repeat_exceeds`` (beyond the tolerance),
``repeat_pred_changed``, and per attack key ``adv_index[k]``, ``adv_correct[k]``.

``collect`` calls the model three more times per batch (one forward and backward for the
gradients, two forwards for determinism) plus ``probe_steps`` forward and backward passes
for the probe; it never changes the model's mode: it checks the model the way the audit
runs it.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch

from app.core.catalogue.analyses import SanityParams
from models import heads
from workers.analyses.alignment import attack_field, attack_rows, clean_rows
from workers.analyses.analysis_params import parse_params
from workers.analyses.attack_keys import (
    AttackInfo,
    attack_infos,
    values_match,
)
from workers.analyses.base import Analysis, BatchContext, Section, SummaryContext
from workers.analyses.jsonable import jsonable

UNRELIABLE = "results may be unreliable"



class SanityAnalysis(Analysis):
    """Flags of an unreliable evaluation (see the module docstring)."""

    name: ClassVar[str] = "sanity"
    Params: ClassVar[type[SanityParams]] = SanityParams

    def parse_params(self, params: dict[str, Any] | None) -> SanityParams:
        return parse_params(SanityParams, params, self.name)

    def collect(self, ctx: BatchContext) -> dict[str, np.ndarray]:
        params = self.parse_params(ctx.params)
        model = ctx.model
        index = np.asarray(ctx.indices).astype(np.int64)
        out: dict[str, np.ndarray] = {"index": index}
        # The audit may run analyses under no_grad or inference_mode; gradients need neither.
        with torch.inference_mode(False), torch.enable_grad():
            x = ctx.clean.detach().clone().requires_grad_(True)
            y = ctx.labels.detach().clone()
            logits = model(x)
            loss = heads.loss(logits, y, model.head, reduction="sum")
            (grad,) = torch.autograd.grad(loss, x, allow_unused=True)
        if grad is None:  # the output does not depend on the input at all
            grad = torch.zeros_like(x)
        flat = grad.detach().flatten(1)
        finite = torch.isfinite(flat).all(dim=1)
        out["grad_nonfinite"] = (~finite).cpu().numpy()
        out["grad_zero"] = (finite & (flat == 0).all(dim=1)).cpu().numpy()
        out["grad_norm"] = flat.float().norm(dim=1).cpu().numpy().astype(np.float64)
        if params.probe_steps:
            out["probe_loss"] = probe_losses(model, ctx.clean, ctx.labels, params.probe_eps,
                                             params.probe_steps)

        with torch.no_grad():
            first = model(ctx.clean).detach().float()
            second = model(ctx.clean).detach().float()
            out["output_nonfinite"] = (~torch.isfinite(first).flatten(1).all(dim=1)).cpu().numpy()
            both_nan = torch.isnan(first) & torch.isnan(second)
            diff = torch.where(both_nan, torch.zeros_like(first), (first - second).abs())
            diff = torch.nan_to_num(diff, nan=float("inf"))
            allowed = params.atol + params.rtol * first.abs().nan_to_num(0.0)
            out["repeat_max_diff"] = diff.flatten(1).amax(dim=1).cpu().numpy().astype(np.float64)
            out["repeat_exceeds"] = (diff > allowed).flatten(1).any(dim=1).cpu().numpy()
            thresholds = model.thresholds
            pred1 = heads.predict(first, model.head, thresholds)
            pred2 = heads.predict(second, model.head, thresholds)
            changed = pred1 != pred2
            out["repeat_pred_changed"] = (
                changed.flatten(1).any(dim=1) if changed.dim() > 1 else changed
            ).cpu().numpy()
            out["clean_correct"] = heads.correct(first, ctx.labels, model.head,
                                                 thresholds).cpu().numpy()
            for key, adv in ctx.adversarial.items():
                out[attack_field("adv_index", key)] = index
                out[attack_field("adv_correct", key)] = (
                    heads.correct(model(adv), ctx.labels, model.head, thresholds).cpu().numpy()
                )
        return out

    def summarize(self, arrays: dict[str, np.ndarray], ctx: SummaryContext) -> Section:
        params = self.parse_params(ctx.params)
        if "clean_correct" not in arrays or arrays["clean_correct"].shape[0] == 0:
            return Section(self.name, applicable=False, data={}, reason="no images were audited")
        _, rows = clean_rows(arrays, "clean_correct")
        clean_acc = float(arrays["clean_correct"][rows].mean())
        infos = attack_infos(list(ctx.attack_keys), ctx.params.get("attacks"))
        accuracy: dict[str, float] = {}
        for key in infos:
            if attack_field("adv_correct", key) in arrays:
                _, _, a_rows = attack_rows(arrays, key, "adv_correct")
                if a_rows.size:
                    accuracy[key] = float(arrays[attack_field("adv_correct", key)][a_rows].mean())
        checks = [
            check_accuracy_vs_eps(clean_acc, accuracy, infos, params),
            check_black_box(accuracy, infos, params),
            *check_gradients(arrays, rows, params),
            check_vanishing(arrays, rows, params),
            check_loss_vs_steps(arrays, rows, params),
            check_determinism(arrays, rows, params),
        ]
        flags = [c["message"] for c in checks if c["flagged"]]
        data = {
            "reliable": not flags,
            "n_images": int(rows.shape[0]),
            "clean_accuracy": clean_acc,
            "adversarial_accuracy": accuracy,
            "checks": checks,
        }
        return Section(self.name, applicable=True, data=jsonable(data), flags=flags)


# ---------------------------------------------------------------------- checks


def _eps_text(eps: float) -> str:
    grey = eps * 255.0
    return f"{grey:g}/255" if abs(grey - round(grey)) < 1e-6 else f"{eps:g}"


def _check(name: str, flagged: bool, message: str, *, applicable: bool = True,
           **details: Any) -> dict[str, Any]:
    status = "flagged" if flagged else "passed" if applicable else "not applicable"
    return {"name": name, "flagged": bool(flagged), "status": status, "message": message,
            "details": details}


def probe_losses(model: Any, clean: torch.Tensor, labels: torch.Tensor, eps: float,
                 steps: int) -> np.ndarray:
    """``[N, steps + 1]`` per-image loss along L-infinity PGD from the clean image.

    Signed steps of ``2.5 * eps / steps`` (Madry et al., 2018), projected to the eps ball
    and ``[0, 1]``, without random start and without quantization: a zero or meaningless
    gradient leaves the loss where it was.
    """
    step = 2.5 * eps / steps
    losses = []
    with torch.inference_mode(False), torch.enable_grad():
        x0 = clean.detach().clone()
        y = labels.detach().clone()
        adv = x0.clone()
        for i in range(steps + 1):
            adv = adv.detach().requires_grad_(True)
            loss = heads.loss(model(adv), y, model.head, reduction="none")
            per_image = loss.reshape(loss.shape[0], -1).mean(dim=1)
            losses.append(per_image.detach().float().cpu().numpy().astype(np.float64))
            if i == steps:
                break
            (grad,) = torch.autograd.grad(per_image.sum(), adv, allow_unused=True)
            if grad is None:
                grad = torch.zeros_like(adv)
            adv = adv.detach() + step * torch.nan_to_num(grad).sign()
            adv = torch.min(torch.max(adv, x0 - eps), x0 + eps).clamp(0, 1)
    return np.stack(losses, axis=1)


def check_accuracy_vs_eps(
    clean_acc: float,
    accuracy: dict[str, float],
    infos: dict[str, AttackInfo],
    params: SanityParams,
) -> dict[str, Any]:
    """Accuracy must fall (weakly) as eps grows, and must fall at all for large budgets."""
    groups: dict[str, list[tuple[float, float]]] = {}
    for key, acc in accuracy.items():
        info = infos[key]
        if info.eps is not None:
            groups.setdefault(info.group, []).append((info.eps, acc))
    problems: list[str] = []
    ineffective: list[str] = []
    effective = False  # some white-box setting at a large budget lowered the accuracy
    curves: dict[str, list[list[float]]] = {}
    for group, points in sorted(groups.items()):
        points = [(0.0, clean_acc), *sorted(points)]
        curves[group] = [[e, a] for e, a in points]
        problems.extend(_rises(group, points, params.accuracy_tolerance))
        name = infos[next(k for k in accuracy if infos[k].group == group)].name
        top_eps, top_acc = points[-1]
        if name in params.white_box_attacks and top_eps >= params.min_effective_eps - 1e-12:
            if top_acc < clean_acc:
                effective = True
            elif clean_acc > 0:
                ineffective.append(
                    f"{group}: accuracy does not fall from clean ({clean_acc:.3f}) up to eps "
                    f"{_eps_text(top_eps)} ({top_acc:.3f})"
                )
    # One weak attack (FGSM) beside a white-box attack that works is not masking; every
    # white-box attack failing at a large budget is its signature.
    if not effective:
        problems.extend(ineffective)
    message = (
        "accuracy does not fall as eps grows (" + "; ".join(problems) + "): the attack may be "
        f"failing (gradient masking, too few steps); {UNRELIABLE}"
        if problems
        else "accuracy falls as eps grows for every attack"
        + (" with effect (" + "; ".join(ineffective) + ", while another white-box attack "
           "lowers it: a weak attack, not a sign of masking)" if ineffective else "")
    )
    if not curves:
        message = "no attack with an eps to compare across budgets"
    return _check("accuracy_vs_eps", bool(problems), message, applicable=bool(curves),
                  curves=curves, problems=problems, ineffective=ineffective)


def _rises(group: str, points: list[tuple[float, float]], tolerance: float) -> list[str]:
    """Where the accuracy at a larger eps exceeds the lowest one at a smaller eps."""
    problems = []
    best_eps, best_acc = points[0]  # lowest accuracy seen at a smaller eps
    for eps, acc in points[1:]:
        if acc > best_acc + tolerance:
            problems.append(
                f"{group}: accuracy rises from {best_acc:.3f} at eps {_eps_text(best_eps)} "
                f"to {acc:.3f} at eps {_eps_text(eps)}"
            )
        if acc < best_acc:
            best_eps, best_acc = eps, acc
    return problems


def check_black_box(
    accuracy: dict[str, float], infos: dict[str, AttackInfo], params: SanityParams
) -> dict[str, Any]:
    """A black-box attack should not beat every white-box attack at the same budget."""
    comparisons: list[dict[str, Any]] = []
    problems: list[str] = []
    for bkey, bacc in accuracy.items():
        binfo = infos[bkey]
        if binfo.name not in params.black_box_attacks or binfo.eps is None:
            continue
        white = {
            k: a for k, a in accuracy.items()
            if infos[k].name in params.white_box_attacks
            and infos[k].eps is not None
            and values_match(infos[k].eps, binfo.eps)
        }
        if not white:
            continue
        wkey = min(white, key=lambda k: white[k])
        comparisons.append({"black_box": bkey, "accuracy": bacc, "best_white_box": wkey,
                            "white_box_accuracy": white[wkey]})
        if bacc < white[wkey] - params.accuracy_tolerance:
            problems.append(
                f"{bkey} reaches accuracy {bacc:.3f}, below the best white-box attack "
                f"{wkey} ({white[wkey]:.3f})"
            )
    message = (
        "a black-box attack beats the white-box attacks at the same eps ("
        + "; ".join(problems) + "): gradients may be masked; " + UNRELIABLE
        if problems
        else "no black-box attack beats the white-box attacks"
        if comparisons
        else "no black-box and white-box attacks at the same eps to compare"
    )
    return _check("black_box_beats_white_box", bool(problems), message,
                  applicable=bool(comparisons), comparisons=comparisons)


def check_gradients(
    arrays: dict[str, np.ndarray], rows: np.ndarray, params: SanityParams
) -> list[dict[str, Any]]:
    n = rows.shape[0]
    zero = int(arrays["grad_zero"][rows].sum())
    nonfinite = int(arrays["grad_nonfinite"][rows].sum())
    out_nonfinite = int(arrays["output_nonfinite"][rows].sum())
    zero_share = zero / n
    norms = arrays["grad_norm"][rows]
    finite_norms = norms[np.isfinite(norms)]
    zero_flag = zero_share > params.max_zero_gradient_fraction
    return [
        _check(
            "zero_gradients",
            zero_flag,
            f"{zero} of {n} images ({zero_share:.1%}) have an input gradient of exactly zero: "
            f"gradient-based attacks cannot move them (saturated or masked gradients); "
            f"{UNRELIABLE}"
            if zero_flag
            else f"{zero} of {n} images have a zero input gradient",
            count=zero,
            fraction=zero_share,
            median_gradient_norm=float(np.median(finite_norms)) if finite_norms.size else None,
        ),
        _check(
            "nonfinite_gradients",
            nonfinite > 0,
            f"{nonfinite} of {n} images have NaN or infinite input gradients; {UNRELIABLE}"
            if nonfinite
            else "every input gradient is finite",
            count=nonfinite,
            fraction=nonfinite / n,
        ),
        _check(
            "nonfinite_outputs",
            out_nonfinite > 0,
            f"{out_nonfinite} of {n} images give NaN or infinite outputs; {UNRELIABLE}"
            if out_nonfinite
            else "every output is finite",
            count=out_nonfinite,
            fraction=out_nonfinite / n,
        ),
    ]


def check_determinism(
    arrays: dict[str, np.ndarray], rows: np.ndarray, params: SanityParams
) -> dict[str, Any]:
    n = rows.shape[0]
    exceeds = int(arrays["repeat_exceeds"][rows].sum())
    changed = int(arrays["repeat_pred_changed"][rows].sum())
    diffs = arrays["repeat_max_diff"][rows]
    max_diff = float(np.max(diffs)) if diffs.size else 0.0
    flagged = exceeds > 0
    message = (
        f"two identical calls give different outputs on {exceeds} of {n} images (largest logit "
        f"difference {max_diff:.3g}; {changed} predictions changed): the model is randomized "
        f"or non-deterministic, attacks and metrics see a moving target; {UNRELIABLE}"
        if flagged
        else "identical calls give identical outputs"
    )
    return _check(
        "nondeterministic_outputs",
        flagged,
        message,
        images=exceeds,
        predictions_changed=changed,
        max_logit_difference=max_diff,
        atol=params.atol,
        rtol=params.rtol,
    )


def check_vanishing(arrays: dict[str, np.ndarray], rows: np.ndarray,
                    params: SanityParams) -> dict[str, Any]:
    """Input gradients (nearly) zero on most images: nothing for an attack to follow."""
    norms = arrays["grad_norm"][rows]
    n = rows.shape[0]
    tiny = int((np.nan_to_num(norms, nan=0.0) < params.min_gradient_norm).sum())
    share = tiny / n
    flagged = share > params.max_vanishing_fraction
    message = (
        f"the input gradient vanishes (L2 norm below {params.min_gradient_norm:g}) on {tiny} "
        f"of {n} images ({share:.0%}): a non-differentiable step (rounding, thresholding) "
        f"or a saturated output hides the gradient from the attacks; {UNRELIABLE}"
        if flagged
        else f"the input gradient vanishes on {tiny} of {n} images"
    )
    return _check("vanishing_gradients", flagged, message, count=tiny, fraction=share,
                  min_gradient_norm=params.min_gradient_norm)


def check_loss_vs_steps(arrays: dict[str, np.ndarray], rows: np.ndarray,
                        params: SanityParams) -> dict[str, Any]:
    """Following the gradient must raise the loss on images the model gets right."""
    if "probe_loss" not in arrays:
        return _check("loss_vs_steps", False, "the gradient probe did not run "
                      "(probe_steps is 0)", applicable=False)
    losses = arrays["probe_loss"][rows]
    ok = arrays["clean_correct"][rows].astype(bool)
    if not ok.any():
        return _check("loss_vs_steps", False, "no image is right on clean: nothing to probe",
                      applicable=False)
    start, best = losses[ok, 0], np.nanmax(losses[ok, 1:], axis=1)
    stalled = int((~(best > start + 1e-6 * np.maximum(np.abs(start), 1e-12))).sum())
    share = stalled / int(ok.sum())
    flagged = share > params.max_stalled_fraction
    steps = losses.shape[1] - 1
    message = (
        f"{steps} gradient steps at eps {_eps_text(params.probe_eps)} do not raise the loss "
        f"on {stalled} of {int(ok.sum())} correctly classified images ({share:.0%}): the "
        f"gradient does not point to a worse answer (masked, shattered or randomized "
        f"gradients); {UNRELIABLE}"
        if flagged
        else f"{steps} gradient steps raise the loss on {int(ok.sum()) - stalled} of "
        f"{int(ok.sum())} correctly classified images"
    )
    return _check("loss_vs_steps", flagged, message, stalled=stalled, fraction=share,
                  steps=steps, eps=params.probe_eps,
                  mean_loss=[float(v) for v in np.nanmean(losses[ok], axis=0)])
