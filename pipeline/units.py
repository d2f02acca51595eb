"""The lifecycle of a unit of work, whatever the method: what every unit goes through between its
manifest entry and its one report row.

A unit is a content image (classical) or a content x style pair (nst, feedforward). Each method's
steps hold one `UnitContext` and call it for the parts that are the same for every method: the
base row (ids, URIs, method, worker, the method's fixed columns, params_hash), reading and hashing
the input, the output's name, the reuse checks (`--skip-existing` sidecars and the inputs'
fingerprints, `--incremental` earlier reports), writing the image with its sidecar, and ending the
unit as an ok, skipped or error row (the error row with its dead-letter record, every row counted
in the Beam metrics and the local progress). A method module depends on this module and on
`pipeline.io`, never on another method.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import socket
import time
import typing

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics

from pipeline import progress
from pipeline.errors import UnitError, dead_letter, describe
from pipeline.io import outputs, storage
from pipeline.io.manifests import ManifestEntry
from pipeline.reporting.incremental import earliest, unit_key
from pipeline.reporting.schema import report_row
from transforms import images

#: Beam metrics namespace of every counter and distribution.
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


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Source(typing.NamedTuple):
    """An input image as read: its bytes, their SHA-256 and the input's fingerprint when it was read
    (`storage.fingerprint`; None where there is none), which its output's sidecar records."""

    data: bytes
    sha256: str
    fingerprint: dict | None


def subject_of(entry: ManifestEntry) -> str:
    """How a message names an input: its URI, else its id, else its manifest row."""
    if entry.uri:
        return entry.uri
    return f"id {entry.id!r}" if entry.id else f"manifest row {entry.row}"


def pair_subject(content: ManifestEntry, style: ManifestEntry) -> str:
    return f"{subject_of(content)} x {subject_of(style)}"


@dataclasses.dataclass(frozen=True)
class RunContext:
    """What every unit of one run shares, whatever its method (built once, in the driver)."""

    run_id: str
    output: str
    read_policy: storage.ReadPolicy = storage.ReadPolicy()
    max_input_pixels: int = images.DEFAULT_MAX_INPUT_PIXELS
    skip_existing: bool = False


