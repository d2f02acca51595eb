"""Turn a `--content` / `--style` argument into (id, uri) entries.

Accepted forms: a folder (searched recursively for images), a glob, a single image, a text manifest
(one URI per line, blank lines and `#` comments ignored: the seed's `input/content.txt`), or a CSV,
JSONL or Parquet manifest with a `uri` column and an optional `id` column. Relative URIs in a manifest
are resolved against the manifest's own folder. Ids default to the file's stem.

A manifest that cannot be used at all raises `ManifestError` before any work; a single bad row (no
uri, a duplicate id, a line that is not JSON) becomes an entry with `error` set, which the pipeline
turns into one error row. Text is read as UTF-8 (a leading BOM is ignored); bytes that are not UTF-8
are kept as surrogate escapes, so that a local file name in another encoding still opens.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import json
import posixpath
import typing
from typing import Iterator

import apache_beam as beam
import fsspec
import pyarrow.parquet as pq

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif")
TEXT_MANIFESTS = (".txt", ".lst", ".list")
TABLE_MANIFESTS = (".csv", ".jsonl", ".ndjson", ".parquet")


class ManifestError(ValueError):
    """The manifest cannot be used at all; the run stops before any work."""


@dataclasses.dataclass(frozen=True)
class ManifestEntry:
    id: str
    uri: str
    error: str | None = None  # set when this row is unusable; it becomes an error row, not a crash
    #: The manifest row as read (`{"uri": line}` for text manifests, folders and globs), for the
    #: dead-letter output; not part of equality.
    row: dict | None = dataclasses.field(default=None, compare=False, repr=False)


class _BadRow(typing.NamedTuple):
    """A table-manifest row that could not be parsed at all."""

    message: str
    raw: str


def read_manifest(spec: str) -> Iterator[ManifestEntry]:
    """Every entry of `spec`, in a stable order, ids made unique (later duplicates become error entries)."""
    seen: dict[str, str] = {}
    for entry in _raw_entries(spec):
        if entry.error is None and entry.id in seen:
            entry = dataclasses.replace(entry, error=f"duplicate id {entry.id!r} (first used by {seen[entry.id]})")
        seen.setdefault(entry.id, entry.uri)
        yield entry


def check_manifest(spec: str) -> None:
    """Fail fast, before the pipeline starts, if `spec` is missing, empty or of an unknown form."""
    if next(iter(read_manifest(spec)), None) is None:
        raise ManifestError(f"{spec}: no images found (empty folder, glob or manifest)")


def _raw_entries(spec: str) -> Iterator[ManifestEntry]:
    fs, path = fsspec.core.url_to_fs(spec)
    if fsspec.core.has_magic(path):
        for match in sorted(fs.glob(path)):
            if fs.isfile(match):
                yield _entry_for(_uri(fs, match))
        return
    if not fs.exists(path):
        raise ManifestError(f"{spec}: does not exist")
    if fs.isdir(path):
        for found in sorted(fs.find(path)):
            if found.lower().endswith(IMAGE_EXTENSIONS):
                yield _entry_for(_uri(fs, found))
        return
    lower = path.lower()
    base = posixpath.dirname(_uri(fs, path))
    if lower.endswith(IMAGE_EXTENSIONS):
        yield _entry_for(_uri(fs, path))
    elif lower.endswith(TEXT_MANIFESTS):
        for line in _text_lines(fs, path):
            yield _entry_for(_resolve(base, line), row={"uri": line})
    elif lower.endswith(TABLE_MANIFESTS):
        for number, row in enumerate(_table_rows(fs, path, spec), 1):
            if isinstance(row, _BadRow):
                yield ManifestEntry(id="", uri="", error=row.message, row={"line": row.raw})
                continue
            uri = str(row.get("uri") or "").strip()
            if not uri:
                yield ManifestEntry(
                    id=str(row.get("id") or ""), uri="", error=f"row {number} has no uri: {row}", row=row
                )
                continue
            row_id = row.get("id")
            yield _entry_for(_resolve(base, uri), None if row_id in (None, "") else str(row_id), row=row)
    else:
        raise ManifestError(
            f"{spec}: unknown manifest format; use a folder, a glob, an image, "
            f"{'/'.join(TEXT_MANIFESTS + TABLE_MANIFESTS)}"
        )


def _read_text(fs, path: str) -> str:
    with fs.open(path, "rb") as handle:
        return handle.read().decode("utf-8-sig", errors="surrogateescape")


def _text_lines(fs, path: str) -> Iterator[str]:
    for line in _read_text(fs, path).splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            yield line


def _table_rows(fs, path: str, spec: str) -> Iterator[dict | _BadRow]:
    lower = path.lower()
    if lower.endswith(".parquet"):
        try:
            with fs.open(path, "rb") as handle:
                table = pq.read_table(handle)
        except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
            raise ManifestError(f"{spec}: cannot read as Parquet: {exc}".splitlines()[0]) from exc
        _require_uri_column(table.column_names, spec)
        yield from table.to_pylist()
        return
    text = _read_text(fs, path)
    if lower.endswith(".csv"):
        reader = csv.DictReader(io.StringIO(text))
        try:
            _require_uri_column(reader.fieldnames or [], spec)
            yield from reader
        except csv.Error as exc:
            raise ManifestError(f"{spec}: cannot read as CSV: {exc}") from exc
        return
    yield from _jsonl_rows(text, spec)


def _jsonl_rows(text: str, spec: str) -> list[dict | _BadRow]:
    rows: list[dict | _BadRow] = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as exc:
            rows.append(_BadRow(f"line {number} is not valid JSON: {getattr(exc, 'msg', exc)}", line))
            continue
        if not isinstance(row, dict):
            rows.append(_BadRow(f"line {number} is not a JSON object", line))
            continue
        rows.append(row)
    good = [row for row in rows if isinstance(row, dict)]
    if rows and not good:
        raise ManifestError(f"{spec}: not JSON lines (no line is a JSON object)")
    _require_uri_column(set().union(*good), spec)
    return rows


def _require_uri_column(columns, spec: str) -> None:
    if "uri" not in columns:
        raise ManifestError(f"{spec}: no 'uri' column (columns: {sorted(columns)})")


def _entry_for(uri: str, entry_id: str | None = None, row: dict | None = None) -> ManifestEntry:
    if entry_id is None:
        entry_id = posixpath.splitext(posixpath.basename(uri.rstrip("/").split("?")[0]))[0]
    return ManifestEntry(id=entry_id, uri=uri, row={"uri": uri} if row is None else row)


def _uri(fs, path: str) -> str:
    """Local files keep plain paths (readable in the report); others keep their protocol."""
    if isinstance(fs, fsspec.implementations.local.LocalFileSystem):
        return path
    return fs.unstrip_protocol(path)


def _resolve(base: str, uri: str) -> str:
    if "://" in uri or uri.startswith("/"):
        return uri
    return posixpath.join(base, uri)


class ListAndSpread(beam.PTransform):
    """What `lister(spec)` yields, listed by one worker, then spread over all of them."""

    def __init__(self, spec: str, lister):
        super().__init__()
        self._spec = spec
        self._lister = lister

    def expand(self, pbegin):
        return (
            pbegin
            | "Spec" >> beam.Create([self._spec])
            | "List" >> beam.FlatMap(self._lister)
            | "Spread" >> beam.Reshuffle()
        )


class ReadManifest(ListAndSpread):
    """Entries of one `--content` / `--style` argument, spread over workers."""

    def __init__(self, spec: str):
        super().__init__(spec, read_manifest)
