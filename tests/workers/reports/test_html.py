"""The HTML report: numbers present, strings escaped, pictures embedded, one file."""

from __future__ import annotations

import base64
import shutil
import subprocess
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from workers.analyses.base import Figure, Section
from workers.reports.html import render_html


class Collector(HTMLParser):
    """Every tag, and every URL-bearing attribute, of a document."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.urls: list[tuple[str, str, str]] = []
        self.images: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        for name, value in attrs:
            if name in ("src", "href", "action", "srcset", "poster", "data") and value:
                self.urls.append((tag, name, value))
            if tag == "img" and name == "src" and value:
                self.images.append(value)

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse(html: str) -> Collector:
    collector = Collector()
    collector.feed(html)
    collector.close()
    return collector


def test_contains_the_numbers(report: dict[str, Any], sections: list[Section]) -> None:
    html = render_html(report, sections)
    text = " ".join(parse(html).text)
    assert "0.700" in text  # pgd 4/255 adversarial accuracy
    assert "0.400" in text  # pgd 8/255 adversarial accuracy
    assert "0.600" in text  # pgd 8/255 fooling rate
    for key in report["attacks"]:
        assert key in text
    ci = report["attacks"]["pgd:eps=8/255"]["adversarial"]["accuracy_ci"]
    assert f"[{ci[0]:.3f}, {ci[1]:.3f}]" in text
    assert report["provenance"]["packages"]["torch"] in text
    assert "0" * 64 in text  # model sha256


def test_verdict_comes_first(make_report: Callable[..., dict[str, Any]],
                             sections: list[Section]) -> None:
    html = render_html(make_report({"min_accuracy": {"pgd:eps=8/255": 0.6}}), sections)
    banner = html.index('class="banner fail"')
    assert "FAIL: 1 of 1 policy checks failed" in html
    assert banner < html.index('id="sec-quantitative"') < html.index('id="provenance"')
    passing = render_html(make_report({"min_accuracy": {"pgd:eps=4/255": 0.6}}), sections)
    assert 'class="banner pass"' in passing


def test_escapes_user_strings(make_report: Callable[..., dict[str, Any]],
                              sections: list[Section]) -> None:
    hostile = "<script>alert('x')</script>"
    report = make_report(model_name=hostile)
    report["sections"]["features"] = {"applicable": True, "figures": [],
                                      "note": '<img src="http://evil/x.png">'}
    samples = [{
        "attack": "pgd:eps=4/255", "clean_png": b"\x89PNG", "adv_png": b"\x89PNG",
        "perturbation_png": b"\x89PNG", "true_label": hostile,
        "clean_pred": {"label": hostile, "probability": 0.5}, "adv_pred": hostile,
    }]
    html = render_html(report, sections, samples)
    assert "<script" not in html.lower()
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in html
    assert "http://evil" not in [u[2] for u in parse(html).urls]
    assert "script" not in parse(html).tags


def test_single_file_with_embedded_images(report: dict[str, Any], sections: list[Section],
                                          samples: list[dict[str, Any]]) -> None:
    html = render_html(report, sections, samples)
    doc = parse(html)
    for tag, attr, url in doc.urls:
        assert url.startswith(("data:", "#")), (tag, attr, url)
    assert "link" not in doc.tags
    assert "@import" not in html
    assert "url(" not in html
    n_figures = sum(len(s.figures) for s in sections)
    assert n_figures >= 4  # robustness curve, AUROC, min eps, clinical flips
    assert len(doc.images) == n_figures + 3 * len(samples)
    for src in doc.images:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1]).startswith(b"\x89PNG")


def test_image_grid_shows_predictions(report: dict[str, Any], sections: list[Section],
                                      samples: list[dict[str, Any]]) -> None:
    html = render_html(report, sections, samples)
    text = " ".join(parse(html).text)
    assert 'id="examples"' in html
    assert "clean: pneumonia 0.910" in text
    assert "adversarial: normal 0.870" in text
    assert "truth: pneumonia" in text


def test_figures_in_section_order(report: dict[str, Any], sections: list[Section]) -> None:
    html = render_html(report, sections)
    quantitative = next(s for s in sections if s.name == "quantitative")
    positions = [html.index(f'alt="{f.title}"') for f in quantitative.figures]
    assert positions == sorted(positions)


def test_unknown_section_rendered_generically(report: dict[str, Any],
                                              sections: list[Section]) -> None:
    report["sections"]["custom_analysis"] = {
        "applicable": True,
        "figures": ["corr.png"],
        "mean_abs_change": 0.125,
        "per_attack": {"pgd:eps=4/255": {"frobenius": 0.5, "max_change": 0.25}},
        "matrix": [[1.0, 0.5], [0.5, 1.0]],
        "pairs": [{"a": "x", "b": "y", "delta": 0.75}],
    }
    report["sections"]["gradcam"] = {"applicable": False, "figures": [],
                                      "reason": "no convolutional layer"}
    fig = Figure(name="corr", title="Correlation", png=sections[0].figures[0].png)
    html = render_html(report, [*sections, Section("custom_analysis", True, {}, figures=[fig])])
    text = " ".join(parse(html).text)
    for value in ("0.125", "0.500", "0.250", "0.750", "frobenius", "max_change"):
        assert value in text
    assert "<pre" not in html  # tables, never a JSON dump
    start = html.index('id="sec-custom-analysis"')
    assert "<th>pgd:eps=4/255</th>" not in html[start:]  # rows are keyed, not columns
    assert "<td>pgd:eps=4/255</td>" in html[start:]
    assert "Not applicable: no convolutional layer" in text
    assert 'alt="Correlation"' in html


def test_unreliable_results_are_announced(
    make_report: Callable[..., dict[str, Any]], make_sections: Callable[..., list[Section]]
) -> None:
    flagged = make_sections({"pgd:eps=4/255": 10, "pgd:eps=8/255": 20, "square:eps=8/255": 70})
    html = render_html(make_report(sections=flagged), flagged)
    assert "These results may be unreliable." in html
    assert html.index("may be unreliable") < html.index('id="sec-quantitative"')


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


@pytest.mark.skipif(_chromium() is None, reason="no headless Chromium on this machine "
                    "(Debian package 'chromium'; `make test` installs it where it can)")
def test_renders_in_headless_chromium(report: dict[str, Any], sections: list[Section],
                                      samples: list[dict[str, Any]], tmp_path: Path) -> None:
    page = tmp_path / "report.html"
    page.write_text(render_html(report, sections, samples), encoding="utf-8")
    browser = _chromium()
    assert browser is not None
    done = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=120, check=True,
    )
    assert "Robustness audit: tiny-cnn" in done.stdout
    assert 'id="provenance"' in done.stdout
    shot = tmp_path / "shot.png"
    subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", f"--screenshot={shot}",
         "--window-size=1280,2000", page.as_uri()],
        capture_output=True, timeout=120, check=True,
    )
    assert shot.read_bytes().startswith(b"\x89PNG")


def test_sections_missing_from_the_json_are_rendered(report: dict[str, Any],
                                                    sections: list[Section]) -> None:
    training = Section("training", True, {"epochs": 3, "final_loss": 0.3125})
    report["summary"]["title"] = "Defense mpadvt: <hardened>"
    html = render_html(report, [*sections, training])
    text = " ".join(parse(html).text)
    assert "Defense mpadvt: <hardened>" in text
    assert "&lt;hardened&gt;" in html
    assert 'id="sec-training"' in html
    assert "0.312" in text


def test_checks_with_nothing_to_judge_say_not_applicable(report: dict[str, Any],
                                                        sections: list[Section]) -> None:
    html = render_html(report, sections)
    start = html.index('id="sec-sanity"')
    sanity = html[start:html.index("</section>", start)]
    # The hand-made arrays have no gradient probe: the check is not applicable, not "ok".
    row = sanity[sanity.index("loss_vs_steps"):]
    row = row[:row.index("</tr>")]
    assert '<td class="na">not applicable</td>' in row
    assert ">ok<" not in row


def test_clinical_denominators_are_explained(report: dict[str, Any],
                                             sections: list[Section]) -> None:
    text = " ".join(parse(render_html(report, sections)).text)
    assert "At risk for a missed disease: the diseased images called diseased" in text
    assert "(100)" in text


def test_worst_case_and_subgroups_are_shown(report: dict[str, Any],
                                            sections: list[Section]) -> None:
    html = render_html(report, sections)
    text = " ".join(parse(html).text)
    assert "Worst case per budget" in text
    assert "linf:eps=8/255" in text
    assert "Groups significantly below the rest:" in text
    assert "PatientSex = F: linf:eps=4/255 accuracy 0.400 vs 1.000" in text


def test_defense_sections(report: dict[str, Any], sections: list[Section]) -> None:
    comparison = Section("defense_comparison", True, {"rows": [
        {"attack": "pgd:eps=4/255", "clean_before": 0.9, "robust_before": 0.1,
         "clean_after": 0.85, "robust_after": 0.55, "robust_gain": 0.45}]})
    training = Section("training", True, {"epochs": [{"epoch": 1, "loss": 0.6931471805599453}]})
    html = render_html(report, [*sections, comparison, training])
    text = " ".join(parse(html).text)
    assert "Before and after the defense" in text
    start = html.index('id="sec-defense-comparison"')
    assert '<td class="num ok">0.450</td>' in html[start:]
    assert "0.693" in text
    assert "0.6931471805599453" not in text


def test_metadata_values_are_escaped(make_report: Callable[..., dict[str, Any]],
                                     make_sections: Callable[..., list[Section]]) -> None:
    hostile = '<img src=x onerror="alert(1)">'
    meta = [{"Manufacturer": hostile if i % 2 else "Acme", "site<b>": "a" if i < 50 else "b"}
            for i in range(100)]
    sections = make_sections(meta=meta)
    html = render_html(make_report(sections=sections), sections)
    doc = parse(html)
    assert "onerror" not in " ".join(u[2] for u in doc.urls)
    assert "<img src=x" not in html
    assert "&lt;img src=x onerror=&#34;alert(1)&#34;&gt;" in html
    assert "site&lt;b&gt;" in html
