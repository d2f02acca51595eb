"""Train one style's network on the perceptual loss (Johnson et al. 2016): random crops of
photos through the network, the seed's NST loss terms (`transforms.nst.optimize.loss_terms`) of
the outputs on the frozen VGG19 extractor, content targets from the crops themselves.

Keras-native: a `keras.Model` wrapping the network overrides `compute_loss`, and `fit` runs
the loop, so the same code trains on the TensorFlow and JAX backends (`fit` differentiates
with respect to the trainable weights only: the frozen extractor gets input gradients, no
filter gradients). The extractor may run in bfloat16; features and losses are float32.
"""
from __future__ import annotations

import dataclasses
import math
import time

import keras
import numpy as np
from keras import ops

from transforms.feedforward.network import build_network, with_logits
from transforms.feedforward.settings import FFSettings, check_settings
from transforms.images import resize_to_max_dim
from transforms.nst.extractors import FeatureExtractor
from transforms.nst.losses import color_loss, laplacian_loss, saturation_loss, style_loss
from transforms.nst.optimize import loss_terms, resolve_jit_compile, resolve_precision, style_targets
from transforms.nst.settings import NSTSettings


@dataclasses.dataclass
class TrainResult:
    """network: the trained model; history: (step, mean loss of the `loss_every` steps up to
    it); final_loss: the mean training loss of the last `loss_every` steps; seconds: fit's wall time."""

    network: keras.Model
    history: list[tuple[int, float]]
    final_loss: float
    seconds: float
    style_weight: float  # the style weight trained with (per style when FFSettings.style_target > 0)


def loss_settings(settings: FFSettings, style_weight: float) -> NSTSettings:
    """The training loss's weights and extractor precision, as the NST core reads them."""
    return NSTSettings(style_weight=style_weight, content_weight=settings.content_weight,
                       tv_weight=settings.tv_weight, precision=settings.precision)


def calibrated_style_weight(extractor: FeatureExtractor, crops: np.ndarray, grams, settings: FFSettings) -> float:
    """`settings.style_weight`, or with `style_target` > 0 the weight at which the style term of the crops
    themselves (what the untrained residual network returns) is `style_target`: style images' Gram
    matrices differ in scale (pop_art's photo-to-style distance is 6x stained_glass's), so one weight
    over-styles one style and under-styles another (bench/FF_RESEARCH.md)."""
    if not settings.style_target:
        return settings.style_weight
    style_features, _ = extractor(crops)
    distance = style_loss([ops.cast(f, "float32") for f in style_features], grams)
    return settings.style_target / float(np.mean(ops.convert_to_numpy(distance)))


def with_content_layer(extractor: FeatureExtractor, layer: str) -> FeatureExtractor:
    """`extractor` tapping `layer` for content instead (same network and weights, no copy)."""
    if extractor.spec.content_layers == (layer,):
        return extractor
    taps = next(l for l in extractor.model.layers if isinstance(l, keras.Model))
    return FeatureExtractor(dataclasses.replace(extractor.spec, content_layers=(layer,)), taps)


class _Crops(keras.utils.PyDataset):
    """Batch i: `batch_size` random square crops (random photo, position, horizontal flip), drawn
    from a generator seeded by (seed, i), so any step's batch is the same in every run."""

    def __init__(self, photos, settings: FFSettings):
        super().__init__()
        self.photos, self.settings = photos, settings

    def __len__(self):
        return self.settings.train_steps

    def __getitem__(self, index):
        rng = np.random.default_rng([self.settings.seed, index])
        size, crops = self.settings.train_size, []
        for _ in range(self.settings.batch_size):
            photo = self.photos[rng.integers(len(self.photos))]
            top = rng.integers(photo.shape[0] - size + 1)
            left = rng.integers(photo.shape[1] - size + 1)
            crop = photo[top : top + size, left : left + size]
            crops.append(crop[:, ::-1] if rng.random() < 0.5 else crop)
        return np.stack(crops)


