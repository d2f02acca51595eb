"""Gatys neural style transfer: optimise the pixels of B copies of one content image, each
towards its own style, with the seed's losses, weights and Adam settings.

One step (shared keras.ops; only the gradient and the compiler are per backend):
    loss_b = style_b + content_b + tv_b             per image b, see `loss_terms`
    g      = d sum_b(loss_b) / d images             = each image's own gradient
    images = clip(adam_update(images, g), 0, 1)
"""
from __future__ import annotations

import dataclasses
import functools

import numpy as np
from keras import ops

from transforms.nst import backends
from transforms.nst.extractors import FeatureExtractor
from transforms.nst.losses import content_loss, gram_matrix, style_loss, total_variation


@dataclasses.dataclass(frozen=True)
class NSTSettings:
    """The seed's hyper-parameters. `max_dim` is the long side callers resize both images to."""

    steps: int = 500
    max_dim: int = 512
    style_weight: float = 1e-3
    content_weight: float = 1e3
    tv_weight: float = 30.0
    learning_rate: float = 0.02
    beta_1: float = 0.99
    beta_2: float = 0.999
    epsilon: float = 0.1


@dataclasses.dataclass
class NSTResult:
    """images: [B,H,W,3] float32 in [0,1]; losses: per image, the final images' weighted
    "content", "style", "tv" terms and their sum "total" (NaN stays NaN)."""

    images: np.ndarray
    losses: list[dict]


def adam_update(x, m, v, step, grad, settings: NSTSettings):
    """Keras 3 `Adam.update_step` as a pure function (same op order); `step` counts from 1."""
    step = ops.cast(step, x.dtype)
    beta_1_power, beta_2_power = ops.power(settings.beta_1, step), ops.power(settings.beta_2, step)
    alpha = settings.learning_rate * ops.sqrt(1 - beta_2_power) / (1 - beta_1_power)
    m = m + (grad - m) * (1 - settings.beta_1)
    v = v + (ops.square(grad) - v) * (1 - settings.beta_2)
    return x - (m * alpha) / (ops.sqrt(v) + settings.epsilon), m, v


def loss_terms(split, settings: NSTSettings, features, images, content_targets, target_grams):
    """Weighted per-image loss terms, each [B]. `features(images)` runs the extractor model,
    `split` separates its outputs into (style, content) features."""
    style_features, content_features = split(features(images))
    style = style_loss(style_features, target_grams, settings.style_weight)
    content = content_loss(content_features, content_targets, settings.content_weight)
    tv = settings.tv_weight * total_variation(images)
    return {"total": style + content + tv, "content": content, "style": style, "tv": tv}


def _run_steps(split, settings, features, images, steps, content_targets, target_grams):
    """`steps` Adam steps from `images` with fresh optimiser state, as one on-device loop."""
    loss_fn = functools.partial(
        loss_terms, split, settings, features, content_targets=content_targets, target_grams=target_grams
    )

    def step(i, state):
        x, m, v = state
        _, grad = backends.loss_and_grad(loss_fn, x)
        x, m, v = adam_update(x, m, v, i + 1, grad, settings)
        return ops.clip(x, 0.0, 1.0), m, v

    zeros = ops.zeros_like(images)
    return ops.fori_loop(0, steps, step, (images, zeros, zeros))[0]


def _compiled(extractor: FeatureExtractor, settings: NSTSettings, fn):
    """`fn` compiled once per extractor and settings (the backend caches per image shape).
    `steps` is a runtime argument, so it is left out of the key."""
    key = (fn.__name__, dataclasses.replace(settings, steps=0))
    if key not in extractor.compiled:
        extractor.compiled[key] = backends.compile_with_model(
            extractor.model, functools.partial(fn, extractor.split, settings)
        )
    return extractor.compiled[key]


def _as_batch(image, batch: int):
    image = np.asarray(image, dtype=np.float32)
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"expected one [H,W,3] image, got shape {image.shape}")
    return np.repeat(image[None], batch, axis=0)


def _stacked_grams(style_targets_batch):
    """B per-style gram lists -> one [B,C,C] tensor per style layer."""
    return [ops.convert_to_tensor(np.stack(layer).astype(np.float32)) for layer in zip(*style_targets_batch)]


def _tensors(arrays):
    return [ops.convert_to_tensor(np.asarray(a, dtype=np.float32)) for a in arrays]


def style_targets(extractor: FeatureExtractor, style_image: np.ndarray) -> list[np.ndarray]:
    """Gram matrices ([C,C] float32, one per style layer) of one [H,W,3] image in [0,1]."""
    style_features, _ = extractor(_as_batch(style_image, 1))
    return [ops.convert_to_numpy(gram_matrix(f))[0] for f in style_features]


def content_targets(extractor: FeatureExtractor, content_image: np.ndarray) -> list[np.ndarray]:
    """Content-layer activations ([h,w,C] float32, one per content layer) of one image."""
    _, content_features = extractor(_as_batch(content_image, 1))
    return [ops.convert_to_numpy(f)[0] for f in content_features]


def evaluate_losses(extractor, images, content_targets, style_targets_batch, settings=NSTSettings()) -> list[dict]:
    """Per-image float losses of `images` [B,H,W,3] against the content and B style targets."""
    evaluate = _compiled(extractor, settings, loss_terms)
    images = ops.convert_to_tensor(np.asarray(images, np.float32))
    terms = evaluate(images, _tensors(content_targets), _stacked_grams(style_targets_batch))
    terms = {name: ops.convert_to_numpy(value) for name, value in terms.items()}
    return [{name: float(value[b]) for name, value in terms.items()} for b in range(len(style_targets_batch))]


def stylize(extractor, content_image, content_targets, style_targets_batch, settings=NSTSettings()) -> NSTResult:
    """Optimise B = len(style_targets_batch) copies of `content_image` [H,W,3] in [0,1], copy b
    towards style b, for `settings.steps` steps, as one batch; return them with their final losses."""
    if not style_targets_batch:
        raise ValueError("style_targets_batch needs at least one style")
    images = ops.convert_to_tensor(_as_batch(content_image, len(style_targets_batch)))
    steps = ops.convert_to_tensor(settings.steps, dtype="int32")
    run = _compiled(extractor, settings, _run_steps)
    final = ops.convert_to_numpy(run(images, steps, _tensors(content_targets), _stacked_grams(style_targets_batch)))
    return NSTResult(final, evaluate_losses(extractor, final, content_targets, style_targets_batch, settings))
