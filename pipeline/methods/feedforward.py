"""The feedforward method: fast neural style (Johnson et al. 2016, `transforms.feedforward`). One small
network is trained per style, once, then every content photo goes through it in one forward pass.

Steps:
  TrainingPhotos  a seeded sample of --ff-train-content (default: --content), at most --ff-train-images,
                  decoded and resized once (broken photos are skipped and counted);
  Train           one unit per style: reuse the model under the model folder when one with the same hash
                  exists (the style's bytes and every training setting) and checks out (its card, its
                  weights' SHA-256, not trained on photos since fixed; scored again for other
                  --ff-gate-steps), else train it, score it on the held-out photos against NST (the
                  quality gate's figures) and write the weights and their card (pipeline.io.model_store);
                  a report row of method `feedforward_train`;
  TriagePairs     (pipeline.pairs) what needs no work;
  Prepare         each content read, hashed and decoded once, then keyed by style for every pending pair;
  Apply           Beam's RunInference with a KeyedModelHandler around `StyleNetworkHandler`: batched, each
                  style's network loaded once per worker;
  Finish          style strength, colours, the seed's loss of the result, the image and its row.
"""
from __future__ import annotations

import dataclasses
import os
import tempfile
import time
import typing

import apache_beam as beam
import keras
import numpy as np
from apache_beam.metrics import Metrics
from apache_beam.ml.inference.base import KeyedModelHandler, ModelHandler, PredictionResult, RunInference
from apache_beam.utils import shared

from pipeline.errors import UnitError, classify, one_line
from pipeline.io import model_store, outputs, storage
from pipeline.io.manifests import ManifestEntry, ManifestRules, ReadManifest, load_manifest
from pipeline.methods import Method
from pipeline.models import WithSharedExtractor, check_neural_options, check_worker_backend, worker_columns
from pipeline.options import allowed_schemes, ff_settings, manifest_rules, nst_settings, read_policy
from pipeline.pairs import PairTriageFn, fail_pairs, pending_styles, read_content_of_pairs
from pipeline.units import (
    DEAD_LETTERS,
    NAMESPACE,
    ROWS,
    RunContext,
    Stopwatch,
    UnitContext,
    pair_subject,
    sha256_hex,
)
from transforms import images
from transforms.feedforward import network as ff_network
from pipeline import progress
from transforms import quality
from transforms.feedforward.evaluation import evaluate_heldout, gate_failures
from transforms.feedforward.settings import KEEP_FACES, MAX_SATURATED, MIN_DEPENDENCE, MIN_STYLE_PROGRESS, FFSettings
from transforms.feedforward.settings import check_settings as check_training
from transforms.feedforward.training import train
from transforms.nst import controls
from transforms.nst.inputs import NST_MIN_SIDE
from transforms.nst.optimize import content_targets, evaluate_losses, style_targets
from transforms.nst.pyramid import output_shape
from transforms.nst.settings import NSTSettings

#: The report's method of a training unit (one per style); pairs are "feedforward".
TRAIN_METHOD = "feedforward_train"
#: Settings that never change a network's weights, left out of the model hash.
_NOT_TRAINING = dict(loss_every=0, apply_batch=0)


