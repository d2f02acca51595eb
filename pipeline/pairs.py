"""Parts shared by the methods whose units are content x style pairs (nst, feedforward): the style
side input, pair triage before any work, and style blends. Keras-free: only the steps that compute
import a framework (see `pipeline.models`)."""
from __future__ import annotations

import dataclasses
import typing

import apache_beam as beam

from pipeline.errors import UnitError
from pipeline.io.manifests import ManifestEntry
from pipeline.units import ROWS, Source, Stopwatch, UnitContext, sha256_hex
from transforms.nst import controls


class StyleTargets(typing.NamedTuple):
    """What a styled method needs of one style image: its Gram matrices, or why it has none."""

    entry: ManifestEntry
    grams: list | None
    error: tuple[str, str] | None  # (error_type, message)
    sha256: str | None = None  # of the style image's bytes as read (the report's style_sha256)
    fingerprint: dict | None = None  # of the style image as read (storage.fingerprint; none for a blend)
    params_hash: str | None = None  # of its pairs when it differs from the method's (None: the method's)


class PendingPairs(typing.NamedTuple):
    """A content image and the style entries whose pairs still need work (from PairTriageFn)."""

    entry: ManifestEntry
    styles: frozenset  # of style ManifestEntry


def pending_styles(element, styles: list) -> tuple[ManifestEntry, list]:
    """The content entry of a PairTriageFn output and, of `styles` (anything with an `.entry`), those
    whose pairs still need work, sorted by style id."""
    if isinstance(element, PendingPairs):
        entry = element.entry
        styles = [s for s in styles if s.entry in element.styles]
    else:
        entry = element
    return entry, sorted(styles, key=lambda s: (s.entry.id, s.entry.uri))


@dataclasses.dataclass
class ContentOfPairs:
    """A content image read once for all its pairs: `bases` (each pair's report columns, by style entry),
    `pending` (the styles whose pairs still need work) and `settled` (what to emit for the pairs that
    ended here: error rows and dead letters of an unreadable content, rows reused by --incremental)."""

    source: Source | None
    bases: dict
    pending: list
    settled: list


def read_content_of_pairs(units: UnitContext, entry: ManifestEntry, styles: list, previous, watch: Stopwatch,
                          row_tag: str | None = None) -> ContentOfPairs:
    """Read and hash a content image once for its pairs with `styles` (anything with `.entry`, `.sha256`,
    `.params_hash` and `.error`); `previous` is the --incremental side input. Rows go to the main output, or
    `row_tag`."""
    bases = {style.entry: units.base(entry, style.entry, style.sha256, style.params_hash) for style in styles}
    try:
        with watch.phase("decode"):
            source = units.read(entry)
    except Exception as exc:  # noqa: BLE001 - a bad content image fails its pairs, not the run
        settled = list(fail_pairs(units, entry, styles, bases, exc, watch.seconds.get("decode"), row_tag))
        return ContentOfPairs(None, bases, [], settled)
    for base in bases.values():
        base.update(content_sha256=source.sha256)
    pending, settled = [], []
    for style in styles:
        reused = None if style.error else units.reused(bases[style.entry], previous)
        if reused is None:
            pending.append(style)
        else:
            settled.append(reused if row_tag is None else beam.pvalue.TaggedOutput(row_tag, reused))
    return ContentOfPairs(source, bases, pending, settled)


def fail_pairs(units: UnitContext, entry: ManifestEntry, styles: list, bases: dict, exc: Exception,
               seconds: float | None, row_tag: str | None = None):
    """The error rows and dead letters of every pair of `entry` with `styles`, failed by one error of the
    content image (unreadable, undecodable, or its preparation failed): the pairs fail, not the run."""
    for style in styles:
        yield from units.failed(bases[style.entry], exc, seconds, entry, style.entry, row_tag=row_tag)


