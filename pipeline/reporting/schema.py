"""The timing report: one pyarrow schema, one row per unit of work, written as a Parquet dataset."""
from __future__ import annotations

import collections

import fsspec
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
        ("model_uri", pa.string()),  # feedforward: the style's network (its card is beside it, .json)
        # The quality panel (transforms.quality) of a scored feedforward pair's image against its photo, and of
        # a feedforward_train row's held-out outputs (means; faces summed over the held-out photos):
        ("ssim", pa.float64()),  # gray SSIM to the photo
        ("edge_correlation", pa.float64()),  # correlation of the edge maps
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