@dataclasses.dataclass(frozen=True)
class FFJob:
    """Everything the feedforward steps compute with."""

    settings: FFSettings = FFSettings()
    controls: NSTSettings = NSTSettings()  # max_dim, output_size, style_strength, preserve_colors, ...
    extractor: str = "vgg19"
    weights: str = "imagenet"
    model_dir: str = "out/models"
    train_content: str = ""
    train_rules: ManifestRules = ManifestRules()  # how train_content is read: the run's, as --content
    train_images: int = 16
    heldout_images: int = 2
    gate_steps: int = 100
    max_loss_ratio: float | None = None
    min_dependence: float = MIN_DEPENDENCE
    min_style_progress: float = MIN_STYLE_PROGRESS
    max_saturated: float = MAX_SATURATED  # over the style image's or the photos' own share (1: off)
    keep_faces: float = KEEP_FACES  # of the photo blended back inside each detected face (0: off)
    score_fraction: float = 0.0
    backend: str | None = None  # what --backend asked for (None: the workers' own)

    @property
    def training(self) -> FFSettings:
        """The training settings: photos and style at the size the network is applied at (--max-dim)."""
        return dataclasses.replace(self.settings, image_size=self.controls.max_dim)

    def model_hash(self, style_sha256: str) -> str:
        """What a network is a function of: the style's bytes and every training setting (not which
        photos it saw: a catalog that grows keeps its models; the card records the training set)."""
        training = dataclasses.replace(self.training, **_NOT_TRAINING)
        return outputs.params_hash(
            TRAIN_METHOD, style_sha256=style_sha256, settings=training, extractor=self.extractor,
            weights=self.weights, train_images=self.train_images, heldout_images=self.heldout_images,
        )

    def model_uri(self, style_id: str, style_sha256: str) -> str:
        name = f"{storage.safe_name(style_id)}-{self.model_hash(style_sha256)[:16]}.weights.h5"
        return storage.join_uri(self.model_dir, name)

    def params_hash(self, weights_sha256: str | None = None) -> str:
        """Every setting that changes a pair's pixels (the style's bytes are the row's style_sha256) and, for a
        pair, its network's weights: a model trained again or replaced under the same settings draws other
        pixels, so --incremental must not reuse the old network's images (as --skip-existing's recipe)."""
        return outputs.params_hash(
            "feedforward", settings=dataclasses.replace(self.training, **_NOT_TRAINING), controls=self.apply_controls(),
            extractor=self.extractor, weights=self.weights, train_images=self.train_images,
            heldout_images=self.heldout_images, network_sha256=weights_sha256,
        )

    def scored_like(self, heldout: dict) -> bool:
        """Whether a card's held-out figures judge what this run writes (against the same NST reference)."""
        return heldout["gate_steps"] == self.gate_steps and heldout.get("keep_faces", 0.0) == self.keep_faces

    def apply_controls(self) -> dict:
        c = self.controls
        return dict(max_dim=c.max_dim, output_size=c.output_size, max_output_dim=c.max_output_dim,
                    style_strength=c.style_strength, preserve_colors=c.preserve_colors, keep_faces=self.keep_faces)

    def recipe(self, content: ManifestEntry, style: ManifestEntry, weights_sha256: str | None) -> str:
        """A pair's recipe names its model's weights, so that --skip-existing redoes the pairs of a
        model trained again (other photos, a model replaced) instead of keeping the old network's images."""
        return outputs.recipe_digest(
            method="feedforward", params=self.params_hash(), content_uri=content.uri, style_uri=style.uri,
            weights_sha256=weights_sha256,
        )

    def scores(self, content: ManifestEntry, style: ManifestEntry) -> bool:
        """Whether this pair's written image is scored with the seed's loss: a seeded sample of
        `score_fraction` of the pairs, the same in every run."""
        return controls.pair_seed(self.settings.seed, "ff-score", content.id, style.id) < self.score_fraction * 2**63

    def pair_recipe(self, content: ManifestEntry, style: ManifestEntry, models: list) -> str:
        """`recipe` with the weights of `style`'s model in `models` (none: nothing to skip)."""
        weights = next((model.weights_sha256 for model in models if model.entry == style), None)
        return self.recipe(content, style, weights)

    def on_worker(self, units: UnitContext) -> UnitContext:
        """`units` with what only a worker knows (backend, device), on the backend --backend asked for."""
        check_worker_backend(self.backend)
        return units.with_columns(**worker_columns(self.extractor))


class TrainingPhoto(typing.NamedTuple):
    """A training photo as the networks see it (float32 [0,1], long side --max-dim), or why not."""

    id: str
    sha256: str | None
    image: np.ndarray | None
    error: str | None = None


class StyleModel(typing.NamedTuple):
    """One style's network (its weights' URI and card) and the style's grams for the loss columns,
    or why there is none (`error`: (error_type, message))."""

    entry: ManifestEntry
    sha256: str | None
    model_uri: str | None
    card: dict | None
    grams: list | None
    error: tuple[str, str] | None = None
    fingerprint: dict | None = None  # of the style image as read (its outputs' sidecars record it)
    params_hash: str | None = None  # of its pairs: the run's settings and this network's weights

    @property
    def weights_sha256(self) -> str | None:
        return None if self.card is None else self.card["weights_sha256"]


class StyleExample(typing.NamedTuple):
    """What RunInference gets for one pair: the content (prepared once for all its styles) and the
    network to put it through."""

    content: ManifestEntry
    style: ManifestEntry
    image: np.ndarray  # float32 [0,1], the size the network is applied at
    model_uri: str
    base: dict  # the pair's report columns so far
    seconds_decode: float  # this pair's share of reading, decoding and preparing the content (faces found)
    fingerprints: dict | None = None  # the inputs' fingerprints by role, for the output's sidecar
    weights_sha256: str | None = None  # the model's weights as its card recorded them (checked on load)
    faces: tuple = ()  # the content's faces (quality.Box), found once for all its styles (--ff-keep-faces)


