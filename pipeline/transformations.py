"""Beam steps. Each one only adapts a pure function from `transforms/` to elements, side inputs,
metrics and I/O; the image math lives there.

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
import dataclasses
import functools
import hashlib
import json
import os
import socket
import time
import typing

import apache_beam as beam
import keras
import numpy as np
from apache_beam.metrics import Metrics
from apache_beam.utils import shared

from pipeline import outputs, progress, storage
from pipeline.errors import UnitError, classify, dead_letter, dead_letter_json, describe
from pipeline.manifests import ManifestEntry, read_manifest
from pipeline.report import REPORT_SCHEMA, earliest, previous_report_files, read_previous_rows, report_row, unit_key
from transforms import images
from transforms.cartoon import CartoonParams, cartoonize
from transforms.nst import controls
from transforms.nst.buckets import from_bucket, to_bucket
from transforms.nst.extractors import load_extractor
from transforms.nst.optimize import (
    NSTSettings,
    content_targets,
    resolve_jit_compile,
    resolve_precision,
    style_targets,
    stylize,
    stylize_high_res,
)

NAMESPACE = "toonbeam"
WORKER = f"{socket.gethostname()}:{os.getpid()}"
#: Tagged output of every step that can fail a unit: dead-letter records (dicts).
DEAD_LETTERS = "dead_letters"
#: Tagged output of the triage steps: the report rows of units they settled (errors, skipped).
ROWS = "rows"
#: Tagged output of StylizeFn: loss curves, {content_id, style_id, step_every, losses} (OUTPUT/curves/).
CURVES = "curves"
#: Both extractors read features at stride 16 (VGG19's block5 after four poolings), so NST needs images
#: at least this many pixels on the short side after resizing to --max-dim.
NST_MIN_SIDE = 16


@functools.lru_cache(maxsize=None)
def device_name() -> str:
    """Where the Keras backend computes, for the report: "cpu" or the accelerator's name (asked once
    per process: it does not change, and every NST element's row needs it)."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_logical_devices("GPU")
        return gpus[0].name if gpus else "cpu"
    if backend == "jax":
        import jax

        return str(jax.devices()[0])
    if backend == "torch":
        import torch

        return torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    return backend


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


def pixel_settings(settings: NSTSettings) -> NSTSettings:
    """The settings with their "auto" values resolved as `stylize` resolves them on this worker:
    bfloat16 or float32, XLA or not, give different pixels."""
    jit = "on" if resolve_jit_compile(settings) else "off"
    # max_memory_gb only decides whether a pair is refused, never its pixels
    return dataclasses.replace(
        settings, precision=resolve_precision(settings), jit_compile=jit, max_memory_gb=0.0, loss_every=0
    )


def nst_params_hash(extractor: str, weights: str, settings: NSTSettings) -> str:
    """All NSTSettings fields (resolved on this worker), the extractor, the weights and the Keras backend."""
    return outputs.params_hash(
        "nst", extractor=extractor, weights=weights, settings=pixel_settings(settings), backend=keras.backend.backend(),
    )


def nst_recipe(extractor: str, weights: str, settings: NSTSettings, content: ManifestEntry, style: ManifestEntry) -> str:
    return outputs.recipe_digest(
        method="nst", extractor=extractor, weights=weights, settings=settings,
        content_uri=content.uri, style_uri=style.uri,
    )


def _count(row: dict) -> dict:
    Metrics.counter(NAMESPACE, f"units_{row['status']}").inc()
    progress.record(row["status"])
    if row["seconds_total"] is not None:
        Metrics.distribution(NAMESPACE, "unit_ms").update(int(row["seconds_total"] * 1000))
    return row


def _subject(entry: ManifestEntry) -> str:
    """How a message names an input: its URI, else its id, else its manifest row."""
    if entry.uri:
        return entry.uri
    return f"id {entry.id!r}" if entry.id else f"manifest row {entry.row}"


