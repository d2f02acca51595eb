"""OUTPUT/index.html: a self-contained contact sheet of a run, built from its Parquet report.

One HTML file that works offline, opened from disk or served with the folder:

* the content x style grid: content images as row headers, the classical result beside each, one
  column per style (style images as column headers), each cell with its seconds and final loss and a
  relative link to the full image under OUTPUT/images/;
* the failed units with their errors;
* seconds per unit against image size, by method, and the NST loss curves (when recorded).

Thumbnails are small JPEG data URIs made with Pillow, so the page has no external references at all
(and source images on gs:// or http(s):// still show when the page is opened offline). The page reads
only what the run itself accepted or wrote: the sources of units that ended ok or skipped, and the ok
units' images, each under the run's read policy and pixel limit (kept in its run record; the defaults
without one), never looser than the reader's defaults: the record may only tighten them. A source the
run refused shows the refusal, never the image. Plots are
inline SVG computed here and drawn by the Jinja2 template: no plotting dependency on the Dataflow
workers, which install this package too. Everything from the report is escaped by Jinja2 autoescape.

Loss curves come from OUTPUT/curves/*.jsonl, one JSON object a line: {"content_id": str,
"style_id": str, "step_every": int, "losses": [float, ...]}, where losses[i] is the total loss at
optimisation step i * step_every (losses[0]: before the first step).
"""
from __future__ import annotations

import base64
import concurrent.futures
import dataclasses
import datetime
import io
import json
import logging
import math
import re
import urllib.parse

import fsspec
import jinja2
from PIL import Image, ImageOps

from pipeline.errors import classify
from pipeline.io import run_folder, storage
from pipeline.reporting import summary
from pipeline.reporting.schema import read_report
from transforms.images import DEFAULT_MAX_INPUT_PIXELS, check_pixel_count

LOG = logging.getLogger(__name__)

#: Longest side of a thumbnail, in pixels (shown at up to 128 CSS px; the rest is for dense screens).
THUMB_PX = 176
THUMB_QUALITY = 80
#: Content rows drawn in the grid; a larger run says how many were left out (the report has them all).
MAX_GRID_ROWS = 300
MAX_ERROR_ROWS = 1000
MAX_SCATTER_POINTS = 5000
MAX_CURVES = 80
#: Parallel thumbnail reads (object stores are latency-bound; decoding releases the GIL).
THUMB_THREADS = 8

#: Method colours (colour-blind safe, Okabe-Ito); other methods and styles cycle through PALETTE.
METHOD_COLOURS = {"classical": "#0072B2", "nst": "#D55E00", "feedforward": "#009E73", "feedforward_train": "#CC79A7"}
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442")

CURVES_GLOB = "curves/*.jsonl"


# --------------------------------------------------------------------------------------------- API


def write_contact_sheet(output: str, rows: list[dict] | None = None) -> str:
    """Write OUTPUT/index.html (atomically when local) of the report `rows` (default: read from OUTPUT)
    and return its URI; OutputError rather than replace an index.html that Toonbeam did not write."""
    run_folder.check_replaceable(output, run_folder.CONTACT_SHEET)
    html = render_contact_sheet(output, rows)
    uri = storage.join_uri(output, run_folder.CONTACT_SHEET)
    storage.write_atomic(uri, html.encode("utf-8"))
    return uri


def render_contact_sheet(output: str, rows: list[dict] | None = None, *, loss_curves: list[dict] | None = None) -> str:
    """The page's HTML for the run in OUTPUT. `rows` and `loss_curves` override what is read from OUTPUT."""
    if rows is None:
        rows = read_report(output).to_pylist()
    if loss_curves is None:
        loss_curves = read_loss_curves(output)
    policy, max_pixels = run_folder.read_limits(output)
    return _template().render(**sheet_model(output, rows, loss_curves, policy, max_pixels))


# ------------------------------------------------------------------------------------------- model


@dataclasses.dataclass
class Thumb:
    src: str | None  # data URI, or None when the image could not be read
    problem: str = ""  # why there is no image, in two or three words
    detail: str = ""  # and in full (a tooltip)


@dataclasses.dataclass
class Unit:
    status: str
    method: str
    content_id: str
    style_id: str | None
    thumb: Thumb | None
    href: str | None
    seconds: str
    loss: str | None
    size: str
    error_type: str | None
    error: str | None


