"""The HTML rendering of a report: one self-contained file, built from Jinja2 templates.

Order: the verdict (pass / fail / no policy banner, reliability warning, headline table of
clean vs adversarial numbers, the worst case per budget, policy results), then every
section (its numbers as designed tables and its figures, in the section's order), the image
grid (clean / adversarial / amplified perturbation, with the predictions under each), and
the provenance.

Templates live in ``workers/reports/templates`` (package data): ``report.html.j2`` is the
document, ``sections/<name>.html.j2`` the section of that name, ``sections/generic.html.j2``
any other (tables of its values, never raw JSON). Autoescaping is on: every value from the
report (model name, labels, attack keys, messages) is escaped by the engine, so no template
can forget to. Numbers are shaped by the filters of :mod:`workers.reports.formatting` and
sections are arranged by :mod:`workers.reports.views`.

Self-contained: CSS is inline and every picture is a ``data:image/png;base64`` URI, so the
file can be archived, mailed or opened offline; it loads nothing and runs no script.
Deterministic: the same report JSON (and figures) gives the same bytes.
"""

from __future__ import annotations

import base64
import functools
from collections.abc import Mapping, Sequence
from importlib import resources
from typing import Any

from jinja2 import ChainableUndefined, Environment, PackageLoader
from markupsafe import Markup

from workers.analyses.base import Figure, Section
from workers.reports.formatting import FILTERS
from workers.reports.views import generic_blocks, view

#: Sections whose template is their own; the others use ``sections/generic.html.j2``.
DESIGNED = frozenset({
    "quantitative", "worst_case", "subgroups", "clinical", "sanity", "features", "gradcam",
    "discriminability", "label_correlation", "perturbations", "evidence_map",
    "defense_comparison", "comparison",
})
#: Headings of the sections (a section without one is headed by its name).
TITLES = {
    "quantitative": "Clean and adversarial performance (quantitative)",
    "worst_case": "Worst case per budget (worst_case)",
    "subgroups": "Subgroups (subgroups)",
    "clinical": "Missed diseases and false alarms (clinical)",
    "sanity": "Is the evaluation reliable? (sanity)",
    "features": "Feature drift (features)",
    "gradcam": "Where the model looks (gradcam)",
    "discriminability": "Separability of the features (discriminability)",
    "label_correlation": "Co-occurrence of findings (label_correlation)",
    "perturbations": "Common corruptions (perturbations)",
    "evidence_map": "Evidence map: threats tested and not tested (evidence_map)",
    "defense_comparison": "Before and after the defense (defense_comparison)",
    "training": "Training (training)",
    "comparison": "Against the baseline audit, image by image (comparison)",
}
#: Keys of a section's JSON that are not content.
META_KEYS = ("applicable", "figures", "flags", "reason")


@functools.cache
def environment() -> Environment:
    """The template environment (built once; templates are package data)."""
    env = Environment(
        loader=PackageLoader("workers.reports", "templates"),
        autoescape=True,
        undefined=ChainableUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters.update(FILTERS)
    env.filters["b64"] = lambda data: base64.b64encode(data).decode("ascii")
    env.globals.update(anchor=_anchor, meta_keys=META_KEYS, generic_blocks=generic_blocks)
    return env


@functools.cache
def _css() -> Markup:
    # Inlined as text: a stylesheet is not a template (its braces are CSS, not Jinja).
    text = resources.files("workers.reports").joinpath("templates/report.css").read_text(
        encoding="utf-8")
    return Markup(text)  # our own stylesheet, shipped with the package: trusted


def _anchor(name: str) -> str:
    return "sec-" + "".join(ch if ch.isalnum() else "-" for ch in str(name))


def _figures_by_section(
    sections: Sequence[Section] | Mapping[str, Sequence[Figure]] | None,
) -> dict[str, list[Figure]]:
    if sections is None:
        return {}
    if isinstance(sections, Mapping):
        return {k: list(v) for k, v in sections.items()}
    return {s.name: list(s.figures) for s in sections}


def _ordered_figures(data: Mapping[str, Any], figures: list[Figure]) -> list[Figure]:
    order = list(data.get("figures") or [])
    return sorted(
        figures,
        key=lambda f: order.index(f"{f.name}.png") if f"{f.name}.png" in order else len(order),
    )


def _section_entries(report: Mapping[str, Any], sections: Any) -> list[dict[str, Any]]:
    figures = _figures_by_section(sections)
    section_json: dict[str, Any] = dict(report.get("sections") or {})
    # Sections given as objects but absent from the JSON (a defense job's training
    # section, say) are rendered too, from their own JSON.
    if sections is not None and not isinstance(sections, Mapping):
        for sec in sections:
            section_json.setdefault(sec.name, sec.to_json())
    entries = []
    for name, data in section_json.items():
        data = data if isinstance(data, Mapping) else {"value": data}
        applicable = bool(data.get("applicable", True))
        entries.append({
            "name": name,
            "title": TITLES.get(name, name),
            "data": data,
            "applicable": applicable,
            "template": f"sections/{name}.html.j2" if name in DESIGNED
            else "sections/generic.html.j2",
            "v": view(name, data, report) if applicable else {},
            "figures": _ordered_figures(data, figures.get(name, [])),
        })
    return entries


def render_html(
    report: Mapping[str, Any],
    sections: Sequence[Section] | Mapping[str, Sequence[Figure]] | None = None,
    samples: Sequence[Mapping[str, Any]] | None = None,
) -> str:
    """The report as one HTML document.

    Args:
        report: the JSON report (:func:`workers.reports.builder.build_report`);
            ``summary.title``, when present, replaces the default title.
        sections: the audit's :class:`Section` objects (or ``{section name: figures}``):
            where the figures' PNG bytes come from; the numbers come from ``report``
            (a section missing from ``report["sections"]`` is rendered from its object).
        samples: image-grid entries, each ``{"attack", "clean_png", "adv_png",
            "perturbation_png", "true_label", "clean_pred", "adv_pred"}`` (PNG bytes, see
            :mod:`workers.reports.images`); a prediction is a string, a
            ``{"label", "probability"}`` object or a list of them.
    """
    prov = report.get("provenance") or {}
    job = report.get("job") or {}
    model_name = (prov.get("model") or {}).get("name") or job.get("model_name") or "model"
    summary = report.get("summary") or {}
    title = str(summary.get("title") or f"Robustness audit: {model_name}")
    by_attack: dict[str, list[Mapping[str, Any]]] = {}
    for sample in samples or []:
        by_attack.setdefault(str(sample.get("attack", "")), []).append(sample)
    template = environment().get_template("report.html.j2")
    return template.render(
        title=title,
        css=_css(),
        report=report,
        summary=summary,
        job=job,
        prov=prov,
        entries=_section_entries(report, sections),
        examples=by_attack,
    )