class ModelFailure(typing.NamedTuple):
    """What RunInference gives for an example whose network could not be loaded: the pair's error."""

    error_type: str
    message: str


#: The shortest side a training photo may have at --max-dim: held-out scoring runs NST on it, and a
#: banner (200x20) would fail the whole style's training; such a photo is skipped as unusable.
TRAINING_MIN_SIDE = NST_MIN_SIDE


def _sample_key(seed: int, entry: ManifestEntry) -> int:
    return controls.pair_seed(seed, "ff-train", entry.id)


class LoadTrainingPhotoFn(beam.DoFn):
    """One sampled training photo, read under the run's read policy, decoded and resized; a broken one
    is kept as an error record (counted, skipped by training)."""

    def __init__(self, units: UnitContext, job: FFJob):
        self._units = units
        self._job = job

    def process(self, entry: ManifestEntry):
        sha256 = None
        try:
            source = self._units.read(entry)
            sha256 = source.sha256
            photo = images.resize_to_max_dim(self._units.decode(source.data), self._job.controls.max_dim)
            images.check_min_side(photo, TRAINING_MIN_SIDE, f"for training or held-out scoring at --max-dim "
                                                            f"{self._job.controls.max_dim}")
            yield TrainingPhoto(entry.id, sha256, images.to_float01(photo))
        except Exception as exc:  # noqa: BLE001 - a broken training photo is skipped, never fatal
            Metrics.counter(NAMESPACE, "ff_training_photos_skipped").inc()
            yield TrainingPhoto(entry.id, sha256, None, " ".join(classify(exc)))


class TrainingPhotos(beam.PTransform):
    """The seeded sample of training photos: the `train_images` entries of the spec with the smallest
    seeded hash of their id (the same photos in every run and on every runner), loaded."""

    def __init__(self, units: UnitContext, job: FFJob):
        super().__init__()
        self._units = units
        self._job = job

    def expand(self, pbegin):
        seed, count = self._job.settings.seed, self._job.train_images
        return (
            pbegin
            | "List" >> ReadManifest(self._job.train_content, self._job.train_rules)
            | "Usable" >> beam.Filter(lambda entry: entry.error is None)
            | "Sample" >> beam.combiners.Top.Of(count, key=lambda entry: -_sample_key(seed, entry))
            | "Each" >> beam.FlatMap(lambda sample: sample)
            | "Load" >> beam.ParDo(LoadTrainingPhotoFn(self._units, self._job))
        )


class TrainingProgress(keras.callbacks.Callback):
    """A training unit's steps as they go: the local progress line ("training <style> 150/600 steps")
    and the Beam counter `ff_training_steps`, every `loss_every` steps."""

    def __init__(self, style_id: str, settings: FFSettings):
        super().__init__()
        self._style_id, self._settings = style_id, settings

    def on_epoch_end(self, epoch, logs=None):
        every = self._settings.loss_every
        Metrics.counter(NAMESPACE, "ff_training_steps").inc(every)
        progress.record_steps(f"training {self._style_id}", (epoch + 1) * every, self._settings.train_steps)


def split_photos(photos: list, heldout_images: int) -> tuple[list, list, list]:
    """(trained on, held out, broken ids) of the sampled training photos: the usable ones by id, the last
    `heldout_images` of them held out when more than that many are usable."""
    usable = sorted((p for p in photos if p.image is not None), key=lambda p: p.id)
    broken = sorted(p.id for p in photos if p.image is None)
    # not usable[-n:]: with --ff-heldout-images 0 that is every photo, and nothing is left to train on
    heldout = usable[len(usable) - heldout_images :] if len(usable) > heldout_images else []
    return usable[: len(usable) - len(heldout)], heldout, broken


def training_digest(trained_on: list) -> str:
    """What a model was trained on: a digest of its training photos' bytes (the card records it)."""
    return sha256_hex("\n".join(sorted(p.sha256 for p in trained_on)).encode())


def outdated(card: dict, photos: list, job: FFJob) -> bool:
    """Whether a model trained on a degraded set (broken photos, or no held-out score though one was
    asked for) should be trained again: when this run's usable photos differ from those it was trained
    on (the photos were fixed). A model trained on a sound set is kept as the catalog grows."""
    degraded = card["training_set"]["broken"] or (card["heldout"] is None and job.heldout_images > 0)
    trained_on, _, _ = split_photos(photos, job.heldout_images)
    return bool(degraded) and card["training_set"]["digest"] != training_digest(trained_on)


