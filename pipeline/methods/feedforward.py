"""The feedforward method: fast neural style (Johnson et al. 2016, `transforms.feedforward`). One small
network is trained per style, once, then every content photo goes through it in one forward pass.

Steps:
  TrainingPhotos  a seeded sample of --ff-train-content (default: --content), at most --ff-train-images,
                  decoded and resized once (broken photos are skipped and counted);
  Train           one unit per style: reuse the model under the model folder when one with the same hash
                  exists (the style's bytes and every training setting), else train it, score it on the
                  held-out photos against NST (the quality gate's figures) and write the weights and
                  their card; a report row of method `feedforward_train`;
  TriagePairs     (pipeline.pairs) what needs no work;
  Prepare         each content read, hashed and decoded once, then keyed by style for every pending pair;
  Apply           Beam's RunInference with a KeyedModelHandler around `StyleNetworkHandler`: batched, each
                  style's network loaded once per worker;
  Finish          style strength, colours, the seed's loss of the result, the image and its row.
"""
from __future__ import annotations

import dataclasses
import json
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

from pipeline.errors import UnitError, classify
from pipeline.io import outputs, storage
from pipeline.io.manifests import ListAndSpread, ManifestEntry, read_manifest
from pipeline.io.weights import local_weights
from pipeline.methods import Method
from pipeline.models import WithSharedExtractor, check_neural_options, check_worker_backend, worker_columns
from pipeline.options import ff_settings, nst_settings
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
from transforms.feedforward.settings import MIN_DEPENDENCE, FFSettings
from transforms.feedforward.settings import check_settings as check_training
from transforms.feedforward.training import train
from transforms.nst import controls
from transforms.nst.optimize import content_targets, evaluate_losses, style_targets
from transforms.nst.pyramid import output_shape
from transforms.nst.settings import NSTSettings

#: The report's method of a training unit (one per style); pairs are "feedforward".
TRAIN_METHOD = "feedforward_train"
CARD_FORMAT = 2  # 2: held-out scores include the quality panel (structure, faces, photo dependence)
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
    train_images: int = 16
    heldout_images: int = 2
    gate_steps: int = 100
    max_loss_ratio: float | None = None
    min_dependence: float = MIN_DEPENDENCE
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

    def params_hash(self) -> str:
        """Every setting that changes a pair's pixels (the style's bytes are the row's style_sha256)."""
        return outputs.params_hash(
            "feedforward", settings=dataclasses.replace(self.training, **_NOT_TRAINING), controls=self.apply_controls(),
            extractor=self.extractor, weights=self.weights, train_images=self.train_images,
            heldout_images=self.heldout_images,
        )

    def apply_controls(self) -> dict:
        c = self.controls
        return dict(max_dim=c.max_dim, output_size=c.output_size, max_output_dim=c.max_output_dim,
                    style_strength=c.style_strength, preserve_colors=c.preserve_colors)

    def recipe(self, content: ManifestEntry, style: ManifestEntry) -> str:
        return outputs.recipe_digest(
            method="feedforward", params=self.params_hash(), content_uri=content.uri, style_uri=style.uri
        )

    def scores(self, content: ManifestEntry, style: ManifestEntry) -> bool:
        """Whether this pair's written image is scored with the seed's loss: a seeded sample of
        `score_fraction` of the pairs, the same in every run."""
        return controls.pair_seed(self.settings.seed, "ff-score", content.id, style.id) < self.score_fraction * 2**63

    def on_worker(self, units: UnitContext) -> UnitContext:
        """`units` with what only a worker knows (backend, device), on the backend --backend asked for."""
        check_worker_backend(self.backend)
        return units.with_columns(**worker_columns(self.extractor))


def card_uri(model_uri: str) -> str:
    """The JSON card beside a model's weights."""
    return model_uri[: -len(".weights.h5")] + ".json"


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