class _PerceptualTrainer(keras.Model):
    """The network, trained by `fit` on loss_terms(network(crops)) with the crops' own content, plus the
    structure and colour terms and the barrier on saturated logits (`call` returns the logits and the output)."""

    def __init__(self, network, extractor: FeatureExtractor, grams, settings: NSTSettings, structure: FFSettings):
        super().__init__(name="perceptual_trainer")
        self.network, self.extractor, self.nst_settings = network, extractor, settings
        self.with_logits = with_logits(network)
        self.structure = structure
        self.features = extractor.model_for(resolve_precision(settings))
        self.grams = grams

    def call(self, images, training=False):
        return self.with_logits(images, training=training)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        logits, outputs = y_pred
        _, content = self.extractor.split(self.features(x, training=False))
        targets = [ops.stop_gradient(ops.cast(f, "float32")) for f in content]
        grams = [ops.convert_to_tensor(g) for g in self.grams]
        terms = loss_terms(self.extractor.split, self.nst_settings, lambda images: self.features(images, training=False),
                           outputs, targets, grams)
        total = terms["total"]
        if self.structure.laplacian_weight:
            total = total + laplacian_loss(outputs, x, self.structure.laplacian_pool, self.structure.laplacian_weight)
        if self.structure.color_weight:
            total = total + color_loss(outputs, x, self.structure.color_pool, self.structure.color_weight)
        if self.structure.saturation_weight:
            total = total + saturation_loss(logits, self.structure.saturation_limit, self.structure.saturation_weight)
        return ops.mean(total)


class _History(keras.callbacks.Callback):
    def __init__(self, every):
        super().__init__()
        self.every, self.points = every, []

    def on_epoch_end(self, epoch, logs=None):
        self.points.append(((epoch + 1) * self.every, float(logs["loss"])))


def as_float01(image: np.ndarray, max_dim: int) -> np.ndarray:
    """uint8 or float [0,1] [H,W,3] -> float32 [0,1] with the long side `max_dim`."""
    image = np.asarray(image)
    image = image.astype(np.float32) / 255.0 if image.dtype == np.uint8 else image.astype(np.float32)
    return resize_to_max_dim(image, max_dim)


def prepare_photos(photos, settings: FFSettings) -> list[np.ndarray]:
    """`as_float01` at `image_size`, upscaled where the short side is below `train_size`, so
    that every photo yields a crop."""
    out = []
    for photo in photos:
        photo = as_float01(photo, settings.image_size)
        if min(photo.shape[:2]) < settings.train_size:
            photo = resize_to_max_dim(photo, math.ceil(max(photo.shape[:2]) * settings.train_size / min(photo.shape[:2])))
        out.append(photo)
    return out


def learning_rate(settings: FFSettings):
    """Linear warmup from 0 to `learning_rate` over `warmup_steps`, then cosine decay to
    `learning_rate x final_lr_fraction` at `train_steps`."""
    return keras.optimizers.schedules.CosineDecay(
        0.0, max(1, settings.train_steps - settings.warmup_steps), alpha=settings.final_lr_fraction,
        warmup_target=settings.learning_rate, warmup_steps=settings.warmup_steps,
    )


def train(extractor: FeatureExtractor, photos, style_image: np.ndarray, settings: FFSettings = FFSettings(),
          callbacks=(), verbose: int = 0) -> TrainResult:
    """Train a network for the style `style_image` ([H,W,3] in [0,1] or uint8) on `photos`
    (a list of [H,W,3] images, uint8 or float in [0,1]; any sizes). `callbacks`: Keras
    callbacks for `fit`, whose epochs are blocks of `loss_every` steps (progress, timing)."""
    check_settings(settings)
    extractor = with_content_layer(extractor, settings.content_layer)
    grams = style_targets(extractor, as_float01(style_image, settings.image_size))
    crops = _Crops(prepare_photos(photos, settings), settings)
    style_weight = calibrated_style_weight(extractor, crops[0], grams, settings)
    nst_settings = loss_settings(settings, style_weight)
    network = build_network(settings)
    trainer = _PerceptualTrainer(network, extractor, grams, nst_settings, settings)
    # JAX only compiles with jit; TensorFlow's XLA measured slower than its oneDNN kernels on CPU.
    jit = True if keras.backend.backend() == "jax" else resolve_jit_compile(NSTSettings())
    trainer.compile(optimizer=keras.optimizers.Adam(learning_rate(settings)), jit_compile=jit)
    history = _History(settings.loss_every)
    start = time.perf_counter()
    trainer.fit(crops, epochs=settings.train_steps // settings.loss_every,
                steps_per_epoch=settings.loss_every, shuffle=False, callbacks=[history, *callbacks], verbose=verbose)
    seconds = time.perf_counter() - start
    return TrainResult(network, history.points, history.points[-1][1], seconds, style_weight)
