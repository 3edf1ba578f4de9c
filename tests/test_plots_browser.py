"""The page of `dvc plots show` / `dvc plots diff`, loaded in headless Chromium with the network
blocked: every vega chart draws its marks from the bundle the page carries. Real dvc on a small
reproduced project (tiny synthetic data); skipped, with the reason, where Chromium is missing."""

from __future__ import annotations

import csv
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
from project import commit_all, dvc, make_project

CHROMIUM = shutil.which("chromium")

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        CHROMIUM is None,
        reason="chromium is not installed (Debian: apt-get install chromium); "
        "the plots page was not checked in a browser",
    ),
]

MODELS = ("logistic", "cnn")
# Two epochs: enough for the x axis to need ticks between them (DVC's linear template drew
# 0.0, 0.1 ... 1.0), and for every line to have a segment to draw.
EPOCHS = 2
# The outline of a drawn cell: a move, then three sides and a close.
RECT = re.compile(r"M[-\d.e,]+h[-\d.e]+v[-\d.e]+h[-\d.e]+Z")
HISTORY_LINES = {("loss", "train_loss"), ("loss", "val_loss"), ("accuracy", "val_acc")}


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """Two models, two epochs, reproduced and committed once."""
    project = make_project(tmp_path_factory.mktemp("plots"), models=MODELS, epochs=EPOCHS)
    dvc(project, "repro")
    commit_all(project, "baseline run")
    return project