class StyleExample(typing.NamedTuple):
    """What RunInference gets for one pair: the content (prepared once for all its styles) and the
    network to put it through."""

    content: ManifestEntry
    style: ManifestEntry
    image: np.ndarray  # float32 [0,1], the size the network is applied at
    model_uri: str
    base: dict  # the pair's report columns so far
    seconds_decode: float  # this pair's share of reading and decoding the content
    fingerprints: dict | None = None  # the inputs' fingerprints by role, for the output's sidecar


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
            rgb = self._units.decode(source.data)
            yield TrainingPhoto(entry.id, sha256, images.to_float01(images.resize_to_max_dim(rgb, self._job.controls.max_dim)))
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
            | "List" >> ListAndSpread(self._job.train_content, read_manifest)
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
                card = _read_card(model_uri)
                reused = card is not None and card.get("model_hash") == base["params_hash"]
                if not reused:
                    with watch.phase("compute"):
                        card = self._train(entry, sha256, model_uri, style, photos)
        except Exception as exc:  # noqa: BLE001 - a style that cannot be trained fails its pairs, not the run
            error_type, message = classify(exc)
            row = units.error(base, exc, watch.seconds.get("total"), f"style {entry.uri}")
            yield beam.pvalue.TaggedOutput(ROWS, row)
            yield StyleModel(entry, sha256, None, None, None, (error_type, f"style {entry.id} has no model: {message}"))
            return
        heldout = card.get("heldout") or {}
        row = dict(
            base, output_uri=model_uri, model_uri=model_uri, steps=card["settings"]["train_steps"],
            loss_total=heldout.get("ff_total"), loss_content=heldout.get("ff_content"),
            loss_style=heldout.get("ff_style"), loss_tv=heldout.get("ff_tv"), ssim=heldout.get("ff_ssim"),
            edge_correlation=heldout.get("ff_edges"), faces_photo=heldout.get("faces_photo"),
            faces_kept=heldout.get("ff_faces_kept"), photo_dependence=heldout.get("ff_dependence"),
            seconds_total=watch.seconds["total"],
            seconds_decode=watch.seconds["decode"], seconds_compute=watch.seconds.get("compute"),
        )
        yield beam.pvalue.TaggedOutput(ROWS, units.skipped(row) if reused else units.ok(row))
        yield StyleModel(entry, sha256, model_uri, card, grams, None, source.fingerprint)

    def _train(self, entry, sha256, model_uri, style, photos) -> dict:
        """Train on the sampled photos but the held-out ones, score on those, write weights and card."""
        job = self._job
        usable = sorted((p for p in photos if p.image is not None), key=lambda p: p.id)
        broken = sorted(p.id for p in photos if p.image is None)
        if not usable:
            raise UnitError(
                "no_training_data",
                f"no usable training photo in {job.train_content} ({len(photos)} sampled, {len(broken)} broken)",
            )
        # not usable[-n:]: with --ff-heldout-images 0 that is every photo, and nothing is left to train on
        heldout = usable[len(usable) - job.heldout_images :] if len(usable) > job.heldout_images else []
        trained_on = usable[: len(usable) - len(heldout)]
        result = train(self._extractor, [p.image for p in trained_on], style, job.training,
                       callbacks=[TrainingProgress(entry.id, job.training)])
        gate_start = time.perf_counter()
        scores = None
        if heldout:
            scores = evaluate_heldout(result.network, self._extractor, [p.image for p in heldout], style,
                                      max_dim=job.controls.max_dim, nst_steps=job.gate_steps,
                                      detector=quality.FaceDetector()).summary
        card = dict(
            format=CARD_FORMAT, style_id=entry.id, style_uri=entry.uri, style_sha256=sha256,
            model_hash=job.model_hash(sha256), model_uri=model_uri, settings=dataclasses.asdict(job.training),
            extractor=job.extractor, weights=job.weights, backend=keras.backend.backend(),
            run_id=self._units.run.run_id,
            training_set=dict(
                spec=job.train_content, photos=[p.id for p in trained_on], broken=broken,
                digest=sha256_hex("\n".join(sorted(p.sha256 for p in trained_on)).encode()),
            ),
            steps=job.training.train_steps, seconds_train=result.seconds, final_loss=result.final_loss,
            history=result.history,
            heldout=None if scores is None else dict(
                photos=[p.id for p in heldout], gate_steps=job.gate_steps,
                seconds=time.perf_counter() - gate_start, **scores,
            ),
        )
        with tempfile.TemporaryDirectory() as folder:
            local = os.path.join(folder, "network.weights.h5")
            ff_network.save_network(result.network, local)
            with open(local, "rb") as handle:
                storage.write_atomic(model_uri, handle.read())
        storage.write_atomic(card_uri(model_uri), json.dumps(card, indent=1, sort_keys=True).encode())
        Metrics.counter(NAMESPACE, "ff_models_trained").inc()
        return card


