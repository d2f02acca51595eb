"""Beam steps. Each one only adapts a pure function from `transforms/` to elements, side inputs,
metrics and I/O; the image math lives there."""
from __future__ import annotations

import contextlib
import os
import socket
import time
import typing

import apache_beam as beam
import keras
import numpy as np
from apache_beam.metrics import Metrics
from apache_beam.utils import shared

from pipeline import storage
from pipeline.manifests import ManifestEntry, read_manifest
from pipeline.report import REPORT_SCHEMA, report_row
from transforms import images
from transforms.cartoon import CartoonParams, cartoonize
from transforms.nst.extractors import load_extractor
from transforms.nst.optimize import NSTSettings, content_targets, style_targets, stylize

NAMESPACE = "toonbeam"
WORKER = f"{socket.gethostname()}:{os.getpid()}"


def device_name() -> str:
    """Where the Keras backend computes, for the report: "cpu" or the accelerator's name."""
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


class UnitError(Exception):
    """A unit of work failed for a known reason: `error_type` is a short stable code."""

    def __init__(self, error_type: str, message: str):
        super().__init__(message)
        self.error_type = error_type


def classify(exc: Exception) -> tuple[str, str]:
    """(error_type, one-line message) for any failure of a unit."""
    if isinstance(exc, UnitError):
        return exc.error_type, str(exc)
    if isinstance(exc, images.ImageTooLarge):
        return "too_large", str(exc)
    if isinstance(exc, images.ImageDecodeError):
        return "decode_error", str(exc)
    if isinstance(exc, FileNotFoundError):
        return "not_found", f"not found: {exc}"
    return "internal_error", f"{type(exc).__name__}: {exc}".splitlines()[0]


