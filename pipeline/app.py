"""The Toonbeam pipeline: manifests -> fan-out -> cartoons -> images and a Parquet report."""
from __future__ import annotations

import dataclasses
import datetime
import logging

import apache_beam as beam
import fsspec
from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions, SetupOptions, StandardOptions
from apache_beam.runners.runner import PipelineRunner
from apache_beam.utils import shared

from pipeline import storage
from pipeline.manifests import check_manifest, read_manifest
from pipeline.report import check_previous_reports
from pipeline.options import (
    ToonbeamOptions,
    allowed_schemes,
    cartoon_overrides,
    expand_config,
    nst_settings,
    read_policy,
    unfilled_placeholders,
)
from pipeline.transformations import (
    DEAD_LETTERS,
    ROWS,
    CartoonizeFn,
    ReadManifest,
    ReadPreviousReports,
    TriageFn,
    WriteDeadLetters,
    WriteLossCurves,
    WriteReport,
)
from transforms.cartoon import params_for
from transforms.nst.controls import parse_style_blend

# Keras (and with it TensorFlow, JAX or PyTorch) is imported only where an NST run needs it: the
# modules below are imported inside `plan_run` and `build_pipeline`, so a classical-only run and its
# workers never load a deep-learning framework (measured: about 630 MiB less per worker process).

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
    """Parse and check everything that can be checked before any work starts. With --dry-run, only
    what needs no network (manifests and weights are not looked at)."""
    flags = expand_config(argv)
    options = PipelineOptions(flags)
    options.view_as(SetupOptions).save_main_session = False
    toon = options.view_as(ToonbeamOptions)
    unfilled = unfilled_placeholders(flags)
    if unfilled and not toon.dry_run_only:
        raise UsageError(f"set the environment variables of these preset values: {' '.join(unfilled)}")
    if not toon.content:
        raise UsageError("--content is required (a folder, glob, image or manifest)")
    needs_style = toon.method in ("nst", "both")
    if needs_style and not toon.style:
        raise UsageError(f"--method {toon.method} needs --style")
    _check_limits(toon)
    if needs_style:
        import keras

        from transforms.nst.optimize import check_settings

        if toon.backend and toon.backend != keras.backend.backend():
            raise UsageError(
                f"--backend {toon.backend}: Keras was already imported with {keras.backend.backend()}; "
                f"set KERAS_BACKEND={toon.backend} before starting Python (the toonbeam command does this)"
            )
        try:
            check_settings(nst_settings(toon))
            if toon.style_blend:
                parse_style_blend(toon.style_blend)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    schemes = allowed_schemes(toon)
    uris = {"--content": toon.content, "--output": toon.output}
    if toon.incremental:
        uris["--incremental"] = toon.incremental
    if needs_style:
        uris["--style"] = toon.style
        if toon.weights.endswith(".h5"):
            uris["--weights"] = toon.weights
    for flag, uri in uris.items():
        try:
            storage.check_scheme(uri, schemes)
        except storage.UnsupportedScheme as exc:
            raise UsageError(f"{flag} {uri}: {exc}") from None
    if not toon.dry_run_only:
        check_manifest(toon.content)
        if needs_style:
            from transforms.nst.extractors import ensure_weights_available

            check_manifest(toon.style)
            try:
                ensure_weights_available(toon.extractor, toon.weights)
            except ValueError as exc:  # a --weights value of no known form
                raise UsageError(f"--weights: {exc}") from None
        if toon.incremental:
            _check_previous_reports(toon.incremental)
    run_id = toon.run_id or datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return RunPlan(options=options, toon=toon, run_id=run_id)


def _check_previous_reports(spec: str) -> None:
    """An unreadable earlier report stops the run before any work; a glob that matches nothing is the
    first scheduled run's case: no earlier work, and a warning."""
    try:
        files = check_previous_reports(spec)
    except (OSError, ValueError) as exc:
        raise UsageError(f"--incremental {spec}: {exc}") from None
    if not files:
        LOG.warning("--incremental %s matches no report files: no earlier work, everything runs", spec)


def _check_limits(toon: ToonbeamOptions) -> None:
    if toon.max_error_fraction is not None and not 0 <= toon.max_error_fraction <= 1:
        raise UsageError(f"--max-error-fraction must be between 0 and 1, got {toon.max_error_fraction}")
    for flag, value in (("--max-input-pixels", toon.max_input_pixels), ("--max-input-bytes", toon.max_input_bytes),
                        ("--http-timeout", toon.http_timeout)):
        if value <= 0:
            raise UsageError(f"{flag} must be positive, got {value}")
    if toon.http_retries < 0:
        raise UsageError(f"--http-retries must be 0 or more, got {toon.http_retries}")
    if not allowed_schemes(toon):
        raise UsageError("--allowed-schemes is empty")


