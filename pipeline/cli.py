"""The `toonbeam` command line: `toonbeam run ...` (also `python -m pipeline run ...`).

`toonbeam run` exits with 0 when the run finished (even with some failed units), 1 when more units
failed than --max-error-fraction allows or the run stopped part-way (one line naming what was lost),
2 when the run could not start (one line, no stack trace). `--debug` shows the stack trace instead.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import subprocess
import sys
import time

from pipeline.quiet import configure_logging, quiet_startup

# Everything that imports Keras is imported inside the commands, after `select_backend` has set
# KERAS_BACKEND: Keras reads it once, at its first import; and everything that imports Beam (the
# report's schema too, through pipeline.errors) inside `quiet_startup`, which hides Beam's import warnings.


def select_backend(argv: list[str]) -> str | None:
    """KERAS_BACKEND from `--backend` (or the `backend` key of the --config preset; the flag wins).
    Returns why it cannot be used, or None."""
    from pipeline.options import read_config, split_config

    config, rest = split_config(argv)
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--backend")
    backend = pre.parse_known_args(rest)[0].backend
    if backend is None and config:
        try:
            backend = read_config(config).get("backend")
        except (OSError, ValueError):
            return None  # the run itself reports an unreadable config, with the usage errors
    if not backend:
        return None
    if importlib.util.find_spec(backend) is None:
        return f"--backend {backend}: the {backend} package is not installed (pip install '.[{_EXTRA.get(backend, backend)}]')"
    os.environ["KERAS_BACKEND"] = backend
    return None


_EXTRA = {"tensorflow": "gpu", "jax": "jax", "torch": "torch"}


def run_command(argv: list[str]) -> int:
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    with quiet_startup(enabled=not debug):
        from pipeline import app, progress
        from pipeline.io.manifests import ManifestError
        from pipeline.io.run_folder import OutputError, output_lock
        from pipeline.io.weights import WeightsUnavailable
        from pipeline.options import help_parser

    # Failures that mean "the run cannot start as asked": one line, no stack trace, exit status 2.
    usage_errors = (app.UsageError, ManifestError, OutputError, WeightsUnavailable, FileNotFoundError)
    if any(flag in argv for flag in ("-h", "--help")):
        help_parser("toonbeam run").print_help()
        return 0
    start = time.perf_counter()
    with contextlib.ExitStack() as held:  # the output folder's lock, until the contact sheet is written
        try:
            with quiet_startup(enabled=not debug):
                plan = app.plan_run(argv)
                app.start_frameworks(plan)
            if plan.toon.dry_run_only:
                print(app.describe_dry_run(plan))
                return 0
            held.enter_context(output_lock(plan.toon.output, plan.run_id))
            reporter = progress.ProgressReporter(app.count_units(plan)) if app.runs_in_process(plan) else None
            if reporter:
                reporter.start()
            try:
                app.execute(plan)
            finally:
                if reporter:
                    reporter.stop()
        except usage_errors as exc:
            if debug:
                raise
            print(f"toonbeam: error: {exc}", file=sys.stderr)
            return 2
        except app.RunStopped as exc:
            if debug:
                raise
            print(f"toonbeam: error: {exc}", file=sys.stderr)
            return 1
        return _summarise(plan, start)


def _summarise(plan, start: float) -> int:
    """The counts, where everything is and the contact sheet, after a finished run; the exit status."""
    from pipeline.reporting.contact_sheet import write_contact_sheet
    from pipeline.reporting.schema import STATUSES, error_type_counts, read_report, status_counts

    output = plan.toon.output.rstrip("/")
    table = read_report(output, max_rows=None)  # the run's own rows, as many as its catalog made
    counts = status_counts(table)
    total = sum(counts.values())
    statuses = list(STATUSES) + [s for s in counts if s not in STATUSES]
    summary = ", ".join(f"{counts.get(status, 0)} {status}" for status in statuses)
    print(f"toonbeam: {total} units: {summary} in {time.perf_counter() - start:.1f} s")
    errors = error_type_counts(table)
    if errors:
        print("  errors by type: " + ", ".join(f"{n} {error_type}" for error_type, n in errors.items()))
    print(f"  images: {output}/images/")
    print(f"  report: {output}/report/  (pyarrow.parquet.read_table('{output}/report'))")
    if errors:
        print(f"  failed: {output}/errors/  (JSON lines with the original manifest rows, to fix and re-submit)")
    try:
        print(f"  sheet:  {write_contact_sheet(output, table.to_pylist())}")
    except OSError as exc:
        print(f"toonbeam: error: the contact sheet ({output}/index.html) was not written: {exc}", file=sys.stderr)
        return 1
    return _error_budget_exit(counts, plan.toon.max_error_fraction)


def _error_budget_exit(counts: dict[str, int], limit: float | None) -> int:
    """1 (with one line on stderr) when more units failed than `limit` allows, else 0."""
    from pipeline.reporting.schema import error_fraction

    if limit is None or error_fraction(counts) <= limit:
        return 0
    print(
        f"toonbeam: error: {counts.get('error', 0)} of {sum(counts.values())} units failed "
        f"({error_fraction(counts):.1%}), more than --max-error-fraction {limit:g}",
        file=sys.stderr,
    )
    return 1


def report_command(argv: list[str]) -> int:
    from pipeline.io.run_folder import OutputError
    from pipeline.reporting.contact_sheet import write_contact_sheet
    from pipeline.reporting.schema import MAX_REPORT_ROWS, ReportTooLarge, read_report
    from pipeline.reporting.summary import format_summary
    parser = argparse.ArgumentParser(
        prog="toonbeam report", description="Summarize a run and (re)write OUTPUT/index.html."
    )
    parser.add_argument("output", help="the --output folder or URI of a run")
    parser.add_argument("--no-html", action="store_true", help="only print the summary")
    parser.add_argument(
        "--max-rows", type=int, default=MAX_REPORT_ROWS,
        help=f"refuse a report of more rows than this, counted before reading (default: {MAX_REPORT_ROWS})",
    )
    args = parser.parse_args(argv)
    output = args.output.rstrip("/")
    try:
        rows = read_report(output, args.max_rows).to_pylist()
    except FileNotFoundError:
        print(f"toonbeam: error: no report under {output}/report", file=sys.stderr)
        return 2
    except ReportTooLarge as exc:
        print(f"toonbeam: error: {exc}", file=sys.stderr)
        return 2
    print(format_summary(rows, output), end="")
    if not args.no_html:
        try:
            print(f"contact sheet: {write_contact_sheet(output, rows)}")
        except OutputError as exc:
            print(f"toonbeam: error: {exc}", file=sys.stderr)
            return 2
        except OSError as exc:
            print(f"toonbeam: error: the contact sheet ({output}/index.html) was not written: {exc}", file=sys.stderr)
            return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(prog="toonbeam", description="Photos to cartoons at catalog scale, on Apache Beam.")
    parser.add_argument(
        "command",
        choices=sorted(COMMANDS),
        help="run: cartoonize content images (`toonbeam run --help`); report: summarize a finished run; "
        "bench: the NST benchmark (`toonbeam bench --help`)",
    )
    if not argv or argv[0] in ("-h", "--help"):
        parser.print_help()
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        parser.error(f"unknown command {command!r}")
    debug = "--debug" in rest
    configure_logging(debug)
    with quiet_startup(enabled=not debug):
        problem = select_backend(rest)
    if problem:
        print(f"toonbeam: error: {problem}", file=sys.stderr)
        return 2
    return COMMANDS[command](rest)


def bench_command(argv: list[str]) -> int:
    """`toonbeam bench [flags]` runs bench/nst_bench.py (the NST benchmark of `make bench`) from a
    source checkout; its flags pass through (`toonbeam bench --help`)."""
    script = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench", "nst_bench.py")
    if not os.path.exists(script):
        print("toonbeam: error: the benchmarks are in a source checkout (bench/nst_bench.py); run it there", file=sys.stderr)
        return 2
    return subprocess.call([sys.executable, script, *argv])


COMMANDS = {"run": run_command, "report": report_command, "bench": bench_command}
