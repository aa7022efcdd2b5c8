"""The HTML report as a reader sees it: every section designed, numbers rounded, the same
bytes for the same JSON, and nothing wider than a 1280 px window in a real browser."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from workers.analyses.base import Section
from workers.reports.html import DESIGNED, render_html

Audit = tuple[dict[str, Any], list[Section]]


class Text(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []
        self.tags: list[str] = []
        self._skip = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self._skip = tag == "style"

    def handle_endtag(self, tag: str) -> None:
        self._skip = False

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.parts.append(data)


def visible_text(html: str) -> tuple[str, list[str]]:
    parser = Text()
    parser.feed(html)
    return " ".join(parser.parts), parser.tags


def test_same_json_gives_the_same_bytes(full_audit: Audit) -> None:
    report, sections = full_audit
    first = render_html(report, sections)
    again = render_html(json.loads(json.dumps(report)), sections)
    assert first.encode() == again.encode()


def test_every_section_is_designed(full_audit: Audit) -> None:
    report, sections = full_audit
    names = set(report["sections"])
    assert names <= DESIGNED | {"training", "defense_comparison"}
    assert {"worst_case", "subgroups", "evidence_map", "label_correlation",
            "perturbations"} <= names
    html = render_html(report, sections)
    text, tags = visible_text(html)
    assert "pre" not in tags  # no JSON dump
    assert "{" not in text
    # Numbers are rounded for reading: no 17-digit floats anywhere.
    assert re.findall(r"\d\.\d{7,}", text) == []


def test_labels_and_definitions_a_clinician_needs(full_audit: Audit) -> None:
    report, sections = full_audit
    html = render_html(report, sections)
    text, _ = visible_text(html)
    findings = report["sections"]["label_correlation"]["findings"]
    start = html.index('id="sec-label-correlation"')
    corr = html[start:html.index("</section>", start)]
    for name in findings:  # matrix axes are finding names, not 0..K-1
        assert f"<th>{name}</th>" in corr
    assert "exact match" in text
    assert "Counts are finding decisions, not images" in text
    assert "not a claim of compliance" in text
    assert "which attack broke each image first" in text


def test_proportion_at_zero_has_a_real_interval(full_audit: Audit) -> None:
    report, sections = full_audit
    html = render_html(report, sections)
    text, _ = visible_text(html)
    assert "0.000 [0.000, 0.000]" not in text
    assert "1.000 [1.000, 1.000]" not in text.split("AUROC")[0]


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


#: Injected into a copy of the report (the report itself runs no script): lists every
#: element that sticks out of the window, unless a scrolling container of the page's width
#: clips it, and writes the result into the DOM for --dump-dom.
PROBE = """<script>
window.addEventListener("load", () => {
  const width = document.documentElement.clientWidth;
  const offenders = [];
  for (const el of document.body.querySelectorAll("*")) {
    const box = el.getBoundingClientRect();
    if (box.right <= width + 1 && box.left >= -1) continue;
    let clipped = false;
    for (let p = el.parentElement; p && p !== document.body; p = p.parentElement) {
      const overflow = getComputedStyle(p).overflowX;
      if ((overflow === "auto" || overflow === "scroll" || overflow === "hidden")
          && p.getBoundingClientRect().right <= width + 1) { clipped = true; break; }
    }
    if (!clipped) offenders.push(el.tagName + ":" + Math.round(box.right));
  }
  const out = document.createElement("output");
  out.id = "layout-probe";
  out.textContent = JSON.stringify({width: width,
    scrollWidth: document.documentElement.scrollWidth, offenders: offenders.slice(0, 20)});
  document.body.appendChild(out);
});
</script>"""


@pytest.mark.skipif(_chromium() is None, reason="no headless Chromium on this machine "
                    "(Debian package 'chromium'; `make test` installs it where it can)")
def test_nothing_is_wider_than_a_1280_px_window(full_audit: Audit,
                                                samples: list[dict[str, Any]],
                                                tmp_path: Path) -> None:
    report, sections = full_audit
    html = render_html(report, sections, samples)
    page = tmp_path / "probe.html"
    page.write_text(html.replace("</body>", PROBE + "</body>"), encoding="utf-8")
    browser = _chromium()
    assert browser is not None
    done = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         "--window-size=1280,900", "--virtual-time-budget=10000", "--dump-dom",
         page.as_uri()],
        capture_output=True, text=True, timeout=120, check=True,
    )
    found = re.search(r'<output id="layout-probe">(.*?)</output>', done.stdout, re.S)
    assert found, "the layout probe did not run"
    result = json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    assert 1200 <= result["width"] <= 1280
    assert result["offenders"] == []
    assert result["scrollWidth"] <= result["width"]


def test_every_designed_section_has_a_template() -> None:
    from importlib import resources

    folder = resources.files("workers.reports").joinpath("templates/sections")
    shipped = {p.name for p in folder.iterdir()}
    assert {f"{name}.html.j2" for name in DESIGNED} <= shipped
