"""The NST steps: style targets once per style, pair triage, and the stylization of each content image
with all its styles. Like `pipeline.transformations` they only adapt `transforms.nst` to Beam; this is
the only pipeline module that imports Keras (and so TensorFlow, JAX or PyTorch), and only NST runs use it.
"""
from __future__ import annotations

import dataclasses
import functools
import typing

import apache_beam as beam
import keras
import numpy as np
from apache_beam.metrics import Metrics
from apache_beam.utils import shared

from pipeline import outputs
from pipeline.errors import UnitError, classify
from pipeline.manifests import ManifestEntry
from pipeline.report import report_row
from pipeline.transformations import (
    NAMESPACE,
    ROWS,
    WORKER,
    Stopwatch,
    count_row,
    failed_unit,
    image_uri,
    provenance_of,
    read_input,
    reused_row,
    sha256_hex,
    skipped_row,
    subject_of,
    write_image,
)
from transforms import images
from transforms.nst import controls
from transforms.nst.extractors import load_extractor
from transforms.nst.inputs import prepare_content, prepare_style
from transforms.nst.optimize import (
    content_targets_for,
    resolve_jit_compile,
    resolve_precision,
    style_targets,
    stylize_content,
)
from transforms.nst.settings import NSTSettings

#: Tagged output of StylizeFn: loss curves, {content_id, style_id, step_every, losses} (OUTPUT/curves/).
CURVES = "curves"


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
            style = prepare_style(images.decode_image(data, self._max_input_pixels), self._settings)
            grams = style_targets(self._extractor, style)
        except Exception as exc:  # noqa: BLE001 - a bad style image fails its pairs, not the run
            yield StyleTargets(entry, None, classify(exc), sha256)
            return
        yield StyleTargets(entry, grams, None, sha256)


class PendingPairs(typing.NamedTuple):
    """A content image and the style entries whose pairs still need work (from PairTriageFn)."""

    entry: ManifestEntry
    styles: frozenset  # of style ManifestEntry


def _nst_base(
    run_id: str, entry: ManifestEntry, extractor: str, settings: NSTSettings, style_blend: str | None
) -> dict:
    return dict(
        run_id=run_id, content_id=entry.id, content_uri=entry.uri, method="nst", worker=WORKER,
        extractor=extractor, backend=keras.backend.backend(), device=device_name(), steps=settings.steps,
        seed=settings.seed, init=settings.init, style_strength=settings.style_strength,
        preserve_colors=settings.preserve_colors, output_size=settings.output_size, style_blend=style_blend,
    )


def _pair_base(base: dict, style: ManifestEntry, style_sha256: str | None = None) -> dict:
    return dict(base, style_id=style.id, style_uri=style.uri, style_sha256=style_sha256)


