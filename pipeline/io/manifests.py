"""Turn a `--content` / `--style` argument into (id, uri) entries.

Accepted forms: a folder (searched recursively for images), a glob, a single image, a text manifest
(one URI per line, blank lines and `#` comments ignored: the seed's `input/content.txt`), or a CSV,
JSONL or Parquet manifest with a `uri` column and an optional `id` column. Relative URIs in a manifest
are resolved against the manifest's own folder. Ids default to the file's stem.

A manifest file is read like an image: in one `storage.read_bytes` under the run's read policy
(schemes, bytes, time, HTTP addresses); an http(s) argument is always one file (no listing, no glob).
Folders and globs never yield the images a run writes (OUTPUT/images/: a second run must not take
the first one's cartoons for photos), and a folder's symbolic links that lead outside it are refused
entries unless --follow-symlinks.

A manifest that cannot be used at all raises `ManifestError` before any work; a single bad row (no
uri, a duplicate id, a line that is not JSON) becomes an entry with `error` set, which the pipeline
turns into one error row. Text is read as UTF-8 (a leading BOM is ignored); bytes that are not UTF-8
are kept as surrogate escapes, so that a local file name in another encoding still opens.
"""
from __future__ import annotations

import csv
import dataclasses
import functools
import io
import json
import os
import posixpath
import typing
import urllib.parse
from typing import Iterator

import apache_beam as beam
import fsspec
import pyarrow.parquet as pq

from pipeline.io import storage

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
    error_type: str = "bad_manifest_row"  # the report's code for `error`


@dataclasses.dataclass(frozen=True)
class ManifestRules:
    """How a `--content` / `--style` argument is read: manifest files under the run's read policy, and
    what folders and globs leave out."""

    policy: storage.ReadPolicy = storage.ReadPolicy()
    exclude: str | None = None  # a folder whose files are never inputs (the run's OUTPUT/images)
    follow_symlinks: bool = False  # a folder's symbolic links may lead outside it


class _BadRow(typing.NamedTuple):
    """A table-manifest row that could not be parsed at all."""

    message: str
    raw: str


def read_manifest(spec: str, rules: ManifestRules = ManifestRules()) -> Iterator[ManifestEntry]:
    """Every entry of `spec`, in a stable order, ids and their output file names made unique (later
    duplicates become error entries: two ids must never write one file)."""
    seen: dict[str, str] = {}
    names: dict[str, str] = {}  # output file name -> the id that has it
    for entry in _raw_entries(spec, rules):
        if entry.error is None and entry.id in seen:
            entry = dataclasses.replace(entry, error=f"duplicate id {entry.id!r} (first used by {seen[entry.id]})")
        elif entry.error is None:
            name = storage.safe_name(entry.id)
            if names.setdefault(name, entry.id) != entry.id:
                error = f"id {entry.id!r} would be written as {name!r}, the file name of id {names[name]!r}"
                entry = dataclasses.replace(entry, error=error)
        seen.setdefault(entry.id, entry.uri)
        yield entry


def load_manifest(spec: str, rules: ManifestRules = ManifestRules()) -> list[ManifestEntry]:
    """Every entry of `spec`, read once before the pipeline starts; `ManifestError` if `spec` is missing,
    unreadable, empty or of an unknown form."""
    entries = list(read_manifest(spec, rules))
    if not entries:
        raise ManifestError(f"{spec}: no images found (empty folder, glob or manifest)")
    return entries


def _raw_entries(spec: str, rules: ManifestRules) -> Iterator[ManifestEntry]:
    if storage.scheme(spec) in ("http", "https"):
        yield from _file_entries(spec, spec, rules.policy)
        return
    fs, path = fsspec.core.url_to_fs(spec)
    excluded = _excluded_by(fs, rules.exclude)
    if fsspec.core.has_magic(path):
        for match in sorted(fs.glob(path)):
            if fs.isfile(match) and not excluded(match):
                yield _entry_for(_uri(fs, match))
        return
    if not fs.exists(path):
        raise ManifestError(f"{spec}: does not exist")
    if fs.isdir(path):
        for found in sorted(fs.find(path)):
            if found.lower().endswith(IMAGE_EXTENSIONS) and not excluded(found):
                yield _folder_entry(fs, path, found, rules)
        return
    yield from _file_entries(spec, _uri(fs, path), rules.policy)