def network_bytes(network: keras.Model) -> bytes:
    """The network's weights as the bytes of a `.weights.h5` file (Keras writes local files only)."""
    with tempfile.TemporaryDirectory() as folder:
        local = os.path.join(folder, "network.weights.h5")
        ff_network.save_network(network, local)
        with open(local, "rb") as handle:
            return handle.read()


def network_from_bytes(data: bytes, settings: FFSettings) -> keras.Model:
    """The network whose `.weights.h5` bytes are `data` (read under the run's policy, never opened in
    place: Keras would open a FIFO or a device and wait)."""
    with tempfile.TemporaryDirectory() as folder:
        local = os.path.join(folder, "network.weights.h5")
        with open(local, "wb") as handle:
            handle.write(data)
        return ff_network.load_network(local, settings)


class TrainFn(WithSharedExtractor):
    """One style: its model reused from the model folder or trained, scored and written (main output:
    StyleModel), and the training unit's report row (on ROWS)."""

    def process(self, entry: ManifestEntry, photos: list):
        units, job = self._units, self._job
        base = units.base(None, entry)
        watch = Stopwatch()
        sha256 = source = None
        try:
            with watch.phase("total"):
                with watch.phase("decode"):
                    source = units.read(entry)
                    sha256 = source.sha256
                    style = images.to_float01(images.resize_to_max_dim(units.decode(source.data), job.controls.max_dim))
                base.update(style_sha256=sha256, params_hash=job.model_hash(sha256))
                model_uri = job.model_uri(entry.id, sha256)
                grams = style_targets(self._extractor, style)
                card, network = self._reusable(model_uri, base["params_hash"], photos)
                reused = card is not None
                if not reused:
                    with watch.phase("compute"):
                        card = self._train(entry, sha256, model_uri, style, photos)
                elif card["heldout"] is not None and not job.scored_like(card["heldout"]):
                    with watch.phase("compute"):
                        card = self._rescore(model_uri, card, network, style, photos)
        except Exception as exc:  # noqa: BLE001 - a style that cannot be trained fails its pairs, not the run
            error_type, message = classify(exc)
            row = units.error(base, exc, watch.seconds.get("total"), f"style {entry.uri}")
            yield beam.pvalue.TaggedOutput(ROWS, row)
            yield StyleModel(entry, sha256, None, None, None, (error_type, f"style {entry.id} has no model: {message}"))
            return
        heldout = card["heldout"] or {}
        row = dict(
            base, output_uri=model_uri, model_uri=model_uri, steps=card["settings"]["train_steps"],
            loss_total=heldout.get("ff_total"), loss_content=heldout.get("ff_content"),
            loss_style=heldout.get("ff_style"), loss_tv=heldout.get("ff_tv"), ssim=heldout.get("ff_ssim"),
            edge_correlation=heldout.get("ff_edges"), saturated=heldout.get("ff_saturated"),
            faces_photo=heldout.get("faces_photo"),
            faces_kept=heldout.get("ff_faces_kept"), photo_dependence=heldout.get("ff_dependence"),
            seconds_total=watch.seconds["total"],
            seconds_decode=watch.seconds["decode"], seconds_compute=watch.seconds.get("compute"),
        )
        yield beam.pvalue.TaggedOutput(ROWS, units.skipped(row) if reused else units.ok(row))
        yield StyleModel(entry, sha256, model_uri, card, grams, None, source.fingerprint,
                         job.params_hash(card["weights_sha256"]))

    def _reusable(self, model_uri: str, model_hash: str, photos: list) -> tuple[dict | None, keras.Model | None]:
        """(card, network) of the model under `model_uri` when it can be reused; (None, None) when it must
        be trained (again): missing, half-written, a card of the wrong shape, weights that are not the
        card's or do not load, or `outdated`. A model file that cannot be read (a FIFO, a time-out) raises:
        its style's units report it, and nothing is replaced."""
        policy = self._units.run.read_policy
        try:
            card = model_store.read_card(model_uri, policy)
            if card is None or card["model_hash"] != model_hash or outdated(card, photos, self._job):
                return None, None
            data = model_store.read_weights(model_uri, card["weights_sha256"], policy)
        except storage.ReadError as exc:
            raise UnitError(exc.error_type, f"model {model_uri}: {exc}") from exc
        except (FileNotFoundError, model_store.ModelMismatch):  # gone, or not the card's: trained again
            return None, None
        try:
            return card, network_from_bytes(data, self._job.settings)
        except Exception:  # noqa: BLE001 - truncated, not HDF5, another architecture: trained again
            return None, None

    def _train(self, entry, sha256, model_uri, style, photos) -> dict:
        """Train on the sampled photos but the held-out ones, score on those, write weights and card."""
        job = self._job
        trained_on, heldout, broken = split_photos(photos, job.heldout_images)
        if not trained_on:
            raise UnitError(
                "no_training_data",
                f"no usable training photo in {job.train_content} ({len(photos)} sampled, {len(broken)} broken)",
            )
        result = train(self._extractor, [p.image for p in trained_on], style, job.training,
                       callbacks=[TrainingProgress(entry.id, job.training)])
        card = dict(
            style_id=entry.id, style_uri=entry.uri, style_sha256=sha256,
            model_hash=job.model_hash(sha256), model_uri=model_uri, settings=dataclasses.asdict(job.training),
            extractor=job.extractor, weights=job.weights, backend=keras.backend.backend(),
            run_id=self._units.run.run_id,
            training_set=dict(
                spec=job.train_content, photos=[p.id for p in trained_on], broken=broken,
                digest=training_digest(trained_on),
            ),
            steps=job.training.train_steps, seconds_train=result.seconds, final_loss=result.final_loss,
            style_weight=result.style_weight,
            history=result.history, heldout=self._score(result.network, style, heldout),
        )
        card = model_store.write_model(model_uri, network_bytes(result.network), card)
        Metrics.counter(NAMESPACE, "ff_models_trained").inc()
        return card

    def _score(self, network, style, heldout: list) -> dict | None:
        """The held-out figures of the quality gate: `network`'s images as this run writes them (with
        --ff-keep-faces) against --ff-gate-steps NST steps on the held-out photos (None without any)."""
        if not heldout:
            return None
        start = time.perf_counter()
        job = self._job
        scores = evaluate_heldout(network, self._extractor, [p.image for p in heldout], style,
                                  max_dim=job.controls.max_dim, nst_steps=job.gate_steps,
                                  detector=quality.FaceDetector(), keep_faces=job.keep_faces).summary
        return dict(photos=[p.id for p in heldout], gate_steps=job.gate_steps, keep_faces=job.keep_faces,
                    seconds=time.perf_counter() - start, **scores)

    def _rescore(self, model_uri, card, network, style, photos) -> dict:
        """A reused model scored against another number of NST steps, or with another --ff-keep-faces, is
        scored again as this run asks (its card updated), so that the gate never judges other images or
        compares with another reference. Without held-out photos now, the card stays, and the gate refuses
        the figures."""
        _, heldout, _ = split_photos(photos, self._job.heldout_images)
        scores = self._score(network, style, heldout)
        if scores is None:
            return card
        card = dict(card, heldout=scores)
        model_store.write_card(model_uri, card)
        return card


