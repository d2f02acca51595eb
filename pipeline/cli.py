"""The `toonbeam` command line: `toonbeam run ...` (also `python -m pipeline run ...`)."""
from __future__ import annotations

import argparse
import logging
import sys
import time

from pipeline import app
from pipeline.contact_sheet import write_contact_sheet
from pipeline.manifests import ManifestError
from pipeline.options import help_parser
from pipeline.report import read_report, status_counts
from pipeline.summary import summarize
from transforms.nst.extractors import WeightsUnavailable

#: Failures that mean "the run cannot start as asked": one line, no stack trace, exit status 2.
USAGE_ERRORS = (app.UsageError, ManifestError, WeightsUnavailable, FileNotFoundError)


def run_command(argv: list[str]) -> int:
    if any(flag in argv for flag in ("-h", "--help")):
        help_parser("toonbeam run").print_help()
        return 0
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    start = time.perf_counter()
    try:
        plan, _ = app.run(argv)
    except USAGE_ERRORS as exc:
        if debug:
            raise
        print(f"toonbeam: error: {exc}", file=sys.stderr)
        return 2
    output = plan.toon.output.rstrip("/")
    counts = status_counts(read_report(output))
    summary = ", ".join(f"{n} {status}" for status, n in counts.items()) or "no units"
    print(f"toonbeam: {summary} in {time.perf_counter() - start:.1f} s")
    print(f"  images: {output}/images/")
    print(f"  report: {output}/report/  (pyarrow.parquet.read_table('{output}/report'))")
    print(f"  sheet:  {write_contact_sheet(output)}")
    return 0


def report_command(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="toonbeam report", description="Summarize a run and (re)write OUTPUT/index.html."
    )
    parser.add_argument("output", help="the --output folder or URI of a run")
    parser.add_argument("--no-html", action="store_true", help="only print the summary")
    args = parser.parse_args(argv)
    output = args.output.rstrip("/")
    try:
        text = summarize(output)
    except FileNotFoundError:
        print(f"toonbeam: error: no report under {output}/report", file=sys.stderr)
        return 2
    print(text, end="")
    if not args.no_html:
        print(f"contact sheet: {write_contact_sheet(output)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(prog="toonbeam", description="Photos to cartoons at catalog scale, on Apache Beam.")
    parser.add_argument(
        "command",
        choices=sorted(COMMANDS),
        help="run: cartoonize content images (`toonbeam run --help`); report: summarize a finished run",
    )
    if not argv or argv[0] in ("-h", "--help"):
        parser.print_help()
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        parser.error(f"unknown command {command!r}")
    return COMMANDS[command](rest)


COMMANDS = {"run": run_command, "report": report_command}