class PairTriageFn(beam.DoFn):
    """NST pairs before any work (`styles` is the side input of style entries). An unusable content
    row fails all its pairs; with `skip_existing`, complete pairs become "skipped" rows. Those rows leave
    on ROWS (dead letters on DEAD_LETTERS). What remains goes on to StylizeFn: the entry itself, or
    `PendingPairs` when only some of its pairs need work."""

    def __init__(
        self, run_id: str, output: str, extractor: str, weights: str, settings: NSTSettings, skip_existing: bool,
        style_blend: str | None = None,
    ):
        self._run_id = run_id
        self._style_blend = style_blend
        self._output = output
        self._extractor_name = extractor
        self._weights = weights
        self._settings = settings
        self._skip_existing = skip_existing

    def process(self, entry: ManifestEntry, styles: list):
        styles = sorted(styles, key=lambda s: (s.id, s.uri))
        if entry.error:
            base = _nst_base(self._run_id, entry, self._extractor_name, self._settings, self._style_blend)
            for style in styles:
                failure = UnitError("bad_manifest_row", entry.error)
                yield from failed_unit(_pair_base(base, style), failure, None, entry, style, subject_of(entry), row_tag=ROWS)
            return
        if not self._skip_existing:
            yield entry
            return
        pending = []
        base = _nst_base(self._run_id, entry, self._extractor_name, self._settings, self._style_blend)
        for style in styles:
            if style.error is None:
                output_uri = image_uri(self._output, "nst", entry.id, style.id)
                recipe = nst_recipe(self._extractor_name, self._weights, self._settings, entry, style)
                record = outputs.completed_output(output_uri, recipe)
                if record is not None:
                    yield skipped_row(_pair_base(base, style), output_uri, record)
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
        base = _nst_base(self._run_id, entry, self._extractor_name, self._settings, self._style_blend)

        watch = Stopwatch()
        try:
            with watch.phase("decode"):
                data = read_input(entry, self._read_policy)
            if self._params_hash is None:
                self._params_hash = nst_params_hash(self._extractor_name, self._weights, self._settings)
            base.update(content_sha256=sha256_hex(data), params_hash=self._params_hash)
        except Exception as exc:  # noqa: BLE001 - a bad content image fails its pairs, not the run
            for style in styles:
                yield from failed_unit(_pair_base(base, style.entry), exc, watch.seconds.get("decode"), entry, style.entry, subject_of(entry))
            return
        pending = []
        for style in styles:
            reused = None if style.error else reused_row(_pair_base(base, style.entry, style.sha256), previous)
            if reused is None:
                pending.append(style)
            else:
                yield reused
        if not pending:
            return  # every pair done earlier: no decode, no content targets
        styles = pending
        try:
            with watch.phase("decode"):
                content = prepare_content(images.decode_image(data, self._max_input_pixels), self._settings)
            with watch.phase("targets"):
                targets = content_targets_for(self._extractor, content, self._settings)
        except Exception as exc:  # noqa: BLE001 - a bad content image fails its pairs, not the run
            for style in styles:
                yield from failed_unit(
                    _pair_base(base, style.entry, style.sha256), exc, watch.seconds.get("decode"), entry, style.entry,
                    subject_of(entry),
                )
            return
        ready = []
        for style in styles:
            if style.error:
                error_type, message = style.error
                yield from failed_unit(
                    _pair_base(base, style.entry, style.sha256), UnitError(error_type, message), None, entry, style.entry,
                    subject=f"style {subject_of(style.entry)}",
                )
            else:
                ready.append(style)
        shared_seconds = (watch.seconds["decode"], watch.seconds["targets"])
        for start in range(0, len(ready), self._batch_size):
            batch = ready[start : start + self._batch_size]
            yield from self._stylize_batch(entry, content, targets, batch, base, shared_seconds, len(ready))

    def _stylize_batch(self, entry, content, targets, batch, base, shared_seconds, pairs_of_content):
        watch = Stopwatch()
        decode_share = shared_seconds[0] / pairs_of_content
        targets_share = shared_seconds[1] / pairs_of_content
        try:
            with watch.phase("compute"):
                result = stylize_content(self._extractor, content, [s.grams for s in batch], self._settings,
                                         pair_ids=[(entry.id, s.entry.id) for s in batch], targets=targets)
        except Exception as exc:  # noqa: BLE001
            for style in batch:
                yield from failed_unit(
                    _pair_base(base, style.entry, style.sha256), exc, None, entry, style.entry,
                    subject=f"{subject_of(entry)} x {subject_of(style.entry)}",
                )
            return
        compute_share = watch.seconds["compute"] / len(batch) + targets_share
        for style, curve in zip(batch, result.curves or []):
            record = dict(content_id=entry.id, style_id=style.entry.id, step_every=self._settings.loss_every, losses=curve)
            yield beam.pvalue.TaggedOutput(CURVES, record)
        for style, image, losses in zip(batch, result.images, result.losses):
            pair = f"{subject_of(entry)} x {subject_of(style.entry)}"
            row = dict(
                _pair_base(base, style.entry, style.sha256), height=image.shape[0], width=image.shape[1],
                loss_total=losses["total"], loss_content=losses["content"], loss_style=losses["style"],
                loss_tv=losses["tv"], seconds_decode=decode_share, seconds_compute=compute_share,
            )
            if not all(np.isfinite(v) for v in losses.values()):
                failure = UnitError("non_finite_loss", f"loss became {losses['total']}")
                yield from failed_unit(row, failure, decode_share + compute_share, entry, style.entry, subject=pair)
                continue
            output_uri = image_uri(self._output, "nst", row["content_id"], row["style_id"])
            recipe = nst_recipe(self._extractor_name, self._weights, self._settings, entry, style.entry)
            pair_watch = Stopwatch()
            try:
                with pair_watch.phase("write"):
                    write_image(output_uri, images.to_uint8(image), recipe, provenance_of(row))
            except UnitError as exc:
                yield from failed_unit(row, exc, decode_share + compute_share, entry, style.entry, subject=pair)
                continue
            seconds_write = pair_watch.seconds["write"]
            yield count_row(
                report_row(
                    **row, status="ok", output_uri=output_uri, seconds_write=seconds_write,
                    seconds_total=decode_share + compute_share + seconds_write,
                )
            )
