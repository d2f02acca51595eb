"""`toonbeam report OUTPUT`: the text summary of a report built from rows."""
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.reporting.schema import REPORT_SCHEMA, report_row
from pipeline.reporting.summary import format_summary, summarize


def write_report(output, rows):
    folder = output / "report"
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=REPORT_SCHEMA), folder / "part-00000-of-00001.parquet")
    return str(output)


def ok(method, content, seconds, style=None, size=(64, 48)):
    return report_row(
        run_id="r1", content_id=content, style_id=style, method=method, status="ok",
        seconds_total=seconds, height=size[1], width=size[0],
    )


def error(method, content, error_type, message, style=None, seconds=None):
    return report_row(
        run_id="r1", content_id=content, style_id=style, method=method, status="error",
        error_type=error_type, error=message, seconds_total=seconds,
    )


ROWS = [
    *(ok("classical", f"c{i}", float(i)) for i in range(1, 6)),  # 1..5 s
    ok("nst", "c1", 10.0, "s1", size=(512, 384)),
    ok("nst", "c2", 20.0, "s1"),
    error("nst", "c3", "decode_error", "cannot decode c3.png", "s1", seconds=30.0),  # slowest, yet an error
    error("classical", "bad", "decode_error", "cannot decode bad.png"),
    error("nst", "bad", "non_finite_loss", "loss became nan for bad x s1", "s1"),
]


def section(text, title):
    """The lines of one titled section (up to the next blank line)."""
    lines = text.splitlines()
    start = lines.index(title) + 1
    end = lines.index("", start) if "" in lines[start:] else len(lines)
    return lines[start:end]


def test_counts_percentiles_slowest_and_errors(tmp_path):
    text = summarize(write_report(tmp_path, ROWS))
    assert text.startswith(f"Toonbeam report {tmp_path}  (run r1)")

    status = section(text, "Units by status")
    assert status[2].split() == ["ok", "7"] and status[3].split() == ["error", "3"]
    assert status[4].split() == ["total", "10"]

    methods = section(text, "Seconds per unit by method (ok units)")
    assert methods[0].split() == ["method", "units", "ok", "error", "p50", "s", "p95", "s", "max", "s", "sum", "s"]
    # Percentiles over ok units only: classical 1..5 s, nst 10 and 20 s (the 30 s error is left out).
    assert methods[2].split() == ["classical", "6", "5", "1", "3.000", "4.800", "5.000", "15.0"]
    assert methods[3].split() == ["nst", "4", "2", "2", "15.0", "19.5", "20.0", "30.0"]
    assert len({len(line) for line in methods}) == 1, "right-aligned numbers line up"

    slowest = section(text, "Slowest 5 units")
    assert [line.split()[:5] for line in slowest[2:]] == [
        ["30.0", "nst", "c3", "s1", "error"],
        ["20.0", "nst", "c2", "s1", "ok"],
        ["10.0", "nst", "c1", "s1", "ok"],
        ["5.000", "classical", "c5", "-", "ok"],
        ["4.000", "classical", "c4", "-", "ok"],
    ]
    assert slowest[4].split()[-1] == "512x384"

    errors = section(text, "Errors by type")
    assert errors[2].split()[:2] == ["decode_error", "2"] and "cannot decode" in errors[2]
    assert errors[3].split()[:2] == ["non_finite_loss", "1"]


def test_no_errors_and_empty_reports(tmp_path):
    text = format_summary([ok("classical", "a", 0.5)], "out")
    assert "No errors." in text and "Errors by type" not in text
    assert "no units in the report" in summarize(write_report(tmp_path, []))


def test_missing_report_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        summarize(str(tmp_path / "nothing-here"))


def test_ids_cannot_inject_terminal_escapes_or_lines():
    evil = "x\x1b[2J\x1b[31mred\nfake line\r"
    text = format_summary([ok("nst", evil, 1.0, style="s" * 300), error("nst", evil, "decode_error", evil + "!", "s")])
    assert "\x1b" not in text and "\r" not in text
    assert "fake line" not in [line.strip() for line in text.splitlines()]
    assert max(len(line) for line in text.splitlines()) < 200, "long values are cut"
    assert "…" in text
