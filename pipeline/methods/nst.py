"""The nst method: Gatys neural style transfer (`transforms.nst`), one unit per content x style pair.

Steps: `StyleTargetsFn` computes each style's Gram matrices once (not once per pair); `PairTriageFn`
(pipeline.pairs) settles what needs no work; `StylizeFn` reads each content image once, computes its
content targets once, and optimises all its pending styles together in batches. The extractor is
loaded once per worker process (pipeline.models).
"""
from __future__ import annotations

import dataclasses

import apache_beam as beam
import keras
import numpy as np
from apache_beam.utils import shared

from pipeline.errors import UnitError, classify
from pipeline.io import outputs
from pipeline.io.manifests import ManifestEntry
from pipeline.io.sinks import WriteLossCurves
from pipeline.methods import Method
from pipeline.models import WithSharedExtractor, check_neural_options, check_worker_backend, worker_columns
from pipeline.options import nst_settings
from pipeline.pairs import BlendStyles, PairTriageFn, StyleTargets, fail_pairs, pending_styles, read_content_of_pairs
from pipeline.units import (
    DEAD_LETTERS,
    ROWS,
    RunContext,
    Stopwatch,
    UnitContext,
    pair_subject,
    subject_of,
)
from transforms import images
from transforms.nst import controls
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
#: Styles optimised together for one content image; bounds memory at large --max-dim.
BATCH_SIZE = 4


@dataclasses.dataclass(frozen=True)
class NSTJob:
    """What an NST run computes with: the extractor and its weights, the settings, the batch, the Keras
    backend that --backend asked for (None: the workers' own)."""

    extractor: str = "vgg19"
    weights: str = "imagenet"
    settings: NSTSettings = NSTSettings()
    batch_size: int = BATCH_SIZE
    style_blend: str | None = None
    backend: str | None = None

    def pixel_settings(self) -> NSTSettings:
        """The settings with their "auto" values resolved as `stylize` resolves them on this worker
        (bfloat16 or float32, XLA or not, give different pixels); the settings that never change
        pixels (the memory budget, the loss-curve interval) neutral."""
        jit = "on" if resolve_jit_compile(self.settings) else "off"
        return dataclasses.replace(
            self.settings, precision=resolve_precision(self.settings), jit_compile=jit, max_memory_gb=0.0, loss_every=0
        )

    def params_hash(self) -> str:
        """All settings (resolved on this worker), the extractor, the weights and the Keras backend."""
        return outputs.params_hash(
            "nst", extractor=self.extractor, weights=self.weights, settings=self.pixel_settings(),
            backend=keras.backend.backend(),
        )

    def on_worker(self, units: UnitContext) -> UnitContext:
        """`units` with what only a worker knows: the resolved params_hash, backend and device."""
        check_worker_backend(self.backend)
        return units.with_columns(self.params_hash(), **worker_columns(self.extractor))

    def recipe(self, content: ManifestEntry, style: ManifestEntry) -> str:
        return outputs.recipe_digest(
            method="nst", extractor=self.extractor, weights=self.weights, settings=self.settings,
            content_uri=content.uri, style_uri=style.uri,
        )


class StyleTargetsFn(WithSharedExtractor):
    """Gram matrices of each style image, computed once per style (not once per pair)."""

    def process(self, entry: ManifestEntry):
        source = None
        try:
            source = self._units.read(entry)
            grams = style_targets(self._extractor, prepare_style(self._units.decode(source.data), self._job.settings))
        except Exception as exc:  # noqa: BLE001 - a bad style image fails its pairs, not the run
            yield StyleTargets(entry, None, classify(exc), source and source.sha256)
            return
        yield StyleTargets(entry, grams, None, source.sha256, source.fingerprint)


