"""OUTPUT/index.html: HTML checks on a real (random-weight) run and on hand-made reports, and the page
loaded from disk in headless Chromium (skipped when no Chromium is installed; CI installs it)."""
import html
import html.parser
import json
import os
import pathlib
import shutil
import subprocess
import tempfile
import urllib.parse

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from PIL import Image

from pipeline import app
from pipeline.reporting.contact_sheet import render_contact_sheet, write_contact_sheet
from pipeline.reporting.schema import REPORT_SCHEMA, read_report, report_row
from tests.conftest import SAMPLES, communicate_or_fail, small_png

CONTENTS = ("astronaut.png", "coffee.png")
STYLES = ("pop_art.png", "stained_glass.png")


# ------------------------------------------------------------------------------------------ helpers


class Page(html.parser.HTMLParser):
    """The elements of a page as (tag, attrs, text) with classes split, enough for counting."""

    def __init__(self, text):
        super().__init__(convert_charrefs=True)
        self.elements = []
        self._open = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        element = dict(tag=tag, attrs=attrs, classes=set((attrs.get("class") or "").split()), text="")
        self.elements.append(element)
        if tag not in ("img", "meta", "br", "input", "link", "line", "rect", "circle"):
            self._open.append(element)

    def handle_endtag(self, tag):
        for i in range(len(self._open) - 1, -1, -1):
            if self._open[i]["tag"] == tag:
                del self._open[i:]
                break

    def handle_data(self, data):
        for element in self._open:
            element["text"] += data

    def find(self, tag=None, cls=None, **attrs):
        return [
            e for e in self.elements
            if (tag is None or e["tag"] == tag) and (cls is None or cls in e["classes"])
            and all(e["attrs"].get(k) == v for k, v in attrs.items())
        ]


def write_report(output: pathlib.Path, rows):
    table = pa.Table.from_pylist(rows, schema=REPORT_SCHEMA)
    (output / "report").mkdir(parents=True, exist_ok=True)
    pq.write_table(table, output / "report" / "part-00000-of-00001.parquet")
    return str(output)