def _excluded_by(fs, folder: str | None):
    """Whether a path of `fs` is under `folder` (a URI; None: nothing is)."""
    if folder is None:
        return lambda path: False
    folder_fs, prefix = fsspec.core.url_to_fs(folder)
    prefix = prefix.rstrip("/")
    same_store = type(folder_fs) is type(fs)
    return lambda path: same_store and (path == prefix or path.startswith(prefix + "/"))


def _folder_entry(fs, folder: str, path: str, rules: ManifestRules) -> ManifestEntry:
    """The entry of a file found in a folder input: refused when it is a symbolic link (or under one)
    that leads outside the folder, unless --follow-symlinks."""
    entry = _entry_for(_uri(fs, path))
    if rules.follow_symlinks or not isinstance(fs, fsspec.implementations.local.LocalFileSystem):
        return entry
    root, target = os.path.realpath(folder), os.path.realpath(path)
    if target == root or target.startswith(root.rstrip(os.sep) + os.sep):
        return entry
    error = f"a symbolic link to {target}, outside the folder {folder} (--follow-symlinks reads it)"
    return dataclasses.replace(entry, error=error, error_type="symlink_refused")


def _file_entries(spec: str, uri: str, policy: storage.ReadPolicy) -> Iterator[ManifestEntry]:
    """The entries of one file named by `spec`: an image, or a manifest read in one `read_bytes`."""
    location = urllib.parse.urlsplit(uri).path if storage.scheme(uri) in ("http", "https") else uri
    lower = location.lower()
    base = posixpath.dirname(uri.split("?")[0])
    if lower.endswith(IMAGE_EXTENSIONS):
        yield _entry_for(uri)
    elif lower.endswith(TEXT_MANIFESTS):
        for line in _text_lines(_manifest_bytes(spec, uri, policy)):
            yield _entry_for(_resolve(base, line), row={"uri": line})
    elif lower.endswith(TABLE_MANIFESTS):
        rows = _table_rows(_manifest_bytes(spec, uri, policy), lower, spec)
        for number, row in enumerate(rows, 1):
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


def _manifest_bytes(spec: str, uri: str, policy: storage.ReadPolicy) -> bytes:
    try:
        return storage.read_bytes(uri, policy)
    except FileNotFoundError:
        raise ManifestError(f"{spec}: does not exist") from None
    except OSError as exc:  # storage.ReadError (the policy's refusals), permission denied, ...
        raise ManifestError(f"{spec}: cannot read: {exc}".splitlines()[0]) from None


def _text(data: bytes) -> str:
    return data.decode("utf-8-sig", errors="surrogateescape")


def _text_lines(data: bytes) -> Iterator[str]:
    for line in _text(data).splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            yield line


def _table_rows(data: bytes, lower: str, spec: str) -> Iterator[dict | _BadRow]:
    if lower.endswith(".parquet"):
        try:
            table = pq.read_table(io.BytesIO(data))
        except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
            raise ManifestError(f"{spec}: cannot read as Parquet: {exc}".splitlines()[0]) from exc
        _require_uri_column(table.column_names, spec)
        yield from table.to_pylist()
        return
    text = _text(data)
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


class ReadManifest(beam.PTransform):
    """Entries of one `--content` / `--style` argument, spread over workers.

    `entries`: what the driver already read (`load_manifest`), for a run in the driver's own process,
    so that the manifest is read once; without them (a remote runner: no catalog in the job graph) one
    worker lists `spec` again under the same rules."""

    def __init__(self, spec: str, rules: ManifestRules = ManifestRules(), entries: list[ManifestEntry] | None = None):
        super().__init__()
        self._spec = spec
        self._rules = rules
        self._entries = entries

    def expand(self, pbegin):
        if self._entries is not None:
            return pbegin | "Entries" >> beam.Create(self._entries)
        return pbegin | "List" >> ListAndSpread(self._spec, functools.partial(read_manifest, rules=self._rules))