class StylizeFn(WithSharedExtractor):
    """All pairs of one content image: content targets once, styles optimised together in batches.

    The element is a content ManifestEntry (all styles) or a PendingPairs (only those styles).
    Seconds that the batch shares (decode, targets, optimisation) are split evenly among its pairs, so
    that the report's seconds add up to the work done.
    """

    def process(self, element, styles: list, previous=None):
        """`previous`: with --incremental, the earlier rows by content_id (multimap side input)."""
        units = self._units
        entry, styles = pending_styles(element, styles)
        watch = Stopwatch()
        pairs = read_content_of_pairs(units, entry, styles, previous, watch)
        yield from pairs.settled
        if not pairs.pending:
            return
        source, bases, pending = pairs.source, pairs.bases, pairs.pending
        try:
            with watch.phase("decode"):
                content = prepare_content(units.decode(source.data), self._job.settings)
            with watch.phase("targets"):
                targets = content_targets_for(self._extractor, content, self._job.settings)
        except Exception as exc:  # noqa: BLE001 - a bad content image fails its pairs, not the run
            yield from fail_pairs(units, entry, pending, bases, exc, watch.seconds.get("decode"))
            return
        ready = []
        for style in pending:
            if style.error:
                failure = UnitError(*style.error)
                yield from units.failed(
                    bases[style.entry], failure, None, entry, style.entry, subject=f"style {subject_of(style.entry)}"
                )
            else:
                ready.append(style)
        shares = (watch.seconds["decode"] / max(1, len(ready)), watch.seconds["targets"] / max(1, len(ready)))
        batch_size = self._job.batch_size
        for start in range(0, len(ready), batch_size):
            batch = ready[start : start + batch_size]
            yield from self._stylize_batch(entry, source.fingerprint, content, targets, batch, bases, shares)

    def _stylize_batch(self, entry, content_fingerprint, content, targets, batch, bases, shares):
        units = self._units
        decode_share, targets_share = shares
        watch = Stopwatch()
        try:
            with watch.phase("compute"):
                result = stylize_content(
                    self._extractor, content, [s.grams for s in batch], self._job.settings,
                    pair_ids=[(entry.id, s.entry.id) for s in batch], targets=targets,
                )
        except Exception as exc:  # noqa: BLE001
            for style in batch:
                base = bases[style.entry]
                yield from units.failed(base, exc, None, entry, style.entry, subject=pair_subject(entry, style.entry))
            return
        compute_share = watch.seconds["compute"] / len(batch) + targets_share
        for style, curve in zip(batch, result.curves or []):
            record = dict(
                content_id=entry.id, style_id=style.entry.id, step_every=self._job.settings.loss_every, losses=curve
            )
            yield beam.pvalue.TaggedOutput(CURVES, record)
        for style, image, losses in zip(batch, result.images, result.losses):
            subject = pair_subject(entry, style.entry)
            row = dict(
                bases[style.entry], height=image.shape[0], width=image.shape[1], loss_total=losses["total"],
                loss_content=losses["content"], loss_style=losses["style"], loss_tv=losses["tv"],
                seconds_decode=decode_share, seconds_compute=compute_share,
            )
            if not all(np.isfinite(v) for v in losses.values()):
                failure = UnitError("non_finite_loss", f"loss became {losses['total']}")
                yield from units.failed(row, failure, decode_share + compute_share, entry, style.entry, subject=subject)
                continue
            output_uri = units.output_uri(entry.id, style.entry.id)
            pair_watch = Stopwatch()
            try:
                with pair_watch.phase("write"):
                    fingerprints = {"content": content_fingerprint, "style": style.fingerprint}
                    recipe = self._job.recipe(entry, style.entry)
                    units.write_image(output_uri, images.to_uint8(image), recipe, row, fingerprints)
            except UnitError as exc:
                yield from units.failed(row, exc, decode_share + compute_share, entry, style.entry, subject=subject)
                continue
            seconds_write = pair_watch.seconds["write"]
            yield units.ok(
                row, output_uri=output_uri, seconds_write=seconds_write,
                seconds_total=decode_share + compute_share + seconds_write,
            )


class NST(Method):
    """{"contents", "styles"} -> {"rows", "dead_letters"}: every content x style pair (or content x the
    --style-blend); the loss curves are written under OUTPUT/curves/ on the way (settings: an NSTJob)."""

    needs_style = True
    neural = True

    @classmethod
    def preflight(cls, toon, dry_run: bool) -> None:
        check_neural_options(toon, dry_run)
        if toon.style_blend:
            controls.parse_style_blend(toon.style_blend)

    @classmethod
    def from_options(cls, run: RunContext, toon, previous=None) -> NST:
        settings = nst_settings(toon)
        job = NSTJob(toon.extractor, toon.weights, settings, BATCH_SIZE, toon.style_blend, toon.backend)
        columns = dict(
            extractor=toon.extractor, steps=settings.steps, seed=settings.seed, init=settings.init,
            style_strength=settings.style_strength, preserve_colors=settings.preserve_colors,
            output_size=settings.output_size, style_blend=toon.style_blend,
        )
        return cls(UnitContext(run, "nst", columns), job, previous)

    @classmethod
    def count_units(cls, toon, contents: int, styles: int) -> int:
        return contents if toon.style_blend else contents * styles

    def expand(self, inputs):
        units, job = self.units, self.settings
        handle = shared.Shared()
        style_entries = inputs["styles"]
        styles = style_entries | "StyleTargets" >> beam.ParDo(StyleTargetsFn(units, handle, job))
        if job.style_blend:
            blend = controls.parse_style_blend(job.style_blend)
            style_entries, styles = (style_entries, styles) | "StyleBlend" >> BlendStyles(blend)
        triaged = inputs["contents"] | "TriagePairs" >> beam.ParDo(
            PairTriageFn(units, job.recipe, job.on_worker), styles=beam.pvalue.AsList(style_entries)
        ).with_outputs(ROWS, DEAD_LETTERS, main="todo")
        stylized = triaged.todo | "Stylize" >> beam.ParDo(
            StylizeFn(units, handle, job), styles=beam.pvalue.AsList(styles), **self.previous_side_input()
        ).with_outputs(DEAD_LETTERS, CURVES, main="rows")
        _ = stylized[CURVES] | "WriteLossCurves" >> WriteLossCurves(units.run.output)
        return {
            "rows": (triaged[ROWS], stylized.rows) | "Rows" >> beam.Flatten(),
            "dead_letters": (triaged[DEAD_LETTERS], stylized[DEAD_LETTERS]) | "DeadLetters" >> beam.Flatten(),
        }
