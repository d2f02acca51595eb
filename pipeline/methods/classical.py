"""The classical method: the OpenCV cartoon filter (`transforms.cartoon`), one unit per content image.

Two steps: `TriageFn` settles what needs no work (an unusable manifest row becomes an error row; with
--skip-existing a complete output becomes a skipped row), `CartoonizeFn` reads, hashes, decodes,
filters and writes the rest (or, with --incremental, reports an earlier run's image as skipped).
"""
from __future__ import annotations

import apache_beam as beam

from pipeline.errors import UnitError
from pipeline.io import outputs
from pipeline.io.manifests import ManifestEntry
from pipeline.methods import Method
from pipeline.options import cartoon_overrides
from pipeline.units import DEAD_LETTERS, ROWS, RunContext, Stopwatch, UnitContext
from transforms.cartoon import CartoonParams, cartoonize, params_for


def classical_recipe(params: CartoonParams, entry: ManifestEntry) -> str:
    """What makes a classical output what it is (its sidecar's recipe, for --skip-existing)."""
    return outputs.recipe_digest(method="classical", params=params, content_uri=entry.uri)


def classical_params_hash(params: CartoonParams) -> str:
    return outputs.params_hash("classical", params=params)


class TriageFn(beam.DoFn):
    """Classical units before any work: settled units leave on ROWS (dead letters on DEAD_LETTERS),
    the rest go on as the main output."""

    def __init__(self, units: UnitContext, params: CartoonParams):
        self._units = units
        self._params = params

    def process(self, entry: ManifestEntry):
        base = self._units.base(entry)
        if entry.error:
            yield from self._units.failed(base, UnitError(entry.error_type, entry.error), None, entry, row_tag=ROWS)
            return
        output_uri = self._units.output_uri(entry.id)
        skipped = self._units.completed(base, output_uri, classical_recipe(self._params, entry), {"content": entry})
        if skipped is not None:
            yield beam.pvalue.TaggedOutput(ROWS, skipped)
            return
        yield entry


class CartoonizeFn(beam.DoFn):
    """One content image: read, hash, decode, filter, write."""

    def __init__(self, units: UnitContext, params: CartoonParams):
        self._units = units
        self._params = params

    def process(self, entry: ManifestEntry, previous=None):
        """`previous`: with --incremental, the earlier rows by content_id (multimap side input)."""
        units = self._units
        base = units.base(entry)
        watch = Stopwatch()
        try:
            with watch.phase("total"):
                with watch.phase("decode"):
                    source = units.read(entry)
                base.update(content_sha256=source.sha256)
                reused = units.reused(base, previous)
                if reused is None:
                    with watch.phase("decode"):
                        rgb = units.decode(source.data)
                    with watch.phase("compute"):
                        cartoon = cartoonize(rgb, self._params)
                    output_uri = units.output_uri(entry.id)
                    with watch.phase("write"):
                        recipe = classical_recipe(self._params, entry)
                        units.write_image(output_uri, cartoon, recipe, base, {"content": source.fingerprint})
        except Exception as exc:  # noqa: BLE001 - every failure becomes an error row, never a crashed run
            yield from units.failed(base, exc, watch.seconds.get("total"), entry)
            return
        yield reused or units.ok(
            base, output_uri=output_uri, height=rgb.shape[0], width=rgb.shape[1],
            seconds_total=watch.seconds["total"], seconds_decode=watch.seconds["decode"],
            seconds_compute=watch.seconds["compute"], seconds_write=watch.seconds["write"],
        )


class Classical(Method):
    """{"contents"} -> {"rows", "dead_letters"}: the filter once per content image (settings: the
    CartoonParams)."""

    @classmethod
    def from_options(cls, run: RunContext, toon, previous=None) -> Classical:
        params = params_for(toon.preset, **cartoon_overrides(toon))
        units = UnitContext(run, "classical", {"preset": toon.preset}, classical_params_hash(params))
        return cls(units, params, previous)

    def expand(self, inputs):
        triaged = inputs["contents"] | "Triage" >> beam.ParDo(TriageFn(self.units, self.settings)).with_outputs(
            ROWS, DEAD_LETTERS, main="todo"
        )
        cartoons = triaged.todo | "Cartoonize" >> beam.ParDo(
            CartoonizeFn(self.units, self.settings), **self.previous_side_input()
        ).with_outputs(DEAD_LETTERS, main="rows")
        return {
            "rows": (triaged[ROWS], cartoons.rows) | "Rows" >> beam.Flatten(),
            "dead_letters": (triaged[DEAD_LETTERS], cartoons[DEAD_LETTERS]) | "DeadLetters" >> beam.Flatten(),
        }
