"""Attack keys: the strings that name one attack setting in an audit.

An attack key is ``name`` or ``name:param=value,param=value`` (for example
``"pgd:eps=4/255,steps=10"``). Budgets (``eps``) are in [0, 1] pixel units and may be
written as a fraction of 255 (``4/255``) or as a decimal (``0.0157``); both spellings of the
same budget match (:func:`values_match`).

The audit gives the analyses the authoritative metadata of every key through
``SummaryContext.params["attacks"]`` (see :class:`AttackInfo`); the parser here is the
fallback when that metadata is absent, and the matcher used by report policies.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

#: Attacks by the access they need (registry names): gradient attacks with the model in
#: hand, score-based queries only, and universal perturbations fitted once for every image.
WHITE_BOX_ATTACKS = ("fgsm", "bim", "pgd", "apgd", "autoattack", "cw_l2", "deepfool", "min_eps")
BLACK_BOX_ATTACKS = ("square",)
UNIVERSAL_ATTACKS = ("gap", "uap")

_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")
_FRACTION = re.compile(r"^\s*([+-]?\d+(?:\.\d*)?)\s*/\s*(\d+(?:\.\d*)?)\s*$")


@dataclass(frozen=True)
class AttackInfo:
    """What the analyses know of one attack setting.

    Attributes:
        key: the attack key as used in ``BatchContext.adversarial``.
        name: the attack's registry name (``"pgd"``, ``"square"``, ``"gap"``...).
        eps: the L-infinity (or the attack's own norm) budget in [0, 1] pixel units, or
            ``None`` for attacks without a budget (DeepFool, for example).
        params: every parameter of the setting, JSON-able.
    """

    key: str
    name: str
    eps: float | None
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def norm(self) -> str:
        """The budget's norm: the setting's ``norm`` parameter, L-infinity by default."""
        return str(self.params.get("norm", "linf")).lower()

    @property
    def budget(self) -> str | None:
        """``"linf:eps=4/255"``: the threat model of the setting; ``None`` without a budget
        (minimum-norm attacks such as DeepFool and C&W)."""
        return None if self.eps is None else budget_key(self.norm, self.eps)

    @property
    def group(self) -> str:
        """The setting without its budget: settings of one group differ only in ``eps``.

        Robustness curves and the monotonicity check of ``sanity`` compare the settings
        of a group, so that ``pgd`` with 10 and with 50 steps are two separate curves.
        """
        rest = {k: v for k, v in self.params.items() if k != "eps"}
        if not rest:
            return self.name
        return self.name + ":" + ",".join(f"{k}={_fmt(v)}" for k, v in sorted(rest.items()))


def format_value(value: Any) -> str:
    """``4/255`` for multiples of 1/255, ``%g`` for other floats (how keys spell numbers)."""
    if isinstance(value, bool) or not isinstance(value, float):
        return str(value)
    frac = Fraction(value).limit_denominator(255)
    if frac.denominator in (1, 255) and abs(float(frac) - value) < 1e-9 and value != 0:
        return f"{frac.numerator * (255 // frac.denominator)}/255"
    return f"{value:g}"


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def parse_number(text: str) -> float | None:
    """``"4/255"`` -> 0.01568..., ``"0.0157"`` -> 0.0157; ``None`` when not a number."""
    text = text.strip()
    m = _FRACTION.match(text)
    if m:
        den = float(m.group(2))
        return float(m.group(1)) / den if den != 0 else None
    if _NUMBER.match(text):
        return float(text)
    return None


def _parse_value(text: str) -> Any:
    text = text.strip()
    if re.fullmatch(r"[+-]?\d+", text):
        return int(text)
    number = parse_number(text)
    return text if number is None else number


def _split_key(key: str) -> tuple[str, dict[str, str]]:
    """``"pgd:eps=4/255,steps=10"`` -> ``("pgd", {"eps": "4/255", "steps": "10"})``."""
    name, _, rest = key.partition(":")
    raw: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in rest.split(","))):
        pname, sep, value = item.partition("=")
        if not sep or not pname.strip():
            raise ValueError(f"attack key {key!r}: expected param=value, got {item!r}")
        raw[pname.strip()] = value.strip()
    return name.strip(), raw


def parse_attack_key(key: str) -> AttackInfo:
    """Parse ``"name:p=v,p=v"``; values that look like numbers (``4/255``) become numbers."""
    name, raw = _split_key(key)
    params: dict[str, Any] = {k: _parse_value(v) for k, v in raw.items()}
    eps = params.get("eps")
    return AttackInfo(
        key=key,
        name=name.strip(),
        eps=float(eps) if isinstance(eps, (int, float)) else None,
        params=params,
    )


def attack_infos(
    keys: list[str], meta: Mapping[str, Mapping[str, Any]] | None = None
) -> dict[str, AttackInfo]:
    """Attack metadata for ``keys``: ``meta[key]`` (``{"name", "eps", "params"}``) when given,
    the parsed key otherwise (missing fields of ``meta`` are filled from the key)."""
    out: dict[str, AttackInfo] = {}
    for key in keys:
        parsed = parse_attack_key(key)
        given = (meta or {}).get(key)
        if not given:
            out[key] = parsed
            continue
        params = dict(given.get("params") or parsed.params)
        eps = given.get("eps", params.get("eps", parsed.eps))
        if isinstance(eps, str):
            eps = parse_number(eps)
        out[key] = AttackInfo(
            key=key,
            name=str(given.get("name") or parsed.name),
            eps=float(eps) if eps is not None else None,
            params=params,
        )
    return out


def _decimals(text: str) -> int | None:
    """Decimal places of a plain decimal (``"0.0157"`` -> 4); ``None`` for anything else."""
    text = text.strip()
    if _FRACTION.match(text) or not _NUMBER.match(text) or "e" in text.lower():
        return None
    _, _, frac = text.partition(".")
    return len(frac)


def number_matches(written: str | float | int, value: float) -> bool:
    """Whether a number as a user wrote it denotes ``value``.

    A decimal matches when ``value`` rounds to it at the written precision and differs from
    it by at most 1% (so ``0.0157`` and ``0.0039`` match ``4/255`` and ``1/255``, but ``0.02``,
    a different budget, does not match ``4/255``); a fraction must match to 1e-9 (relative).
    A float counts as the decimal of its shortest repr (the JSON number ``0.0157`` is
    ``"0.0157"``).
    """
    if isinstance(written, bool):
        return False
    number = parse_number(repr(written) if isinstance(written, float) else str(written))
    if number is None:
        return False
    places = _decimals(repr(written) if isinstance(written, float) else str(written))
    if places is None:
        return math.isclose(number, value, rel_tol=1e-9, abs_tol=1e-12)
    diff = abs(value - number)
    return diff <= 0.5 * 10.0 ** (-places) + 1e-12 and diff <= 0.01 * max(abs(number), abs(value))


def values_match(a: Any, b: Any) -> bool:
    """Parameter values equal, numbers compared as :func:`number_matches` in both directions."""
    na = parse_number(a) if isinstance(a, str) else a
    nb = parse_number(b) if isinstance(b, str) else b
    numeric = (int, float)
    if isinstance(na, numeric) and isinstance(nb, numeric):
        return number_matches(a, float(nb)) or number_matches(b, float(na))
    return str(a).strip().lower() == str(b).strip().lower()


def selector_matches(selector: str, info: AttackInfo) -> bool:
    """Whether a policy target (an attack name or a partial key) selects this setting.

    ``"gap"`` selects every ``gap`` setting; ``"pgd:eps=4/255"`` selects every ``pgd``
    setting whose eps is 4/255 (``0.0157`` too), whatever its other parameters.
    """
    if selector == info.key:
        return True
    name, wanted = _split_key(selector)
    if name.lower() != info.name.lower():
        return False
    for pname, written in wanted.items():
        if pname == "eps" and info.eps is not None:
            if not values_match(written, info.eps):
                return False
        elif pname not in info.params or not values_match(written, info.params[pname]):
            return False
    return True


# ---------------------------------------------------------------------- budgets

_BUDGET = re.compile(r"^\s*(?:(?P<norm>[A-Za-z0-9]+)\s*:\s*)?eps\s*=\s*(?P<eps>[^,]+?)\s*$")


#: Norms a budget selector may name (those of the attack engine's budgets).
NORMS = ("linf", "l2", "l1")


def budget_key(norm: str, eps: float) -> str:
    """The key of a budget: ``budget_key("linf", 4/255) == "linf:eps=4/255"``."""
    return f"{norm.lower()}:eps={format_value(float(eps))}"


def parse_budget_selector(text: str) -> tuple[str | None, str]:
    """``"linf:eps=4/255"`` -> ``("linf", "4/255")``; ``"eps=0.0157"`` -> ``(None, "0.0157")``.

    Raises:
        ValueError: anything else (the eps must be written, the norm is optional).
    """
    m = _BUDGET.match(text)
    norm = m.group("norm") if m else None
    if (m is None or parse_number(m.group("eps")) is None
            or (norm is not None and norm.lower() not in NORMS)):
        raise ValueError(
            f"budget {text!r} is not [norm:]eps=value with a norm of {', '.join(NORMS)} "
            "(e.g. 'linf:eps=4/255' or 'eps=4/255')"
        )
    return (norm.lower() if norm else None), m.group("eps")


def budget_matches(selector: str, norm: str, eps: float) -> bool:
    """Whether a budget selector (see :func:`parse_budget_selector`) denotes ``(norm, eps)``;
    a selector without a norm matches every norm."""
    want_norm, want_eps = parse_budget_selector(selector)
    if want_norm is not None and want_norm != norm.lower():
        return False
    return number_matches(want_eps, eps)
