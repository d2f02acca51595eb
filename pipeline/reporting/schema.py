"""The timing report: one pyarrow schema, one row per unit of work, written as a Parquet dataset."""
from __future__ import annotations

import collections
import logging
import re

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.errors import one_line

LOG = logging.getLogger(__name__)

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
        ("params_hash", pa.string()),  # pipeline.outputs.params_hash: method + every pixel-changing setting (+ the network)
        # NST style controls (null for classical); all of them are also in params_hash
        ("seed", pa.int64()),
        ("init", pa.string()),
        ("style_strength", pa.float64()),
        ("preserve_colors", pa.bool_()),
        ("output_size", pa.string()),
        ("style_blend", pa.string()),  # "a:0.7,b:0.3" when the style is a blend (--style-blend)
        ("model_uri", pa.string()),  # feedforward: the style's network (its card is beside it, .json)
        # The quality panel (transforms.quality) of a scored feedforward pair's image against its photo, and of
        # a feedforward_train row's held-out outputs (means; faces summed over the held-out photos):
        ("ssim", pa.float64()),  # gray SSIM to the photo
        ("edge_correlation", pa.float64()),  # correlation of the edge maps
        ("saturated", pa.float64()),  # share of pure-colour pixels (stamps of a network stuck at its sigmoid's ends)
        ("faces_photo", pa.int32()),  # faces the detector finds in the photo(s)
        ("faces_kept", pa.int32()),  # of those, found again in the output
        ("photo_dependence", pa.float64()),  # feedforward_train: do the held-out outputs differ where their photos do
    ]
)

REPORT_COLUMNS = tuple(REPORT_SCHEMA.names)
STATUSES = ("ok", "skipped", "error")


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


#: The most rows `toonbeam report` reads (--max-rows): each costs about 2 KB as a Python row, and a
#: Parquet file of a few MB can hold tens of millions of them (its metadata says so, before any read).
MAX_REPORT_ROWS = 1_000_000
#: The names of a report's parts, as the run's Parquet sink writes them (other files are not parts).
REPORT_PART = re.compile(r"part-\d+-of-\d+\.parquet")


class ReportTooLarge(ValueError):
    """A report holds more rows than may be read; the one-line message says how many and where."""


def read_report(output: str, max_rows: int | None = MAX_REPORT_ROWS) -> pa.Table:
    """The report of a run folder (local or any fsspec URI): its parts, OUTPUT/report/part-*.parquet,
    as one REPORT_SCHEMA table (columns a part lacks are null). A part that is not a regular file, not
    Parquet, or has a column of another type is skipped with a warning naming it: the rest still shows.
    ReportTooLarge when the parts' metadata counts more than `max_rows` rows (None: no limit), before
    any row is read. FileNotFoundError when OUTPUT has no report folder."""
    fs, folder = fsspec.core.url_to_fs(f"{output.rstrip('/')}/report")
    if not fs.isdir(folder):
        raise FileNotFoundError(f"{output}/report")
    parts = []
    for info in sorted(fs.ls(folder, detail=True), key=lambda info: info["name"]):
        name = info["name"].rstrip("/").rsplit("/", 1)[-1]
        if info.get("type") == "directory" or not REPORT_PART.fullmatch(name):
            continue  # a sink's temporary folder, or not a part
        try:
            parts.append((name, *_part_metadata(fs, info)))
        except (OSError, ValueError, pa.ArrowException) as exc:
            LOG.warning("skipped report part %s/%s: %s", output, name, one_line(exc))
    total = sum(rows for _, _, rows in parts)
    if max_rows is not None and total > max_rows:
        largest = max(parts, key=lambda part: part[2])
        raise ReportTooLarge(
            f"{output}/report holds {total} rows ({largest[0]}: {largest[2]}), more than --max-rows {max_rows}; "
            "read it with pyarrow in batches, or raise --max-rows if the memory is there (about 2 KB a row)"
        )
    tables = []
    for name, path, _ in parts:
        try:
            with fs.open(path, "rb") as handle:
                part = pq.ParquetFile(handle)
                known = [column for column in part.schema_arrow.names if column in REPORT_COLUMNS]
                tables.append(_as_report(part.read(columns=known)))
        except (OSError, ValueError, pa.ArrowException) as exc:
            LOG.warning("skipped report part %s/%s: %s", output, name, one_line(exc))
    return pa.concat_tables(tables) if tables else REPORT_SCHEMA.empty_table()


def _part_metadata(fs, info: dict) -> tuple[str, int]:
    """(path, rows) of a report part, from its Parquet footer alone; ValueError for a part that is not a
    regular file (a FIFO would block the read, a link leads out of the folder) or has a column of another
    type than REPORT_SCHEMA's."""
    if info.get("type") != "file" or info.get("islink"):
        raise ValueError("not a regular file (a symbolic link, a FIFO or a device)")
    with fs.open(info["name"], "rb") as handle:
        part = pq.ParquetFile(handle)
        schema, rows = part.schema_arrow, part.metadata.num_rows
    for field in schema:
        expected = REPORT_SCHEMA.field(field.name).type if field.name in REPORT_COLUMNS else None
        if expected is not None and field.type != expected:
            raise ValueError(f"column {field.name} is {field.type}, not {expected}")
    return info["name"], rows


def _as_report(table: pa.Table) -> pa.Table:
    """A part's table with REPORT_SCHEMA's columns, in its order, those it lacks null."""
    columns = [table[name] if name in table.column_names else pa.nulls(table.num_rows, REPORT_SCHEMA.field(name).type)
               for name in REPORT_COLUMNS]
    return pa.Table.from_arrays(columns, schema=REPORT_SCHEMA)


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