@dataclasses.dataclass
class Column:
    method: str
    style_id: str | None
    label: str
    thumb: Thumb | None
    href: str | None


@dataclasses.dataclass
class GridRow:
    content_id: str
    thumb: Thumb
    href: str | None
    cells: list  # list[list[Unit]], one list per column


def sheet_model(
    output: str, rows: list[dict], loss_curves: list[dict], policy: storage.ReadPolicy = storage.ReadPolicy(),
    max_pixels: int = DEFAULT_MAX_INPUT_PIXELS,
) -> dict:
    """Everything the template needs, as plain values (no I/O besides reading the thumbnails, within
    `policy` and `max_pixels`: the run's)."""
    output = output.rstrip("/")
    # Units of a style alone (feed-forward training) are not grid cells: they get the models table.
    content_ids = sorted({r["content_id"] for r in rows if r["content_id"] is not None})
    shown_ids = content_ids[:MAX_GRID_ROWS]
    shown = set(shown_ids)
    grid_rows = [r for r in rows if r["content_id"] in shown]

    # Columns: style-less methods first (classical), then one per style (and styled method).
    unstyled = summary.method_order({r["method"] for r in grid_rows if not r["style_id"]})
    styled_methods = summary.method_order({r["method"] for r in grid_rows if r["style_id"]})
    style_uris = {}
    for r in grid_rows:
        if r["style_id"]:
            style_uris.setdefault(r["style_id"], r["style_uri"])
    keys = [(m, None) for m in unstyled] + [(m, s) for s in sorted(style_uris) for m in styled_methods]
    content_uris = {}
    for r in rows:
        content_uris.setdefault(r["content_id"] or "", r["content_uri"])

    # Every image is read once, in parallel: sources the run accepted (headers) and results (cells);
    # a source the run refused shows why instead.
    accepted = {r[key] for r in rows if r["status"] in ("ok", "skipped") for key in ("content_uri", "style_uri")}
    wanted, thumbs = {}, {}
    for uri in [content_uris[cid] for cid in shown_ids] + list(style_uris.values()):
        if uri in accepted:
            wanted[("src", uri)] = uri
        else:
            thumbs[("src", uri)] = _refusal(rows, uri)
    for r in grid_rows:
        if r["status"] == "ok":
            wanted[("out", r["output_uri"])] = _result_read_uri(output, r["output_uri"])
    thumbs.update(_thumbnails(wanted, policy, max_pixels))

    cells = {}
    for r in grid_rows:
        unit = _unit(output, r, thumbs.get(("out", r["output_uri"])))
        cells.setdefault((r["content_id"] or "", r["method"], r["style_id"] or None), []).append(unit)
    columns = []
    for method, style_id in keys:
        if style_id is None:
            columns.append(Column(method, None, method, None, None))
        else:
            label = style_id if len(styled_methods) == 1 else f"{style_id} ({method})"
            uri = style_uris[style_id]
            columns.append(Column(method, style_id, label, thumbs.get(("src", uri)), _source_href(output, uri)))
    grid = [
        GridRow(
            content_id=cid,
            thumb=thumbs.get(("src", content_uris[cid])) or Thumb(None, "no source"),
            href=_source_href(output, content_uris[cid]),
            cells=[cells.get((cid, m, s), []) for m, s in keys],
        )
        for cid in shown_ids
    ]

    errors = [r for r in rows if r["status"] == "error"]
    errors.sort(key=lambda r: (r["content_id"] or "", r["style_id"] or "", r["method"] or ""))
    run_ids = sorted({r["run_id"] for r in rows if r["run_id"]})
    return dict(
        output=output,
        run_ids=run_ids,
        generated=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        unit_count=len(rows),
        status_counts=summary.status_counts(rows),
        method_stats=summary.method_stats(rows),
        format_seconds=summary.format_seconds,
        columns=columns,
        grid=grid,
        grid_units=len(grid_rows),
        content_count=len(content_ids),
        errors=errors[:MAX_ERROR_ROWS],
        error_count=len(errors),
        errors_by_type=summary.errors_by_type(rows),
        scatter=scatter_plot(rows),
        curves=curves_plot(loss_curves),
        models=[_model(output, r) for r in sorted(rows, key=lambda r: r["style_id"] or "") if r["content_id"] is None],
    )


def _format_panel(value) -> str:
    return f"{value:.2f}" if isinstance(value, (int, float)) else "-"