class PrepareFn(beam.DoFn):
    """One content photo for all its pending pairs: read, hashed, reused (--incremental) or decoded and
    resized once, its faces found once (--ff-keep-faces), then one (style_id, StyleExample) per pair whose
    style has a usable model; pairs whose style has none, or a model the quality gate refuses, end here
    as error rows."""

    def __init__(self, units: UnitContext, job: FFJob):
        self._units = units
        self._job = job

    def setup(self):
        self._units = self._job.on_worker(self._units)
        self._detector = quality.FaceDetector()  # its model loads on first use

    def process(self, element, models: list, previous=None):
        units = self._units
        entry, models = pending_styles(element, models)
        watch = Stopwatch()
        pairs = read_content_of_pairs(units, entry, models, previous, watch, row_tag=ROWS)
        yield from pairs.settled
        if not pairs.pending:
            return
        source, bases, pending = pairs.source, pairs.bases, pairs.pending
        try:
            with watch.phase("decode"):
                image = self._prepare(units.decode(source.data))
                faces = tuple(self._detector(image)) if self._job.keep_faces else ()
        except Exception as exc:  # noqa: BLE001
            yield from fail_pairs(units, entry, pending, bases, exc, watch.seconds.get("decode"), row_tag=ROWS)
            return
        share = watch.seconds["decode"] / len(pending)
        for model in pending:
            refusal = gate_refusal(model, self._job)
            base = dict(bases[model.entry], model_uri=model.model_uri)
            if refusal is not None:
                subject = pair_subject(entry, model.entry)
                yield from units.failed(base, refusal, share, entry, model.entry, subject=subject, row_tag=ROWS)
                continue
            fingerprints = {"content": source.fingerprint, "style": model.fingerprint}
            yield model.entry.id, StyleExample(entry, model.entry, image, model.model_uri, base, share, fingerprints,
                                               model.weights_sha256, faces)

    def _prepare(self, rgb: np.ndarray) -> np.ndarray:
        """The photo at the size the network runs at: --max-dim, or the --output-size (no pyramid: the
        network is fully convolutional), refused when over the memory budget."""
        settings = self._job.controls
        height, width = output_shape(*rgb.shape[:2], settings)
        ff_network.check_memory(height, width, self._job.training, settings.max_memory_gb)
        image = images.to_float01(images.resize(rgb, (height, width)))
        return images.check_min_side(image, ff_network.MIN_SIDE, "for the feed-forward network")


