"""The README's commands, run as written (with tiny NST settings where the real ones take minutes)."""
import pathlib
import shutil
import subprocess
import sys

import pyarrow.parquet as pq
import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow  # whole pipelines, real training or subprocesses: `make test-fast` leaves these out


def _run(*args):
    return subprocess.run([sys.executable, "-m", "pipeline", *args], cwd=ROOT, capture_output=True, text=True)


def test_quick_preset_then_report_then_help(tmp_path):
    out = tmp_path / "out"
    # make run-local is `python -m pipeline run --config configs/quick.yaml`; random weights and 2 steps keep it short
    proc = _run("run", "--config", "configs/quick.yaml", "--output", str(out), "--weights", "random", "--steps", "2")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "20 units: 20 ok" in proc.stdout
    # quiet by default: progress lines only, none of TensorFlow's C++ start-up lines or Beam's import warnings
    noise = [line for line in proc.stderr.splitlines() if not line.startswith("progress: ")]
    assert noise == [], noise
    table = pq.read_table(str(out / "report"))
    assert sorted(set(table.column("method").to_pylist())) == ["classical", "nst"]
    assert (out / "index.html").exists()
    report = _run("report", str(out))
    assert report.returncode == 0 and "Units by status" in report.stdout and "index.html" in report.stdout
    assert _run("run", "--help").returncode == 0
    bench = _run("bench", "--help")
    assert bench.returncode == 0 and "--quick" in bench.stdout


def test_the_toonbeam_console_script_is_installed():
    script = shutil.which("toonbeam", path=str(pathlib.Path(sys.executable).parent))
    assert script, "pip install -e . installs the toonbeam command next to the interpreter"
    proc = subprocess.run([script, "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and "run" in proc.stdout and "report" in proc.stdout
