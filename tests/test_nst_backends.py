"""The NST core on a second Keras backend (JAX), against TensorFlow in this process."""
import json
import os
import subprocess
import sys

import pyarrow.parquet as pq
import pytest

from pipeline import cli
from tests.conftest import ROOT, SAMPLES, sample_photo
from tests.test_nst_real import requires_real_weights
from transforms import images

pytestmark = pytest.mark.slow  # whole pipelines, real training or subprocesses: `make test-fast` leaves these out


def losses_of_a_short_run() -> tuple[float, float]:
    """(loss at step 0, loss after 5 steps) of chelsea x pop_art at 64 px, float32, real VGG19."""
    from transforms.nst.extractors import load_extractor
    from transforms.nst.optimize import NSTSettings, content_targets, evaluate_losses, style_targets, stylize

    extractor = load_extractor("vgg19", "imagenet")
    content = images.to_float01(images.resize_to_max_dim(sample_photo("chelsea.png"), 64))
    style_rgb = images.decode_image((SAMPLES / "style" / "pop_art.png").read_bytes())
    style = images.to_float01(images.resize_to_max_dim(style_rgb, 64))
    settings = NSTSettings(steps=5, precision="float32")
    targets, grams = content_targets(extractor, content), style_targets(extractor, style)
    start = evaluate_losses(extractor, content[None], targets, [grams], settings)[0]["total"]
    return start, stylize(extractor, content, targets, [grams], settings).losses[0]["total"]


def _on_backend(backend: str, code: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, KERAS_BACKEND=backend)
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)


@requires_real_weights
def test_jax_and_tensorflow_agree_on_the_losses():
    code = "import json; from tests.test_nst_backends import losses_of_a_short_run as f; print(json.dumps(f()))"
    proc = _on_backend("jax", code)
    assert proc.returncode == 0, proc.stderr[-2000:]
    jax_start, jax_end = json.loads(proc.stdout.strip().splitlines()[-1])
    tf_start, tf_end = losses_of_a_short_run()
    print(f"step 0: tf {tf_start:.6g} jax {jax_start:.6g}; step 5: tf {tf_end:.6g} jax {jax_end:.6g}")
    assert jax_start == pytest.approx(tf_start, rel=1e-4)
    assert jax_end == pytest.approx(tf_end, rel=1e-2)
    assert jax_end < jax_start


def test_the_pipeline_runs_on_jax_with_the_backend_flag(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline", "run", "--backend", "jax", "--content", str(SAMPLES / "content" / "coffee.png"),
         "--style", str(SAMPLES / "style" / "pop_art.png"), "--method", "nst", "--weights", "random",
         "--steps", "2", "--max-dim", "32", "--output", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    (row,) = pq.read_table(str(tmp_path / "report")).to_pylist()
    assert (row["status"], row["backend"]) == ("ok", "jax")


def test_backend_selection_sets_keras_backend_or_says_what_is_missing(monkeypatch, tmp_path):
    monkeypatch.delenv("KERAS_BACKEND", raising=False)
    assert cli.select_backend(["--content", "x", "--backend", "jax"]) is None
    assert os.environ["KERAS_BACKEND"] == "jax"
    config = tmp_path / "c.yaml"
    config.write_text("backend: no_such_backend\n")
    problem = cli.select_backend(["--config", str(config)])
    assert "no_such_backend package is not installed" in problem
    assert cli.select_backend(["--config", str(config), "--backend", "tensorflow"]) is None