def gate_refusal(model: StyleModel, job: FFJob) -> UnitError | None:
    """Why the pairs of `model`'s style are not applied (its training failed, or the quality gate refuses
    its held-out figures: `gate_failures`, against this run's --ff-gate-steps), or None."""
    if model.error:
        return UnitError(*model.error)
    heldout = model.card["heldout"]
    if heldout is None:
        if job.max_loss_ratio is None:
            return None
        return UnitError("quality_gate", f"model {model.model_uri} has no held-out score (too few training "
                                         f"photos to hold any out), --ff-max-loss-ratio {job.max_loss_ratio:g} "
                                         "refuses it")
    steps = heldout["gate_steps"]
    if not job.scored_like(heldout):
        return UnitError("quality_gate", f"model {model.model_uri} was scored against {steps} NST steps with "
                                         f"--ff-keep-faces {heldout.get('keep_faces', 0.0):g}, not --ff-gate-steps "
                                         f"{job.gate_steps} with --ff-keep-faces {job.keep_faces:g}, and no "
                                         "held-out photo is left to score it again")
    reasons = gate_failures(heldout, job.max_loss_ratio, job.min_dependence or None, reference=f"{steps} NST steps",
                            min_style_progress=job.min_style_progress or None, max_saturated=job.max_saturated)
    if reasons:
        return UnitError("quality_gate", f"model {model.model_uri} is refused: {'; '.join(reasons)} "
                                         "(--ff-min-dependence, --ff-min-style-progress, --ff-max-saturated, "
                                         "--ff-max-loss-ratio)")
    return None


class NetworkCache:
    """The networks of one worker process, each loaded once, on first use (RunInference's "model"), from
    weights read under the run's policy and checked against their card's SHA-256."""

    def __init__(self, settings: FFSettings, policy: storage.ReadPolicy):
        self._settings = settings
        self._policy = policy
        self._networks: dict[tuple, keras.Model] = {}

    def get(self, model_uri: str, weights_sha256: str) -> keras.Model:
        key = (model_uri, weights_sha256)
        if key not in self._networks:
            data = model_store.read_weights(model_uri, weights_sha256, self._policy)
            self._networks[key] = network_from_bytes(data, self._settings)
            Metrics.counter(NAMESPACE, "ff_model_loads").inc()
        return self._networks[key]


def model_failure(model_uri: str, exc: Exception) -> ModelFailure:
    """The pairs' error when their network cannot be loaded: a read's own type (not_a_file, timeout, ...),
    else model_error (replaced since it was checked, truncated, another architecture)."""
    if isinstance(exc, (storage.ReadError, FileNotFoundError)):
        return ModelFailure(*classify(exc))
    return ModelFailure("model_error", one_line(f"model {model_uri} cannot be loaded: {type(exc).__name__}: {exc}"))


class StyleNetworkHandler(ModelHandler):
    """RunInference's model handler: StyleExample -> (stylised image, seconds), batched; images of one
    network and one size run as one batch. Wrapped in a KeyedModelHandler keyed by style. A network that
    cannot be loaded gives its examples a ModelFailure (error rows), never a failed bundle."""

    def __init__(self, settings: FFSettings, policy: storage.ReadPolicy = storage.ReadPolicy()):
        super().__init__(max_batch_size=settings.apply_batch)
        self._settings = settings
        self._policy = policy

    def load_model(self) -> NetworkCache:
        return NetworkCache(self._settings, self._policy)

    def run_inference(self, batch, model: NetworkCache, inference_args=None):
        groups: dict[tuple, list[StyleExample]] = {}
        for example in batch:
            groups.setdefault((example.model_uri, example.weights_sha256, example.image.shape), []).append(example)
        results = {}
        for (model_uri, weights_sha256, _), group in groups.items():
            try:
                network = model.get(model_uri, weights_sha256)
            except Exception as exc:  # noqa: BLE001 - the style's pairs fail, not the run
                failure = model_failure(model_uri, exc)
                results.update({id(example): PredictionResult(example, failure, model_uri) for example in group})
                continue
            start = time.perf_counter()
            stylised = ff_network.apply(network, np.stack([e.image for e in group]))
            seconds = (time.perf_counter() - start) / len(group)
            for example, image in zip(group, stylised):
                results[id(example)] = PredictionResult(example, (image, seconds), model_uri)
        return [results[id(example)] for example in batch]

    def get_num_bytes(self, batch) -> int:
        return sum(example.image.nbytes for example in batch)

    def get_metrics_namespace(self) -> str:
        return "toonbeam_feedforward"


