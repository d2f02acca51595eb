"""--incremental: which units earlier runs already did, read from their Parquet reports.

A unit is the same work as an earlier row when its `unit_key` (ids, method, SHA-256 of the input
bytes, params_hash) is equal; the compute steps then report it "skipped", naming the earlier image.
"""
from __future__ import annotations

import concurrent.futures
import glob as globlib

import apache_beam as beam
import fsspec
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.io.manifests import ListAndSpread
from pipeline.reporting.schema import REPORT_SCHEMA

#: What identifies a unit's work: an earlier row with the same values is the same work.
UNIT_KEY_COLUMNS = ("content_id", "style_id", "method", "content_sha256", "style_sha256", "params_hash")
#: What --incremental keeps of an earlier row: its key, and what a skipped row takes over from it.
PREVIOUS_COLUMNS = UNIT_KEY_COLUMNS + ("run_id", "output_uri", "height", "width")
#: Parallel footer reads when checking --incremental's files before the run.
_CHECK_THREADS = 16


def unit_key(row: dict) -> tuple:
    """The UNIT_KEY_COLUMNS of a report row (or of a unit about to run)."""
    return tuple(row.get(name) for name in UNIT_KEY_COLUMNS)


def previous_report_files(spec: str) -> list[str]:
    """The Parquet files named by `--incremental`: an fsspec glob (e.g. gs://b/runs/*/report/*.parquet),
    a single file, or a folder (its *.parquet, else its report/*.parquet: a run's --output). Sorted URIs;
    none when nothing matches."""
    fs, path = fsspec.core.url_to_fs(spec)
    if globlib.has_magic(path):
        found = fs.glob(path, detail=True)
    elif fs.isdir(path):
        folder = path.rstrip("/")
        found = fs.glob(f"{folder}/*.parquet", detail=True) or fs.glob(f"{folder}/report/*.parquet", detail=True)
    elif fs.exists(path):
        found = {path: fs.info(path)}
    else:
        found = {}
    return sorted(fs.unstrip_protocol(name) for name, info in found.items() if info.get("type") != "directory")


def check_previous_reports(spec: str) -> list[str]:
    """`previous_report_files`, each checked to be a readable report (its Parquet footer has content_id
    and status). Raises ValueError with one line naming the first bad file."""
    files = previous_report_files(spec)

    def check(uri: str) -> None:
        fs, path = fsspec.core.url_to_fs(uri)
        try:
            names = set(pq.read_schema(path, filesystem=fs).names)
        except Exception as exc:  # noqa: BLE001 - any failure is reported as one line
            raise ValueError(f"cannot read earlier report {uri}: {type(exc).__name__}: {exc}") from None
        missing = {"content_id", "status"} - names
        if missing:
            raise ValueError(f"{uri} is not a Toonbeam report (no {', '.join(sorted(missing))} column)")

    with concurrent.futures.ThreadPoolExecutor(_CHECK_THREADS) as pool:
        list(pool.map(check, files))
    return files


def read_previous_rows(uri: str) -> list[dict]:
    """The rows of one earlier report file that --incremental can reuse (PREVIOUS_COLUMNS only): status
    ok or skipped, with an output_uri, content_sha256 and params_hash, and style_sha256 for nst. Reports
    written before the hash columns existed have none."""
    fs, path = fsspec.core.url_to_fs(uri)
    with fs.open(path, "rb") as handle:
        parquet = pq.ParquetFile(handle)
        present = set(parquet.schema_arrow.names)
        if not {"status", "output_uri", "content_sha256", "params_hash"} <= present:
            return []
        table = parquet.read(columns=[c for c in PREVIOUS_COLUMNS + ("status",) if c in present])
    for name in PREVIOUS_COLUMNS:
        if name not in table.column_names:
            table = table.append_column(name, pa.nulls(table.num_rows, REPORT_SCHEMA.field(name).type))
    usable = pc.and_(
        pc.is_in(table["status"], pa.array(["ok", "skipped"])),
        pc.and_(
            pc.and_(pc.is_valid(table["output_uri"]), pc.is_valid(table["content_sha256"])),
            pc.and_(
                pc.is_valid(table["params_hash"]),
                pc.or_kleene(pc.not_equal(table["method"], "nst"), pc.is_valid(table["style_sha256"])),
            ),
        ),
    )
    return table.filter(pc.fill_null(usable, False)).select(list(PREVIOUS_COLUMNS)).to_pylist()


def earliest(rows) -> dict:
    """One of several earlier rows of the same unit key (same inputs, same params, so the same image):
    the earliest run's, for a stable choice."""
    return min(rows, key=lambda r: (r.get("run_id") or "", r.get("output_uri") or ""))


class ReadPreviousReports(beam.PTransform):
    """The usable rows of earlier reports (`read_previous_rows`), one per unit key, as (content_id, row)
    pairs for a `beam.pvalue.AsMultiMap` side input. Files are listed when the pipeline runs (the driver
    has checked them); matching none means no earlier work."""

    def __init__(self, spec: str):
        super().__init__()
        self._spec = spec

    def expand(self, pbegin):
        return (
            pbegin
            | "Files" >> ListAndSpread(self._spec, previous_report_files)
            | "Read" >> beam.FlatMap(read_previous_rows)
            | "ByUnit" >> beam.Map(lambda row: (unit_key(row), row))
            | "OnePerUnit" >> beam.CombinePerKey(earliest)
            | "ByContent" >> beam.Map(lambda keyed: (keyed[1]["content_id"], keyed[1]))
        )
