"""The Toonbeam pipeline: manifests -> fan-out -> cartoons -> images and a Parquet report."""
from __future__ import annotations

import dataclasses
import datetime
import logging
import re

import apache_beam as beam
from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions, SetupOptions, StandardOptions
from apache_beam.runners.runner import PipelineRunner

from pipeline.errors import one_line
from pipeline.io import run_folder, storage
from pipeline.io.manifests import ManifestEntry, ReadManifest, load_manifest
from pipeline.io.sinks import WriteDeadLetters, WriteReport
from pipeline.methods import Method, method_class, parse_methods
from pipeline.options import (
    ToonbeamOptions,
    allowed_schemes,
    expand_config,
    manifest_rules,
    read_policy,
    unfilled_placeholders,
)
from pipeline.reporting.incremental import ReadPreviousReports, check_previous_reports
from pipeline.units import RunContext

# Keras (and with it TensorFlow, JAX or PyTorch) is imported only by the neural methods' modules, which
# `method_class` imports when a run asks for them: a classical-only run and its workers never load a
# deep-learning framework (measured: about 630 MiB less per worker process).

LOG = logging.getLogger(__name__)


class UsageError(ValueError):
    """The run cannot start as asked; the message says what to change."""


class RunStopped(RuntimeError):
    """The pipeline stopped part-way (a sink could not write, a worker failed); the message says why
    and which of the run's records are missing."""


@dataclasses.dataclass(frozen=True)
class RunPlan:
    """Validated settings of one run, resolved from flags and the YAML preset."""

    options: PipelineOptions
    toon: ToonbeamOptions
    run_id: str
    methods: tuple[str, ...]
    #: The entries of --content ("contents") and --style ("styles"), read once by the driver before any
    #: work, kept for a run in this process (empty with --dry-run and for remote runners).
    inputs: dict[str, list[ManifestEntry]] = dataclasses.field(default_factory=dict)

    def method_classes(self) -> list[type[Method]]:
        return [method_class(name) for name in self.methods]

    @property
    def needs_style(self) -> bool:
        return any(cls.needs_style for cls in self.method_classes())


def plan_run(argv: list[str]) -> RunPlan:
    """Parse and check everything that can be checked before any work starts. With --dry-run, only
    what needs no network (manifests and weights are not looked at)."""
    flags = expand_config(argv)
    options = PipelineOptions(flags)
    options.view_as(SetupOptions).save_main_session = False
    toon = options.view_as(ToonbeamOptions)
    unfilled = unfilled_placeholders(flags)
    dry_run = toon.dry_run_only
    if unfilled and not dry_run:
        raise UsageError(f"set the environment variables of these preset values: {' '.join(unfilled)}")
    if not toon.content:
        raise UsageError("--content is required (a folder, glob, image or manifest)")
    try:
        methods = parse_methods(toon.method)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    run_id = toon.run_id or datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    plan = RunPlan(options=options, toon=toon, run_id=run_id, methods=methods)
    if plan.needs_style and not toon.style:
        raise UsageError(f"--method {toon.method} needs --style")
    _check_limits(toon)
    schemes = allowed_schemes(toon)
    uris = {"--content": toon.content, "--output": toon.output}
    if toon.incremental:
        uris["--incremental"] = toon.incremental
    if plan.needs_style:
        uris["--style"] = toon.style
        if toon.weights.endswith(".h5"):
            uris["--weights"] = toon.weights
    for flag, uri in uris.items():
        try:
            storage.check_scheme(uri, schemes)
        except storage.UnsupportedScheme as exc:
            raise UsageError(f"{flag} {uri}: {exc}") from None
    for cls in plan.method_classes():
        try:
            cls.preflight(toon, dry_run)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    if not dry_run:
        rules = manifest_rules(toon)
        inputs = {"contents": load_manifest(toon.content, rules)}
        if plan.needs_style:
            inputs["styles"] = load_manifest(toon.style, rules)
        if runs_in_process(plan):
            plan.inputs.update(inputs)
        if toon.incremental:
            _check_previous_reports(toon.incremental)
        run_folder.check_output(toon.output)
    return plan