def _model(output: str, r: dict) -> dict:
    """A row of the models table: a style's feed-forward training unit."""
    return dict(
        style_id=r["style_id"], status=r["status"] or "unknown", seconds=summary.format_seconds(r["seconds_total"]),
        loss=_format_number(r["loss_total"]) if isinstance(r["loss_total"], (int, float)) else "-",
        ssim=_format_panel(r["ssim"]), dependence=_format_panel(r["photo_dependence"]),
        faces="-" if r["faces_photo"] is None else f"{r['faces_kept']}/{r['faces_photo']}",
        name=(r["model_uri"] or "").rsplit("/", 1)[-1], href=_source_href(output, r["model_uri"]),
        error=r["error"] or "",
    )


def _unit(output: str, r: dict, thumb: Thumb | None) -> Unit:
    loss = r["loss_total"]
    return Unit(
        status=r["status"] or "unknown",
        method=r["method"] or "",
        content_id=r["content_id"] or "",
        style_id=r["style_id"],
        thumb=thumb if r["status"] == "ok" else None,
        href=_result_href(output, r["output_uri"]) if r["status"] == "ok" else None,
        seconds=summary.format_seconds(r["seconds_total"]),
        loss=_format_number(loss) if isinstance(loss, (int, float)) else None,
        size=summary.size_text(r),
        error_type=r["error_type"],
        error=r["error"],
    )


# -------------------------------------------------------------------------------- links and thumbs


def _relative_result(output: str, uri: str | None) -> str | None:
    """The result's path inside OUTPUT ("images/nst/<style>/<content>.png"), or None.

    The pipeline names every result OUTPUT/images/<method>/... (sanitised ids, without "/"), so the
    tail from the last "/images/<method>/" is its place in the folder, wherever the folder was when
    the run wrote it: a moved or copied output folder keeps working.
    """
    if not uri:
        return None
    if uri.startswith(output + "/"):
        return uri[len(output) + 1 :]
    match = _RESULT_TAIL.match(uri)
    return match.group(1) if match else None


_RESULT_TAIL = re.compile(r"^(?:.*/)?(images/[a-z_]+/.+)$")


def _result_read_uri(output: str, uri: str | None) -> str | None:
    """Where to read a result now: inside OUTPUT if it is there, else where the report says."""
    relative = _relative_result(output, uri)
    if relative:
        here = storage.join_uri(output, relative)
        try:
            fs, path = fsspec.core.url_to_fs(here)
            if fs.exists(path):
                return here
        except Exception:  # noqa: BLE001 - fall back to the recorded URI
            pass
    return uri


def _result_href(output: str, uri: str | None) -> str | None:
    relative = _relative_result(output, uri)
    if relative:
        return urllib.parse.quote(relative)
    return _source_href(output, uri)


def _source_href(output: str, uri: str | None) -> str | None:
    """A link to a source image: relative when inside OUTPUT, http(s) as is, else none (a gs:// or
    absolute local path would not follow the folder)."""
    if not uri:
        return None
    if uri.startswith(output + "/"):
        return urllib.parse.quote(uri[len(output) + 1 :])
    scheme = urllib.parse.urlsplit(uri).scheme.lower()
    if scheme in ("http", "https"):
        return uri
    return None


def thumbnail(data: bytes, size: int = THUMB_PX, max_pixels: int = DEFAULT_MAX_INPUT_PIXELS) -> str:
    """A JPEG data URI of the image, at most `size` pixels on its longest side (ImageTooLarge, before
    decoding, when its header claims more than `max_pixels`)."""
    with Image.open(io.BytesIO(data)) as image:
        check_pixel_count(image, max_pixels)
        image.draft("RGB", (size, size))  # JPEG: decode at a reduced scale
        image = ImageOps.exif_transpose(image)
        if image.mode in ("RGBA", "LA", "P", "PA"):
            image = image.convert("RGBA")
            background = Image.new("RGBA", image.size, (255, 255, 255, 255))
            image = Image.alpha_composite(background, image)
        image = image.convert("RGB")
        image.thumbnail((size, size), Image.Resampling.LANCZOS)
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=THUMB_QUALITY, optimize=True)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _refusal(rows: list[dict], uri: str | None) -> Thumb:
    """The placeholder of a source that no unit accepted: the refusal of its first error row."""
    if not uri:
        return Thumb(None, "no image")
    failed = [r for r in rows if r["status"] == "error" and uri in (r["content_uri"], r["style_uri"])]
    first = min(failed, key=lambda r: (r["content_id"] or "", r["style_id"] or ""), default=None)
    if first is None:
        return Thumb(None, "not read", f"{uri}: no unit of the run accepted it")
    return Thumb(None, first["error_type"] or "error", first["error"] or "")