def _error_row(base: dict, exc: Exception, seconds_total: float | None, subject: str | None = None) -> dict:
    if subject is None:
        subject = base.get("content_uri") or base.get("content_id") or ""
    error_type, message = describe(exc, subject)
    return report_row(**base, status="error", error_type=error_type, error=message, seconds_total=seconds_total)


def _failed(base, exc, seconds_total, content, style=None, subject=None, row_tag=None):
    """A failed unit: its error row (main output, or `row_tag`) and its dead-letter record."""
    row = _count(_error_row(base, exc, seconds_total, subject))
    yield row if row_tag is None else beam.pvalue.TaggedOutput(row_tag, row)
    yield beam.pvalue.TaggedOutput(DEAD_LETTERS, dead_letter(row, content, style))


def _skipped(base: dict, output_uri: str, record: dict) -> beam.pvalue.TaggedOutput:
    """A --skip-existing row; its hashes are those the sidecar recorded (null for older sidecars)."""
    provenance = {key: record.get(key) for key in outputs.PROVENANCE_KEYS}
    row = report_row(
        **{**base, **provenance}, status="skipped", output_uri=output_uri, height=record.get("height"),
        width=record.get("width"),
    )
    return beam.pvalue.TaggedOutput(ROWS, _count(row))


def _provenance(row: dict) -> dict:
    return {key: row.get(key) for key in outputs.PROVENANCE_KEYS}