def start_frameworks(plan: RunPlan) -> None:
    """Let the neural methods' framework finish starting (in TensorFlow, the first device query also
    initialises CUDA or reports that it cannot), so that its start-up output happens here, where the
    CLI hides it, not in the middle of the run."""
    if any(cls.neural for cls in plan.method_classes()):
        from pipeline.models import device_name

        device_name()


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
                        ("--read-timeout", toon.read_timeout), ("--http-timeout", toon.http_timeout)):
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
    run = RunContext(plan.run_id, toon.output, read_policy(toon), toon.max_input_pixels, toon.skip_existing)
    rules = manifest_rules(toon)
    # In the driver's process the driver's entries are used as they are (the manifest is read once);
    # a remote runner's worker lists the manifest again, so that no catalog goes into the job graph.
    inputs = {"contents": p | "ReadContent" >> ReadManifest(toon.content, rules, plan.inputs.get("contents"))}
    if plan.needs_style:
        inputs["styles"] = p | "ReadStyle" >> ReadManifest(toon.style, rules, plan.inputs.get("styles"))
    previous = None  # side input of the compute steps: earlier rows by content_id (--incremental)
    if toon.incremental:
        previous = beam.pvalue.AsMultiMap(p | "ReadPreviousReports" >> ReadPreviousReports(toon.incremental))
    rows, dead_letters = [], []
    for cls in plan.method_classes():
        method_inputs = {name: pcoll for name, pcoll in inputs.items() if name == "contents" or cls.needs_style}
        results = method_inputs | cls.__name__ >> cls.from_options(run, toon, previous)
        rows.append(results["rows"])
        dead_letters.append(results["dead_letters"])
    report = rows | "AllRows" >> beam.Flatten()
    _ = report | "WriteReport" >> WriteReport(toon.output)
    _ = dead_letters | "AllDeadLetters" >> beam.Flatten() | "WriteDeadLetters" >> WriteDeadLetters(toon.output)
    return report


def prepare_output(plan: RunPlan) -> None:
    """Before any work: the run record (OutputError when OUTPUT cannot be written), then the records of
    an earlier run into the same folder and the temporary files of writes a kill cut short go (images
    stay: --skip-existing reuses them). See pipeline.io.run_folder."""
    toon = plan.toon
    run_folder.write_run_record(toon.output, plan.run_id, read_policy(toon), toon.max_input_pixels)
    run_folder.remove_earlier_records(toon.output)
    run_folder.remove_stale_temporaries(toon.output, toon.ff_model_dir)


def stopped_message(output: str, exc: BaseException) -> str:
    """One line for a pipeline that stopped part-way: the step, what is missing, the first cause (last,
    so that a long cause is what gets cut)."""
    cause = exc
    while cause.__cause__ or cause.__context__:
        cause = cause.__cause__ or cause.__context__
    step = re.search(r"\[while running '([^'/]+)", str(exc))
    lost = [*run_folder.missing_records(output), f"the contact sheet ({run_folder.CONTACT_SHEET})"]
    return one_line(
        f"the run stopped{f' in {step.group(1)}' if step else ''}; lost: {', '.join(lost)}; the images written "
        f"so far are kept (--skip-existing finishes the rest); cause: {type(cause).__name__}: {cause}"
    )


def runs_in_process(plan: RunPlan) -> bool:
    """True for the DirectRunner in its default in-memory mode: the steps run in this process."""
    runner = plan.options.view_as(StandardOptions).runner
    mode = plan.options.view_as(DirectOptions).direct_running_mode
    return runner in (None, "DirectRunner") and mode in (None, "in_memory")


def count_units(plan: RunPlan) -> int:
    """How many report rows the run will have (each method says how many of its units it makes)."""
    contents = len(plan.inputs["contents"])
    styles = len(plan.inputs.get("styles", ()))
    return sum(cls.count_units(plan.toon, contents, styles) for cls in plan.method_classes())


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
    plan = plan_run(argv)
    with run_folder.output_lock(plan.toon.output, plan.run_id):
        return execute(plan, test_pipeline, test)


def execute(plan: RunPlan, test_pipeline: beam.Pipeline | None = None, test=None):
    """`prepare_output`, then the pipeline; RunStopped when it stops part-way."""
    prepare_output(plan)
    p = test_pipeline or beam.Pipeline(options=plan.options)
    rows = build_pipeline(p, plan)
    if test is not None:
        test(rows)
    try:
        result = p.run()
        result.wait_until_finish()
    except Exception as exc:  # noqa: BLE001 - every unit's own failure is a row; this is the run's
        raise RunStopped(stopped_message(plan.toon.output, exc)) from exc
    return plan, result
