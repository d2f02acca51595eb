"""The frozen feature extractor that the neural methods (nst, feedforward) share, loaded once per
worker process, and the report columns that say where it computes. This module imports Keras (and so
TensorFlow, JAX or PyTorch): only the neural methods import it."""
from __future__ import annotations

import functools

import apache_beam as beam
import keras
from apache_beam.metrics import Metrics
from apache_beam.utils import shared

from pipeline.io.weights import check_weights_flag, ensure_weights_available, local_weights
from pipeline.options import nst_settings
from pipeline.units import NAMESPACE
from transforms.nst.extractors import load_extractor
from transforms.nst.settings import check_settings


@functools.lru_cache(maxsize=None)
def device_name() -> str:
    """Where the Keras backend computes, for the report: "cpu" or the accelerator's name (asked once
    per process: it does not change, and every row needs it)."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_logical_devices("GPU")
        return gpus[0].name if gpus else "cpu"
    if backend == "jax":
        import jax

        return str(jax.devices()[0])
    if backend == "torch":
        import torch

        return torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    return backend


def check_neural_options(toon, dry_run: bool) -> None:
    """The driver's checks that every neural method needs (ValueError: one line for the user): the
    backend Keras was imported with, the NST settings (both methods take their sizes and style controls
    from them), the --weights value and, unless `dry_run`, that the weights are there
    (WeightsUnavailable otherwise)."""
    if toon.backend and toon.backend != keras.backend.backend():
        raise ValueError(
            f"--backend {toon.backend}: Keras was already imported with {keras.backend.backend()}; "
            f"set KERAS_BACKEND={toon.backend} before starting Python (the toonbeam command does this)"
        )
    check_settings(nst_settings(toon))
    try:
        check_weights_flag(toon.weights)
    except ValueError as exc:
        raise ValueError(f"--weights: {exc}") from None
    if not dry_run:
        ensure_weights_available(toon.extractor, toon.weights)


def check_worker_backend(requested: str | None) -> None:
    """Refuse to compute on another Keras backend than the run's --backend. A worker process picks its
    backend from KERAS_BACKEND when it starts (a remote worker from its container's environment), not
    from the run's options, so a mismatch would otherwise go unnoticed but in the report's column."""
    if requested and requested != keras.backend.backend():
        raise RuntimeError(
            f"--backend {requested}, but Keras on this worker uses {keras.backend.backend()}: "
            f"start the SDK workers with KERAS_BACKEND={requested}"
        )


def worker_columns(extractor: str) -> dict:
    """The report columns of a neural unit that only the worker knows."""
    return dict(extractor=extractor, backend=keras.backend.backend(), device=device_name())


class WithSharedExtractor(beam.DoFn):
    """A step of a neural method: `units` its UnitContext, `job` its settings (with the extractor's name,
    its weights and `on_worker`, the columns only a worker knows). The extractor is loaded once per worker
    process (all threads and steps share it through `handle`, an `apache_beam.utils.shared.Shared`),
    counted by `extractor_loads`."""

    def __init__(self, units, handle: shared.Shared, job):
        self._units = units
        self._handle = handle
        self._job = job
        self._loaded_here = False

    def setup(self):
        def load():
            self._loaded_here = True
            return load_extractor(self._job.extractor, local_weights(self._job.weights))

        self._extractor = self._handle.acquire(load, tag=(self._job.extractor, self._job.weights))
        self._units = self._job.on_worker(self._units)

    def start_bundle(self):
        # Metrics only count inside bundles, so the load done in setup() is reported here, once.
        if self._loaded_here:
            Metrics.counter(NAMESPACE, "extractor_loads").inc()
            self._loaded_here = False
