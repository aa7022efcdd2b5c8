"""The HTML rendering of a report: one self-contained file.

Order: the verdict (pass / fail / no policy banner, reliability warning, headline table of
clean vs adversarial numbers, policy results), then every section (its numbers as tables
and its figures, in the section's order), the image grid (clean / adversarial / amplified
perturbation, with the predictions under each), and the provenance.

Self-contained: CSS is inline and every picture is a ``data:image/png;base64`` URI, so the
file can be archived, mailed or opened offline; it loads nothing. Every string that comes
from a user (model name, labels, attack keys, messages) is HTML-escaped.

Sections this module does not know are rendered generically from their JSON: scalars as a
key/value table, flat objects and lists of flat objects as tables, matrices as grids, the
rest as JSON.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Callable, Mapping, Sequence
from html import escape
from typing import Any

from workers.analyses.base import Figure, Section

_CSS = """
:root { --ok: #1a7f37; --bad: #b42318; --warn: #9a6700; --muted: #57606a; --line: #d0d7de; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1f2328;
       max-width: 1200px; margin: 0 auto; padding: 24px; }
h1 { font-size: 24px; margin: 0 0 4px; } h2 { font-size: 19px; margin: 32px 0 8px;
  border-bottom: 1px solid var(--line); padding-bottom: 4px; }
