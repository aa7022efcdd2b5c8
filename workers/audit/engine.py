"""Running attacks and analyses on batches, and summarizing the collected arrays.

An audit is a list of attack settings (an attack with one value of each parameter; a list
of eps values expands into one setting per eps) and a list of analyses. The engine runs
every setting on every batch, hands each analysis a :class:`BatchContext` with the clean
and all adversarial images of the batch, and keeps the per-image arrays the analyses
return. Slices of the dataset can run anywhere (shards); concatenating their arrays in
dataset order and calling :meth:`AuditEngine.summarize` gives the report sections.

Determinism: each batch's random source is seeded from (audit seed, first image index,
setting index), so a slice gives the same numbers whichever worker runs it, and a job
resumed after a crash reproduces an uninterrupted run.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.errors import InvalidParametersError
from models.wrapper import DiagnosticModel
from workers.analyses.attack_keys import format_value
from workers.analyses.base import Analysis, BatchContext, Section, SummaryContext, merge_arrays
from workers.analyses.tensors import to_uint8
from workers.attacks.fitted import FitSource

logger = logging.getLogger(__name__)

GRID_PREFIX = "grid/"
#: Run only when named: the common-perturbation benchmark costs far more than the attacks
#: (every image becomes frames under ~20 perturbations at 5 severities).
OPT_IN_ANALYSES = ("perturbations",)
#: Sections the engine derives from other analyses' arrays (no collection of their own).
DERIVED_SECTIONS = ("worst_case", "subgroups")


def attack_key(name: str, params: dict[str, Any]) -> str:
    shown = {k: v for k, v in params.items() if k not in ("seed",)}
    if not shown:
        return name
    return name + ":" + ",".join(f"{k}={format_value(v)}" for k, v in sorted(shown.items()))


@dataclass(frozen=True)
class AttackSetting:
    key: str
    name: str
    params: dict[str, Any]

    @property
    def eps(self) -> float | None:
        eps = self.params.get("eps")
        return float(eps) if isinstance(eps, (int, float)) else None

    def info(self) -> dict[str, Any]:
        return {"name": self.name, "eps": self.eps, "params": dict(self.params)}


def _number(value: Any) -> float:
    """``4/255`` or ``0.0157`` as a float."""
    try:
        return float(Fraction(value)) if isinstance(value, str) else float(value)
    except (ValueError, ZeroDivisionError, TypeError):
        raise InvalidParametersError(f"eps must be a number or a fraction, got {value!r}") from None


def expand_attacks(specs: Sequence[dict[str, Any]]) -> list[AttackSetting]:
    """One setting per attack and eps value; every setting validated by the engine.

    An empty list is an audit of analyses that need no attack. Lists of eps values and the
    number of settings are bounded (the catalogue's ``MAX_EPS_VALUES``, ``MAX_SETTINGS``).
    """
    from app.core.catalogue import MAX_EPS_VALUES, MAX_SETTINGS
    from workers.attacks import get_attack

    settings: list[AttackSetting] = []
    for spec in specs:
        name = str(spec["name"])
        params = dict(spec.get("params") or {})
        eps_values = params.pop("eps", None)
        eps_list = eps_values if isinstance(eps_values, list) else [eps_values]
        if not 1 <= len(eps_list) <= MAX_EPS_VALUES:
            raise InvalidParametersError(
                f"eps lists must hold 1 to {MAX_EPS_VALUES} values, got {len(eps_list)}")
        for eps in eps_list:
            p = dict(params)
            if eps is not None:
                p["eps"] = _number(eps)
            get_attack(name, **p)  # validates; raises InvalidParametersError
            settings.append(AttackSetting(attack_key(name, p), name, p))
    if len(settings) > MAX_SETTINGS:
        raise InvalidParametersError(
            f"an audit may run at most {MAX_SETTINGS} attack settings, got {len(settings)}")
    keys = [s.key for s in settings]
    duplicates = sorted({k for k in keys if keys.count(k) > 1})
    if duplicates:
        raise InvalidParametersError(f"attack settings repeated: {duplicates}")
    return settings


def resolve_analyses(
    requested: Sequence[dict[str, Any]] | None, model: DiagnosticModel, *, attacks: bool = True
) -> tuple[list[tuple[Analysis, dict[str, Any]]], list[Section]]:
    """The analyses to run, and 'not applicable' sections for those that do not apply.

    Omitted means every registered analysis that applies to the model, except the opt-in
    ones (:data:`OPT_IN_ANALYSES`). Without ``attacks``, analyses that compare adversarial
    images are not applicable either.
    """
    from workers.analyses.registry import get_analysis, list_analyses

    if requested:
        names = [(a["name"], dict(a.get("params") or {})) for a in requested]
    else:
        names = [(n, {}) for n in list_analyses() if n not in OPT_IN_ANALYSES]
    chosen: list[tuple[Analysis, dict[str, Any]]] = []
    skipped: list[Section] = []
    for name, params in names:
        analysis = get_analysis(name)
        reason = analysis.not_applicable(model)
        if reason is None and not attacks and analysis.needs_adversarial:
            reason = "the audit runs no attack"
        if reason is not None:
            skipped.append(Section(name=name, applicable=False, data={}, reason=reason))
        else:
            chosen.append((analysis, params))
    return chosen, skipped


@dataclass
class AuditEngine:
    model: DiagnosticModel
    settings: list[AttackSetting]
    analyses: list[tuple[Analysis, dict[str, Any]]]
    seed: int = 0
    batch_size: int = 32
    #: The per-image minimum-eps search is opt-in: it costs several times the attacks.
    min_eps: bool = False
    grid_samples: int = 8
    _attacks: dict[str, Any] = field(default_factory=dict, init=False)
    _should_stop: Callable[[], bool] | None = field(default=None, init=False)

    # -- attacks -------------------------------------------------------------------------
    def attack(self, setting: AttackSetting) -> Any:
        if setting.key not in self._attacks:
            from workers.attacks import get_attack

            self._attacks[setting.key] = get_attack(setting.name, **setting.params)
        return self._attacks[setting.key]

    def fitted_settings(self) -> list[AttackSetting]:
        return [s for s in self.settings if getattr(self.attack(s), "requires_fit", False)]

    def fit(self, data: FitSource, state_dir: Path,
            should_stop: Callable[[], bool] | None = None) -> dict[str, float]:
        """Fit GAP/UAP-style attacks once on ``data`` (read batch by batch) and save their
        state; ``should_stop`` is polled before every fitting batch."""
        timings: dict[str, float] = {}
        for i, setting in enumerate(self.fitted_settings()):
            attack = self.attack(setting)
            path = state_dir / attack.cache_name(self.model)
            if path.exists():
                attack.load(str(path), self.model)
                continue
            start = time.perf_counter()
            gen = torch.Generator(device="cpu").manual_seed(self.seed * 7919 + i)
            attack.fit(self.model, data, generator=gen, should_stop=should_stop)
            state_dir.mkdir(parents=True, exist_ok=True)
            # A second delivery of the plan may fit at the same time: never expose a
            # half-written file under the final name.
            partial = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}")
            attack.save(str(partial))
            os.replace(partial, path)
            timings[setting.key] = time.perf_counter() - start
        return timings

    def load_fitted(self, state_dir: Path) -> None:
        for setting in self.fitted_settings():
            attack = self.attack(setting)
            if not getattr(attack, "fitted", False):
                attack.load(str(state_dir / attack.cache_name(self.model)), self.model)

    # -- batches ---------------------------------------------------------------------------
    def run(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        indices: np.ndarray,
        masks: torch.Tensor | None = None,
        *,
        on_batch: Callable[[float], None] | None = None,
        on_adversarial: Callable[[str, np.ndarray, torch.Tensor], None] | None = None,
        timings: dict[str, float] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> dict[str, np.ndarray]:
        """Every setting and analysis on a slice; returns ``"analysis/key"`` arrays.

        ``should_stop`` is polled inside every attack's loop; ``True`` raises
        :class:`~workers.attacks.functional.AttackStoppedError` within one iteration."""
        self._should_stop = should_stop
        device = self.model.device
        parts: list[dict[str, np.ndarray]] = []
        n = images.shape[0]
        timings = timings if timings is not None else {}
        for start in range(0, n, self.batch_size):
            stop = min(start + self.batch_size, n)
            x = images[start:stop].to(device)
            y = labels[start:stop].to(device)
            m = masks[start:stop].to(device) if masks is not None else None
            idx = indices[start:stop]
            part = self._run_batch(x, y, m, idx, on_adversarial, timings)
            parts.append(part)
            if on_batch is not None:
                on_batch(stop / n)
        return merge_arrays(parts) if parts else {}

    def _run_batch(
        self, x: torch.Tensor, y: torch.Tensor, m: torch.Tensor | None, idx: np.ndarray,
        on_adversarial: Callable[[str, np.ndarray, torch.Tensor], None] | None,
        timings: dict[str, float],
    ) -> dict[str, np.ndarray]:
        batch_seed = (self.seed * 1_000_003 + int(idx[0])) % (2**62)
        adversarial: dict[str, torch.Tensor] = {}
        stats: dict[str, dict[str, np.ndarray]] = {}
        for j, setting in enumerate(self.settings):
            gen = torch.Generator(device=x.device).manual_seed(batch_seed + 7 * j)
            t0 = time.perf_counter()
            result = self.attack(setting)(self.model, x, y, generator=gen,
                                          should_stop=self._should_stop)
            _sync(x.device)
            timings[f"attack:{setting.key}"] = timings.get(f"attack:{setting.key}", 0.0) + (
                time.perf_counter() - t0
            )
            adversarial[setting.key] = result.images.detach()
            stats[setting.key] = result.to_numpy()
            if on_adversarial is not None:
                on_adversarial(setting.key, idx, result.images.detach())
        shared: dict[str, Any] = {"attack_stats": stats}
        out: dict[str, np.ndarray] = {"index": idx.astype(np.int64)}
        if self.min_eps:
            t0 = time.perf_counter()
            shared["min_eps"] = self._min_eps(x, y, batch_seed)
            timings["min_eps"] = timings.get("min_eps", 0.0) + time.perf_counter() - t0
            out["min_eps"] = shared["min_eps"]
        for analysis, params in self.analyses:
            if analysis.needs_adversarial and not adversarial:
                continue
            ctx = BatchContext(
                model=self.model, clean=x, labels=y, adversarial=adversarial, indices=idx,
                seed=batch_seed, masks=m, params={**params, **shared},
            )
            t0 = time.perf_counter()
            arrays = analysis.collect(ctx)
            timings[f"analysis:{analysis.name}"] = timings.get(
                f"analysis:{analysis.name}", 0.0) + time.perf_counter() - t0
            for key, value in arrays.items():
                out[f"{analysis.name}/{key}"] = np.asarray(value)
        out.update(self._grid(x, y, idx, adversarial))
        return out

    def _min_eps(self, x: torch.Tensor, y: torch.Tensor, seed: int) -> np.ndarray:
        from workers.attacks.min_eps import min_eps

        eps_values = [s.eps for s in self.settings if s.eps is not None]
        eps_max = max([*eps_values, 8 / 255]) * 2
        gen = torch.Generator(device=x.device).manual_seed(seed + 99991)
        found = min_eps(self.model, x, y, eps_max=min(eps_max, 1.0), generator=gen,
                        should_stop=self._should_stop)
        return found.detach().float().cpu().numpy()

    def _grid(self, x: torch.Tensor, y: torch.Tensor, idx: np.ndarray,
              adversarial: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
        """The first ``grid_samples`` images of the dataset, for the report's image grid."""
        keep = np.nonzero(idx < self.grid_samples)[0]
        if keep.size == 0:
            return {}
        sel = torch.as_tensor(keep, device=x.device)
        # no_grad, not inference_mode: a TorchScript model that ran with gradients (the
        # attacks) has a differentiable plan cached, which refuses inference tensors.
        with torch.no_grad():
            out = {
                f"{GRID_PREFIX}index": idx[keep],
                f"{GRID_PREFIX}clean": to_uint8(x[sel]),
                f"{GRID_PREFIX}clean_probs": self.model.probabilities(x[sel]).float().cpu().numpy(),
                f"{GRID_PREFIX}labels": y[sel].cpu().numpy(),
            }
            for key, adv in adversarial.items():
                out[f"{GRID_PREFIX}adv/{key}"] = to_uint8(adv[sel])
                out[f"{GRID_PREFIX}adv_probs/{key}"] = (
                    self.model.probabilities(adv[sel]).float().cpu().numpy()
                )
        return out

    # -- summary ---------------------------------------------------------------------------
    def summary_context(self, analysis_params: dict[str, Any]) -> SummaryContext:
        card = self.model.card
        return SummaryContext(
            labels=card.labels,
            task=card.task,
            head=self.model.head.value,
            attack_keys=[s.key for s in self.settings],
            params={**analysis_params, "attacks": {s.key: s.info() for s in self.settings},
                    "seed": self.seed},
            thresholds=card.threshold_vector() if card.task == "multi-label" else None,
        )

    def summarize(
        self, arrays: dict[str, np.ndarray],
        metadata: Sequence[Mapping[str, str]] | None = None,
    ) -> list[Section]:
        """Every analysis's section, then the sections derived from ``quantitative``'s
        arrays (:data:`DERIVED_SECTIONS`).

        Args:
            arrays: the audit's ``"analysis/key"`` arrays, every shard merged.
            metadata: optional ``{attribute: value}`` per dataset image, in dataset order
                (``StoredDataset.metadata()``); without it ``subgroups`` is not applicable.
        """
        sections: list[Section] = []
        quantitative: tuple[dict[str, np.ndarray], dict[str, Any]] | None = None
        for analysis, params in self.analyses:
            own = self._own_arrays(arrays, analysis.name)
            sections.append(analysis.summarize(own, self.summary_context(params)))
            if analysis.name == "quantitative":
                quantitative = (own, params)
        # Right after quantitative, whose per-attack numbers they complete.
        at = next((i + 1 for i, s in enumerate(sections) if s.name == "quantitative"),
                  len(sections))
        sections[at:at] = self._derived(quantitative, metadata)
        return sections

    def _own_arrays(self, arrays: dict[str, np.ndarray], name: str) -> dict[str, np.ndarray]:
        prefix = f"{name}/"
        own = {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}
        own.setdefault("index", arrays.get("index", np.zeros(0, dtype=np.int64)))
        if "min_eps" in arrays:
            own.setdefault("min_eps", arrays["min_eps"])
        return own

    def _derived(
        self, quantitative: tuple[dict[str, np.ndarray], dict[str, Any]] | None,
        metadata: Sequence[Mapping[str, str]] | None,
    ) -> list[Section]:
        """``worst_case`` and ``subgroups``, from the per-image outputs of ``quantitative``."""
        from workers.analyses.bootstrap import Bootstrap
        from workers.analyses.quantitative import QuantitativeAnalysis
        from workers.analyses.subgroups import summarize_subgroups
        from workers.analyses.worst_case import summarize_worst_case

        if quantitative is None:
            reason = "derived from the quantitative analysis, which did not run"
            return [Section(name, applicable=False, data={}, reason=reason)
                    for name in DERIVED_SECTIONS]
        own, params = quantitative
        parsed = QuantitativeAnalysis().parse_params(params)
        ctx = self.summary_context(params)
        seed = parsed.bootstrap_seed if parsed.bootstrap_seed is not None else self.seed
        boot = Bootstrap(parsed.n_bootstrap, parsed.confidence, seed)
        return [summarize_worst_case(own, ctx, boot),
                summarize_subgroups(own, ctx, boot, metadata)]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