class FinishFn(WithSharedExtractor):
    """A stylised pair: style strength (a blend towards the photo), the faces kept (--ff-keep-faces: some of
    the photo blended back inside each face PrepareFn found in it), colours, the image and its row; for
    the sampled pairs (--ff-score-fraction) the seed's loss of the result (at --max-dim, against the
    style's grams at --max-dim, as NST rows) and the quality panel (structure, faces kept)."""

    def setup(self):
        super().setup()
        self._detector = quality.FaceDetector()  # its model loads on the first scored pair only

    def process(self, keyed, models: list):
        units, settings = self._units, self._job.controls
        _, prediction = keyed
        example: StyleExample = prediction.example
        subject = pair_subject(example.content, example.style)
        if isinstance(prediction.inference, ModelFailure):
            failure = UnitError(*prediction.inference)
            yield from units.failed(example.base, failure, None, example.content, example.style, subject=subject)
            return
        stylised, seconds_apply = prediction.inference
        grams = next(m.grams for m in models if m.entry == example.style)
        watch = Stopwatch()
        try:
            with watch.phase("compute"):
                result = np.clip(example.image + settings.style_strength * (stylised - example.image), 0.0, 1.0)
                result = quality.keep_faces(result, example.image, example.faces, self._job.keep_faces)
                if settings.preserve_colors:
                    result = controls.preserve_colors(result, example.image)
                written = images.to_uint8(result)  # the losses are those of the image as written
                scores = {}
                if self._job.scores(example.content, example.style):
                    scores = self._scores(images.to_float01(written), example.image, grams)
            row = dict(
                example.base, height=written.shape[0], width=written.shape[1], loss_total=scores.get("total"),
                loss_content=scores.get("content"), loss_style=scores.get("style"), loss_tv=scores.get("tv"),
                ssim=scores.get("ssim"), edge_correlation=scores.get("edges"), saturated=scores.get("saturated"),
                faces_photo=scores.get("faces_photo"), faces_kept=scores.get("faces_kept"),
                seconds_decode=example.seconds_decode, seconds_compute=seconds_apply + watch.seconds["compute"],
            )
            output_uri = units.output_uri(example.content.id, example.style.id)
            with watch.phase("write"):
                recipe = self._job.recipe(example.content, example.style, example.weights_sha256)
                units.write_image(output_uri, written, recipe, row, example.fingerprints)
        except Exception as exc:  # noqa: BLE001
            yield from units.failed(example.base, exc, None, example.content, example.style, subject=subject)
            return
        yield units.ok(
            row, output_uri=output_uri, seconds_write=watch.seconds["write"],
            seconds_total=row["seconds_decode"] + row["seconds_compute"] + watch.seconds["write"],
        )

    def _scores(self, result: np.ndarray, photo: np.ndarray, grams) -> dict:
        """The seed's loss terms and the quality panel of the written image, at --max-dim."""
        size = images.scaled_shape(*photo.shape[:2], self._job.controls.max_dim)
        result, photo = images.resize(result, size), images.resize(photo, size)
        losses = evaluate_losses(self._extractor, result[None], content_targets(self._extractor, photo), [grams])[0]
        return {**losses, **quality.structure(result, photo, self._detector)}


