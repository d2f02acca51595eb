"""The Toonbeam pipeline: manifests -> fan-out -> cartoons -> images and a Parquet report."""
from __future__ import annotations

import dataclasses
import datetime
import logging

import apache_beam as beam
import fsspec
from apache_beam.options.pipeline_options import PipelineOptions, SetupOptions
from apache_beam.utils import shared

from pipeline import storage
from pipeline.manifests import check_manifest
from pipeline.options import ToonbeamOptions, cartoon_overrides, expand_config, nst_settings
from pipeline.transformations import CartoonizeFn, ReadManifest, StyleTargetsFn, StylizeFn, WriteReport
from transforms.cartoon import params_for
from transforms.nst.extractors import ensure_weights_available

LOG = logging.getLogger(__name__)

#: Styles optimised together for one content image; bounds memory at large --max-dim.
NST_BATCH_SIZE = 4


class UsageError(ValueError):
    """The run cannot start as asked; the message says what to change."""


@dataclasses.dataclass(frozen=True)
class RunPlan:
    """Validated settings of one run, resolved from flags and the YAML preset."""

    options: PipelineOptions
    toon: ToonbeamOptions
    run_id: str


def plan_run(argv: list[str]) -> RunPlan:
    """Parse and check everything that can be checked before any work starts."""
    options = PipelineOptions(expand_config(argv))
    options.view_as(SetupOptions).save_main_session = False
    toon = options.view_as(ToonbeamOptions)
    if not toon.content:
        raise UsageError("--content is required (a folder, glob, image or manifest)")
    needs_style = toon.method in ("nst", "both")
    if needs_style and not toon.style:
        raise UsageError(f"--method {toon.method} needs --style")
    check_manifest(toon.content)
    if needs_style:
        check_manifest(toon.style)
        ensure_weights_available(toon.extractor, toon.weights)
    run_id = toon.run_id or datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return RunPlan(options=options, toon=toon, run_id=run_id)


def build_pipeline(p: beam.Pipeline, plan: RunPlan) -> beam.PCollection:
    """Adds every step to `p` and returns the report rows (also written under OUTPUT/report/)."""
    toon = plan.toon
    contents = p | "ReadContent" >> ReadManifest(toon.content)
    rows = []
    if toon.method in ("classical", "both"):
        params = params_for(toon.preset, **cartoon_overrides(toon))
        rows.append(
            contents
            | "Cartoonize"
            >> beam.ParDo(CartoonizeFn(plan.run_id, toon.output, toon.preset, params, toon.max_input_pixels))
        )
    if toon.method in ("nst", "both"):
        settings = nst_settings(toon)
        extractor = shared.Shared()
        styles = (
            p
            | "ReadStyle" >> ReadManifest(toon.style)
            | "StyleTargets"
            >> beam.ParDo(StyleTargetsFn(extractor, toon.extractor, toon.weights, settings, toon.max_input_pixels))
        )
        rows.append(
            contents
            | "Stylize"
            >> beam.ParDo(
                StylizeFn(
                    plan.run_id, toon.output, extractor, toon.extractor, toon.weights, settings,
                    toon.max_input_pixels, NST_BATCH_SIZE,
                ),
                styles=beam.pvalue.AsList(styles),
            )
        )
    report = rows | "AllRows" >> beam.Flatten()
    _ = report | "WriteReport" >> WriteReport(toon.output)
    return report


def clear_previous_report(output: str) -> None:
    """The report describes this run: remove the shards of an earlier run into the same folder."""
    fs, path = fsspec.core.url_to_fs(storage.join_uri(output, "report"))
    if fs.exists(path):
        fs.rm(path, recursive=True)


def run(argv: list[str], test_pipeline: beam.Pipeline | None = None, test=None):
    """Run the pipeline and wait for it. Tests pass a TestPipeline and/or a `test(rows)` hook that gets
    the report-row PCollection (to attach `assert_that`)."""
    plan = plan_run(argv)
    clear_previous_report(plan.toon.output)
    p = test_pipeline or beam.Pipeline(options=plan.options)
    rows = build_pipeline(p, plan)
    if test is not None:
        test(rows)
    result = p.run()
    result.wait_until_finish()
    return plan, result
