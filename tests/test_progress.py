import io

from pipeline import app, progress
from tests.conftest import SAMPLES


def test_describe_counts_errors_and_eta():
    assert progress.describe(5, 20, 1, 10.0) == "5/20 units, 1 error, 10 s elapsed, ETA 30 s"
    assert progress.describe(0, None, 2, 3.0) == "0 units, 2 errors, 3 s elapsed"


def test_local_run_reports_progress_lines_while_it_works(tmp_path):
    plan = app.plan_run(["--content", str(SAMPLES / "content"), "--output", str(tmp_path), "--preset", "seed"])
    assert app.runs_in_process(plan) and app.count_units(plan) == 4
    stream = io.StringIO()  # not a terminal: plain lines
    reporter = progress.ProgressReporter(4, stream=stream, every=0.0, poll=0.01)
    reporter.start()
    app.execute(plan)
    reporter.stop()
    lines = stream.getvalue().splitlines()
    assert lines and all(line.startswith("progress: ") for line in lines)
    assert lines[-1].startswith("progress: 4/4 units, 0 errors")


def test_multi_process_runs_are_not_counted_in_the_driver(tmp_path):
    plan = app.plan_run(
        ["--content", str(SAMPLES / "content"), "--output", str(tmp_path), "--direct_running_mode", "multi_processing"]
    )
    assert not app.runs_in_process(plan)


def test_a_long_unit_shows_its_steps_in_the_progress_line():
    stream = io.StringIO()
    reporter = progress.ProgressReporter(3, stream=stream, every=0.0, poll=0.01)
    progress.record_steps("training pop_art", 150, 600)
    reporter.start()
    reporter.stop()
    assert stream.getvalue().splitlines()[-1].endswith("; training pop_art 150/600 steps")
    progress.record_steps("training pop_art", 600, 600)  # done: off the line
    assert progress.tasks() == ""
