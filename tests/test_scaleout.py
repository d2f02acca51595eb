"""Runner presets, the worker container's companions, and --dry-run (offline, for every preset)."""
import ast
import json
import subprocess
import sys
import zipfile

import pytest
import yaml

from pipeline.methods import parse_methods
from pipeline.options import fill_placeholders, help_parser
from tests.conftest import ROOT

CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))


def _cli(*args, env=None):
    return subprocess.run(
        [sys.executable, "-m", "pipeline", "run", *args], cwd=ROOT, capture_output=True, text=True, env=env
    )


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.name)
@pytest.mark.slow
def test_dry_run_builds_every_preset_offline(config):
    preset = yaml.safe_load(config.read_text())
    proc = _cli(
        "--config", str(config), "--content", "gs://no-such-bucket/photos.parquet",
        "--style", "gs://no-such-bucket/styles/", "--output", "gs://no-such-bucket/out", "--dry-run",
    )
    assert proc.returncode == 0, proc.stderr
    assert f"runner = {preset['runner']!r}" in proc.stdout
    assert "ReadContent" in proc.stdout and "WriteReport" in proc.stdout
    methods = parse_methods(preset.get("method", "classical"))
    if "classical" in methods:
        assert "Classical/Cartoonize" in proc.stdout
    if "nst" in methods:
        assert "NST/StyleTargets" in proc.stdout and "NST/Stylize" in proc.stdout


def test_dry_run_shows_the_earlier_reports_step():
    proc = _cli(
        "--content", "gs://no-such-bucket/photos.parquet", "--output", "gs://no-such-bucket/out", "--dry-run",
        "--incremental", "gs://no-such-bucket/runs/*/report/*.parquet",
    )
    assert proc.returncode == 0, proc.stderr
    assert "ReadPreviousReports" in proc.stdout and "incremental = 'gs://no-such-bucket/runs/*/report/*.parquet'" in proc.stdout


def test_placeholders_come_from_the_environment_with_defaults():
    env = {"GCP_PROJECT": "proj-1"}
    with pytest.MonkeyPatch.context() as mp:
        for key in ("GCP_PROJECT", "GCP_REGION"):
            mp.delenv(key, raising=False)
        mp.setenv("GCP_PROJECT", env["GCP_PROJECT"])
        assert fill_placeholders("${GCP_PROJECT}") == "proj-1"
        assert fill_placeholders("${GCP_REGION:-us-central1}") == "us-central1"
        assert fill_placeholders(["gs://${NOT_SET_ANYWHERE}/x"]) == ["gs://${NOT_SET_ANYWHERE}/x"]


def test_a_real_run_refuses_unfilled_placeholders(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("project: ${TOONBEAM_TEST_UNSET_VAR}\n")
    proc = _cli("--config", str(config), "--content", str(ROOT / "samples" / "content"), "--output", str(tmp_path))
    assert proc.returncode == 2
    assert "TOONBEAM_TEST_UNSET_VAR" in proc.stderr and "Traceback" not in proc.stderr


def test_flex_template_parameters_are_real_flags():
    spec = json.loads((ROOT / "configs" / "flex-template.json").read_text())
    flags = {opt for action in help_parser("t")._actions for opt in action.option_strings}
    names = [p["name"] for p in spec["metadata"]["parameters"]]
    assert names and spec["sdkInfo"]["language"] == "PYTHON"
    for name in names:
        assert f"--{name}" in flags, name


def test_schedule_example_is_valid_python():
    ast.parse((ROOT / "configs" / "airflow_dag.py").read_text())


def test_the_worker_package_has_every_module_the_template_and_the_extras(tmp_path):
    """What Dataflow workers install from setup.py: the wheel holds every module of pipeline/ and
    transforms/ and the contact sheet's template, and declares the extras the README names."""
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(tmp_path), str(ROOT)],
        capture_output=True, text=True,
    )
    assert proc.returncode == 0, proc.stderr
    wheel, = tmp_path.glob("toonbeam-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        metadata = archive.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    sources = {str(path.relative_to(ROOT)) for folder in ("pipeline", "transforms") for path in (ROOT / folder).rglob("*.py")}
    assert sources - names == set()
    assert "pipeline/reporting/templates/contact_sheet.html.j2" in names
    extras = {line.split(": ", 1)[1] for line in metadata.splitlines() if line.startswith("Provides-Extra: ")}
    assert {"gcp", "aws", "gpu", "jax", "torch"} <= extras
    assert "Requires-Dist: apache-beam" in metadata and "Requires-Dist: tensorflow" in metadata
