"""Release-gating policies: rules checked against a report.

A policy is a JSON object of rules, for example::

    {
      "min_clean_accuracy": 0.8,
      "min_accuracy": {"pgd:eps=4/255": 0.6},
      "max_fooling_rate": {"gap": 0.3},
      "min_auroc": 0.7,
      "require_reliable": true
    }

Rules (thresholds are shares in [0, 1]):

============================  ====================================================  ========
rule                          what is compared                                      passes if
============================  ====================================================  ========
``min_clean_accuracy``        clean accuracy                                        >=
``min_clean_auroc``           clean mean AUROC                                      >=
``min_accuracy``              adversarial accuracy, per attack setting              >=
``min_balanced_accuracy``     adversarial balanced accuracy, per attack setting     >=
``min_auroc``                 adversarial mean AUROC, per attack setting            >=
``max_fooling_rate``          fooling rate, per attack setting                      <=
``max_attack_success_rate``   attack success rate, per attack setting               <=
``max_accuracy_drop``         clean minus adversarial accuracy, per attack setting  <=
``require_reliable``          no sanity flag (``true`` to require it)               is true
``min_robust_accuracy``       worst-case robust accuracy, per budget                >=
``min_robust_auroc``          worst-case mean AUROC, per budget                     >=
``min_subgroup_robust_accuracy``  robust accuracy of the worst subgroup, per budget  >=
``min_subgroup_clean_accuracy``   clean accuracy of the worst subgroup              >=
============================  ====================================================  ========

Budget rules (``min_robust_accuracy``, ``min_robust_auroc``,
``min_subgroup_robust_accuracy``) read the ``worst_case`` and ``subgroups`` sections: an
image is robust at a budget only if it survives every attack of that budget. They take a
number (every budget of the audit) or an object ``{budget: threshold}`` where a budget is
``[norm:]eps=value``: ``"linf:eps=4/255"`` selects the L-infinity budget 4/255,
``"eps=4/255"`` that eps in every norm, ``"l2:eps=0.5"`` an L2 budget. The worst subgroup
is taken over every metadata attribute, among groups of at least the section's
``min_group_size`` images.

Per-attack rules take a number (every attack setting of the audit) or an object
``{target: threshold}``. A target is an attack name (``"gap"``: all its settings) or a key,
complete or partial (``"pgd:eps=4/255"``: the pgd settings with that eps, whatever their
other parameters). ``4/255`` and ``0.0157`` denote the same eps
(:func:`workers.analyses.attack_keys.number_matches`). Each matched setting gives one
:class:`RuleResult`; a target that matches no setting gives a failed result, so a typo
cannot pass a gate silently.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from models.errors import InvalidParametersError
from workers.analyses.attack_keys import (
    attack_infos,
    budget_matches,
    parse_attack_key,
    parse_budget_selector,
    selector_matches,
)

Direction = Literal["min", "max"]

#: Per-attack rules: name -> (direction, metric description).
ATTACK_RULES: dict[str, tuple[Direction, str]] = {
    "min_accuracy": ("min", "adversarial accuracy"),
    "min_balanced_accuracy": ("min", "adversarial balanced accuracy"),
    "min_auroc": ("min", "adversarial mean AUROC"),
    "max_fooling_rate": ("max", "fooling rate"),
    "max_attack_success_rate": ("max", "attack success rate"),
    "max_accuracy_drop": ("max", "accuracy drop"),
}
#: Audit-wide rules: name -> (direction, metric description).
GLOBAL_RULES: dict[str, tuple[Direction, str]] = {
    "min_clean_accuracy": ("min", "clean accuracy"),
    "min_clean_auroc": ("min", "clean mean AUROC"),
    "min_subgroup_clean_accuracy": ("min", "clean accuracy of the worst subgroup"),
}
#: Per-budget rules (worst case over the budget's attacks): name -> (direction, metric).
BUDGET_RULES: dict[str, tuple[Direction, str]] = {
    "min_robust_accuracy": ("min", "worst-case robust accuracy"),
    "min_robust_auroc": ("min", "worst-case mean AUROC"),
    "min_subgroup_robust_accuracy": ("min", "robust accuracy of the worst subgroup"),
}
FLAG_RULES = ("require_reliable",)
RULE_NAMES: tuple[str, ...] = (*GLOBAL_RULES, *ATTACK_RULES, *BUDGET_RULES, *FLAG_RULES)


class PolicyRule(BaseModel):
    """One rule with one target: ``target`` is ``None`` for audit-wide rules, ``"*"`` for
    every attack setting, otherwise an attack name or (partial) key."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    rule: str
    target: str | None
    threshold: float | bool


