"""Beam steps shared by both methods, and the classical method's. Each one only adapts a pure function
from `transforms/` to elements, side inputs, metrics and I/O; the image math lives there. The NST steps
are in `pipeline.nst_transformations`, so that a classical-only worker never imports Keras or TensorFlow.

Every unit ends as exactly one report row. Steps of their own settle what needs no work (`TriageFn`,
`PairTriageFn`: unusable manifest rows, and outputs already complete under --skip-existing); the compute
steps turn any failure of a unit into an error row. Each error row also leaves, on the tagged output
DEAD_LETTERS, a record with the original manifest rows (`WriteDeadLetters` writes them).

With --incremental, the compute steps get the usable rows of earlier reports (`ReadPreviousReports`) as
a multimap side input by content_id: after reading a unit's input bytes, a unit whose report.unit_key
(ids, method, SHA-256 of the input bytes, params_hash) equals an earlier row's becomes a "skipped" row
that names the earlier image, with no decode and no compute.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import time

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics

from pipeline import outputs, progress, storage
from pipeline.errors import UnitError, dead_letter, dead_letter_json, describe
from pipeline.manifests import ManifestEntry, read_manifest
from pipeline.report import REPORT_SCHEMA, earliest, previous_report_files, read_previous_rows, report_row, unit_key
from transforms import images
from transforms.cartoon import CartoonParams, cartoonize

NAMESPACE = "toonbeam"
WORKER = f"{socket.gethostname()}:{os.getpid()}"
#: Tagged output of every step that can fail a unit: dead-letter records (dicts).
DEAD_LETTERS = "dead_letters"
#: Tagged output of the triage steps: the report rows of units they settled (errors, skipped).
ROWS = "rows"


class Stopwatch:
    """Adds the seconds spent in each named phase of a unit."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def phase(self, name: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start


def read_input(entry: ManifestEntry, read_policy: storage.ReadPolicy | None = None) -> bytes:
    """The bytes of an input image (read once: they are hashed, then decoded)."""
    if entry.error:
        raise UnitError("bad_manifest_row", entry.error)
    return storage.read_bytes(entry.uri, read_policy)


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_image(uri: str, rgb: np.ndarray, recipe: str | None = None, provenance: dict | None = None) -> None:
    """The PNG and its completion sidecar (see pipeline.outputs), each written atomically."""
    try:
        outputs.write_output(uri, images.encode_png(rgb), recipe, rgb.shape[0], rgb.shape[1], provenance)
    except OSError as exc:
        raise UnitError("write_error", f"cannot write {uri}: {exc}") from exc


def image_uri(output: str, method: str, content_id: str, style_id: str | None = None) -> str:
    """Deterministic output name from the method and the (sanitised) ids: images/classical/<content>.png,
    images/nst/<style>/<content>.png (a folder per style, so no two pairs can share a name)."""
    folders = [method] if style_id is None else [method, storage.safe_name(style_id)]
    return storage.join_uri(output, "images", *folders, storage.safe_name(content_id) + ".png")


def classical_recipe(params: CartoonParams, entry: ManifestEntry) -> str:
    return outputs.recipe_digest(method="classical", params=params, content_uri=entry.uri)


def classical_params_hash(params: CartoonParams) -> str:
    return outputs.params_hash("classical", params=params)


def count_row(row: dict) -> dict:
    Metrics.counter(NAMESPACE, f"units_{row['status']}").inc()
    progress.record(row["status"])
    if row["seconds_total"] is not None:
        Metrics.distribution(NAMESPACE, "unit_ms").update(int(row["seconds_total"] * 1000))
    return row


def subject_of(entry: ManifestEntry) -> str:
    """How a message names an input: its URI, else its id, else its manifest row."""
    if entry.uri:
        return entry.uri
    return f"id {entry.id!r}" if entry.id else f"manifest row {entry.row}"


def _error_row(base: dict, exc: Exception, seconds_total: float | None, subject: str | None = None) -> dict:
    if subject is None:
        subject = base.get("content_uri") or base.get("content_id") or ""
    error_type, message = describe(exc, subject)
    return report_row(**base, status="error", error_type=error_type, error=message, seconds_total=seconds_total)


def failed_unit(base, exc, seconds_total, content, style=None, subject=None, row_tag=None):
    """A failed unit: its error row (main output, or `row_tag`) and its dead-letter record."""
    row = count_row(_error_row(base, exc, seconds_total, subject))
    yield row if row_tag is None else beam.pvalue.TaggedOutput(row_tag, row)
    yield beam.pvalue.TaggedOutput(DEAD_LETTERS, dead_letter(row, content, style))


def skipped_row(base: dict, output_uri: str, record: dict) -> beam.pvalue.TaggedOutput:
    """A --skip-existing row; its hashes are those the sidecar recorded (null for older sidecars)."""
    provenance = {key: record.get(key) for key in outputs.PROVENANCE_KEYS}
    row = report_row(
        **{**base, **provenance}, status="skipped", output_uri=output_uri, height=record.get("height"),
        width=record.get("width"),
    )
    return beam.pvalue.TaggedOutput(ROWS, count_row(row))


def provenance_of(row: dict) -> dict:
    return {key: row.get(key) for key in outputs.PROVENANCE_KEYS}


def reused_row(base: dict, previous) -> dict | None:
    """With --incremental: the "skipped" row of a unit (`base` has its ids, method and hashes) when an
    earlier report has a row of the same unit_key, naming that row's image (not copied); else None."""
    if previous is None:
        return None
    key = unit_key(base)
    matches = [row for row in previous[base["content_id"]] if unit_key(row) == key]
    if not matches:
        return None
    earlier = earliest(matches)
    Metrics.counter(NAMESPACE, "units_reused").inc()
    return count_row(
        report_row(**base, status="skipped", output_uri=earlier["output_uri"], height=earlier["height"], width=earlier["width"])
    )


