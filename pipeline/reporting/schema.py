"""The timing report: one pyarrow schema, one row per unit of work, written as a Parquet dataset."""
from __future__ import annotations

import collections
import concurrent.futures
import glob as globlib

import fsspec
import pyarrow.compute as pc
import pyarrow as pa
import pyarrow.parquet as pq

REPORT_SCHEMA = pa.schema(
    [
        ("run_id", pa.string()),
        ("content_id", pa.string()),
        ("content_uri", pa.string()),
        ("style_id", pa.string()),
        ("style_uri", pa.string()),
        ("method", pa.string()),
        ("preset", pa.string()),
        ("status", pa.string()),  # "ok", "error" or "skipped" (done already: --skip-existing, --incremental)
        ("error_type", pa.string()),  # a short stable code when status is "error": pipeline.errors.ERROR_TYPES
        ("error", pa.string()),
        ("output_uri", pa.string()),
        ("height", pa.int32()),
        ("width", pa.int32()),
        ("steps", pa.int32()),
        ("seconds_total", pa.float64()),
        ("seconds_decode", pa.float64()),
        ("seconds_compute", pa.float64()),
        ("seconds_write", pa.float64()),
        ("loss_total", pa.float64()),
        ("loss_content", pa.float64()),
        ("loss_style", pa.float64()),
        ("loss_tv", pa.float64()),
        ("extractor", pa.string()),
        ("backend", pa.string()),
        ("device", pa.string()),
        ("worker", pa.string()),
        # What made the output, for --incremental (every ok and skipped row; error rows where already known):
        ("content_sha256", pa.string()),  # SHA-256 (hex) of the content image's bytes as read
        ("style_sha256", pa.string()),  # the same of the style image (nst only)
        ("params_hash", pa.string()),  # pipeline.outputs.params_hash: method + every pixel-changing setting
        # NST style controls (null for classical); all of them are also in params_hash
        ("seed", pa.int64()),
        ("init", pa.string()),
        ("style_strength", pa.float64()),
        ("preserve_colors", pa.bool_()),
        ("output_size", pa.string()),
        ("style_blend", pa.string()),  # "a:0.7,b:0.3" when the style is a blend (--style-blend)
    ]
)

REPORT_COLUMNS = tuple(REPORT_SCHEMA.names)
STATUSES = ("ok", "skipped", "error")
#: What identifies a unit's work for --incremental: an earlier row with the same values is the same work.
UNIT_KEY_COLUMNS = ("content_id", "style_id", "method", "content_sha256", "style_sha256", "params_hash")
#: What --incremental keeps of an earlier row: its key, and what a skipped row takes over from it.
PREVIOUS_COLUMNS = UNIT_KEY_COLUMNS + ("run_id", "output_uri", "height", "width")
#: Parallel footer reads when checking --incremental's files before the run.
_CHECK_THREADS = 16


def report_row(**fields) -> dict:
    """A full report row: unknown names are a programming error, missing ones are null. Strings that
    cannot be written as UTF-8 (file names in another encoding) are written with backslash escapes."""
    unknown = set(fields) - set(REPORT_COLUMNS)
    if unknown:
        raise KeyError(f"not report columns: {sorted(unknown)}")
    return {name: _printable(fields.get(name)) for name in REPORT_COLUMNS}


def _printable(value):
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return value.encode("utf-8", "backslashreplace").decode("utf-8")
    return value


def read_report(output: str) -> pa.Table:
    """The report dataset of a run folder (local or any fsspec URI)."""
    fs, path = fsspec.core.url_to_fs(f"{output.rstrip('/')}/report")
    return pq.read_table(path, filesystem=fs, schema=REPORT_SCHEMA)


def status_counts(table: pa.Table) -> dict[str, int]:
    return dict(sorted(collections.Counter(table.column("status").to_pylist()).items()))


def error_type_counts(table: pa.Table) -> dict[str, int]:
    """How many error rows of each error_type, most frequent first."""
    types = [t for s, t in zip(table.column("status").to_pylist(), table.column("error_type").to_pylist()) if s == "error"]
    return dict(collections.Counter(types).most_common())


def error_fraction(counts: dict[str, int]) -> float:
    """Error rows over all rows (0 when there are none)."""
    total = sum(counts.values())
    return counts.get("error", 0) / total if total else 0.0


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