class Stopwatch:
    """Adds the seconds spent in each named phase of a unit."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def phase(self, name: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start


def load_image(entry: ManifestEntry, max_pixels: int) -> np.ndarray:
    if entry.error:
        raise UnitError("bad_manifest_row", entry.error)
    return images.decode_image(storage.read_bytes(entry.uri), max_pixels)


def write_image(uri: str, rgb: np.ndarray) -> None:
    try:
        storage.write_atomic(uri, images.encode_png(rgb))
    except OSError as exc:
        raise UnitError("write_error", f"cannot write {uri}: {exc}") from exc


def image_uri(output: str, method: str, *ids: str) -> str:
    """Deterministic output name from the (sanitised) ids and the method."""
    return storage.join_uri(output, "images", method, "__".join(storage.safe_name(i) for i in ids) + ".png")


def _count(row: dict) -> dict:
    Metrics.counter(NAMESPACE, f"units_{row['status']}").inc()
    if row["seconds_total"] is not None:
        Metrics.distribution(NAMESPACE, "unit_ms").update(int(row["seconds_total"] * 1000))
    return row


def _error_row(base: dict, exc: Exception, seconds_total: float | None) -> dict:
    error_type, message = classify(exc)
    return report_row(**base, status="error", error_type=error_type, error=message, seconds_total=seconds_total)


class ReadManifest(beam.PTransform):
    """Entries of one `--content` / `--style` argument, spread over workers."""

    def __init__(self, spec: str):
        super().__init__()
        self._spec = spec

    def expand(self, pbegin):
        return (
            pbegin
            | "Spec" >> beam.Create([self._spec])
            | "List" >> beam.FlatMap(read_manifest)
            | "Spread" >> beam.Reshuffle()
        )


class CartoonizeFn(beam.DoFn):
    """Classical filter: one unit per content image (the style does not matter to it)."""

    def __init__(self, run_id: str, output: str, preset: str, params: CartoonParams, max_input_pixels: int):
        self._run_id = run_id
        self._output = output
        self._preset = preset
        self._params = params
        self._max_input_pixels = max_input_pixels

    def process(self, entry: ManifestEntry):
        base = dict(
            run_id=self._run_id, content_id=entry.id, content_uri=entry.uri, method="classical",
            preset=self._preset, worker=WORKER,
        )
        watch = Stopwatch()
        try:
            with watch.phase("total"):
                with watch.phase("decode"):
                    rgb = load_image(entry, self._max_input_pixels)
                with watch.phase("compute"):
                    cartoon = cartoonize(rgb, self._params)
                output_uri = image_uri(self._output, "classical", entry.id)
                with watch.phase("write"):
                    write_image(output_uri, cartoon)
        except Exception as exc:  # noqa: BLE001 - every failure becomes an error row, never a crashed run
            yield _count(_error_row(base, exc, watch.seconds.get("total")))
            return
        yield _count(
            report_row(
                **base, status="ok", output_uri=output_uri, height=rgb.shape[0], width=rgb.shape[1],
                seconds_total=watch.seconds["total"], seconds_decode=watch.seconds["decode"],
                seconds_compute=watch.seconds["compute"], seconds_write=watch.seconds["write"],
            )
        )


class _WithSharedExtractor(beam.DoFn):
    """Loads the feature extractor once per worker process, shared by all threads and both NST steps."""

    def __init__(self, handle: shared.Shared, extractor: str, weights: str, settings: NSTSettings):
        self._handle = handle
        self._extractor_name = extractor
        self._weights = weights
        self._settings = settings
        self._loaded_here = False

    def setup(self):
        def load():
            self._loaded_here = True
            return load_extractor(self._extractor_name, self._weights)

        self._extractor = self._handle.acquire(load, tag=(self._extractor_name, self._weights))

    def start_bundle(self):
        # Metrics only count inside bundles, so the load done in setup() is reported here, once.
        if self._loaded_here:
            Metrics.counter(NAMESPACE, "extractor_loads").inc()
            self._loaded_here = False

    def _load_resized(self, entry: ManifestEntry, max_input_pixels: int) -> np.ndarray:
        rgb = load_image(entry, max_input_pixels)
        return images.to_float01(images.resize_to_max_dim(rgb, self._settings.max_dim))


class StyleTargets(typing.NamedTuple):
    """What the NST step needs of one style image: its grams, or why it has none."""

    entry: ManifestEntry
    grams: list | None
    error: tuple[str, str] | None  # (error_type, message)


class StyleTargetsFn(_WithSharedExtractor):
    """Gram matrices of each style image, computed once per style (not once per pair)."""

    def __init__(self, handle, extractor, weights, settings, max_input_pixels: int):
        super().__init__(handle, extractor, weights, settings)
        self._max_input_pixels = max_input_pixels

    def process(self, entry: ManifestEntry):
        try:
            grams = style_targets(self._extractor, self._load_resized(entry, self._max_input_pixels))
        except Exception as exc:  # noqa: BLE001 - a bad style image fails its pairs, not the run
            yield StyleTargets(entry, None, classify(exc))
            return
        yield StyleTargets(entry, grams, None)


class StylizeFn(_WithSharedExtractor):
    """All pairs of one content image: content targets once, styles optimised together in batches.

    Seconds that the batch shares (decode, targets, optimisation) are split evenly among its pairs, so
    that the report's seconds add up to the work done.
    """

    def __init__(self, run_id, output, handle, extractor, weights, settings, max_input_pixels, batch_size):
        super().__init__(handle, extractor, weights, settings)
        self._run_id = run_id
        self._output = output
        self._max_input_pixels = max_input_pixels
        self._batch_size = batch_size

    def process(self, entry: ManifestEntry, styles: list):
        styles = sorted(styles, key=lambda s: s.entry.id)
        base = dict(
            run_id=self._run_id, content_id=entry.id, content_uri=entry.uri, method="nst", worker=WORKER,
            extractor=self._extractor_name, backend=keras.backend.backend(), device=device_name(),
            steps=self._settings.steps,
        )

        def pair_base(style):
            return dict(base, style_id=style.entry.id, style_uri=style.entry.uri)

        watch = Stopwatch()
        try:
            with watch.phase("decode"):
                content = self._load_resized(entry, self._max_input_pixels)
            with watch.phase("targets"):
                targets = content_targets(self._extractor, content)
        except Exception as exc:  # noqa: BLE001 - a bad content image fails its pairs, not the run
            for style in styles:
                yield _count(_error_row(pair_base(style), exc, watch.seconds.get("decode")))
            return
        ready = []
        for style in styles:
            if style.error:
                error_type, message = style.error
                yield _count(_error_row(pair_base(style), UnitError(error_type, f"style {style.entry.id}: {message}"), None))
            else:
                ready.append(style)
        shared_seconds = (watch.seconds["decode"], watch.seconds["targets"])
        for start in range(0, len(ready), self._batch_size):
            batch = ready[start : start + self._batch_size]
            yield from self._stylize_batch(content, targets, batch, pair_base, shared_seconds, len(ready))

    def _stylize_batch(self, content, targets, batch, pair_base, shared_seconds, pairs_of_content):
        watch = Stopwatch()
        decode_share = shared_seconds[0] / pairs_of_content
        targets_share = shared_seconds[1] / pairs_of_content
        try:
            with watch.phase("compute"):
                result = stylize(self._extractor, content, targets, [s.grams for s in batch], self._settings)
        except Exception as exc:  # noqa: BLE001
            for style in batch:
                yield _count(_error_row(pair_base(style), exc, None))
            return
        compute_share = watch.seconds["compute"] / len(batch) + targets_share
        for style, image, losses in zip(batch, result.images, result.losses):
            row = dict(
                pair_base(style), height=image.shape[0], width=image.shape[1],
                loss_total=losses["total"], loss_content=losses["content"], loss_style=losses["style"],
                loss_tv=losses["tv"], seconds_decode=decode_share, seconds_compute=compute_share,
            )
            if not all(np.isfinite(v) for v in losses.values()):
                failure = UnitError("non_finite_loss", f"loss became {losses['total']} for {row['content_id']} x {row['style_id']}")
                yield _count(_error_row(row, failure, decode_share + compute_share))
                continue
            output_uri = image_uri(self._output, "nst", row["content_id"], row["style_id"])
            pair_watch = Stopwatch()
            try:
                with pair_watch.phase("write"):
                    write_image(output_uri, images.to_uint8(image))
            except UnitError as exc:
                yield _count(_error_row(row, exc, decode_share + compute_share))
                continue
            seconds_write = pair_watch.seconds["write"]
            yield _count(
                report_row(
                    **row, status="ok", output_uri=output_uri, seconds_write=seconds_write,
                    seconds_total=decode_share + compute_share + seconds_write,
                )
            )


class WriteReport(beam.PTransform):
    """The rows as a Parquet dataset under OUTPUT/report/ (Beam writes to a temp folder, then renames)."""

    def __init__(self, output: str):
        super().__init__()
        self._output = output

    def expand(self, rows):
        return rows | "Parquet" >> beam.io.WriteToParquet(
            storage.join_uri(self._output, "report", "part"),
            schema=REPORT_SCHEMA,
            file_name_suffix=".parquet",
        )
