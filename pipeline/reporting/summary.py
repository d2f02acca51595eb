"""`toonbeam report OUTPUT`: the report of a run as plain aligned text tables (no dependency).

The statistics helpers (`method_stats`, `slowest_units`, `errors_by_type`) are shared with the HTML
contact sheet, so both views always agree.
"""
from __future__ import annotations

import collections
import math
import re
from typing import Iterable, Sequence

import numpy as np

from pipeline.reporting.schema import read_report

#: How many of the slowest units the summary lists.
SLOWEST = 5
#: Longest text shown in one table cell; longer values end in "…".
MAX_CELL = 48
#: Methods in this order first (the pipeline's own), any others after them alphabetically.
METHOD_ORDER = ("classical", "nst", "feedforward", "feedforward_train")

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def method_order(methods: Iterable[str | None]) -> list[str | None]:
    present = set(methods)
    known = [m for m in METHOD_ORDER if m in present]
    return known + sorted((m for m in present if m not in METHOD_ORDER), key=lambda m: (m is None, m or ""))


def method_stats(rows: list[dict]) -> list[dict]:
    """Per method: units, ok, error, and p50/p95/max of seconds_total over its *ok* units (error rows
    carry partial timings, so they would pull the percentiles down)."""
    by_method = collections.defaultdict(list)
    for row in rows:
        by_method[row["method"]].append(row)
    stats = []
    for method in method_order(by_method):
        units = by_method[method]
        seconds = [r["seconds_total"] for r in units if r["status"] == "ok" and _is_number(r["seconds_total"])]
        stats.append(
            dict(
                method=method,
                units=len(units),
                ok=sum(r["status"] == "ok" for r in units),
                error=sum(r["status"] == "error" for r in units),
                timed=len(seconds),
                p50=float(np.percentile(seconds, 50)) if seconds else None,
                p95=float(np.percentile(seconds, 95)) if seconds else None,
                max=max(seconds) if seconds else None,
                total=sum(seconds),
            )
        )
    return stats


def slowest_units(rows: list[dict], n: int = SLOWEST) -> list[dict]:
    """The n units with the largest seconds_total, any status (ties broken by ids, for stable output)."""
    timed = [r for r in rows if _is_number(r["seconds_total"])]
    timed.sort(key=lambda r: (-r["seconds_total"], r["method"] or "", r["content_id"] or "", r["style_id"] or ""))
    return timed[:n]


def errors_by_type(rows: list[dict]) -> list[dict]:
    """error_type, count and one example message, most frequent first."""
    groups = collections.defaultdict(list)
    for row in rows:
        if row["status"] == "error":
            groups[row["error_type"] or "unknown"].append(row)
    ordered = sorted(groups.items(), key=lambda item: (-len(item[1]), item[0]))
    return [dict(error_type=t, count=len(g), example=g[0]["error"] or "") for t, g in ordered]


def status_counts(rows: list[dict]) -> list[tuple[str, int]]:
    counts = collections.Counter(r["status"] or "unknown" for r in rows)
    return sorted(counts.items(), key=lambda item: (item[0] != "ok", item[0]))


def format_seconds(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 10:
        return f"{value:.3f}"
    if value < 1000:
        return f"{value:.1f}"
    return f"{value:.0f}"


def size_text(row: dict) -> str:
    if row.get("width") and row.get("height"):
        return f"{row['width']}x{row['height']}"
    return "-"


def clean(value, limit: int = MAX_CELL) -> str:
    """One terminal-safe line: no control characters (no escape sequences, no newlines), at most
    `limit` characters."""
    text = "-" if value is None else _CONTROL.sub(" ", str(value))
    return text if len(text) <= limit else text[: limit - 1] + "…"


def text_table(headers: Sequence[str], rows: Sequence[Sequence], right: Sequence[int] = ()) -> str:
    """Columns padded to their widest cell; columns whose index is in `right` are right-aligned."""
    cells = [[clean(h) for h in headers]] + [[clean(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def line(row):
        parts = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))]
        return "  ".join(parts).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(cells[0]), rule, *(line(r) for r in cells[1:])])


def format_summary(rows: list[dict], output: str = "") -> str:
    """The whole summary of the report rows as text (what `summarize` prints)."""
    run_ids = sorted({r["run_id"] for r in rows if r["run_id"]})
    head = f"Toonbeam report {clean(output, 200)}".rstrip()
    if run_ids:
        head += f"  (run {', '.join(clean(r) for r in run_ids[:3])}{', …' if len(run_ids) > 3 else ''})"
    if not rows:
        return f"{head}\n\nno units in the report\n"
    sections = [head]
    counts = status_counts(rows)
    sections.append(
        "Units by status\n"
        + text_table(["status", "units"], [*counts, ("total", len(rows))], right=(1,))
    )
    stats = method_stats(rows)
    sections.append(
        "Seconds per unit by method (ok units)\n"
        + text_table(
            ["method", "units", "ok", "error", "p50 s", "p95 s", "max s", "sum s"],
            [
                (s["method"], s["units"], s["ok"], s["error"], format_seconds(s["p50"]),
                 format_seconds(s["p95"]), format_seconds(s["max"]), format_seconds(s["total"]))
                for s in stats
            ],
            right=(1, 2, 3, 4, 5, 6, 7),
        )
    )
    slow = slowest_units(rows)
    if slow:
        sections.append(
            f"Slowest {len(slow)} units\n"
            + text_table(
                ["seconds", "method", "content", "style", "status", "size"],
                [
                    (format_seconds(r["seconds_total"]), r["method"], r["content_id"], r["style_id"] or "-",
                     r["status"], size_text(r))
                    for r in slow
                ],
                right=(0,),
            )
        )
    errors = errors_by_type(rows)
    if errors:
        sections.append(
            "Errors by type\n"
            + text_table(
                ["error_type", "units", "example"],
                [(e["error_type"], e["count"], clean(e["example"], 72)) for e in errors],
                right=(1,),
            )
        )
    else:
        sections.append("No errors.")
    return "\n\n".join(sections) + "\n"


def summarize(output: str) -> str:
    """The text summary of the report under OUTPUT/report/ (local or any fsspec URI).

    Raises FileNotFoundError when OUTPUT has no report.
    """
    return format_summary(read_report(output).to_pylist(), output.rstrip("/"))


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)