h3 { font-size: 15px; margin: 18px 0 6px; } h4 { font-size: 14px; margin: 12px 0 4px; }
.sub { color: var(--muted); margin: 0 0 16px; }
.banner { padding: 14px 18px; border-radius: 8px; font-size: 18px; font-weight: 600;
          color: #fff; margin: 12px 0; }
.banner.pass { background: var(--ok); } .banner.fail { background: var(--bad); }
.banner.none { background: var(--muted); }
.warning { border-left: 4px solid var(--warn); background: #fff8c5; padding: 8px 12px;
           margin: 8px 0; }
table { border-collapse: collapse; margin: 6px 0 12px; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid var(--line); padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #f6f8fa; font-weight: 600; }
td.num { text-align: right; white-space: nowrap; }
td.ok { color: var(--ok); font-weight: 600; } td.bad { color: var(--bad); font-weight: 600; }
td.warn { color: var(--warn); font-weight: 600; }
.ci { color: var(--muted); font-size: 12px; }
figure { margin: 12px 0 20px; } figure img { max-width: 100%; border: 1px solid var(--line); }
figcaption { color: var(--muted); font-size: 13px; }
pre { background: #f6f8fa; padding: 8px; overflow-x: auto; font-size: 12px; }
.na { color: var(--muted); font-style: italic; }
nav ul { columns: 3; padding-left: 18px; }
.grid td { text-align: center; }
.grid img { width: 128px; height: 128px; image-rendering: pixelated; object-fit: contain;
            background: #000; }
.grid .pred { font-size: 12px; }
"""

_MAX_GENERIC_DEPTH = 3
_MAX_TABLE_ROWS = 200

SectionRenderer = Callable[[Mapping[str, Any]], str]


# ---------------------------------------------------------------------- formatting


def _e(value: Any) -> str:
    return escape(str(value), quote=True)


def fmt(value: Any) -> str:
    """A number or value as shown in tables (escaped): rates with 3 decimals, null as —."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return _e(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return _e(value)
        if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e5):
            return _e(f"{value:.3g}")
        return _e(f"{value:.3f}")
    return _e(value)


def _ci(ci: Any) -> str:
    if isinstance(ci, (list, tuple)) and len(ci) == 2 and all(
        isinstance(v, (int, float)) for v in ci
    ):
        return f' <span class="ci">[{fmt(ci[0])}, {fmt(ci[1])}]</span>'
    return ""


def _eps(value: Any) -> str:
    if not isinstance(value, (int, float)):
        return "—"
    if value == 0:
        return "0"
    grey = float(value) * 255.0
    if abs(grey - round(grey)) < 1e-6:
        return _e(f"{round(grey)}/255")
    return _e(f"{value:.4f} ({grey:.2f}/255)")


def _td(value: Any, ci: Any = None, cls: str = "num") -> str:
    return f'<td class="{cls}">{fmt(value)}{_ci(ci)}</td>'


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """``header`` is escaped here; ``rows`` are ready-made ``<td>`` strings."""
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join(f"<tr>{''.join(r)}</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _kv(pairs: Sequence[tuple[str, str]]) -> str:
    """Key/value table; keys are escaped here, values are ready-made HTML."""
    rows = "".join(f"<tr><th>{_e(k)}</th><td>{v}</td></tr>" for k, v in pairs)
    return f"<table><tbody>{rows}</tbody></table>"


def _img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{_e(alt)}">'


def _anchor(name: str) -> str:
    return "sec-" + "".join(ch if ch.isalnum() else "-" for ch in name)


# ---------------------------------------------------------------------- summary


def _banner(report: Mapping[str, Any]) -> str:
    summary = report.get("summary") or {}
    verdict = summary.get("verdict", "no policy")
    results = (report.get("policy") or {}).get("results") or []
    failed = sum(1 for r in results if not r.get("passed"))
    if verdict == "pass":
        cls, text = "pass", f"PASS: all {len(results)} policy checks met"
    elif verdict == "fail":
        cls, text = "fail", f"FAIL: {failed} of {len(results)} policy checks failed"
    else:
        cls, text = "none", "NO POLICY: numbers only, nothing was gated"
    out = f'<div class="banner {cls}">{_e(text)}</div>'
    if summary.get("reliable") is False:
        sanity = (report.get("sections") or {}).get("sanity") or {}
        flags = "".join(f"<li>{_e(f)}</li>" for f in sanity.get("flags") or [])
        out += (
            '<div class="warning"><strong>These results may be unreliable.</strong> '
            f"The sanity checks flagged the evaluation:<ul>{flags}</ul></div>"
        )
    elif summary.get("reliable") is None:
        out += '<p class="na">The sanity analysis did not run: reliability unknown.</p>'
    return out


def _headline(report: Mapping[str, Any]) -> str:
    summary = report.get("summary") or {}
    rows = []
    for h in summary.get("headline") or []:
        rows.append([
            f"<td>{_e(h['attack'])}</td>",
            f'<td class="num">{_eps(h.get("eps"))}</td>',
            _td(h.get("clean_accuracy")),
            _td(h.get("adversarial_accuracy"), h.get("adversarial_accuracy_ci")),
            _td(h.get("fooling_rate")),
            _td(h.get("attack_success_rate")),
            _td(h.get("clean_mean_auroc")),
            _td(h.get("adversarial_mean_auroc")),
        ])
    pairs = [
        ("images", fmt(summary.get("n_images"))),
        ("clean accuracy", fmt(summary.get("clean_accuracy"))),
        ("clean mean AUROC", fmt(summary.get("clean_mean_auroc"))),
        ("strongest attack", fmt(summary.get("worst_attack"))),
    ]
    out = _kv(pairs)
    if rows:
        out += _table(
            ["attack", "eps", "clean accuracy", "adversarial accuracy [95% CI]", "fooling rate",
             "attack success rate", "clean mean AUROC", "adversarial mean AUROC"],
            rows,
        )
    return out


def _policy(report: Mapping[str, Any]) -> str:
    policy = report.get("policy") or {}
    results = policy.get("results") or []
    if not results:
        return '<p class="na">No policy was given.</p>'
    rows = []
    for r in results:
        ok = r.get("passed")
        name = r["rule"] + (f"[{r['attack'] or r['target']}]" if r.get("attack") or (
            r.get("target") not in (None, "*")) else "")
        rows.append([
            f"<td>{_e(name)}</td>",
            _td(r.get("threshold")),
            _td(r.get("observed")),
            f'<td class="{"ok" if ok else "bad"}">{"pass" if ok else "FAIL"}</td>',
            f"<td>{_e(r.get('message', ''))}</td>",
        ])
    return _table(["rule", "threshold", "observed", "result", "message"], rows)


# ---------------------------------------------------------------------- known sections


def _metric_pairs(block: Mapping[str, Any]) -> list[tuple[str, str]]:
    return [
        ("images", fmt(block.get("n_images"))),
        ("accuracy [95% CI]", fmt(block.get("accuracy")) + _ci(block.get("accuracy_ci"))),
        ("balanced accuracy", fmt(block.get("balanced_accuracy"))),
        ("mean AUROC [95% CI]", fmt(block.get("mean_auroc")) + _ci(block.get("mean_auroc_ci"))),
        ("mean confidence of wrong answers", fmt(block.get("mean_confidence_wrong"))),
    ]


def _per_label(block: Mapping[str, Any]) -> str:
    labels = list((block.get("auroc") or {}).keys())
    rows = [
        [
            f"<td>{_e(lbl)}</td>",
            _td(block["auroc"].get(lbl), (block.get("auroc_ci") or {}).get(lbl)),
            _td((block.get("sensitivity") or {}).get(lbl)),
            _td((block.get("specificity") or {}).get(lbl)),
        ]
        for lbl in labels
    ]
    return _table(["label", "AUROC [95% CI]", "sensitivity", "specificity"], rows)


def render_quantitative(data: Mapping[str, Any]) -> str:
    out = []
    clean = data.get("clean") or {}
    out.append("<h3>Clean images</h3>")
    out.append(_kv(_metric_pairs(clean)))
    out.append(_per_label(clean))
    attacks: Mapping[str, Any] = data.get("attacks") or {}
    if attacks:
        out.append("<h3>Under attack</h3>")
        rows = []
        for key, b in attacks.items():
            adv, cl = b.get("adversarial") or {}, b.get("clean") or {}
            pert = b.get("perturbation") or b.get("perturbation_measured") or {}
            rows.append([
                f"<td>{_e(key)}</td>",
                _td(adv.get("accuracy"), adv.get("accuracy_ci")),
                _td(adv.get("balanced_accuracy")),
                _td(adv.get("mean_auroc"), adv.get("mean_auroc_ci")),
                _td(b.get("fooling_rate"), b.get("fooling_rate_ci")),
                _td(b.get("attack_success_rate")),
                _td(b.get("accuracy_drop"), b.get("accuracy_drop_ci")),
                f'<td class="num">{fmt(cl.get("mean_confidence_wrong"))} → '
                f'{fmt(adv.get("mean_confidence_wrong"))}</td>',
                f'<td class="num">{fmt(pert.get("linf_mean"))} / {fmt(pert.get("linf_max"))}</td>',
                f'<td class="num">{fmt(pert.get("l2_mean"))} / {fmt(pert.get("l2_max"))}</td>',
            ])
        out.append(_table(
            ["attack", "accuracy [95% CI]", "balanced accuracy", "mean AUROC [95% CI]",
             "fooling rate", "attack success rate", "accuracy drop",
             "confidence of wrong answers (clean → adv.)", "L∞ mean / max", "L2 mean / max"],
            rows,
        ))
        labels = list((clean.get("auroc") or {}).keys())
        if labels:
            out.append("<h4>AUROC per label, clean and under each attack</h4>")
            rows = [
                [f"<td>{_e(lbl)}</td>", _td(clean["auroc"].get(lbl))]
                + [_td(((b.get("adversarial") or {}).get("auroc") or {}).get(lbl))
                   for b in attacks.values()]
                for lbl in labels
            ]
            out.append(_table(["label", "clean", *attacks.keys()], rows))
    curves: Mapping[str, Any] = data.get("robustness_curves") or {}
    if curves:
        out.append("<h4>Robustness curves</h4>")
        rows = [
            [f"<td>{_e(group)}</td>", f'<td class="num">{_eps(p.get("eps"))}</td>',
             _td(p.get("accuracy"), p.get("accuracy_ci"))]
            for group, points in curves.items()
            for p in points
        ]
        out.append(_table(["attack", "eps", "accuracy [95% CI]"], rows))
    min_eps = data.get("min_eps")
    if isinstance(min_eps, Mapping):
        out.append("<h4>Minimum fooling eps per image</h4>")
        out.append(_kv([
            ("images", fmt(min_eps.get("n_images"))),
            ("not fooled within the search", fmt(min_eps.get("n_not_fooled"))),
            ("median eps", _eps(min_eps.get("median"))),
            ("mean eps", _eps(min_eps.get("mean"))),
        ]))
    return "".join(out)


def _count_cell(c: Mapping[str, Any] | None) -> str:
    if not c:
        return "<td>—</td>"
    return (f'<td class="num">{fmt(c.get("count"))} / {fmt(c.get("at_risk"))} '
            f'({fmt(c.get("rate"))})</td>')


def _cell(value: Any) -> str:
    return _count_cell(value) if isinstance(value, Mapping) else _td(value)


def render_clinical(data: Mapping[str, Any]) -> str:
    out = []
    if data.get("healthy_label"):
        out.append(f"<p>Healthy class: <strong>{_e(data['healthy_label'])}</strong>. "
                   "Counts are <em>flipped / at risk (rate)</em>: a missed disease is a diseased "
                   "case called diseased on the clean image and healthy under attack; a false "
                   "alarm is the reverse.</p>")
    attacks: Mapping[str, Any] = data.get("attacks") or {}
    if not attacks:
        return "".join(out)
    columns: list[str] = []
    for block in attacks.values():
        columns.extend(k for k in block if k not in ("per_label", "prediction_flips",
                                                     "n_images") and k not in columns)
    rows = [[f"<td>{_e(key)}</td>", *(_cell(block.get(c)) for c in columns)]
            for key, block in attacks.items()]
    out.append(_table(["attack", *(c.replace("_", " ") for c in columns)], rows))
    for key, block in attacks.items():
        out.append(f"<h4>{_e(key)}: per finding or class</h4>")
        rows = [
            [f"<td>{_e(lbl)}</td>", _count_cell(v.get("missed_disease")),
             _count_cell(v.get("false_alarm"))]
            for lbl, v in (block.get("per_label") or {}).items()
        ]
        out.append(_table(["finding / class", "missed disease", "false alarm"], rows))
    return "".join(out)


def render_sanity(data: Mapping[str, Any]) -> str:
    reliable = data.get("reliable")
    status = ("Every check passed." if reliable else
              "<strong>Flagged: the results may be unreliable.</strong>")
    rows = [
        [f"<td>{_e(c.get('name', ''))}</td>",
         f'<td class="{"warn" if c.get("flagged") else "ok"}">'
         f'{"FLAG" if c.get("flagged") else "ok"}</td>',
         f"<td>{_e(c.get('message', ''))}</td>"]
        for c in data.get("checks") or []
    ]
    return f"<p>{status}</p>" + _table(["check", "status", "message"], rows)


RENDERERS: dict[str, SectionRenderer] = {
    "quantitative": render_quantitative,
    "clinical": render_clinical,
    "sanity": render_sanity,
}


# ---------------------------------------------------------------------- generic sections


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))


def _json_pre(value: Any) -> str:
    return f"<pre>{_e(json.dumps(value, indent=2, default=str)[:20000])}</pre>"


def render_generic(data: Mapping[str, Any], depth: int = 0) -> str:
    """Tables for a section whose shape this module does not know."""
    scalars: list[tuple[str, str]] = []
    nested: list[str] = []
    for key, value in data.items():
        if key in ("applicable", "figures", "flags", "reason"):
            continue
        if _is_scalar(value):
            scalars.append((key, fmt(value)))
        elif isinstance(value, list) and all(_is_scalar(v) for v in value):
            scalars.append((key, ", ".join(fmt(v) for v in value[:_MAX_TABLE_ROWS])))
        else:
            nested.append(f"<h4>{_e(key)}</h4>" + _render_value(value, depth + 1))
    out = _kv(scalars) if scalars else ""
    return out + "".join(nested)


def _render_value(value: Any, depth: int) -> str:
    if depth > _MAX_GENERIC_DEPTH:
        return _json_pre(value)
    if isinstance(value, Mapping):
        inner = list(value.values())
        if inner and all(isinstance(v, Mapping) and all(_is_scalar(x) for x in v.values())
                         for v in inner):
            columns: list[str] = []
            for v in inner:
                columns.extend(c for c in v if c not in columns)
            rows = [[f"<td>{_e(k)}</td>", *(_td(v.get(c)) for c in columns)]
                    for k, v in list(value.items())[:_MAX_TABLE_ROWS]]
            return _table(["", *columns], rows)
        return render_generic(value, depth)
    if isinstance(value, list):
        if value and all(isinstance(v, Mapping) and all(_is_scalar(x) for x in v.values())
                         for v in value):
            columns = []
            for v in value:
                columns.extend(c for c in v if c not in columns)
            rows = [[_td(v.get(c)) for c in columns] for v in value[:_MAX_TABLE_ROWS]]
            return _table(columns, rows)
        if value and all(isinstance(v, list) and all(_is_scalar(x) for x in v) for v in value):
            rows = [[_td(x) for x in v] for v in value[:_MAX_TABLE_ROWS]]
            return _table([str(j) for j in range(max(len(v) for v in value))], rows)
    return _json_pre(value)


# ---------------------------------------------------------------------- sections, grid


def _figures_by_section(
    sections: Sequence[Section] | Mapping[str, Sequence[Figure]] | None,
) -> dict[str, list[Figure]]:
    if sections is None:
        return {}
    if isinstance(sections, Mapping):
        return {k: list(v) for k, v in sections.items()}
    return {s.name: list(s.figures) for s in sections}


def _section(name: str, data: Mapping[str, Any], figures: list[Figure]) -> str:
    out = [f'<section id="{_anchor(name)}"><h2>{_e(name)}</h2>']
    if not data.get("applicable", True):
        out.append(f'<p class="na">Not applicable: {_e(data.get("reason") or "")}</p>')
        out.append("</section>")
        return "".join(out)
    renderer = RENDERERS.get(name, render_generic)
    out.append(renderer(data))
    order = list(data.get("figures") or [])
    figures = sorted(
        figures,
        key=lambda f: order.index(f"{f.name}.png") if f"{f.name}.png" in order else len(order),
    )
    for fig in figures:
        caption = _e(fig.title) + (f": {_e(fig.caption)}" if fig.caption else "")
        out.append(f"<figure>{_img(fig.png, fig.title)}<figcaption>{caption}</figcaption>"
                   "</figure>")
    out.append("</section>")
    return "".join(out)


def _prediction(pred: Any) -> str:
    """A prediction as given: text, ``{"label", "probability"}``, or a list of those."""
    if pred is None:
        return "—"
    if isinstance(pred, Mapping):
        label = _e(pred.get("label", ""))
        p = pred.get("probability")
        return f"{label} {fmt(p)}" if isinstance(p, (int, float)) else label
    if isinstance(pred, (list, tuple)):
        return ", ".join(_prediction(p) for p in pred) or "none"
    return _e(pred)


def _grid(samples: Sequence[Mapping[str, Any]]) -> str:
    if not samples:
        return ""
    by_attack: dict[str, list[Mapping[str, Any]]] = {}
    for s in samples:
        by_attack.setdefault(str(s.get("attack", "")), []).append(s)
    out = ['<section id="examples"><h2>Examples</h2>',
           "<p>Clean image, adversarial image and the perturbation, amplified to the full "
           "range (brighter = larger change); predictions with their probability under each."
           "</p>"]
    for attack, items in by_attack.items():
        out.append(f"<h3>{_e(attack)}</h3>")
        rows = []
        for s in items:
            truth = _prediction(s.get("true_label"))
            rows.append([
                f"<td>{_img(s['clean_png'], 'clean image')}"
                f'<div class="pred">truth: {truth}<br>clean: '
                f"{_prediction(s.get('clean_pred'))}</div></td>",
                f"<td>{_img(s['adv_png'], 'adversarial image')}"
                f'<div class="pred">adversarial: {_prediction(s.get("adv_pred"))}</div></td>',
                f"<td>{_img(s['perturbation_png'], 'amplified perturbation')}"
                '<div class="pred">perturbation (amplified)</div></td>',
            ])
        out.append('<div class="grid">'
                   + _table(["clean", "adversarial", "perturbation"], rows) + "</div>")
    out.append("</section>")
    return "".join(out)


def _provenance(report: Mapping[str, Any]) -> str:
    prov = report.get("provenance") or {}
    out = ['<section id="provenance"><h2>Provenance</h2>']
    model = prov.get("model") or {}
    dataset = prov.get("dataset") or {}
    out.append("<h3>Model and data</h3>")
    out.append(_kv([
        ("model", fmt(model.get("name"))),
        ("model sha256", fmt(model.get("sha256"))),
        ("dataset", fmt(dataset.get("name") or dataset.get("id"))),
        ("dataset sha256", fmt(dataset.get("sha256"))),
        ("job", fmt((report.get("job") or {}).get("id"))),
        ("report schema", fmt(report.get("schema_version"))),
    ]))
    for title, key in (("Seeds", "seeds"), ("Packages", "packages"), ("Timings (s)", "timings")):
        value = prov.get(key) or {}
        if isinstance(value, Mapping) and value:
            out.append(f"<h3>{title}</h3>" + _kv([(k, fmt(v)) for k, v in value.items()]))
    device = prov.get("device")
    if isinstance(device, Mapping):
        out.append("<h3>Device</h3>" + _kv([(k, fmt(v)) for k, v in device.items()]))
    elif device is not None:
        out.append(f"<h3>Device</h3><p>{_e(device)}</p>")
    out.append("<h3>Parameters</h3>" + _json_pre(prov.get("parameters") or {}))
    out.append("</section>")
    return "".join(out)


# ---------------------------------------------------------------------- document


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
    figures = _figures_by_section(sections)
    prov = report.get("provenance") or {}
    model_name = (prov.get("model") or {}).get("name") or (report.get("job") or {}).get(
        "model_name") or "model"
    title = str((report.get("summary") or {}).get("title") or f"Robustness audit: {model_name}")
    job = report.get("job") or {}
    section_json: dict[str, Any] = dict(report.get("sections") or {})
    # Sections given as objects but absent from the JSON (a defense job's training
    # section, say) are rendered too, from their own JSON.
    if sections is not None and not isinstance(sections, Mapping):
        for sec in sections:
            section_json.setdefault(sec.name, sec.to_json())
    nav = "".join(
        f'<li><a href="#{_anchor(name)}">{_e(name)}</a></li>' for name in section_json
    )
    if samples:
        nav += '<li><a href="#examples">examples</a></li>'
    nav += '<li><a href="#provenance">provenance</a></li>'
    body = [
        f"<h1>{_e(title)}</h1>",
        f'<p class="sub">job {_e(job.get("id", ""))} · report schema '
        f'{_e(report.get("schema_version", ""))}</p>',
        '<section id="summary"><h2>Summary</h2>',
        _banner(report),
        _headline(report),
        "<h3>Policy</h3>",
        _policy(report),
        "</section>",
        f"<nav><h2>Contents</h2><ul>{nav}</ul></nav>",
        *(_section(name, data, figures.get(name, [])) for name, data in section_json.items()),
        _grid(samples or []),
        _provenance(report),
    ]
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title>"
        f"<style>{_CSS}</style></head><body>"
        + "".join(body)
        + "</body></html>\n"
    )