def shrink(source: pathlib.Path, target: pathlib.Path, size: int):
    with Image.open(source) as image:
        image.convert("RGB").resize((size, size * image.height // image.width)).save(target)


@pytest.fixture(scope="module")
def run_output(tmp_path_factory):
    """A real run: 2 contents (+1 broken file) x 2 styles, both methods, random weights, tiny sizes."""
    root = tmp_path_factory.mktemp("sheet")
    (root / "content").mkdir()
    (root / "style").mkdir()
    for name in CONTENTS:
        shrink(SAMPLES / "content" / name, root / "content" / name, 96)
    (root / "content" / "broken.png").write_bytes(b"not an image")
    for name in STYLES:
        shrink(SAMPLES / "style" / name, root / "style" / name, 64)
    output = root / "out"
    argv = [
        "--content", str(root / "content"), "--style", str(root / "style"), "--output", str(output),
        "--method", "both", "--weights", "random", "--steps", "2", "--max_dim", "32", "--run_id", "sheet",
        "--loss-every", "0",  # no curves from the run: the curve tests bring their own
    ]
    app.run(argv, test_pipeline=TestPipeline())
    return output


# ------------------------------------------------------------------------------------ on a real run


@pytest.mark.slow
def test_grid_has_a_cell_per_unit_and_the_failures_table(run_output):
    rows = read_report(str(run_output)).to_pylist()
    assert len(rows) == 3 + 3 * 2  # classical per content, nst per pair; "broken" fails all three
    uri = write_contact_sheet(str(run_output))
    assert uri == f"{run_output}/index.html"
    assert not [p for p in os.listdir(run_output) if p.endswith(".tmp")]
    page = Page((run_output / "index.html").read_text("utf-8"))

    grid = page.find("table", id="grid")[0]
    assert (grid["attrs"]["data-rows"], grid["attrs"]["data-columns"]) == ("3", "3")
    assert grid["attrs"]["data-units"] == str(len(rows))
    assert len(page.find("td", cls="cell")) == 3 * 3
    units = page.find("div", cls="unit")
    assert len(units) == len(rows)
    assert sorted(u["attrs"]["data-status"] for u in units) == sorted(r["status"] for r in rows)
    assert [c["attrs"]["data-style-id"] for c in page.find("th", cls="col") if "data-style-id" in c["attrs"]] == [
        "pop_art", "stained_glass",
    ]
    assert [r["attrs"]["data-content-id"] for r in page.find("tr") if "data-content-id" in r["attrs"]] == [
        "astronaut", "broken", "coffee",
    ]

    errors = page.find("tr", cls="error-row")
    assert len(errors) == 3
    assert all("broken" in e["text"] and "decode_error" in e["text"] for e in errors)

    # Images: 2 content + 2 style headers and 6 results; the broken source, which the run refused, is not
    # read again: its placeholder shows the refusal.
    images = page.find("img")
    assert len(images) == 2 + 2 + 6
    assert all(i["attrs"]["src"].startswith("data:image/jpeg;base64,") for i in images)
    headers = {m["attrs"]["title"].split(":")[0]: m["text"] for m in page.find("div", cls="hthumb") if "title" in m["attrs"]}
    assert headers == {str(run_output.parent / "content" / "broken.png"): "decode_error"}
    assert page.find("svg") and len(page.find("circle", cls="point")) == 6
    assert page.find("p", id="no-curves")


def test_no_external_references_and_links_are_relative(run_output):
    text = render_contact_sheet(str(run_output))
    page = Page(text)
    assert not page.find("script") and not page.find("link") and not page.find("iframe")
    assert "http://" not in text and "https://" not in text and "url(" not in text
    links = [a["attrs"]["href"] for a in page.find("a")]
    assert len(links) == 6  # one per result image
    for href in links:
        assert not urllib.parse.urlsplit(href).scheme and not href.startswith("/")
        assert (run_output / urllib.parse.unquote(href)).is_file()


def test_a_moved_output_folder_still_shows_its_images(run_output, tmp_path):
    moved = tmp_path / "moved"
    shutil.copytree(run_output, moved)
    # The report names the old folder; hide it so only the copy can provide the images.
    hidden = run_output.with_name("hidden-out")
    run_output.rename(hidden)
    try:
        page = Page(render_contact_sheet(str(moved)))
    finally:
        hidden.rename(run_output)
    assert len(page.find("img")) == 2 + 2 + 6
    assert all((moved / urllib.parse.unquote(a["attrs"]["href"])).is_file() for a in page.find("a"))


def test_loss_curves_from_the_curves_folder(run_output, tmp_path):
    output = tmp_path / "out"
    shutil.copytree(run_output, output)
    (output / "curves").mkdir(exist_ok=True)
    with open(output / "curves" / "curves-00000-of-00001.jsonl", "w") as handle:
        for content in ("astronaut", "coffee"):
            for style in ("pop_art", "stained_glass"):
                losses = [1000.0 / (1 + i) for i in range(11)]
                handle.write(json.dumps(dict(content_id=content, style_id=style, step_every=5, losses=losses)) + "\n")
        handle.write("not json\n")  # skipped with a warning, not fatal
    page = Page(render_contact_sheet(str(output)))
    curves = page.find("polyline", cls="curve")
    assert len(curves) == 4
    assert "astronaut × pop_art: 1k → 90.9" in curves[0]["text"]
    assert not page.find("p", id="no-curves")


# ------------------------------------------------------------------------------- hand-made reports


def test_everything_from_the_report_is_escaped(tmp_path):
    evil = '<script>alert("x")</script>'
    attr = '"><img src=x onerror=alert(1)>'
    rows = [
        report_row(run_id=evil, content_id=evil, content_uri=str(tmp_path / "missing.png"), style_id=attr,
                   style_uri="javascript:alert(1)", method="nst", status="error", error_type="<b>bad</b>",
                   error=f"{evil} & {attr}"),
        report_row(run_id="r", content_id=evil, content_uri="x", method="classical", status="ok",
                   output_uri="javascript:alert(1)", seconds_total=1.0, height=2, width=2),
    ]
    text = render_contact_sheet(write_report(tmp_path, rows))
    page = Page(text)
    assert "<script" not in text and "<b>" not in text
    assert not page.find("script") and not page.find("img") and not page.find("b")
    assert all("onerror" not in e["attrs"] for e in page.elements)
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in text
    assert [r["attrs"]["data-content-id"] for r in page.find("tr") if "data-content-id" in r["attrs"]] == [evil]
    assert page.find("th", cls="col")[1]["attrs"]["data-style-id"] == attr
    assert html.unescape(page.find("td", cls="error-msg")[0]["text"]) == f"{evil} & {attr}"
    assert not [a for a in page.find("a") if "javascript" in a["attrs"]["href"].lower()]


def test_missing_images_become_placeholders(tmp_path):
    (tmp_path / "content").mkdir()
    (tmp_path / "content" / "a.png").write_bytes(small_png(1))
    rows = [
        report_row(content_id="a", content_uri=str(tmp_path / "content" / "a.png"), method="classical",
                   status="ok", output_uri=str(tmp_path / "images" / "classical" / "a.png"), seconds_total=0.5,
                   height=40, width=56),
        report_row(content_id="gone", content_uri=str(tmp_path / "content" / "gone.png"), method="classical",
                   status="ok", output_uri=str(tmp_path / "images" / "classical" / "gone.png"), seconds_total=0.5,
                   height=40, width=56),
    ]
    page = Page(render_contact_sheet(write_report(tmp_path, rows)))
    assert len(page.find("img")) == 1  # only a's source; both results were deleted
    missing = [m["text"].strip() for m in page.find("div", cls="missing")]
    assert missing.count("image missing") == 3
    assert len(page.find("div", cls="unit")) == 2 and page.find("p", id="no-errors")


def test_an_empty_report_still_makes_a_page(tmp_path):
    page = Page(render_contact_sheet(write_report(tmp_path, [])))
    assert not page.find("table", id="grid") and page.find("p", id="no-curves")


# ---------------------------------------------------------------------------------------- browser


def find_chromium():
    for name in (os.environ.get("TOONBEAM_CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


CHROMIUM = find_chromium()

#: Appended to a copy of the page: after `load`, records what the browser made of every image.
PROBE = """
<pre id="probe-result"></pre>
<script>
window.addEventListener("load", () => {
  const images = Array.from(document.images);
  const result = {
    images: images.length,
    broken: images.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.alt),
    units: document.querySelectorAll("#grid .unit").length,
    cells: document.querySelectorAll("#grid td.cell").length,
    errorRows: document.querySelectorAll("#error-table tr.error-row").length,
    resources: performance.getEntriesByType("resource").map(r => r.name).filter(n => !n.startsWith("data:")),
  };
  document.getElementById("probe-result").textContent = JSON.stringify(result);
});
</script>
"""


def chromium(*args, timeout=120):
    """Runs headless Chromium with a fresh profile; returns stdout. The whole process group is killed
    on timeout (Chromium starts helper processes)."""
    with tempfile.TemporaryDirectory(prefix="toonbeam-chromium-") as profile:
        command = [
            CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--disable-dev-shm-usage", "--hide-scrollbars", f"--user-data-dir={profile}", *args,
        ]
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                   start_new_session=True)
        stdout, stderr = communicate_or_fail(process, timeout, "chromium")
    assert process.returncode == 0, f"chromium failed ({process.returncode}): {stderr[-2000:]}"
    return stdout


@pytest.mark.skipif(
    CHROMIUM is None,
    reason="no chromium on PATH (CI installs Debian's chromium; locally: apt-get install -y chromium, "
    "or set TOONBEAM_CHROMIUM)",
)
def test_page_loads_in_headless_chromium(run_output, tmp_path):
    rows = read_report(str(run_output)).to_pylist()
    index = pathlib.Path(write_contact_sheet(str(run_output)))
    probe = index.with_name("_probe.html")  # beside index.html, so relative links resolve the same
    probe.write_text(index.read_text("utf-8").replace("</body>", PROBE + "</body>"), "utf-8")
    try:
        dom = chromium("--virtual-time-budget=10000", "--dump-dom", probe.as_uri())
    finally:
        probe.unlink()
    start = dom.index('<pre id="probe-result">') + len('<pre id="probe-result">')
    result = json.loads(html.unescape(dom[start : dom.index("</pre>", start)]))
    assert result["images"] == 2 + 2 + 6 and result["broken"] == []
    assert result["units"] == len(rows) and result["cells"] == 3 * 3
    assert result["errorRows"] == sum(r["status"] == "error" for r in rows) == 3
    assert result["resources"] == [], "the page loads nothing besides itself"

    screenshot = tmp_path / "contact_sheet.png"
    chromium("--window-size=1280,1600", f"--screenshot={screenshot}", index.as_uri())
    with Image.open(screenshot) as shot:
        assert shot.size == (1280, 1600)
        low, high = shot.convert("L").getextrema()
        assert high - low > 100, "not a blank page"
    print(f"contact sheet screenshot: {screenshot}")
