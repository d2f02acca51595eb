"""Shared fixtures: small real photos from samples/, and an in-memory filesystem for manifests."""
import os
import pathlib
import signal
import subprocess

import fsspec
import numpy as np
import pytest

from transforms.images import decode_image, encode_png

ROOT = pathlib.Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples"

#: The real VGG19 ImageNet weights in Keras's cache (where ../shared/tools/stage-vgg19-weights and
#: Keras's own download put them); tests that need them skip with this reason elsewhere.
VGG19_WEIGHTS = os.path.join(
    os.environ.get("KERAS_HOME") or os.path.expanduser("~/.keras"), "models",
    "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5",
)
REAL_WEIGHTS = os.path.exists(VGG19_WEIGHTS)
requires_real_weights = pytest.mark.skipif(not REAL_WEIGHTS, reason=f"real VGG19 weights not in {VGG19_WEIGHTS}")


@pytest.fixture
def memfs():
    """A clean memory:// filesystem (fsspec keeps one store per process)."""
    fs = fsspec.filesystem("memory")
    fs.store.clear()
    fs.pseudo_dirs.clear()
    fs.pseudo_dirs.append("")
    yield fs
    fs.store.clear()


def communicate_or_fail(process: subprocess.Popen, timeout: float, what: str) -> tuple[str, str]:
    """(stdout, stderr) of a process started with start_new_session=True; past `timeout` its whole
    process group is killed and the test fails, saying `what` did not finish."""
    try:
        return process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        pytest.fail(f"{what} did not finish in {timeout} s")


def small_png(seed: int, size=(40, 56)) -> bytes:
    """A small image with edges and colour, different per seed."""
    rng = np.random.default_rng(seed)
    img = np.zeros((*size, 3), np.uint8)
    img[:] = rng.integers(0, 255, 3)
    img[size[0] // 4 : size[0] // 2, size[1] // 3 :] = rng.integers(0, 255, 3)
    img += rng.integers(0, 20, img.shape, dtype=np.uint8)
    return encode_png(img)


def sample_photo(name: str) -> np.ndarray:
    return decode_image((SAMPLES / "content" / name).read_bytes())


@pytest.fixture(scope="session")
def portable_services():
    """A job service and an SDK worker pool on loopback ports (pipeline.portable), for runs with
    `--config configs/portable-local.yaml` once their endpoints are in the environment."""
    from pipeline import portable

    with portable.local_services() as services:
        yield services
