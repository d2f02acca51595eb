"""Issue 24 (items 16-18): `toonbeam report` on a folder someone else wrote, attacked: parts that are not
Parquet or have columns of other types, a run record with fields of other types, a part of 20 million
rows in 1.6 MB, and a run record that asks for a looser read policy. Each test failed before its fix."""
import json
import logging
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline import cli
from pipeline.io import run_folder, storage
from pipeline.reporting.schema import REPORT_SCHEMA, report_row
from tests.conftest import small_png
from tests.httpserver import serve
from tests.test_contact_sheet import Page, write_report
from transforms.images import DEFAULT_MAX_INPUT_PIXELS

ROW = dict(run_id="r", method="classical", status="ok", seconds_total=1.0)


def _record(out, **fields) -> None:
    """A run record as a run writes it, with `fields` in place of its own."""
    record = {"tool": "toonbeam", "format": run_folder.RECORD_FORMAT, "run_id": "r",
              "read_policy": {"allowed_schemes": ["file", "http"], "http_allowed_addresses": "private"},
              "max_input_pixels": 100_000_000, **fields}
    (out / run_folder.RUN_RECORD).write_text(json.dumps(record))


def _report(out, capsys, *flags) -> tuple[int, str, str]:
    code = cli.main(["report", str(out), *flags])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err, captured.err
    return code, captured.out, captured.err


# --- 16: parts and run records of the wrong kind --------------------------------------------------------------


def test_a_part_that_is_not_parquet_or_has_other_column_types_is_skipped_with_a_warning(tmp_path, capsys, caplog):
    write_report(tmp_path, [report_row(content_id="good", **ROW)])
    (tmp_path / "report" / "part-00001-of-00003.parquet").write_bytes(b"not parquet at all")
    typed = pa.table({"content_id": ["typed"], "status": ["ok"], "seconds_total": ["slow"]})  # a string, not a double
    pq.write_table(typed, tmp_path / "report" / "part-00002-of-00003.parquet")
    _record(tmp_path)
    with caplog.at_level(logging.WARNING):
        code, out, _ = _report(tmp_path, capsys)
    assert code == 0 and "total       1" in out  # the good part's row is summarised and drawn
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("part-00001-of-00003.parquet" in w for w in warnings)
    assert any("part-00002-of-00003.parquet" in w and "seconds_total is string, not double" in w for w in warnings)
    assert "good" in (tmp_path / "index.html").read_text()


def test_a_run_record_with_fields_of_other_types_is_ignored_field_by_field(tmp_path, capsys, caplog):
    write_report(tmp_path, [report_row(content_id="good", **ROW)])
    _record(tmp_path, read_policy={"allowed_schemes": 5, "max_bytes": "big", "http_timeout": None,
                                   "read_timeout": float("nan"), "http_allowed_addresses": ["any"]},
            max_input_pixels="many")
    with caplog.at_level(logging.WARNING):
        code, _, _ = _report(tmp_path, capsys)
    assert code == 0 and (tmp_path / "index.html").exists()
    warned = " ".join(r.getMessage() for r in caplog.records)
    for field in ("read_policy.allowed_schemes", "read_policy.max_bytes", "read_policy.http_timeout",
                  "read_policy.read_timeout", "read_policy.http_allowed_addresses", "max_input_pixels"):
        assert f"ignored {field}" in warned
    _record(tmp_path, read_policy="any")
    assert _report(tmp_path, capsys)[0] == 0


# --- 17: rows counted before reading ----------------------------------------------------------------------------


def _many_rows(out, rows: int) -> None:
    """A part of `rows` null rows: a few MB of Parquet, gigabytes as Python rows."""
    table = pa.table({"status": pa.nulls(rows, pa.string())})
    (out / "report").mkdir(parents=True, exist_ok=True)
    pq.write_table(table, out / "report" / "part-00000-of-00001.parquet")


def _no_reading(*args, **kwargs):
    raise AssertionError("the rows were read: the footer alone says how many there are")


def test_a_report_over_the_row_limit_is_refused_with_one_line(tmp_path, capsys):
    _many_rows(tmp_path, 5000)
    code, out, err = _report(tmp_path, capsys, "--max-rows", "1000")
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1
    assert "report holds 5000 rows (part-00000-of-00001.parquet: 5000), more than --max-rows 1000" in err
    assert _report(tmp_path, capsys, "--max-rows", "5000", "--no-html")[0] == 0


def test_twenty_million_rows_in_a_small_part_are_refused_from_its_footer(tmp_path, capsys, monkeypatch):
    _many_rows(tmp_path, 20_000_000)
    assert (tmp_path / "report" / "part-00000-of-00001.parquet").stat().st_size < 4 * 2**20
    monkeypatch.setattr(pq.ParquetFile, "read", _no_reading)
    monkeypatch.setattr(pq, "read_table", _no_reading)
    code, _, err = _report(tmp_path, capsys)
    assert code == 2 and "holds 20000000 rows" in err and len(err.strip().splitlines()) == 1


# --- 18: a run record never loosens the reader's policy -----------------------------------------------------------


def test_a_run_record_cannot_loosen_the_readers_policy(tmp_path, capsys):
    with serve(small_png(0)) as (base, hits):
        write_report(tmp_path, [report_row(content_id="c", content_uri=f"{base}/ok.png", **ROW)])
        _record(tmp_path, read_policy={"allowed_schemes": ["file", "http"], "http_allowed_addresses": "any",
                                       "max_bytes": 10**12}, max_input_pixels=10**12)
        assert _report(tmp_path, capsys)[0] == 0
        assert hits == {}  # the reader's default (private) refuses loopback, whatever the record says
    page = Page((tmp_path / "index.html").read_text("utf-8"))
    assert page.find("img") == []
    assert "address_not_allowed" in [m["text"] for m in page.find("div", cls="hthumb")]


def test_a_run_record_tightens_the_readers_policy(tmp_path):
    policy, pixels = run_folder.read_limits(str(tmp_path))  # no record: the reader's own
    assert (policy, pixels) == (storage.ReadPolicy(), DEFAULT_MAX_INPUT_PIXELS)
    _record(tmp_path, read_policy={"allowed_schemes": ["file", "gopher"], "http_allowed_addresses": "public",
                                   "max_bytes": 10, "read_timeout": 1, "http_retries": 0}, max_input_pixels=99)
    policy, pixels = run_folder.read_limits(str(tmp_path))
    assert policy == storage.ReadPolicy(allowed_schemes=("file",), http_allowed_addresses="public", max_bytes=10,
                                        read_timeout=1, http_retries=0)
    assert pixels == 99


def test_a_part_that_is_a_fifo_or_a_link_is_skipped_not_waited_for(tmp_path, capsys, caplog):
    write_report(tmp_path, [report_row(content_id="good", **ROW)])
    os.mkfifo(tmp_path / "report" / "part-00001-of-00003.parquet")
    elsewhere = tmp_path / "elsewhere.parquet"
    pq.write_table(pa.Table.from_pylist([report_row(content_id="outside", **ROW)], schema=REPORT_SCHEMA), elsewhere)
    (tmp_path / "report" / "part-00002-of-00003.parquet").symlink_to(elsewhere)
    with caplog.at_level(logging.WARNING):
        code, out, _ = _report(tmp_path, capsys, "--no-html")
    assert code == 0 and "total       1" in out
    skipped = [r.getMessage() for r in caplog.records if "not a regular file" in r.getMessage()]
    assert len(skipped) == 2
