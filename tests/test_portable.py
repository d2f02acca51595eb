"""The worker contract of Flink and Dataflow Runner v2, run here: Beam's portable runner with the SDK
harness in two external worker processes (configs/portable-local.yaml) gives the report, images,
dead letters, loss curves and metrics of a DirectRunner run of the same job."""
import collections
import json
import os
import pathlib
import typing

import apache_beam as beam
import keras
import numpy as np
import pytest
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.runners.runner import PipelineResult
from apache_beam.testing.util import assert_that, equal_to

from pipeline import app, units
from pipeline.methods.nst import NSTJob
from pipeline.reporting.schema import read_report
from tests.conftest import ROOT, small_png

pytestmark = pytest.mark.slow  # whole pipelines, real training or subprocesses: `make test-fast` leaves these out

#: Columns that say where and how fast a unit ran, not what it produced.
RUN_SPECIFIC = ("worker", "seconds_total", "seconds_decode", "seconds_compute", "seconds_write", "output_uri")
LOSSES = ("loss_total", "loss_content", "loss_style", "loss_tv")


def _job(folder: pathlib.Path) -> list[str]:
    """Both methods on 3 photos, a broken file and a repeated id (a bad manifest row), 2 styles."""
    (folder / "styles").mkdir()
    for seed, name in enumerate(("a.png", "b.png", "c.png", "styles/s1.png", "styles/s2.png")):
        (folder / name).write_bytes(small_png(seed))
    (folder / "broken.png").write_bytes(b"not an image")
    (folder / "content.csv").write_text("id,uri\na,a.png\nb,b.png\nc,c.png\nbroken,broken.png\nb,c.png\n")
    return [
        "--content", str(folder / "content.csv"), "--style", str(folder / "styles"), "--method", "classical,nst",
        "--weights", "random", "--steps", "2", "--max_dim", "32", "--loss_every", "1", "--run_id", "r1",
    ]


def _key(row: dict) -> tuple:
    return row["method"], row["content_id"], row["style_id"] or "", row["status"]


def _rows(output: pathlib.Path) -> list[dict]:
    """Report rows without the run-specific columns; the image as a path inside the output."""
    rows = []
    for row in read_report(str(output)).to_pylist():
        uri = row["output_uri"]
        row = {key: value for key, value in row.items() if key not in RUN_SPECIFIC}
        row["image"] = os.path.relpath(uri, output) if uri else None
        rows.append(row)
    return sorted(rows, key=_key)


def _json_lines(output: pathlib.Path, folder: str) -> list[dict]:
    lines = [json.loads(line) for path in (output / folder).glob("*.jsonl") for line in path.read_text().splitlines()]
    return sorted(lines, key=lambda r: json.dumps(r, sort_keys=True))


def _metrics(result) -> tuple[dict, dict]:
    """(counter name -> committed value, distribution name -> count), as the runner reports them."""
    query = result.metrics().query(MetricsFilter().with_namespace(units.NAMESPACE))
    counters = collections.Counter()
    for counter in query["counters"]:
        counters[counter.key.metric.name] += counter.committed
    distributions = collections.Counter()
    for distribution in query["distributions"]:
        distributions[distribution.key.metric.name] += distribution.committed.count
    return dict(counters), dict(distributions)


def _assert_same(ours: list[dict], theirs: list[dict], approx=()) -> None:
    """Equal records, except that the `approx` fields (floats or lists of floats) need only agree to
    float32 round-off: TensorFlow need not add up in the same order in another process."""

    def shape(rows):
        return [{k: (v is None, np.size(v)) if k in approx else v for k, v in row.items()} for row in rows]

    def numbers(rows):
        return np.array([x for row in rows for k in approx if row[k] is not None for x in np.ravel(row[k])], float)

    assert shape(ours) == shape(theirs)
    np.testing.assert_allclose(numbers(ours), numbers(theirs), rtol=1e-4)


class Runs(typing.NamedTuple):
    direct_out: pathlib.Path
    direct: PipelineResult
    portable_out: pathlib.Path
    portable: PipelineResult