def build_pipeline(p: beam.Pipeline, plan: RunPlan) -> beam.PCollection:
    """Adds every step to `p` and returns the report rows (also written under OUTPUT/report/; the
    failed units' dead-letter records go under OUTPUT/errors/)."""
    toon = plan.toon
    policy = read_policy(toon)
    contents = p | "ReadContent" >> ReadManifest(toon.content)
    earlier = {}  # side input of the compute steps: earlier rows by content_id (--incremental)
    if toon.incremental:
        earlier["previous"] = beam.pvalue.AsMultiMap(p | "ReadPreviousReports" >> ReadPreviousReports(toon.incremental))
    rows, dead_letters = [], []
    if toon.method in ("classical", "both"):
        params = params_for(toon.preset, **cartoon_overrides(toon))
        triaged = contents | "Triage" >> beam.ParDo(
            TriageFn(plan.run_id, toon.output, toon.preset, params, toon.skip_existing)
        ).with_outputs(ROWS, DEAD_LETTERS, main="todo")
        cartoons = triaged.todo | "Cartoonize" >> beam.ParDo(
            CartoonizeFn(plan.run_id, toon.output, toon.preset, params, toon.max_input_pixels, policy), **earlier
        ).with_outputs(DEAD_LETTERS, main="rows")
        rows += [triaged[ROWS], cartoons.rows]
        dead_letters += [triaged[DEAD_LETTERS], cartoons[DEAD_LETTERS]]
    if toon.method in ("nst", "both"):
        from pipeline.nst_transformations import (
            CURVES,
            PairTriageFn,
            StyleTargetsFn,
            StylizeFn,
            blend_entry,
            blend_targets,
        )

        settings = nst_settings(toon)
        extractor = shared.Shared()
        style_entries = p | "ReadStyle" >> ReadManifest(toon.style)
        styles = style_entries | "StyleTargets" >> beam.ParDo(
            StyleTargetsFn(extractor, toon.extractor, toon.weights, settings, toon.max_input_pixels, policy)
        )
        if toon.style_blend:
            # the units are content x the blend: one style entry and one set of targets stand for it
            blend = parse_style_blend(toon.style_blend)
            style_entries = (
                style_entries | "BlendEntries" >> beam.combiners.ToList() | "BlendEntry" >> beam.Map(blend_entry, blend)
            )
            styles = styles | "BlendTargets" >> beam.combiners.ToList() | "Blend" >> beam.Map(blend_targets, blend)
        triaged = contents | "TriagePairs" >> beam.ParDo(
            PairTriageFn(
                plan.run_id, toon.output, toon.extractor, toon.weights, settings, toon.skip_existing,
                style_blend=toon.style_blend,
            ),
            styles=beam.pvalue.AsList(style_entries),
        ).with_outputs(ROWS, DEAD_LETTERS, main="todo")
        stylized = triaged.todo | "Stylize" >> beam.ParDo(
            StylizeFn(
                plan.run_id, toon.output, extractor, toon.extractor, toon.weights, settings,
                toon.max_input_pixels, NST_BATCH_SIZE, policy, style_blend=toon.style_blend,
            ),
            styles=beam.pvalue.AsList(styles),
            **earlier,
        ).with_outputs(DEAD_LETTERS, CURVES, main="rows")
        _ = stylized[CURVES] | "WriteLossCurves" >> WriteLossCurves(toon.output)
        rows += [triaged[ROWS], stylized.rows]
        dead_letters += [triaged[DEAD_LETTERS], stylized[DEAD_LETTERS]]
    report = rows | "AllRows" >> beam.Flatten()
    _ = report | "WriteReport" >> WriteReport(toon.output)
    _ = dead_letters | "AllDeadLetters" >> beam.Flatten() | "WriteDeadLetters" >> WriteDeadLetters(toon.output)
    return report


def clear_previous_report(output: str) -> None:
    """The report and the dead letters describe this run: remove those of an earlier run into the same
    folder (images stay: --skip-existing reuses them)."""
    for folder in ("report", "errors", "curves"):
        fs, path = fsspec.core.url_to_fs(storage.join_uri(output, folder))
        if fs.exists(path):
            fs.rm(path, recursive=True)


def runs_in_process(plan: RunPlan) -> bool:
    """True for the DirectRunner in its default in-memory mode: the steps run in this process."""
    runner = plan.options.view_as(StandardOptions).runner
    mode = plan.options.view_as(DirectOptions).direct_running_mode
    return runner in (None, "DirectRunner") and mode in (None, "in_memory")


def count_units(plan: RunPlan) -> int:
    """How many report rows the run will have: one per content for classical, one per pair for NST."""
    contents = sum(1 for _ in read_manifest(plan.toon.content))
    units = contents if plan.toon.method in ("classical", "both") else 0
    if plan.toon.method in ("nst", "both"):
        units += contents * sum(1 for _ in read_manifest(plan.toon.style))
    return units


def describe_dry_run(plan: RunPlan) -> str:
    """The effective options and the transform names of the pipeline as the runner would get it (from
    the Runner API proto), built without a runner, so nothing is submitted or fetched."""
    p = beam.Pipeline(runner=PipelineRunner(), options=plan.options)
    build_pipeline(p, plan)
    proto = p.to_runner_api()
    names = sorted(t.unique_name for t in proto.components.transforms.values() if t.unique_name)
    steps = [name for name in names if name.count("/") <= 1]  # our steps and their first level
    options = plan.options.get_all_options(drop_default=True, retain_unknown_options=True)
    lines = ["Effective options:"]
    lines += [f"  {key} = {value!r}" for key, value in sorted(options.items())]
    lines.append(f"Transforms ({len(steps)} of {len(names)} shown, two levels deep):")
    lines += [f"  {name}" for name in steps]
    return "\n".join(lines)


def run(argv: list[str], test_pipeline: beam.Pipeline | None = None, test=None):
    """Run the pipeline and wait for it. Tests pass a TestPipeline and/or a `test(rows)` hook that gets
    the report-row PCollection (to attach `assert_that`)."""
    return execute(plan_run(argv), test_pipeline, test)


def execute(plan: RunPlan, test_pipeline: beam.Pipeline | None = None, test=None):
    clear_previous_report(plan.toon.output)
    p = test_pipeline or beam.Pipeline(options=plan.options)
    rows = build_pipeline(p, plan)
    if test is not None:
        test(rows)
    result = p.run()
    result.wait_until_finish()
    return plan, result
