"""What the HTML templates show of each section, prepared from the report's JSON.

A view is a plain dict the section's template reads (``v`` in the template); the JSON
report stays the source of truth and this module only arranges it: sorted tables, labelled
matrices, and the one sentence of interpretation an attack row gets when its pattern is
notable (false alarms only, missed disease only, accuracy lost while the ranking survives).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from workers.reports.formatting import num, pct

View = dict[str, Any]

#: An AUROC at or above this, with accuracy at most half the clean one, means the scores
#: still rank cases while the decisions cross the threshold.
RANKING_KEPT_AUROC = 0.8
#: A flip rate below this counts as "none" when naming a one-sided pattern.
NEGLIGIBLE_RATE = 0.02
NOTABLE_RATE = 0.1


def _get(data: Mapping[str, Any] | None, *path: str) -> Any:
    node: Any = data
    for key in path:
        if not isinstance(node, Mapping):
            return None
        node = node.get(key)
    return node


def _rate(block: Any) -> float | None:
    rate = _get(block, "rate")
    return float(rate) if isinstance(rate, (int, float)) else None


def _clinical_pattern(clinical: Mapping[str, Any] | None) -> str | None:
    missed, alarm = _rate(_get(clinical, "missed_disease")), _rate(_get(clinical, "false_alarm"))
    if missed is None or alarm is None:
        return None
    if alarm >= NOTABLE_RATE and missed < NEGLIGIBLE_RATE:
        return (f"false alarms only: {pct(alarm)} of the healthy calls turned diseased and "
                "no disease was missed")
    if missed >= NOTABLE_RATE and alarm < NEGLIGIBLE_RATE:
        return (f"missed disease only: {pct(missed)} of the disease calls turned healthy, the "
                "costlier error, with no false alarm")
    return None


def attack_note(block: Mapping[str, Any], clinical: Mapping[str, Any] | None,
                task: str) -> str | None:
    """One sentence on an attack row whose pattern is notable, or ``None``."""
    parts: list[str] = []
    pattern = _clinical_pattern(clinical)
    if pattern:
        parts.append(pattern)
    clean_acc = _get(block, "clean", "accuracy")
    acc = _get(block, "adversarial", "accuracy")
    auroc = _get(block, "adversarial", "mean_auroc")
    if (isinstance(acc, (int, float)) and isinstance(clean_acc, (int, float))
            and isinstance(auroc, (int, float)) and clean_acc > 0
            and acc <= clean_acc / 2 and auroc >= RANKING_KEPT_AUROC):
        what = "exact-match accuracy" if task == "multi-label" else "accuracy"
        parts.append(f"{what} falls to {num(acc)} while the mean AUROC stays {num(auroc)}: "
                     "the scores still rank diseased above healthy cases and the errors are "
                     "threshold crossings")
    if not parts:
        return None
    sentence = "; ".join(parts)
    return sentence[0].upper() + sentence[1:] + "."


def quantitative_view(data: Mapping[str, Any], report: Mapping[str, Any]) -> View:
    task = str(data.get("task") or "")
    clinical = _get(report, "sections", "clinical", "attacks") or {}
    attacks: Mapping[str, Any] = data.get("attacks") or {}
    notes = {key: attack_note(block, clinical.get(key), task) for key, block in attacks.items()}
    labels = list((_get(data, "clean", "auroc") or {}).keys())
    return {
        "multi": task == "multi-label",
        "accuracy": "exact-match accuracy" if task == "multi-label" else "accuracy",
        "notes": {k: v for k, v in notes.items() if v},
        "labels": labels,
    }


def clinical_view(data: Mapping[str, Any], report: Mapping[str, Any]) -> View:
    multi = data.get("task") == "multi-label"
    n = _get(report, "sections", "quantitative", "n_images")
    if multi:
        denominators = (
            "Counts are finding decisions, not images: each image has one decision per "
            "finding, so the at-risk totals of missed disease (findings present and called "
            "present on the clean image) and false alarm (findings absent and called absent) "
            f"add up to up to {len(data.get('diseases') or [])} decisions per image"
            + (f" over {n} images" if n else "")
            + ". The image rows count whole images made healthy (every disease finding "
            "called absent) or made diseased."
        )
    else:
        denominators = (
            "At risk for a missed disease: the diseased images called diseased on the clean "
            "image; for a false alarm: the healthy images called healthy. Images already "
            "wrong on the clean image are in neither, so the two at-risk counts may add up "
            "to fewer than the images audited" + (f" ({n})" if n else "") + "."
        )
    attacks: Mapping[str, Any] = data.get("attacks") or {}
    columns = [c for c in ("missed_disease", "false_alarm", "images_made_healthy",
                           "images_made_diseased", "disease_swaps")
               if any(c in block for block in attacks.values())]
    return {"denominators": denominators, "columns": columns}


def label_correlation_view(data: Mapping[str, Any], report: Mapping[str, Any]) -> View:
    names = list(data.get("findings") or [])
    matrices = [("ground truth", _get(data, "truth", "matrix")),
                ("clean predictions", _get(data, "clean", "binary", "matrix"))]
    attacks: Mapping[str, Any] = data.get("attacks") or {}
    for key, block in attacks.items():
        matrices.append((f"under {key}", _get(block, "binary", "matrix")))
    # Pairs that did not move are not news: the table lists the moved ones only.
    pairs = [
        {"attack": key, **pair}
        for key, block in attacks.items()
        for pair in (block.get("moved_pairs") or [])
        if abs(float(pair.get("change") or 0.0)) >= 0.005
    ]
    pairs.sort(key=lambda p: (-abs(float(p.get("change") or 0.0)), p["attack"],
                              list(p.get("findings") or [])))
    return {
        "names": names,
        "matrices": [(title, m) for title, m in matrices if isinstance(m, list)],
        "pairs": pairs,
    }


def features_view(data: Mapping[str, Any], report: Mapping[str, Any]) -> View:
    """One row per attack (keys are long), one column per layer (names are short)."""
    layers = list(data.get("layers") or [])
    attacks: Mapping[str, Any] = data.get("attacks") or {}
    rows = [{"attack": key, "values": list(_get(block, "mean") or [None] * len(layers))}
            for key, block in attacks.items()]
    return {"layers": layers, "rows": rows}


def subgroups_view(data: Mapping[str, Any], report: Mapping[str, Any]) -> View:
    measures = list(data.get("measures") or [])
    return {"measures": measures, "budgets": [m for m in measures if m != "clean"]}


def perturbations_view(data: Mapping[str, Any], report: Mapping[str, Any]) -> View:
    entries: Mapping[str, Any] = data.get("perturbations") or {}
    severities = sorted({s.get("severity") for e in entries.values()
                         for s in (e.get("severities") or []) if s.get("severity") is not None})
    metric = str(data.get("metric") or "accuracy")
    rows = []
    for name, entry in entries.items():
        by_severity = {s.get("severity"): s.get(metric) for s in entry.get("severities") or []}
        rows.append({"name": name, "family": entry.get("family"),
                     "values": [by_severity.get(s) for s in severities],
                     "flip": entry.get("flip_probability"),
                     "ce": entry.get("corruption_error")})
    return {"severities": severities, "rows": rows, "metric": metric,
            "severity_labels": [f"severity {s}" for s in severities]}


VIEWS: dict[str, Callable[[Mapping[str, Any], Mapping[str, Any]], View]] = {
    "quantitative": quantitative_view,
    "clinical": clinical_view,
    "label_correlation": label_correlation_view,
    "features": features_view,
    "subgroups": subgroups_view,
    "perturbations": perturbations_view,
}


def view(name: str, data: Mapping[str, Any], report: Mapping[str, Any]) -> View:
    """The view of section ``name`` (empty for sections whose template needs none)."""
    make = VIEWS.get(name)
    return make(data, report) if make else {}


# ---------------------------------------------------------------------- generic sections

MAX_ROWS = 200
MAX_DEPTH = 4


def _scalar(value: Any) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))


def _flat(value: Any) -> bool:
    return isinstance(value, Mapping) and all(_scalar(v) or _scalar_list(v)
                                              for v in value.values())


def _scalar_list(value: Any) -> bool:
    return isinstance(value, list) and all(_scalar(v) for v in value)


def cell(value: Any) -> str:
    """A value as the text of one table cell: numbers rounded, lists joined, small objects
    as ``key=value`` pairs."""
    if _scalar(value):
        return num(value)
    if _scalar_list(value):
        shown = ", ".join(num(v) for v in value[:MAX_ROWS])
        return shown + (f", … ({len(value)} in all)" if len(value) > MAX_ROWS else "")
    if isinstance(value, Mapping):
        return "; ".join(f"{k}={cell(v)}" for k, v in value.items())
    if isinstance(value, list):
        return "; ".join(cell(v) for v in value[:MAX_ROWS])
    return str(value)


def _table(title: str | None, rows: list[Mapping[str, Any]], index: list[str] | None,
           ) -> dict[str, Any]:
    columns: list[str] = []
    for row in rows:
        columns.extend(str(c) for c in row if str(c) not in columns)
    body = [([index[i]] if index else []) + [cell(row.get(c)) for c in columns]
            for i, row in enumerate(rows[:MAX_ROWS])]
    return {"kind": "table", "title": title,
            "columns": ([""] if index else []) + columns, "rows": body}


def generic_blocks(data: Any, title: str | None = None, depth: int = 0,
                   skip: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """Any JSON value as titled key/value tables and tables, never as raw JSON.

    Objects of scalars become key/value tables, objects of flat objects and lists of flat
    objects become tables (one row each), lists of lists become matrices; deeper values get
    their own titled blocks down to :data:`MAX_DEPTH`, then one cell each.
    """
    if isinstance(data, list):
        if data and all(isinstance(v, Mapping) for v in data):
            return [_table(title, list(data), None)]
        if data and all(_scalar_list(v) for v in data):
            return [_table(title, [{str(j): x for j, x in enumerate(v)} for v in data],
                           [str(i) for i in range(len(data))])]
        return [{"kind": "kv", "title": title, "rows": [("values", cell(data))]}]
    if not isinstance(data, Mapping):
        return [{"kind": "kv", "title": title, "rows": [("value", cell(data))]}]
    scalars = [(str(k), cell(v)) for k, v in data.items()
               if k not in skip and (_scalar(v) or _scalar_list(v) or depth >= MAX_DEPTH)]
    blocks: list[dict[str, Any]] = []
    if scalars:
        blocks.append({"kind": "kv", "title": title, "rows": scalars})
    for k, v in data.items():
        if k in skip or _scalar(v) or _scalar_list(v) or depth >= MAX_DEPTH:
            continue
        sub = f"{title} · {k}" if title else str(k)
        if isinstance(v, Mapping) and v and all(_flat(x) for x in v.values()):
            blocks.append(_table(sub, list(v.values()), [str(x) for x in v]))
        else:
            blocks.extend(generic_blocks(v, sub, depth + 1))
    return blocks
