"""The pipeline end to end: TestPipeline + assert_that on the report rows, and the real CLI."""
import pathlib
import subprocess
import sys

import apache_beam as beam
import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from pipeline import app
from pipeline.options import ToonbeamOptions, expand_config
from pipeline.reporting.schema import REPORT_SCHEMA, read_report
from tests.conftest import ROOT, SAMPLES, small_png
from tests.test_cartoon import seed_recipe
from transforms.images import decode_image


def _run(argv, expected_rows):
    """Runs on a TestPipeline and asserts (content_id, style_id, status, error_type) of every row."""
    def check(rows):
        keys = rows | "Keys" >> beam.Map(
            lambda r: (r["content_id"], r["style_id"], r["status"], r["error_type"])
        )
        assert_that(keys, equal_to(expected_rows))

    _, result = app.run(argv, test_pipeline=TestPipeline(), test=check)
    return result


def _counter(result, name):
    counters = result.metrics().query(MetricsFilter().with_name(name))["counters"]
    return sum(c.committed for c in counters)


def test_classical_rows_images_and_report(memfs, tmp_path):
    for i in range(3):
        memfs.pipe(f"/c/img{i}.png", small_png(i))
    memfs.pipe("/c/broken.png", b"not an image")
    result = _run(
        ["--content", "memory://c", "--output", str(tmp_path), "--run_id", "r1"],
        [(f"img{i}", None, "ok", None) for i in range(3)] + [("broken", None, "error", "decode_error")],
    )
    assert _counter(result, "units_ok") == 3 and _counter(result, "units_error") == 1
    table = read_report(str(tmp_path))
    assert table.schema.equals(REPORT_SCHEMA)
    ok = [r for r in table.to_pylist() if r["status"] == "ok"]
    for row in ok:
        assert row["run_id"] == "r1" and row["method"] == "classical" and row["preset"] == "seed"
        assert row["seconds_total"] >= row["seconds_compute"] > 0
        written = decode_image(pathlib.Path(row["output_uri"]).read_bytes())
        source = decode_image(memfs.cat(row["content_uri"].replace("memory://", "")))
        expected = seed_recipe(cv2.cvtColor(source, cv2.COLOR_RGB2BGR))
        assert np.array_equal(cv2.cvtColor(written, cv2.COLOR_RGB2BGR), expected)
    error = next(r for r in table.to_pylist() if r["status"] == "error")
    assert "cannot decode" in error["error"] and error["output_uri"] is None


@pytest.mark.slow
def test_nst_fans_out_every_pair_and_loads_the_extractor_once(memfs, tmp_path):
    for i in range(4):
        memfs.pipe(f"/c/c{i}.png", small_png(i))
    for i in range(4):
        memfs.pipe(f"/s/s{i}.png", small_png(10 + i))
    memfs.pipe("/s/bad.png", b"")
    argv = [
        "--content", "memory://c", "--style", "memory://s", "--output", str(tmp_path), "--method", "nst",
        "--weights", "random", "--steps", "2", "--max_dim", "32",
    ]
    expected = [(f"c{c}", f"s{s}", "ok", None) for c in range(4) for s in range(4)]
    expected += [(f"c{c}", "bad", "error", "decode_error") for c in range(4)]
    result = _run(argv, expected)
    assert _counter(result, "extractor_loads") == 1
    rows = [r for r in read_report(str(tmp_path)).to_pylist() if r["status"] == "ok"]
    for row in rows:
        assert row["steps"] == 2 and row["extractor"] == "vgg19" and row["backend"] == "tensorflow"
        # 40 x 56 resized to a 32 px long side is 23 x 32; optimised at the 32 x 32 bucket, written back at 23 x 32
        assert (row["height"], row["width"]) == (23, 32)
        assert all(np.isfinite(row[k]) for k in ("loss_total", "loss_content", "loss_style", "loss_tv"))
        assert decode_image(pathlib.Path(row["output_uri"]).read_bytes()).shape == (row["height"], row["width"], 3)
    assert len({r["output_uri"] for r in rows}) == 16


def _cli(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "pipeline", *args], cwd=cwd, capture_output=True, text=True)


@pytest.mark.slow
def test_cli_classical_on_a_folder_of_four_photos(tmp_path):
    out = tmp_path / "out"
    proc = _cli("run", "--content", str(SAMPLES / "content"), "--output", str(out), "--method", "classical")
    assert proc.returncode == 0, proc.stderr
    assert "4 ok" in proc.stdout and str(out) in proc.stdout
    table = pq.read_table(str(out / "report"))
    assert table.num_rows == 4 and set(table.column("status").to_pylist()) == {"ok"}
    for row in table.to_pylist():
        source = decode_image(pathlib.Path(row["content_uri"]).read_bytes())
        expected = seed_recipe(cv2.cvtColor(source, cv2.COLOR_RGB2BGR))
        written = cv2.imread(row["output_uri"], cv2.IMREAD_COLOR)
        assert np.array_equal(written, expected), row["content_id"]


@pytest.mark.slow
def test_classical_run_never_imports_a_deep_learning_framework(tmp_path):
    # The DirectRunner runs the steps in this process, so its modules are the workers' modules too.
    out = tmp_path / "out"
    code = (
        "import sys\n"
        "from pipeline.cli import main\n"
        f"assert main(['run', '--content', {str(SAMPLES / 'content')!r}, '--output', {str(out)!r},"
        " '--method', 'classical']) == 0\n"
        "print(sorted(m for m in ('keras', 'tensorflow', 'jax', 'torch') if m in sys.modules))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "[]"
    assert pq.read_table(str(out / "report")).num_rows == 4


@pytest.mark.slow
def test_rerun_into_the_same_folder_replaces_the_report(tmp_path):
    for _ in range(2):
        assert _cli("run", "--content", str(SAMPLES / "content" / "coffee.png"), "--output", str(tmp_path)).returncode == 0
    assert read_report(str(tmp_path)).num_rows == 1


@pytest.mark.parametrize(
    "args, message",
    [
        (["--content", "/no/such/folder"], "does not exist"),
        (["--content", str(SAMPLES / "content"), "--method", "nst"], "needs --style"),
        (["--output", "x"], "--content is required"),
        (["--content", str(SAMPLES / "content"), "--style", str(SAMPLES / "style"), "--method", "nst",
          "--weights", "foo"], "--weights: weights must be"),
    ],
)
@pytest.mark.slow
def test_cli_usage_errors_are_one_line(args, message):
    proc = _cli("run", *args)
    assert proc.returncode == 2
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("toonbeam: error:")


def test_cli_help_explains_every_flag():
    proc = _cli("run", "--help")
    assert proc.returncode == 0
    for flag in ["--content", "--style", "--output", "--method", "--preset", "--cartoon-block-size", "--steps",
                 "--max-dim", "--extractor", "--weights", "--config"]:
        assert flag in proc.stdout


def test_config_values_are_defaults_that_flags_override(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("content: a\nsteps: 7\nmax_dim: 64\ndirect_num_workers: 2\n")
    argv = expand_config(["--config", str(config), "--steps", "9"])
    options = PipelineOptions(argv)
    toon = options.view_as(ToonbeamOptions)
    assert (toon.content, toon.steps, toon.max_dim) == ("a", 9, 64)
    assert options.get_all_options()["direct_num_workers"] == 2