class ReadPreviousReports(beam.PTransform):
    """--incremental: the usable rows of earlier reports (report.read_previous_rows), one per unit key,
    as (content_id, row) pairs for a `beam.pvalue.AsMultiMap` side input. Files are listed when the
    pipeline runs (plan_run has checked them); matching none means no earlier work."""

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


def _classical_base(run_id: str, preset: str, entry: ManifestEntry) -> dict:
    return dict(
        run_id=run_id, content_id=entry.id, content_uri=entry.uri, method="classical", preset=preset, worker=WORKER,
    )


class TriageFn(beam.DoFn):
    """Classical units before any work. An unusable manifest row becomes an error row; with
    `skip_existing`, a unit whose output is complete becomes a "skipped" row. Those rows leave on ROWS
    (dead letters on DEAD_LETTERS); every other entry goes on, as the main output, to CartoonizeFn."""

    def __init__(self, run_id: str, output: str, preset: str, params: CartoonParams, skip_existing: bool):
        self._run_id = run_id
        self._output = output
        self._preset = preset
        self._params = params
        self._skip_existing = skip_existing

    def process(self, entry: ManifestEntry):
        base = _classical_base(self._run_id, self._preset, entry)
        if entry.error:
            yield from failed_unit(base, UnitError("bad_manifest_row", entry.error), None, entry, subject=subject_of(entry), row_tag=ROWS)
            return
        if self._skip_existing:
            output_uri = image_uri(self._output, "classical", entry.id)
            record = outputs.completed_output(output_uri, classical_recipe(self._params, entry))
            if record is not None:
                yield skipped_row(base, output_uri, record)
                return
        yield entry


class CartoonizeFn(beam.DoFn):
    """Classical filter: one unit per content image (the style does not matter to it)."""

    def __init__(
        self, run_id: str, output: str, preset: str, params: CartoonParams, max_input_pixels: int,
        read_policy: storage.ReadPolicy | None = None,
    ):
        self._run_id = run_id
        self._output = output
        self._preset = preset
        self._params = params
        self._max_input_pixels = max_input_pixels
        self._read_policy = read_policy
        self._params_hash = classical_params_hash(params)

    def process(self, entry: ManifestEntry, previous=None):
        """`previous`: with --incremental, the earlier rows by content_id (multimap side input)."""
        base = _classical_base(self._run_id, self._preset, entry)
        watch = Stopwatch()
        try:
            with watch.phase("total"):
                with watch.phase("decode"):
                    data = read_input(entry, self._read_policy)
                base.update(content_sha256=sha256_hex(data), params_hash=self._params_hash)
                reused = reused_row(base, previous)
                if reused is None:
                    with watch.phase("decode"):
                        rgb = images.decode_image(data, self._max_input_pixels)
                    with watch.phase("compute"):
                        cartoon = cartoonize(rgb, self._params)
                    output_uri = image_uri(self._output, "classical", entry.id)
                    with watch.phase("write"):
                        write_image(output_uri, cartoon, classical_recipe(self._params, entry), provenance_of(base))
        except Exception as exc:  # noqa: BLE001 - every failure becomes an error row, never a crashed run
            yield from failed_unit(base, exc, watch.seconds.get("total"), entry, subject=subject_of(entry))
            return
        if reused is not None:
            yield reused
            return
        yield count_row(
            report_row(
                **base, status="ok", output_uri=output_uri, height=rgb.shape[0], width=rgb.shape[1],
                seconds_total=watch.seconds["total"], seconds_decode=watch.seconds["decode"],
                seconds_compute=watch.seconds["compute"], seconds_write=watch.seconds["write"],
            )
        )


class WriteReport(beam.PTransform):
    """The rows as a Parquet dataset under OUTPUT/report/ (Beam writes to a temp folder, then renames)."""

    def __init__(self, output: str):
        super().__init__()
        self._output = output

    def expand(self, rows):
        return rows | "Parquet" >> beam.io.WriteToParquet(
            storage.join_uri(self._output, "report", "part"),
            schema=REPORT_SCHEMA,
            file_name_suffix=".parquet",
        )


class WriteJsonLines(beam.PTransform):
    """Records as JSON lines in OUTPUT/<folder>/<folder>-*.jsonl (Beam's text sink: temp files, then
    rename)."""

    def __init__(self, output: str, folder: str, to_json):
        super().__init__()
        self._prefix = storage.join_uri(output, folder, folder)
        self._to_json = to_json

    def expand(self, records):
        return (
            records
            | "Json" >> beam.Map(self._to_json)
            | "Text" >> beam.io.WriteToText(self._prefix, file_name_suffix=".jsonl")
        )


class WriteLossCurves(WriteJsonLines):
    """NST loss curves under OUTPUT/curves/ (the contact sheet plots them)."""

    def __init__(self, output: str):
        super().__init__(output, "curves", json.dumps)


class WriteDeadLetters(WriteJsonLines):
    """Dead-letter records under OUTPUT/errors/ (one empty file when there are none).

    Each line has the failed unit's content `id` and `uri` (so the file is itself a JSONL manifest),
    `error_type`, `error`, and the original `manifest_row` (and `style_manifest_row` for NST)."""

    def __init__(self, output: str):
        super().__init__(output, "errors", dead_letter_json)