def _read_thumb(uri: str | None, policy: storage.ReadPolicy, max_pixels: int) -> Thumb:
    if not uri:
        return Thumb(None, "no image")
    try:
        return Thumb(thumbnail(storage.read_bytes(uri, policy), max_pixels=max_pixels))
    except FileNotFoundError:
        return Thumb(None, "image missing", uri)
    except Exception as exc:  # noqa: BLE001 - a page with a gap beats no page
        error_type, message = classify(exc)
        return Thumb(None, error_type, f"{uri}: {message}")


def _thumbnails(wanted: dict, policy: storage.ReadPolicy, max_pixels: int) -> dict:
    if not wanted:
        return {}
    with concurrent.futures.ThreadPoolExecutor(min(THUMB_THREADS, len(wanted))) as pool:
        futures = {key: pool.submit(_read_thumb, uri, policy, max_pixels) for key, uri in wanted.items()}
        return {key: future.result() for key, future in futures.items()}


# ------------------------------------------------------------------------------------ loss curves


def read_loss_curves(output: str) -> list[dict]:
    """Loss curves of NST units, {content_id, style_id, step_every, losses}, from OUTPUT/curves/*.jsonl
    (one per pair; a later record wins)."""
    curves = {(record["content_id"], record["style_id"]): record for record in _curve_records(output)}
    return [curves[k] for k in sorted(curves, key=lambda k: (k[0] or "", k[1] or ""))]


def _curve_records(output: str) -> list[dict]:
    fs, root = fsspec.core.url_to_fs(output)
    try:
        paths = sorted(fs.glob(f"{root}/{CURVES_GLOB}"))
    except Exception as exc:  # noqa: BLE001
        LOG.warning("cannot list loss curves in %s: %s", output, exc)
        return []
    records = []
    for path in paths:
        with fs.open(path, "rt", encoding="utf-8") as handle:
            for number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                    losses = [float(v) for v in record["losses"]]
                    records.append(
                        dict(
                            content_id=str(record["content_id"]), style_id=str(record["style_id"]),
                            step_every=max(1, int(record.get("step_every", 1))), losses=losses,
                        )
                    )
                except (ValueError, KeyError, TypeError) as exc:
                    LOG.warning("%s:%d: skipped loss curve record: %s", path, number, exc)
    return records


# ------------------------------------------------------------------------------------------- plots

PLOT_W, PLOT_H = 560, 320
MARGIN = dict(left=64, right=16, top=16, bottom=44)


@dataclasses.dataclass
class Axis:
    lo: float
    hi: float
    log: bool
    ticks: list

    def scale(self, value: float, start: float, end: float) -> float:
        if self.log:
            a, b, v = math.log10(self.lo), math.log10(self.hi), math.log10(value)
        else:
            a, b, v = self.lo, self.hi, value
        return start + (end - start) * ((v - a) / (b - a) if b > a else 0.5)


def _log_axis(values: list[float]) -> Axis:
    low, high = min(values), max(values)
    a, b = math.floor(math.log10(low)), math.ceil(math.log10(high))
    if b <= a:
        b = a + 1
    ticks = [10.0**e for e in range(a, b + 1)]
    if b - a <= 2:  # a decade or two: add the 2s and 5s
        ticks = sorted(ticks + [m * 10.0**e for e in range(a, b) for m in (2, 5)])
    return Axis(10.0**a, 10.0**b, True, ticks)


def _linear_axis(values: list[float]) -> Axis:
    low, high = min(values), max(values)
    if high <= low:
        high = low + 1
    raw = (high - low) / 5
    step = 10 ** math.floor(math.log10(raw))
    step *= next(m for m in (1, 2, 5, 10) if raw <= m * step)
    lo, hi = math.floor(low / step) * step, math.ceil(high / step) * step
    ticks = [lo + i * step for i in range(int(round((hi - lo) / step)) + 1)]
    return Axis(lo, hi, False, ticks)