def _read_card(model_uri: str) -> dict | None:
    """The card of a model whose weights and card both exist, else None (then it is trained)."""
    try:
        if not storage.exists(model_uri):
            return None
        card = json.loads(storage.read_bytes(card_uri(model_uri)))
    except (OSError, ValueError):
        return None
    return card if isinstance(card, dict) and card.get("format") == CARD_FORMAT else None


class PrepareFn(beam.DoFn):
    """One content photo for all its pending pairs: read, hashed, reused (--incremental) or decoded and
    resized once, then one (style_id, StyleExample) per pair whose style has a usable model; pairs whose
    style has none, or a model the quality gate refuses, end here as error rows."""

    def __init__(self, units: UnitContext, job: FFJob):
        self._units = units
        self._job = job

    def setup(self):
        self._units = self._job.on_worker(self._units)

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
        except Exception as exc:  # noqa: BLE001
            yield from fail_pairs(units, entry, pending, bases, exc, watch.seconds.get("decode"), row_tag=ROWS)
            return
        share = watch.seconds["decode"] / len(pending)
        for model in pending:
            refusal = self._refusal(model)
            base = dict(bases[model.entry], model_uri=model.model_uri)
            if refusal is not None:
                subject = pair_subject(entry, model.entry)
                yield from units.failed(base, refusal, share, entry, model.entry, subject=subject, row_tag=ROWS)
                continue
            fingerprints = {"content": source.fingerprint, "style": model.fingerprint}
            yield model.entry.id, StyleExample(entry, model.entry, image, model.model_uri, base, share, fingerprints)

    def _prepare(self, rgb: np.ndarray) -> np.ndarray:
        """The photo at the size the network runs at: --max-dim, or the --output-size (no pyramid: the
        network is fully convolutional), refused when over the memory budget."""
        settings = self._job.controls
        height, width = output_shape(*rgb.shape[:2], settings)
        ff_network.check_memory(height, width, self._job.training, settings.max_memory_gb)
        image = images.to_float01(images.resize(rgb, (height, width)))
        return images.check_min_side(image, ff_network.MIN_SIDE, "for the feed-forward network")

    def _refusal(self, model: StyleModel) -> UnitError | None:
        if model.error:
            return UnitError(*model.error)
        job = self._job
        heldout = (model.card or {}).get("heldout")
        if heldout is None:
            if job.max_loss_ratio is None:
                return None
            return UnitError("quality_gate", f"model {model.model_uri} has no held-out score (too few training "
                                             f"photos to hold any out), --ff-max-loss-ratio {job.max_loss_ratio:g} "
                                             "refuses it")
        reasons = gate_failures(heldout, job.max_loss_ratio, job.min_dependence or None,
                                reference=f"{job.gate_steps} NST steps")
        if reasons:
            return UnitError("quality_gate", f"model {model.model_uri} is refused: {'; '.join(reasons)} "
                                             "(--ff-min-dependence, --ff-max-loss-ratio)")
        return None


class NetworkCache:
    """The networks of one worker process, each loaded once, on first use (RunInference's "model")."""

    def __init__(self, settings: FFSettings):
        self._settings = settings
        self._networks: dict[str, keras.Model] = {}

    def get(self, model_uri: str) -> keras.Model:
        if model_uri not in self._networks:
            self._networks[model_uri] = ff_network.load_network(local_weights(model_uri), self._settings)
            Metrics.counter(NAMESPACE, "ff_model_loads").inc()
        return self._networks[model_uri]


class StyleNetworkHandler(ModelHandler):
    """RunInference's model handler: StyleExample -> (stylised image, seconds), batched; images of one
    network and one size run as one batch. Wrapped in a KeyedModelHandler keyed by style."""

    def __init__(self, settings: FFSettings):
        super().__init__(max_batch_size=settings.apply_batch)
        self._settings = settings

    def load_model(self) -> NetworkCache:
        return NetworkCache(self._settings)

    def run_inference(self, batch, model: NetworkCache, inference_args=None):
        groups: dict[tuple, list[StyleExample]] = {}
        for example in batch:
            groups.setdefault((example.model_uri, example.image.shape), []).append(example)
        results = {}
        for (model_uri, _), group in groups.items():
            start = time.perf_counter()
            stylised = ff_network.apply(model.get(model_uri), np.stack([e.image for e in group]))
            seconds = (time.perf_counter() - start) / len(group)
            for example, image in zip(group, stylised):
                results[id(example)] = PredictionResult(example, (image, seconds), model_uri)
        return [results[id(example)] for example in batch]

    def get_num_bytes(self, batch) -> int:
        return sum(example.image.nbytes for example in batch)

    def get_metrics_namespace(self) -> str:
        return "toonbeam_feedforward"