class Policy(BaseModel):
    """A validated policy (see :func:`parse_policy`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    rules: tuple[PolicyRule, ...]
    raw: dict[str, Any]


@dataclass(frozen=True)
class RuleResult:
    """The outcome of one rule on one attack setting (or on the whole audit)."""

    rule: str
    target: str | None
    attack: str | None
    threshold: float | bool
    observed: float | bool | None
    passed: bool
    message: str
    budget: str | None = None

    @property
    def name(self) -> str:
        """A stable test name: ``min_accuracy[pgd:eps=4/255]``, ``min_clean_accuracy``,
        ``min_robust_accuracy[linf:eps=4/255]``."""
        where = self.attack or self.budget or (
            self.target if self.target not in (None, "*") else None)
        return f"{self.rule}[{where}]" if where else self.rule

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _threshold(rule: str, target: str | None, value: Any) -> float:
    where = f" for {target!r}" if target not in (None, "*") else ""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidParametersError(
            f"policy rule {rule!r}: threshold{where} must be a number in [0, 1], got {value!r}"
        )
    if not 0.0 <= float(value) <= 1.0:
        raise InvalidParametersError(
            f"policy rule {rule!r}: threshold{where} must be in [0, 1], got {value}"
        )
    return float(value)


def parse_policy(
    raw: Mapping[str, Any] | Policy | None, attack_keys: Sequence[str] | None = None
) -> Policy | None:
    """Validate a policy; ``None`` or ``{}`` means no policy.

    Args:
        raw: the policy object of the audit request.
        attack_keys: the audit's attack settings, when known (at submission): a target
            that selects none of them is then refused instead of failing later.

    Raises:
        InvalidParametersError: unknown rule names (the message lists the valid ones),
            thresholds outside [0, 1], malformed targets, or targets matching no attack.
    """
    if raw is None:
        return None
    if isinstance(raw, Policy):
        return raw
    if not isinstance(raw, Mapping):
        raise InvalidParametersError(f"policy must be a JSON object, got {type(raw).__name__}")
    if not raw:
        return None
    unknown = [name for name in raw if name not in RULE_NAMES]
    if unknown:
        raise InvalidParametersError(
            f"unknown policy rule{'s' if len(unknown) > 1 else ''} "
            + ", ".join(repr(u) for u in unknown)
            + "; valid rules: " + ", ".join(RULE_NAMES),
            details={"unknown": unknown, "valid": list(RULE_NAMES)},
        )
    infos = list(attack_infos(list(attack_keys)).values()) if attack_keys is not None else None
    rules: list[PolicyRule] = []
    for name, value in raw.items():
        if name in FLAG_RULES:
            if not isinstance(value, bool):
                raise InvalidParametersError(
                    f"policy rule {name!r} must be true or false, got {value!r}"
                )
            rules.append(PolicyRule(rule=name, target=None, threshold=value))
        elif name in GLOBAL_RULES:
            rules.append(PolicyRule(rule=name, target=None,
                                    threshold=_threshold(name, None, value)))
        elif name in BUDGET_RULES:
            rules.extend(_budget_rules(name, value, infos))
        elif isinstance(value, Mapping):
            if not value:
                raise InvalidParametersError(f"policy rule {name!r} names no attack")
            for target, threshold in value.items():
                _check_target(name, str(target), infos)
                rules.append(PolicyRule(rule=name, target=str(target),
                                        threshold=_threshold(name, str(target), threshold)))
        else:
            rules.append(PolicyRule(rule=name, target="*", threshold=_threshold(name, "*", value)))
    return Policy(rules=tuple(rules), raw=dict(raw))


def _budget_rules(name: str, value: Any, infos: list[Any] | None) -> list[PolicyRule]:
    if not isinstance(value, Mapping):
        return [PolicyRule(rule=name, target="*", threshold=_threshold(name, "*", value))]
    if not value:
        raise InvalidParametersError(f"policy rule {name!r} names no budget")
    out = []
    for target, threshold in value.items():
        try:
            parse_budget_selector(str(target))
        except ValueError as exc:
            raise InvalidParametersError(f"policy rule {name!r}: {exc}") from exc
        if infos is not None and not any(
            info.eps is not None and budget_matches(str(target), info.norm, info.eps)
            for info in infos
        ):
            budgets = sorted({info.budget for info in infos if info.budget is not None})
            raise InvalidParametersError(
                f"policy rule {name!r}: budget {target!r} matches no budget of the audit; "
                "budgets: " + (", ".join(budgets) or "none")
            )
        out.append(PolicyRule(rule=name, target=str(target),
                              threshold=_threshold(name, str(target), threshold)))
    return out


def _check_target(rule: str, target: str, infos: list[Any] | None) -> None:
    try:
        parse_attack_key(target)
    except ValueError as exc:
        raise InvalidParametersError(
            f"policy rule {rule!r}: target {target!r} is not an attack name or key "
            "(name or name:param=value,...)"
        ) from exc
    if infos is not None and not any(selector_matches(target, info) for info in infos):
        raise InvalidParametersError(
            f"policy rule {rule!r}: target {target!r} matches no attack of the audit; attacks: "
            + ", ".join(info.key for info in infos)
        )


# ---------------------------------------------------------------------- evaluation


def _fmt(value: float | bool | None) -> str:
    if value is None:
        return "not measured"
    if isinstance(value, bool):
        return str(value).lower()
    return f"{value:.3f}"


def _judge(
    rule: str, direction: Direction, what: str, target: str | None, attack: str | None,
    threshold: float, observed: float | None,
) -> RuleResult:
    subject = f"{what} under {attack}" if attack else what
    if observed is None:
        return RuleResult(rule, target, attack, threshold, None, False,
                          f"{subject} was not measured; the rule cannot pass")
    passed = observed >= threshold if direction == "min" else observed <= threshold
    relation = {
        ("min", True): "at or above the minimum",
        ("min", False): "below the minimum",
        ("max", True): "at or below the maximum",
        ("max", False): "above the maximum",
    }[(direction, passed)]
    return RuleResult(rule, target, attack, threshold, observed, passed,
                      f"{subject} is {_fmt(observed)}, {relation} {threshold:.3f}")


def _attack_metric(rule: str, entry: Mapping[str, Any]) -> float | None:
    adversarial = entry.get("adversarial") or {}
    clean = entry.get("clean") or {}
    if rule == "min_accuracy":
        return adversarial.get("accuracy")
    if rule == "min_balanced_accuracy":
        return adversarial.get("balanced_accuracy")
    if rule == "min_auroc":
        return adversarial.get("mean_auroc")
    if rule == "max_fooling_rate":
        return entry.get("fooling_rate")
    if rule == "max_attack_success_rate":
        return entry.get("attack_success_rate")
    if rule == "max_accuracy_drop":
        if entry.get("accuracy_drop") is not None:
            return float(entry["accuracy_drop"])
        a, c = adversarial.get("accuracy"), clean.get("accuracy")
        return None if a is None or c is None else float(c) - float(a)
    raise AssertionError(rule)


def evaluate_policy(
    report: Mapping[str, Any], policy: Mapping[str, Any] | Policy | None
) -> list[RuleResult]:
    """Check every rule of ``policy`` against a report (or a report being built).

    Reads ``report["attacks"]`` (per-attack metrics), ``report["summary"]`` (clean
    accuracy and AUROC), ``report["sections"]["sanity"]["reliable"]`` and the
    ``worst_case`` and ``subgroups`` sections (budget and subgroup rules).
    """
    parsed = parse_policy(policy)
    if parsed is None:
        return []
    attacks: Mapping[str, Mapping[str, Any]] = report.get("attacks") or {}
    infos = attack_infos(list(attacks), {k: dict(v) for k, v in attacks.items()})
    results: list[RuleResult] = []
    for rule in parsed.rules:
        if rule.rule in FLAG_RULES:
            results.append(_reliability(rule, report))
            continue
        if rule.rule in BUDGET_RULES:
            results.extend(_budget_results(rule, report))
            continue
        if rule.rule in GLOBAL_RULES:
            direction, what = GLOBAL_RULES[rule.rule]
            results.append(_judge(rule.rule, direction, what, None, None,
                                  float(rule.threshold), _global_metric(rule.rule, report)))
            continue
        direction, what = ATTACK_RULES[rule.rule]
        target = rule.target or "*"
        matched = [k for k, info in infos.items() if target == "*" or selector_matches(target,
                                                                                       info)]
        if not matched:
            results.append(RuleResult(
                rule.rule, target, None, rule.threshold, None, False,
                f"no attack setting of the audit matches {target!r}; attacks: "
                + (", ".join(attacks) or "none"),
            ))
        for key in matched:
            results.append(_judge(rule.rule, direction, what, target, key,
                                  float(rule.threshold), _attack_metric(rule.rule, attacks[key])))
    return results


def _sections(report: Mapping[str, Any]) -> Mapping[str, Any]:
    return report.get("sections") or {}


def _worst_group(report: Mapping[str, Any], measure: str) -> float | None:
    subgroups = _sections(report).get("subgroups") or {}
    worst = (subgroups.get("worst_group") or {}).get(measure)
    return None if not worst else worst.get("accuracy")


def _global_metric(rule: str, report: Mapping[str, Any]) -> float | None:
    summary: Mapping[str, Any] = report.get("summary") or {}
    if rule == "min_clean_accuracy":
        return summary.get("clean_accuracy")
    if rule == "min_clean_auroc":
        return summary.get("clean_mean_auroc")
    if rule == "min_subgroup_clean_accuracy":
        return _worst_group(report, "clean")
    raise AssertionError(rule)


def _budget_results(rule: PolicyRule, report: Mapping[str, Any]) -> list[RuleResult]:
    """One result per budget of ``worst_case`` the rule's target selects."""
    direction, what = BUDGET_RULES[rule.rule]
    budgets: Mapping[str, Any] = (_sections(report).get("worst_case") or {}).get(
        "budgets") or {}
    target = rule.target or "*"
    matched = [b for b, block in budgets.items()
               if target == "*" or budget_matches(target, block["norm"], block["eps"])]
    if not matched:
        return [RuleResult(
            rule.rule, target, None, rule.threshold, None, False,
            f"no budget of the audit's worst case matches {target!r}; budgets: "
            + (", ".join(budgets) or "none (no attack with an eps was measured)"),
        )]
    out = []
    for budget in matched:
        block = budgets[budget]
        if rule.rule == "min_robust_accuracy":
            observed = block.get("robust_accuracy")
        elif rule.rule == "min_robust_auroc":
            observed = block.get("mean_auroc")
        else:
            observed = _worst_group(report, budget)
        result = _judge(rule.rule, direction, f"{what} at {budget}", target, None,
                        float(rule.threshold), observed)
        out.append(RuleResult(**{**asdict(result), "budget": budget}))
    return out


def _reliability(rule: PolicyRule, report: Mapping[str, Any]) -> RuleResult:
    if rule.threshold is False:
        return RuleResult(rule.rule, None, None, False, None, True,
                          "reliability not required")
    sanity = (report.get("sections") or {}).get("sanity")
    if not sanity or not sanity.get("applicable", False):
        return RuleResult(rule.rule, None, None, True, None, False,
                          "the sanity analysis did not run; reliability is unknown")
    reliable = bool(sanity.get("reliable"))
    flags = sanity.get("flags") or []
    message = (
        "no sanity check flagged the evaluation"
        if reliable
        else "the evaluation may be unreliable: " + "; ".join(flags)
    )
    return RuleResult(rule.rule, None, None, True, reliable, reliable, message)


def verdict(results: Sequence[RuleResult], policy: Policy | None) -> str:
    """``"no policy"`` without rules, else ``"pass"`` when every result passed, else ``"fail"``."""
    if policy is None or not policy.rules:
        return "no policy"
    return "pass" if all(r.passed for r in results) else "fail"