@dataclasses.dataclass(frozen=True)
class UnitContext:
    """One method's view of the run: the unit lifecycle with that method's fixed report columns.

    `columns` are report columns every row of the method carries (classical: preset; nst: extractor,
    steps, style controls, ...). `params_hash` digests every setting that changes pixels; a method
    whose hash depends on the worker (NST's precision "auto") sets it there with `with_columns`.
    """

    run: RunContext
    method: str
    columns: dict = dataclasses.field(default_factory=dict)
    params_hash: str | None = None

    def with_columns(self, params_hash: str | None = None, **columns) -> UnitContext:
        return dataclasses.replace(
            self, columns={**self.columns, **columns}, params_hash=params_hash or self.params_hash
        )

    # -------------------------------------------------------------------------- rows and inputs

    def base(self, content: ManifestEntry | None, style: ManifestEntry | None = None,
             style_sha256: str | None = None, params_hash: str | None = None) -> dict:
        """The columns every row of this unit has, whatever its end (no content: a unit of a style alone,
        such as training a feed-forward network). `params_hash`: the unit's own, where it has more
        pixel-changing inputs than the method's settings (a feed-forward pair's network)."""
        row = dict(
            run_id=self.run.run_id, content_id=content and content.id, content_uri=content and content.uri,
            method=self.method, worker=WORKER, params_hash=params_hash or self.params_hash, **self.columns,
        )
        if style is not None:
            row.update(style_id=style.id, style_uri=style.uri, style_sha256=style_sha256)
        return row

    def read(self, entry: ManifestEntry) -> Source:
        """An input image, within the run's read policy (read once: hashed, then decoded)."""
        if entry.error:
            raise UnitError(entry.error_type, entry.error)
        data, fingerprint = storage.read_input(entry.uri, self.run.read_policy)
        return Source(data, sha256_hex(data), fingerprint)

    def decode(self, data: bytes) -> np.ndarray:
        return images.decode_image(data, self.run.max_input_pixels)

    def output_uri(self, content_id: str, style_id: str | None = None) -> str:
        """Deterministic output name from the method and the (sanitised) ids: images/<method>/<content>.png,
        or images/<method>/<style>/<content>.png (a folder per style, so no two pairs share a name)."""
        folders = [self.method] if style_id is None else [self.method, storage.safe_name(style_id)]
        return storage.join_uri(self.run.output, "images", *folders, storage.safe_name(content_id) + ".png")

    def write_image(self, uri: str, rgb: np.ndarray, recipe: str, row: dict, fingerprints: dict) -> None:
        """The PNG and its completion sidecar (see pipeline.io.outputs), each written atomically.
        `fingerprints`: the inputs' `Source.fingerprint` by role ("content", "style")."""
        provenance = {key: row.get(key) for key in outputs.PROVENANCE_KEYS}
        try:
            outputs.write_output(
                uri, images.encode_png(rgb), recipe, rgb.shape[0], rgb.shape[1], provenance, fingerprints
            )
        except OSError as exc:
            raise UnitError("write_error", f"cannot write {uri}: {exc}") from exc

    # ---------------------------------------------------------------------------- work done before

    def completed(self, base: dict, output_uri: str, recipe: str, inputs: dict[str, ManifestEntry]) -> dict | None:
        """--skip-existing: the "skipped" row when `output_uri` is complete for `recipe` and each input
        (`inputs` by role: "content", "style") is unchanged since its sidecar was written; else None (the
        unit runs). An input is unchanged when its fingerprint is the recorded one or, when only its
        modification time differs (a copy, a touch), its bytes still hash to the recorded SHA-256. An
        input's hash is reported only when it was so verified; one with no fingerprint recorded (HTTP, a
        style blend, an older sidecar) is trusted by its URI, its hash left empty."""
        if not self.run.skip_existing:
            return None
        record = outputs.completed_output(output_uri, recipe)
        if record is None:
            return None
        provenance = {"params_hash": record.get("params_hash")}
        for role, entry in inputs.items():
            recorded = record.get(f"{role}_fingerprint")
            if recorded is None:
                continue
            try:
                unchanged = self._unchanged(entry, recorded, record.get(f"{role}_sha256"))
            except Exception:  # noqa: BLE001 - gone or unreadable now: the unit runs and says why
                unchanged = False
            if not unchanged:
                return None
            provenance[f"{role}_sha256"] = record.get(f"{role}_sha256")
        return self.skipped(
            {**base, **provenance}, output_uri=output_uri, height=record.get("height"), width=record.get("width")
        )

    def _unchanged(self, entry: ManifestEntry, fingerprint: dict, sha256: str | None) -> bool:
        """Whether an input is as its sidecar recorded it: the same fingerprint, or the same size and bytes."""
        now = storage.fingerprint(entry.uri, self.run.read_policy)
        if now == fingerprint:
            return True
        if now is None or now.get("size") != fingerprint.get("size") or sha256 is None:
            return False
        return self.read(entry).sha256 == sha256

    def reused(self, base: dict, previous) -> dict | None:
        """--incremental: the "skipped" row of a unit (`base` has its ids, method and hashes) when an
        earlier report has a row of the same unit_key, naming that row's image (not copied); else None.
        `previous` is the multimap side input of earlier rows by content_id (None without --incremental)."""
        if previous is None:
            return None
        key = unit_key(base)
        matches = [row for row in previous[base["content_id"]] if unit_key(row) == key]
        if not matches:
            return None
        earlier = earliest(matches)
        Metrics.counter(NAMESPACE, "units_reused").inc()
        return self.skipped(base, output_uri=earlier["output_uri"], height=earlier["height"], width=earlier["width"])

    # ------------------------------------------------------------------------------------ endings

    def ok(self, base: dict, **fields) -> dict:
        return self._count(report_row(**base, status="ok", **fields))

    def skipped(self, base: dict, **fields) -> dict:
        """Done before (--skip-existing, --incremental, a model reused): nothing computed."""
        return self._count(report_row(**base, status="skipped", **fields))

    def error(self, base: dict, exc: Exception, seconds_total: float | None, subject: str) -> dict:
        """The error row of a unit; `subject` names the input in the message."""
        error_type, message = describe(exc, subject)
        return self._count(
            report_row(**base, status="error", error_type=error_type, error=message, seconds_total=seconds_total)
        )

    def failed(self, base: dict, exc: Exception, seconds_total: float | None, content: ManifestEntry,
               style: ManifestEntry | None = None, subject: str | None = None, row_tag: str | None = None):
        """A failed unit of a content image: its error row (main output, or `row_tag`) and its dead-letter
        record. `subject` names the input in the message (default: the content's URI)."""
        row = self.error(base, exc, seconds_total, subject_of(content) if subject is None else subject)
        yield row if row_tag is None else beam.pvalue.TaggedOutput(row_tag, row)
        yield beam.pvalue.TaggedOutput(DEAD_LETTERS, dead_letter(row, content, style))

    @staticmethod
    def _count(row: dict) -> dict:
        Metrics.counter(NAMESPACE, f"units_{row['status']}").inc()
        progress.record(row["status"])
        if row["seconds_total"] is not None:
            Metrics.distribution(NAMESPACE, "unit_ms").update(int(row["seconds_total"] * 1000))
        return row