class FinishFn(WithSharedExtractor):
    """A stylised pair: style strength (a blend towards the photo), colours, the image and its row; for
    the sampled pairs (--ff-score-fraction) the seed's loss of the result (at --max-dim, against the
    style's grams at --max-dim, as NST rows) and the quality panel (structure, faces kept)."""

    def setup(self):
        super().setup()
        self._detector = quality.FaceDetector()  # its model loads on the first scored pair only

    def process(self, keyed, models: list):
        units, settings = self._units, self._job.controls
        _, prediction = keyed
        example: StyleExample = prediction.example
        stylised, seconds_apply = prediction.inference
        grams = next(m.grams for m in models if m.entry == example.style)
        subject = pair_subject(example.content, example.style)
        watch = Stopwatch()
        try:
            with watch.phase("compute"):
                result = np.clip(example.image + settings.style_strength * (stylised - example.image), 0.0, 1.0)
                if settings.preserve_colors:
                    result = controls.preserve_colors(result, example.image)
                written = images.to_uint8(result)  # the losses are those of the image as written
                scores = {}
                if self._job.scores(example.content, example.style):
                    scores = self._scores(images.to_float01(written), example.image, grams)
            row = dict(
                example.base, height=written.shape[0], width=written.shape[1], loss_total=scores.get("total"),
                loss_content=scores.get("content"), loss_style=scores.get("style"), loss_tv=scores.get("tv"),
                ssim=scores.get("ssim"), edge_correlation=scores.get("edges"), faces_photo=scores.get("faces_photo"),
                faces_kept=scores.get("faces_kept"),
                seconds_decode=example.seconds_decode, seconds_compute=seconds_apply + watch.seconds["compute"],
            )
            output_uri = units.output_uri(example.content.id, example.style.id)
            with watch.phase("write"):
                recipe = self._job.recipe(example.content, example.style)
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
        if not 0 <= toon.ff_min_dependence <= 1 or not 0 <= toon.ff_score_fraction <= 1:
            raise ValueError(f"--ff-min-dependence and --ff-score-fraction must be in [0, 1], got "
                             f"{toon.ff_min_dependence} and {toon.ff_score_fraction}")
        if toon.ff_train_images < 1 or toon.ff_heldout_images < 0 or toon.ff_gate_steps < 1:
            raise ValueError("--ff-train-images and --ff-gate-steps must be at least 1, --ff-heldout-images at least 0")
        if toon.style_blend:
            raise ValueError("--style-blend is for --method nst only (a feed-forward network is trained per style)")

    @classmethod
    def from_options(cls, run: RunContext, toon, previous=None) -> FeedForward:
        controls_ = nst_settings(toon)
        job = FFJob(
            settings=ff_settings(toon), controls=controls_, extractor=toon.extractor, weights=toon.weights,
            model_dir=toon.ff_model_dir or storage.join_uri(run.output, "models"),
            train_content=toon.ff_train_content or toon.content, train_images=toon.ff_train_images,
            heldout_images=toon.ff_heldout_images, gate_steps=toon.ff_gate_steps,
            max_loss_ratio=toon.ff_max_loss_ratio, min_dependence=toon.ff_min_dependence,
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
            PairTriageFn(units, job.recipe, job.on_worker), styles=beam.pvalue.AsList(inputs["styles"])
        ).with_outputs(ROWS, DEAD_LETTERS, main="todo")
        prepared = triaged.todo | "Prepare" >> beam.ParDo(
            PrepareFn(units, job), models=models, **self.previous_side_input()
        ).with_outputs(DEAD_LETTERS, ROWS, main="examples")
        finished = (
            prepared.examples
            | "Apply" >> RunInference(KeyedModelHandler(StyleNetworkHandler(job.settings)))
            | "Finish" >> beam.ParDo(FinishFn(units, handle, job), models=models).with_outputs(DEAD_LETTERS, main="rows")
        )
        return {
            "rows": (trained[ROWS], triaged[ROWS], prepared[ROWS], finished.rows) | "Rows" >> beam.Flatten(),
            "dead_letters": (triaged[DEAD_LETTERS], prepared[DEAD_LETTERS], finished[DEAD_LETTERS])
            | "DeadLetters" >> beam.Flatten(),
        }