def render(page: Path, profile: Path) -> str:
    """The DOM of ``page`` after its scripts ran, in headless Chromium with no network.

    Every request goes to a closed proxy port on this machine, and no name resolves."""
    result = subprocess.run(
        [
            CHROMIUM,
            *("--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=10000"),
            *("--disable-background-networking", "--disable-component-update", "--disable-sync"),
            "--no-first-run",
            f"--user-data-dir={profile}",
            *("--proxy-server=127.0.0.1:9", "--proxy-bypass-list=<-loopback>"),
            "--host-resolver-rules=MAP * ~NOTFOUND",
            "--dump-dom",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0 and "</html>" in result.stdout, result.stderr[-2000:]
    return result.stdout


class Charts(HTMLParser):
    """Per vega div of the rendered page: its <svg class="marks">, the mark items vega drew
    (kind, aria-label, geometry) and its axes (aria-label, tick labels)."""

    VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source"}

    def __init__(self, ids):
        super().__init__()
        self.ids = set(ids)
        self.charts: dict[str, dict] = {}
        self.stack: list[dict] = []  # open elements: tag, and what they open
        self.chart: str | None = None
        self.images: list[str] = []  # the src of every <img>

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        frame = {"tag": tag}
        if tag == "img":
            self.images.append(attrs.get("src") or "")
        if tag == "div" and attrs.get("id") in self.ids:
            self.chart = attrs["id"]
            self.charts[self.chart] = {"svgs": 0, "marks": [], "axes": []}
            frame["chart"] = True
        chart = self.charts.get(self.chart) if self.chart else None
        if chart is not None:
            classes = (attrs.get("class") or "").split()
            if tag == "svg" and "marks" in classes:
                chart["svgs"] += 1
            role = attrs.get("aria-roledescription") or ""
            if role.endswith(" mark"):
                item = {"kind": role[: -len(" mark")], "label": attrs.get("aria-label") or ""}
                item["geometry"] = attrs.get("d") if tag == "path" else ""
                item["visible"] = attrs.get("opacity") != "0"  # vega writes 0 for hidden
                chart["marks"].append(item)
                frame["item"] = item
            if "role-axis" in classes and attrs.get("aria-label"):
                frame["axis"] = []
                chart["axes"].append((attrs["aria-label"], frame["axis"]))
            if "role-axis-label" in classes:
                frame["axis_labels"] = True
        if tag not in self.VOID:
            self.stack.append(frame)

    def handle_endtag(self, tag):
        while self.stack:
            frame = self.stack.pop()
            if frame.get("chart"):
                self.chart = None
            if frame["tag"] == tag:
                break

    def handle_data(self, data):
        if not self.stack or not data.strip():
            return
        if "item" in self.stack[-1]:  # a text mark: its text is its geometry
            self.stack[-1]["item"]["geometry"] += data.strip()
        if self.stack[-1]["tag"] == "text" and any(f.get("axis_labels") for f in self.stack):
            axis = next(f["axis"] for f in reversed(self.stack) if "axis" in f)
            axis.append(data.strip())


def vega_ids(html: str) -> list[str]:
    """The ids of the divs whose script calls vegaEmbed: one per interactive chart."""
    return re.findall(r"vegaEmbed\('#([^']+)'", html)


def drawn_charts(page: Path, profile: Path) -> tuple[list[str], Charts]:
    html = page.read_text(encoding="utf-8")
    # Nothing is loaded from anywhere: no <script src=...> at all, http(s) or other.
    assert not re.search(r"<script[^>]*\ssrc\s*=", html, re.IGNORECASE)
    ids = vega_ids(html)
    parser = Charts(ids)
    parser.feed(render(page, profile))
    return ids, parser


def label_fields(label: str) -> dict[str, str]:
    """'epoch: 0; loss: 1.01; rev: workspace; field: train_loss' -> a dict."""
    return dict(part.split(": ", 1) for part in label.split("; "))


def check_history_chart(chart: dict, revs: int) -> None:
    """Loss above, accuracy below, integer epoch ticks, and a drawn line per field and rev."""
    axes = chart["axes"]
    x_axes = [labels for name, labels in axes if name.startswith("X-axis titled 'epoch'")]
    y_axes = [name for name, _ in axes if name.startswith("Y-axis")]
    y_titles = sorted(re.match(r"Y-axis titled '(\w+)'", name)[1] for name in y_axes)
    assert y_titles == ["accuracy", "loss"], axes
    assert len(x_axes) == 2 and all(labels == ["0", "1"] for labels in x_axes), x_axes
    lines = [m for m in chart["marks"] if m["kind"] == "line"]
    assert len(lines) == len(HISTORY_LINES) * revs, lines
    drawn = set()
    for line in lines:
        fields = label_fields(line["label"])
        y_title = "loss" if "loss" in fields else "accuracy"
        drawn.add((y_title, fields["field"]))
        # Two epochs: a move to the first point and a segment to the second.
        assert re.fullmatch(r"M[-\d.e,]+L[-\d.e,]+", line["geometry"]), line
    assert drawn == HISTORY_LINES


def check_confusion_chart(chart: dict, counts: Path, revs: int) -> None:
    """Per rev, a drawn cell for each (actual, predicted) pair of the counts file (its hover
    layer draws the same cells again, hidden until hovered); the true label runs down the
    y axis, as in plots/confusion/<model>.png."""
    y_titles = [name for name, _ in chart["axes"] if name.startswith("Y-axis")]
    assert y_titles and all(name.startswith("Y-axis titled 'actual'") for name in y_titles)
    with counts.open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 100 and sum(int(r["count"]) for r in rows) > 0
    actual, predicted = {r["actual"] for r in rows}, {r["predicted"] for r in rows}
    grid = {(a, p) for a in actual for p in predicted}
    rects = [m for m in chart["marks"] if m["kind"] == "rect" and m["visible"]]
    cells = [(f["actual"], f["predicted"]) for f in map(label_fields, (r["label"] for r in rects))]
    assert len(cells) == revs * len(grid) and set(cells) == grid, cells
    assert all(RECT.fullmatch(r["geometry"]) for r in rects), rects


def check_page(project: Path, page: Path, profile: Path, revs: int) -> int:
    ids, parser = drawn_charts(page, profile)
    charts = parser.charts
    expected = [f"plots_history_{m}_tsv" for m in MODELS]
    expected += [f"plots_confusion_counts_{m}_csv" for m in MODELS]
    assert sorted(ids) == sorted(expected)
    # Every vega div holds exactly one drawn chart: as many charts as divs.
    assert sorted(charts) == sorted(ids)
    assert all(chart["svgs"] == 1 for chart in charts.values()), charts
    for model in MODELS:
        check_history_chart(charts[f"plots_history_{model}_tsv"], revs)
        csv_path = project / "plots" / "confusion_counts" / f"{model}.csv"  # the same in HEAD
        check_confusion_chart(charts[f"plots_confusion_counts_{model}_csv"], csv_path, revs)
    # The embedded PNGs keep their place: each <img> is a file beside the page.
    # curves, digits, and a confusion and a misclassified PNG per model; per rev
    assert len(parser.images) == revs * (2 + 2 * len(MODELS))
    assert all((page.parent / src).is_file() for src in parser.images), parser.images
    return len(charts)


def test_plots_show_draws_every_chart_with_no_network(project, tmp_path):
    # The user's own -o: the template comes from .dvc/config, wherever the page goes.
    dvc(project, "plots", "show", "-o", str(tmp_path / "my plots"))
    drawn = check_page(project, tmp_path / "my plots" / "index.html", tmp_path / "profile", 1)
    assert drawn == 2 * len(MODELS)


def test_plots_diff_draws_every_chart_with_no_network(project, tmp_path):
    dvc(project, "plots", "diff", "HEAD", "-o", str(tmp_path / "diff"))
    check_page(project, tmp_path / "diff" / "index.html", tmp_path / "profile", revs=2)


def test_dvcs_own_page_stays_blank_in_that_browser(project, tmp_path):
    """The check above can fail: DVC's default page, which loads vega from a CDN, draws
    nothing in the same browser, so that browser has no network."""
    from dvc_render.html import PAGE_HTML

    template = tmp_path / "cdn.html"
    template.write_text(PAGE_HTML)
    out = tmp_path / "cdn"
    dvc(project, "plots", "show", "--html-template", str(template), "-o", str(out))
    html = (out / "index.html").read_text(encoding="utf-8")
    assert re.search(r'<script src="https://', html)
    parser = Charts(vega_ids(html))
    parser.feed(render(out / "index.html", tmp_path / "profile"))
    assert len(parser.charts) == 2 * len(MODELS)
    assert all(chart["svgs"] == 0 and not chart["marks"] for chart in parser.charts.values())