class PairTriageFn(beam.DoFn):
    """Pairs before any work (`styles` is the side input of style entries). An unusable content row
    fails all its pairs; with --skip-existing, complete pairs become "skipped" rows. Those rows leave on
    ROWS (dead letters on DEAD_LETTERS). What remains goes on: the entry itself, or `PendingPairs`
    when only some of its pairs need work. `recipe(content, style, **side_inputs)` is the method's output
    recipe, given the step's other side inputs (the feedforward method's models: a pair's recipe names
    its model); `on_worker(units)` adds the columns only a worker knows (backend, device, params_hash)."""

    def __init__(self, units: UnitContext, recipe, on_worker=None):
        self._units = units
        self._recipe = recipe
        self._on_worker = on_worker

    def setup(self):
        if self._on_worker is not None:
            self._units = self._on_worker(self._units)

    def process(self, entry: ManifestEntry, styles: list, **recipe_inputs):
        styles = sorted(styles, key=lambda s: (s.id, s.uri))
        units = self._units
        if entry.error:
            for style in styles:
                failure = UnitError(entry.error_type, entry.error)
                yield from units.failed(units.base(entry, style), failure, None, entry, style, row_tag=ROWS)
            return
        if not units.run.skip_existing:
            yield entry
            return
        pending = []
        for style in styles:
            if style.error is None:
                output_uri = units.output_uri(entry.id, style.id)
                inputs = {"content": entry, "style": style}
                recipe = self._recipe(entry, style, **recipe_inputs)
                skipped = units.completed(units.base(entry, style), output_uri, recipe, inputs)
                if skipped is not None:
                    yield beam.pvalue.TaggedOutput(ROWS, skipped)
                    continue
            pending.append(style)
        if pending:
            yield PendingPairs(entry, frozenset(pending))


def blend_id(blend: list[tuple[str, float]]) -> str:
    """The id of a style blend, as written in the report: "a:0.7+b:0.3"."""
    return "+".join(f"{name}:{weight:g}" for name, weight in blend)


def blend_entry(entries: list[ManifestEntry], blend: list[tuple[str, float]]) -> ManifestEntry:
    """One style entry standing for the blend of the named style entries (an error entry when one of
    them is not in the style manifest)."""
    by_id = {entry.id: entry for entry in entries}
    missing = [name for name, _ in blend if name not in by_id]
    uri = " + ".join(by_id[name].uri for name, _ in blend if name in by_id)
    error = f"--style-blend names styles that are not in --style: {', '.join(missing)}" if missing else None
    return ManifestEntry(id=blend_id(blend), uri=uri, error=error)


def blend_targets(targets: list[StyleTargets], blend: list[tuple[str, float]]) -> StyleTargets:
    """The blend's targets: the weighted mean of its styles' grams (`controls.blend_grams`)."""
    by_id = {target.entry.id: target for target in targets}
    entry = blend_entry([target.entry for target in targets], blend)
    if entry.error:
        return StyleTargets(entry, None, (entry.error_type, entry.error))
    parts = [by_id[name] for name, _ in blend]
    failed = next((part for part in parts if part.error), None)
    if failed is not None:
        return StyleTargets(entry, None, (failed.error[0], f"style {failed.entry.id} of the blend: {failed.error[1]}"))
    grams = controls.blend_grams([part.grams for part in parts], [weight for _, weight in blend])
    digest = sha256_hex("|".join(f"{part.sha256}:{weight!r}" for part, (_, weight) in zip(parts, blend)).encode())
    return StyleTargets(entry, grams, None, digest)


class BlendStyles(beam.PTransform):
    """--style-blend: the style entries and their targets, each replaced by the one blend they make
    (the units become content x the blend)."""

    def __init__(self, blend: list[tuple[str, float]]):
        super().__init__()
        self._blend = blend

    def expand(self, inputs):
        entries, targets = inputs
        blend = self._blend
        return (
            entries | "Entries" >> beam.combiners.ToList() | "Entry" >> beam.Map(blend_entry, blend),
            targets | "Targets" >> beam.combiners.ToList() | "Blend" >> beam.Map(blend_targets, blend),
        )