@pytest.fixture(scope="module")
def runs(tmp_path_factory, portable_services) -> Runs:
    """The same job on the DirectRunner (in this process) and on the portable runner with two SDK
    worker processes; the portable run also checks its report rows with assert_that."""
    folder = tmp_path_factory.mktemp("portable")
    (folder / "in").mkdir()
    argv = _job(folder / "in")
    direct_out, portable_out = folder / "direct", folder / "portable"
    _, direct = app.run([*argv, "--output", str(direct_out)])
    expected = [_key(row) for row in _rows(direct_out)]

    def check(rows):  # assert_that's matcher runs in an SDK worker
        assert_that(rows | "Keys" >> beam.Map(_key), equal_to(expected))

    with pytest.MonkeyPatch.context() as env:
        for name, value in portable_services.environ().items():
            env.setenv(name, value)
        config = str(ROOT / "configs" / "portable-local.yaml")
        plan, portable = app.run([*argv, "--config", config, "--output", str(portable_out)], test=check)
    assert plan.options.get_all_options()["runner"] == "PortableRunner" and not app.runs_in_process(plan)
    return Runs(direct_out, direct, portable_out, portable)


def test_portable_report_and_images_equal_the_direct_runners(runs):
    expected = _rows(runs.direct_out)
    # every kind of step output: main (ok rows), tagged rows (bad manifest rows settled by the triage
    # steps), tagged dead letters (decode errors of the compute steps)
    assert {(r["method"], r["status"], r["error_type"]) for r in expected} == {
        (method, status, error_type) for method in ("classical", "nst")
        for status, error_type in (("ok", None), ("error", "bad_manifest_row"), ("error", "decode_error"))
    }
    _assert_same(_rows(runs.portable_out), expected, approx=LOSSES)
    for row in expected:
        if row["status"] == "ok":  # every image is there; the classical ones byte for byte
            written = (runs.portable_out / row["image"]).read_bytes()
            if row["method"] == "classical":
                assert written == (runs.direct_out / row["image"]).read_bytes(), row["image"]


def test_portable_dead_letters_and_loss_curves_equal_the_direct_runners(runs):
    assert _json_lines(runs.portable_out, "errors") == _json_lines(runs.direct_out, "errors")
    curves = _json_lines(runs.direct_out, "curves")  # NST's tagged output
    nst_ok = [r for r in _rows(runs.direct_out) if r["method"] == "nst" and r["status"] == "ok"]
    assert sorted((c["content_id"], c["style_id"]) for c in curves) == [(r["content_id"], r["style_id"]) for r in nst_ok]
    _assert_same(_json_lines(runs.portable_out, "curves"), curves, approx=("losses",))


def test_portable_runs_two_worker_processes_each_loading_the_extractor_once(runs):
    workers = set(read_report(str(runs.portable_out)).column("worker").to_pylist())
    assert len(workers) == 2 and units.WORKER not in workers
    assert _metrics(runs.direct)[0]["extractor_loads"] == 1
    assert _metrics(runs.portable)[0]["extractor_loads"] == 2


def test_portable_metrics_equal_the_direct_runners(runs):
    (direct_counters, direct_distributions), (counters, distributions) = _metrics(runs.direct), _metrics(runs.portable)
    report = read_report(str(runs.direct_out))
    statuses = collections.Counter(report.column("status").to_pylist())
    units_counters = {f"units_{status}": n for status, n in statuses.items()}
    assert {k: v for k, v in counters.items() if k != "extractor_loads"} == units_counters
    assert {k: v for k, v in direct_counters.items() if k != "extractor_loads"} == units_counters
    timed = sum(seconds is not None for seconds in report.column("seconds_total").to_pylist())
    assert distributions == direct_distributions == {"unit_ms": timed}


def test_a_worker_on_another_keras_backend_than_the_runs_refuses_to_compute():
    # a worker takes its backend from KERAS_BACKEND when it starts, not from the run's --backend
    ours = keras.backend.backend()
    other = "jax" if ours != "jax" else "tensorflow"
    nst_units = units.UnitContext(units.RunContext("r1", "out"), "nst")
    with pytest.raises(RuntimeError, match=f"--backend {other}, but Keras on this worker uses {ours}"):
        NSTJob(backend=other).on_worker(nst_units)
    assert NSTJob(backend=ours).on_worker(nst_units).columns["backend"] == ours