def _format_number(value: float) -> str:
    if value == 0 or not math.isfinite(value):
        return f"{value:g}"
    magnitude = abs(value)
    for limit, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if magnitude >= limit:
            return f"{value / limit:.3g}{suffix}"
    return f"{value:.3g}"


def _frame(x: Axis, y: Axis, x_label: str, y_label: str) -> dict:
    left, right = MARGIN["left"], PLOT_W - MARGIN["right"]
    top, bottom = MARGIN["top"], PLOT_H - MARGIN["bottom"]
    return dict(
        width=PLOT_W, height=PLOT_H, left=left, right=right, top=top, bottom=bottom,
        x_ticks=[(round(x.scale(t, left, right), 1), _format_number(t)) for t in x.ticks],
        y_ticks=[(round(y.scale(t, bottom, top), 1), _format_number(t)) for t in y.ticks],
        x_label=x_label, y_label=y_label,
    )


def scatter_plot(rows: list[dict]) -> dict | None:
    """Seconds per ok unit against its pixels, one colour per method (log-log)."""
    points = [
        r for r in rows
        if r["status"] == "ok" and r["height"] and r["width"]
        and isinstance(r["seconds_total"], (int, float)) and r["seconds_total"] > 0
    ]
    if not points:
        return None
    if len(points) > MAX_SCATTER_POINTS:  # an even, deterministic sample
        points = points[:: math.ceil(len(points) / MAX_SCATTER_POINTS)]
    x = _log_axis([r["height"] * r["width"] for r in points])
    y = _log_axis([r["seconds_total"] for r in points])
    frame = _frame(x, y, "pixels per image (log)", "seconds per unit (log)")
    methods = summary.method_order({r["method"] for r in points})
    colours = {m: METHOD_COLOURS.get(m, PALETTE[i % len(PALETTE)]) for i, m in enumerate(methods)}
    frame["legend"] = [(m or "?", colours[m]) for m in methods]
    frame["lines"] = []
    frame["points"] = [
        dict(
            cx=round(x.scale(r["height"] * r["width"], frame["left"], frame["right"]), 1),
            cy=round(y.scale(r["seconds_total"], frame["bottom"], frame["top"]), 1),
            colour=colours[r["method"]],
            title=f"{r['method']}: {r['content_id']}{' × ' + r['style_id'] if r['style_id'] else ''}, "
            f"{r['width']}x{r['height']}, {summary.format_seconds(r['seconds_total'])} s",
        )
        for r in points
    ]
    return frame


def curves_plot(curves: list[dict]) -> dict | None:
    """Total loss against optimisation step, one line per content x style pair, coloured by style."""
    usable = []
    for c in curves:
        pts = [(i * c["step_every"], v) for i, v in enumerate(c["losses"]) if math.isfinite(v)]
        if len(pts) >= 2:
            usable.append((c, pts))
    if not usable:
        return None
    drawn = usable[:MAX_CURVES]
    xs = [p[0] for _, pts in drawn for p in pts]
    ys = [p[1] for _, pts in drawn for p in pts]
    log_y = min(ys) > 0
    x = _linear_axis(xs)
    y = _log_axis(ys) if log_y else _linear_axis(ys)
    frame = _frame(x, y, "step", "total loss" + (" (log)" if log_y else ""))
    styles = sorted({c["style_id"] for c, _ in drawn})
    colours = {s: PALETTE[i % len(PALETTE)] for i, s in enumerate(styles)}
    frame["legend"] = [(s, colours[s]) for s in styles]
    frame["points"] = []
    frame["lines"] = [
        dict(
            points=" ".join(
                f"{x.scale(sx, frame['left'], frame['right']):.1f},{y.scale(sy, frame['bottom'], frame['top']):.1f}"
                for sx, sy in pts
            ),
            colour=colours[c["style_id"]],
            title=f"{c['content_id']} × {c['style_id']}: {_format_number(pts[0][1])} → {_format_number(pts[-1][1])}",
        )
        for c, pts in drawn
    ]
    frame["count"] = len(usable)
    frame["drawn"] = len(drawn)
    return frame


# ---------------------------------------------------------------------------------------- template


def _template() -> jinja2.Template:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("pipeline.reporting", "templates"),
        autoescape=True,  # every value from the report is untrusted text
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return env.get_template("contact_sheet.html.j2")