def _reused(base: dict, previous) -> dict | None:
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
    return _count(
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
            yield from _failed(base, UnitError("bad_manifest_row", entry.error), None, entry, subject=_subject(entry), row_tag=ROWS)
            return
        if self._skip_existing:
            output_uri = image_uri(self._output, "classical", entry.id)
            record = outputs.completed_output(output_uri, classical_recipe(self._params, entry))
            if record is not None:
                yield _skipped(base, output_uri, record)
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
                reused = _reused(base, previous)
                if reused is None:
                    with watch.phase("decode"):
                        rgb = images.decode_image(data, self._max_input_pixels)
                    with watch.phase("compute"):
                        cartoon = cartoonize(rgb, self._params)
                    output_uri = image_uri(self._output, "classical", entry.id)
                    with watch.phase("write"):
                        write_image(output_uri, cartoon, classical_recipe(self._params, entry), _provenance(base))
        except Exception as exc:  # noqa: BLE001 - every failure becomes an error row, never a crashed run
            yield from _failed(base, exc, watch.seconds.get("total"), entry, subject=_subject(entry))
            return
        if reused is not None:
            yield reused
            return
        yield _count(
            report_row(
                **base, status="ok", output_uri=output_uri, height=rgb.shape[0], width=rgb.shape[1],
                seconds_total=watch.seconds["total"], seconds_decode=watch.seconds["decode"],
                seconds_compute=watch.seconds["compute"], seconds_write=watch.seconds["write"],
            )
        )


class _WithSharedExtractor(beam.DoFn):
    """Loads the feature extractor once per worker process, shared by all threads and both NST steps."""

    def __init__(self, handle: shared.Shared, extractor: str, weights: str, settings: NSTSettings):
        self._handle = handle
        self._extractor_name = extractor
        self._weights = weights
        self._settings = settings
        self._loaded_here = False

    def setup(self):
        def load():
            self._loaded_here = True
            return load_extractor(self._extractor_name, self._weights)

        self._extractor = self._handle.acquire(load, tag=(self._extractor_name, self._weights))

    def start_bundle(self):
        # Metrics only count inside bundles, so the load done in setup() is reported here, once.
        if self._loaded_here:
            Metrics.counter(NAMESPACE, "extractor_loads").inc()
            self._loaded_here = False

    def _decode_resized(self, data: bytes, max_input_pixels: int) -> np.ndarray:
        rgb = images.decode_image(data, max_input_pixels)
        resized = images.resize_to_max_dim(rgb, self._settings.max_dim)
        images.check_min_side(resized, NST_MIN_SIDE, f"after resizing to --max-dim {self._settings.max_dim}")
        return images.to_float01(resized)


class StyleTargets(typing.NamedTuple):
    """What the NST step needs of one style image: its grams, or why it has none."""

    entry: ManifestEntry
    grams: list | None
    error: tuple[str, str] | None  # (error_type, message)
    sha256: str | None = None  # of the style image's bytes as read (the report's style_sha256)


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
        return StyleTargets(entry, None, ("bad_manifest_row", entry.error))
    parts = [by_id[name] for name, _ in blend]
    failed = next((part for part in parts if part.error), None)
    if failed is not None:
        return StyleTargets(entry, None, (failed.error[0], f"style {failed.entry.id} of the blend: {failed.error[1]}"))
    grams = controls.blend_grams([part.grams for part in parts], [weight for _, weight in blend])
    digest = sha256_hex("|".join(f"{part.sha256}:{weight!r}" for part, (_, weight) in zip(parts, blend)).encode())
    return StyleTargets(entry, grams, None, digest)


class StyleTargetsFn(_WithSharedExtractor):
    """Gram matrices of each style image, computed once per style (not once per pair)."""

    def __init__(self, handle, extractor, weights, settings, max_input_pixels: int, read_policy=None):
        super().__init__(handle, extractor, weights, settings)
        self._max_input_pixels = max_input_pixels
        self._read_policy = read_policy

    def process(self, entry: ManifestEntry):
        sha256 = None
        try:
            data = read_input(entry, self._read_policy)
            sha256 = sha256_hex(data)
            grams = style_targets(self._extractor, self._decode_resized(data, self._max_input_pixels))
        except Exception as exc:  # noqa: BLE001 - a bad style image fails its pairs, not the run
            yield StyleTargets(entry, None, classify(exc), sha256)
            return
        yield StyleTargets(entry, grams, None, sha256)


class PendingPairs(typing.NamedTuple):
    """A content image and the style entries whose pairs still need work (from PairTriageFn)."""

    entry: ManifestEntry
    styles: frozenset  # of style ManifestEntry


def _nst_base(run_id: str, entry: ManifestEntry, extractor: str, settings: NSTSettings) -> dict:
    return dict(
        run_id=run_id, content_id=entry.id, content_uri=entry.uri, method="nst", worker=WORKER,
        extractor=extractor, backend=keras.backend.backend(), device=device_name(), steps=settings.steps,
        seed=settings.seed, init=settings.init, style_strength=settings.style_strength,
        preserve_colors=settings.preserve_colors, output_size=settings.output_size,
    )


def _pair_base(base: dict, style: ManifestEntry, style_sha256: str | None = None) -> dict:
    return dict(base, style_id=style.id, style_uri=style.uri, style_sha256=style_sha256)


class PairTriageFn(beam.DoFn):
    """NST pairs before any work (`styles` is the side input of style entries). An unusable content
    row fails all its pairs; with `skip_existing`, complete pairs become "skipped" rows. Those rows leave
    on ROWS (dead letters on DEAD_LETTERS). What remains goes on to StylizeFn: the entry itself, or
    `PendingPairs` when only some of its pairs need work."""

    def __init__(self, run_id: str, output: str, extractor: str, weights: str, settings: NSTSettings, skip_existing: bool):
        self._run_id = run_id
        self._output = output
        self._extractor_name = extractor
        self._weights = weights
        self._settings = settings
        self._skip_existing = skip_existing

    def process(self, entry: ManifestEntry, styles: list):
        styles = sorted(styles, key=lambda s: (s.id, s.uri))
        if entry.error:
            base = _nst_base(self._run_id, entry, self._extractor_name, self._settings)
            for style in styles:
                failure = UnitError("bad_manifest_row", entry.error)
                yield from _failed(_pair_base(base, style), failure, None, entry, style, _subject(entry), row_tag=ROWS)
            return
        if not self._skip_existing:
            yield entry
            return
        pending = []
        base = _nst_base(self._run_id, entry, self._extractor_name, self._settings)
        for style in styles:
            if style.error is None:
                output_uri = image_uri(self._output, "nst", entry.id, style.id)
                recipe = nst_recipe(self._extractor_name, self._weights, self._settings, entry, style)
                record = outputs.completed_output(output_uri, recipe)
                if record is not None:
                    yield _skipped(_pair_base(base, style), output_uri, record)
                    continue
            pending.append(style)
        if pending:
            yield PendingPairs(entry, frozenset(pending))


class StylizeFn(_WithSharedExtractor):
    """All pairs of one content image: content targets once, styles optimised together in batches.

    The element is a content ManifestEntry (all styles) or a PendingPairs (only those styles).
    Seconds that the batch shares (decode, targets, optimisation) are split evenly among its pairs, so
    that the report's seconds add up to the work done.
    """

    def __init__(
        self, run_id, output, handle, extractor, weights, settings, max_input_pixels, batch_size, read_policy=None,
        style_blend: str | None = None,
    ):
        super().__init__(handle, extractor, weights, settings)
        self._style_blend = style_blend
        self._run_id = run_id
        self._output = output
        self._max_input_pixels = max_input_pixels
        self._batch_size = batch_size
        self._read_policy = read_policy
        self._params_hash = None  # resolved on the worker (see nst_params_hash)

    def process(self, element, styles: list, previous=None):
        """`previous`: with --incremental, the earlier rows by content_id (multimap side input)."""
        if isinstance(element, PendingPairs):
            entry = element.entry
            styles = [s for s in styles if s.entry in element.styles]
        else:
            entry = element
        styles = sorted(styles, key=lambda s: (s.entry.id, s.entry.uri))
        base = dict(_nst_base(self._run_id, entry, self._extractor_name, self._settings), style_blend=self._style_blend)

        watch = Stopwatch()
        try:
            with watch.phase("decode"):
                data = read_input(entry, self._read_policy)
            if self._params_hash is None:
                self._params_hash = nst_params_hash(self._extractor_name, self._weights, self._settings)
            base.update(content_sha256=sha256_hex(data), params_hash=self._params_hash)
        except Exception as exc:  # noqa: BLE001 - a bad content image fails its pairs, not the run
            for style in styles:
                yield from _failed(_pair_base(base, style.entry), exc, watch.seconds.get("decode"), entry, style.entry, _subject(entry))
            return
        pending = []
        for style in styles:
            reused = None if style.error else _reused(_pair_base(base, style.entry, style.sha256), previous)
            if reused is None:
                pending.append(style)
            else:
                yield reused
        if not pending:
            return  # every pair done earlier: no decode, no content targets
        styles = pending
        try:
            with watch.phase("decode"):
                content = self._decode_content(data)
            with watch.phase("targets"):
                # the high-resolution pyramid takes its content targets level by level itself
                targets = None if self._high_res else content_targets(self._extractor, to_bucket(content))
        except Exception as exc:  # noqa: BLE001 - a bad content image fails its pairs, not the run
            for style in styles:
                yield from _failed(
                    _pair_base(base, style.entry, style.sha256), exc, watch.seconds.get("decode"), entry, style.entry,
                    _subject(entry),
                )
            return
        ready = []
        for style in styles:
            if style.error:
                error_type, message = style.error
                yield from _failed(
                    _pair_base(base, style.entry, style.sha256), UnitError(error_type, message), None, entry, style.entry,
                    subject=f"style {_subject(style.entry)}",
                )
            else:
                ready.append(style)
        shared_seconds = (watch.seconds["decode"], watch.seconds["targets"])
        for start in range(0, len(ready), self._batch_size):
            batch = ready[start : start + self._batch_size]
            yield from self._stylize_batch(entry, content, targets, batch, base, shared_seconds, len(ready))

    @property
    def _high_res(self) -> bool:
        return self._settings.output_size != "max_dim"

    def _decode_content(self, data: bytes) -> np.ndarray:
        """The content in [0,1]: resized to --max-dim, or at its own size for the high-res pyramid."""
        if not self._high_res:
            return self._decode_resized(data, self._max_input_pixels)
        original = images.to_float01(images.decode_image(data, self._max_input_pixels))
        resized = images.resize_to_max_dim(original, self._settings.max_dim)
        images.check_min_side(resized, NST_MIN_SIDE, f"after resizing to --max-dim {self._settings.max_dim}")
        return original

    def _optimise(self, content, targets, batch, pair_ids) -> tuple[list, list, list | None]:
        """(images, losses, loss curves or None) of one batch. At --max-dim the content is optimised at its bucket (multiples
        of 32, so a catalog compiles few shapes) and each result resized back to the content's size."""
        grams = [s.grams for s in batch]
        if self._high_res:
            result = stylize_high_res(self._extractor, content, grams, self._settings, pair_ids=pair_ids)
            return list(result.images), result.losses, result.curves
        result = stylize(self._extractor, to_bucket(content), targets, grams, self._settings, pair_ids=pair_ids)
        return [from_bucket(image, content.shape) for image in result.images], result.losses, result.curves

    def _stylize_batch(self, entry, content, targets, batch, base, shared_seconds, pairs_of_content):
        watch = Stopwatch()
        decode_share = shared_seconds[0] / pairs_of_content
        targets_share = shared_seconds[1] / pairs_of_content
        try:
            with watch.phase("compute"):
                results, losses_batch, curves = self._optimise(content, targets, batch, [(entry.id, s.entry.id) for s in batch])
        except Exception as exc:  # noqa: BLE001
            for style in batch:
                yield from _failed(
                    _pair_base(base, style.entry, style.sha256), exc, None, entry, style.entry,
                    subject=f"{_subject(entry)} x {_subject(style.entry)}",
                )
            return
        compute_share = watch.seconds["compute"] / len(batch) + targets_share
        for style, curve in zip(batch, curves or []):
            record = dict(content_id=entry.id, style_id=style.entry.id, step_every=self._settings.loss_every, losses=curve)
            yield beam.pvalue.TaggedOutput(CURVES, record)
        for style, image, losses in zip(batch, results, losses_batch):
            pair = f"{_subject(entry)} x {_subject(style.entry)}"
            row = dict(
                _pair_base(base, style.entry, style.sha256), height=image.shape[0], width=image.shape[1],
                loss_total=losses["total"], loss_content=losses["content"], loss_style=losses["style"],
                loss_tv=losses["tv"], seconds_decode=decode_share, seconds_compute=compute_share,
            )
            if not all(np.isfinite(v) for v in losses.values()):
                failure = UnitError("non_finite_loss", f"loss became {losses['total']}")
                yield from _failed(row, failure, decode_share + compute_share, entry, style.entry, subject=pair)
                continue
            output_uri = image_uri(self._output, "nst", row["content_id"], row["style_id"])
            recipe = nst_recipe(self._extractor_name, self._weights, self._settings, entry, style.entry)
            pair_watch = Stopwatch()
            try:
                with pair_watch.phase("write"):
                    write_image(output_uri, images.to_uint8(image), recipe, _provenance(row))
            except UnitError as exc:
                yield from _failed(row, exc, decode_share + compute_share, entry, style.entry, subject=pair)
                continue
            seconds_write = pair_watch.seconds["write"]
            yield _count(
                report_row(
                    **row, status="ok", output_uri=output_uri, seconds_write=seconds_write,
                    seconds_total=decode_share + compute_share + seconds_write,
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