class FeedForward(Method):
    """{"contents", "styles"} -> {"rows", "dead_letters"}: a training unit per style, then every content
    x style pair through its style's network (settings: an FFJob)."""

    needs_style = True
    neural = True

    @classmethod
    def preflight(cls, toon, dry_run: bool) -> None:
        check_neural_options(toon, dry_run)
        check_training(ff_settings(toon))
        if toon.ff_max_loss_ratio is not None and not toon.ff_max_loss_ratio > 0:
            raise ValueError(f"--ff-max-loss-ratio must be positive, got {toon.ff_max_loss_ratio}")
        fractions = ("ff_min_dependence", "ff_min_style_progress", "ff_max_saturated", "ff_score_fraction",
                     "ff_keep_faces")
        for name in fractions:
            if not 0 <= getattr(toon, name) <= 1:
                raise ValueError(f"--{name.replace('_', '-')} must be in [0, 1], got {getattr(toon, name)}")
        if toon.ff_train_images < 1 or toon.ff_heldout_images < 0 or toon.ff_gate_steps < 1:
            raise ValueError("--ff-train-images and --ff-gate-steps must be at least 1, --ff-heldout-images at least 0")
        if toon.style_blend:
            raise ValueError("--style-blend is for --method nst only (a feed-forward network is trained per style)")
        cls._check_locations(toon, dry_run)

    @staticmethod
    def _check_locations(toon, dry_run: bool) -> None:
        """--ff-model-dir and --ff-train-content obey the run's read policy as --content does, before any
        request (a model folder is also written to: an upload must not reach a refused host); the training
        photos must exist; a local model folder (default OUTPUT/models) must be writable. Offline with
        `dry_run`: the schemes only."""
        policy = read_policy(toon)
        for flag, uri in (("--ff-model-dir", toon.ff_model_dir), ("--ff-train-content", toon.ff_train_content)):
            if not uri:
                continue
            try:
                storage.check_scheme(uri, allowed_schemes(toon))
                if not dry_run:
                    storage.check_addresses(uri, policy)
            except OSError as exc:
                raise ValueError(f"{flag} {uri}: {exc}") from None
        if toon.ff_train_content and not dry_run:
            try:
                load_manifest(toon.ff_train_content, manifest_rules(toon))
            except ValueError as exc:
                raise ValueError(f"--ff-train-content {exc}") from None
        model_dir = toon.ff_model_dir or storage.join_uri(toon.output, "models")
        if not dry_run:
            try:
                model_store.check_writable(model_dir)
            except OSError as exc:
                raise ValueError(f"--ff-model-dir {model_dir}: {exc}") from None

    @classmethod
    def from_options(cls, run: RunContext, toon, previous=None) -> FeedForward:
        controls_ = nst_settings(toon)
        job = FFJob(
            settings=ff_settings(toon), controls=controls_, extractor=toon.extractor, weights=toon.weights,
            model_dir=toon.ff_model_dir or storage.join_uri(run.output, "models"),
            train_content=toon.ff_train_content or toon.content, train_rules=manifest_rules(toon),
            train_images=toon.ff_train_images,
            heldout_images=toon.ff_heldout_images, gate_steps=toon.ff_gate_steps,
            max_loss_ratio=toon.ff_max_loss_ratio, min_dependence=toon.ff_min_dependence,
            min_style_progress=toon.ff_min_style_progress, max_saturated=toon.ff_max_saturated,
            keep_faces=toon.ff_keep_faces,
            score_fraction=toon.ff_score_fraction, backend=toon.backend,
        )
        columns = dict(
            extractor=toon.extractor, style_strength=controls_.style_strength,
            preserve_colors=controls_.preserve_colors, output_size=controls_.output_size,
        )
        return cls(UnitContext(run, "feedforward", columns, job.params_hash()), job, previous)

    @classmethod
    def count_units(cls, toon, contents: int, styles: int) -> int:
        return (contents + 1) * styles  # every pair, and a training unit per style

    def expand(self, inputs):
        units, job = self.units, self.settings
        train_units = dataclasses.replace(units, method=TRAIN_METHOD, params_hash=None)
        handle = shared.Shared()
        photos = inputs["contents"].pipeline | "TrainingPhotos" >> TrainingPhotos(units, job)
        trained = inputs["styles"] | "Train" >> beam.ParDo(
            TrainFn(train_units, handle, job), photos=beam.pvalue.AsList(photos)
        ).with_outputs(ROWS, main="models")
        models = beam.pvalue.AsList(trained.models)
        triaged = inputs["contents"] | "TriagePairs" >> beam.ParDo(
            PairTriageFn(units, job.pair_recipe, job.on_worker), styles=beam.pvalue.AsList(inputs["styles"]),
            models=models,
        ).with_outputs(ROWS, DEAD_LETTERS, main="todo")
        prepared = triaged.todo | "Prepare" >> beam.ParDo(
            PrepareFn(units, job), models=models, **self.previous_side_input()
        ).with_outputs(DEAD_LETTERS, ROWS, main="examples")
        finished = (
            prepared.examples
            | "Apply" >> RunInference(KeyedModelHandler(StyleNetworkHandler(job.settings, units.run.read_policy)))
            | "Finish" >> beam.ParDo(FinishFn(units, handle, job), models=models).with_outputs(DEAD_LETTERS, main="rows")
        )
        return {
            "rows": (trained[ROWS], triaged[ROWS], prepared[ROWS], finished.rows) | "Rows" >> beam.Flatten(),
            "dead_letters": (triaged[DEAD_LETTERS], prepared[DEAD_LETTERS], finished[DEAD_LETTERS])
            | "DeadLetters" >> beam.Flatten(),
        }
