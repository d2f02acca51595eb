"""Where the feature extractor's weights come from: Keras's own cache for "imagenet", or a `.h5` /
`.weights.h5` file at any fsspec URI (copied once per process to a local file, since Keras loads
weights from local files only). The pure core (`transforms.nst.extractors`) only ever gets a local
path, "imagenet" or "random".
"""
from __future__ import annotations

import atexit
import functools
import hashlib
import os
import shutil
import tempfile

import fsspec


#: The extractors' ImageNet weight files in Keras's cache: (file name, origin, md5). Kept here, not in
#: transforms, because only the pipeline fetches.
IMAGENET_FILES = {
    "vgg19": (
        "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5",
        "https://storage.googleapis.com/tensorflow/keras-applications/vgg19/"
        "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5",
        "253f8cb515780f3b799900260a226db6",
    ),
    "mobilenet_v3_large": (
        "weights_mobilenet_v3_large_224_1.0_float_no_top_v2.h5",
        "https://storage.googleapis.com/tensorflow/keras-applications/mobilenet_v3/"
        "weights_mobilenet_v3_large_224_1.0_float_no_top_v2.h5",
        "07fb09a5933dd0c8eaafa16978110389",
    ),
}


class WeightsUnavailable(RuntimeError):
    """The extractor's weights file cannot be found or fetched (the run cannot start)."""


def keras_models_dir() -> str:
    """$KERAS_HOME/models, read now (Keras itself reads KERAS_HOME once, at import)."""
    return os.path.join(os.environ.get("KERAS_HOME") or os.path.expanduser("~/.keras"), "models")


def is_weights_file(weights: str) -> bool:
    return weights.endswith(".h5")


def check_weights_flag(weights: str) -> None:
    if weights not in ("imagenet", "random") and not is_weights_file(weights):
        raise ValueError(f"weights must be 'imagenet', 'random' or a .h5 / .weights.h5 path or URI, got {weights!r}")


def ensure_weights_available(extractor: str = "vgg19", weights: str = "imagenet") -> None:
    """Driver preflight: fail fast, with one actionable line, before any worker starts. "imagenet" lets
    Keras fetch into its cache when the file is missing there; a file must exist; "random" needs nothing."""
    check_weights_flag(weights)
    if weights == "random":
        return
    if is_weights_file(weights):
        fs, path = fsspec.core.url_to_fs(weights)
        if not fs.exists(path):
            raise WeightsUnavailable(f"{extractor} weights file not found: {weights}")
        return
    import keras

    name, origin, md5 = IMAGENET_FILES[extractor]
    folder = keras_models_dir()
    try:
        keras.utils.get_file(name, origin, cache_dir=os.path.dirname(folder), cache_subdir="models", file_hash=md5)
    except Exception as error:  # get_file raises assorted network and hash errors
        raise WeightsUnavailable(
            f"{extractor} ImageNet weights missing and not downloadable ({type(error).__name__}): put {name} "
            f"in Keras's cache folder {folder}/, or pass --weights PATH_OR_URI to a copy of it".splitlines()[0]
        ) from error


@functools.lru_cache(maxsize=None)
def local_weights(weights: str) -> str:
    """`weights` as the core takes it: "imagenet" and "random" unchanged, a local file as is, any other
    URI copied once per process into a temporary folder that is removed when the process exits."""
    check_weights_flag(weights)
    if not is_weights_file(weights):
        return weights
    fs, path = fsspec.core.url_to_fs(weights)
    if isinstance(fs, fsspec.implementations.local.LocalFileSystem):
        return path
    suffix = ".weights.h5" if weights.endswith(".weights.h5") else ".h5"
    local = os.path.join(_process_folder(), hashlib.sha256(weights.encode()).hexdigest()[:16] + suffix)
    with fs.open(path, "rb") as src, open(local, "wb") as dst:
        shutil.copyfileobj(src, dst)
    return local


@functools.lru_cache(maxsize=None)
def _process_folder() -> str:
    folder = tempfile.mkdtemp(prefix="toonbeam-weights-")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder
