"""Gatys neural style transfer: optimise the pixels of B copies of one content image, each
towards its own style, with the seed's losses, weights and Adam settings.

One step (shared keras.ops; only the gradient and the compiler are per backend, backends.py):
    loss_b = style_b + content_b + tv_b             per image b, see `losses.loss_terms`
    g      = d sum_b(loss_b) / d images             = each image's own gradient
    images = clip(adam_update(images, g), 0, 1)     (or an L-BFGS step: optimizers.py)

All `steps` run inside one compiled call (compiled.py), so Python dispatches once per scale, not
once per step. Options (NSTSettings): `precision` (bfloat16 features, float32 image and losses),
`optimizer` (adam | lbfgs), `scales` (coarse-to-fine, pyramid.py), `jit_compile` (XLA on
TensorFlow). Final losses are always evaluated in float32.
"""
from __future__ import annotations

import dataclasses

import numpy as np
from keras import ops

from transforms.images import resize
from transforms.nst import controls, pyramid
from transforms.nst.backends import resolve_jit_compile, resolve_precision
from transforms.nst.compiled import compiled
from transforms.nst.extractors import FeatureExtractor
from transforms.nst.losses import gram_matrix, loss_terms
from transforms.nst.optimizers import adam_update, run_optimizer
from transforms.nst.settings import NSTSettings, check_settings

__all__ = [  # the last row: re-exported from their own modules for the callers of this one
    "NSTResult", "style_targets", "content_targets", "evaluate_losses", "stylize", "stylize_high_res",
    "NSTSettings", "check_settings", "loss_terms", "adam_update", "resolve_precision", "resolve_jit_compile",
]


@dataclasses.dataclass
class NSTResult:
    """images: [B,H,W,3] float32 in [0,1]; losses: per image, the final images' weighted
    "content", "style", "tv" terms and their sum "total" (NaN stays NaN); curves: per image, the
    float32 total loss at step 0, loss_every, 2 x loss_every, ... (with `loss_every` and Adam)."""

    images: np.ndarray
    losses: list[dict]
    curves: list[list[float]] | None = None


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
    evaluate = compiled(extractor, settings, loss_terms)  # float32, whatever settings.precision says
    images = ops.convert_to_tensor(np.asarray(images, np.float32))
    terms = evaluate(images, _tensors(content_targets), _stacked_grams(style_targets_batch))
    terms = {name: ops.convert_to_numpy(value) for name, value in terms.items()}
    return [{name: float(value[b]) for name, value in terms.items()} for b in range(len(style_targets_batch))]


def _start_images(content: np.ndarray, settings: NSTSettings, batch: int, pair_ids) -> np.ndarray | None:
    """[B,H,W,3] starting images, image b seeded by `controls.pair_seed(settings.seed, *pair_ids[b])`
    (all by `pair_seed(settings.seed)` without ids); None for init="content" (the seed's path)."""
    if settings.init == "content":
        return None
    if pair_ids is not None and len(pair_ids) != batch:
        raise ValueError(f"{batch} styles but {len(pair_ids)} pair ids")
    ids = [tuple(i) if isinstance(i, (tuple, list)) else (i,) for i in pair_ids] if pair_ids is not None \
        else [()] * batch
    return np.stack([controls.initial_image(content, settings.init, controls.pair_seed(settings.seed, *i)) for i in ids])


def _keeps_content(settings: NSTSettings) -> bool:
    """style_strength 0 from the content image: the start is the objective's exact minimum (content
    loss 0, no style or TV term), so it is returned as is. Optimising would only follow rounding
    noise: with bfloat16 features the content term's floor is not 0 and Adam's normalised steps
    walk the pixels away (measured: SSIM 0.45 vs the photo after 40 steps at 96 px)."""
    return settings.style_strength == 0 and settings.init == "content"


def _optimise(extractor, content, content_targets, grams, settings: NSTSettings, start=None, curves=None):
    """The `scales` loop of `stylize`: content [1,H,W,3], grams stacked [B,C,C] per layer, start
    [B,H,W,3] or None (B copies of the content). Returns the optimised [B,H,W,3] tensor (and fills
    `curves`, see `optimizers.run_optimizer`)."""
    height, width = content.shape[1:3]
    batch = ops.shape(grams[0])[0]
    if _keeps_content(settings) and start is None:
        return ops.repeat(ops.convert_to_tensor(content), batch, axis=0)
    images = None
    for scale, steps in pyramid.parse_scales(settings.scales, settings.steps):
        if scale == 1.0:
            size, targets = (height, width), _tensors(content_targets)
        else:
            # Coarse scale: the content image and its content targets at this size; the style
            # grams are location-averaged, so they carry over unchanged.
            size = (max(16, int(round(height * scale))), max(16, int(round(width * scale))))
            small = ops.image.resize(content, size, interpolation="bilinear", antialias=True)
            _, targets = extractor.split(extractor.model(small, training=False))
        if images is None:
            first = content if start is None else start
            if size != (height, width):
                first = ops.image.resize(first, size, interpolation="bilinear", antialias=True)
            images = ops.convert_to_tensor(first)
            if start is None:
                images = ops.repeat(images, batch, axis=0)
        elif tuple(ops.shape(images)[1:3]) != size:
            images = ops.clip(ops.image.resize(images, size, interpolation="bilinear"), 0.0, 1.0)
        if steps > 0:
            images = run_optimizer(extractor, settings, images, steps, targets, grams, curves)
    return images


def stylize(
    extractor, content_image, content_targets, style_targets_batch, settings=NSTSettings(), pair_ids=None
) -> NSTResult:
    """Optimise B = len(style_targets_batch) copies of `content_image` [H,W,3] in [0,1], copy b
    towards style b, for `settings.steps` steps, as one batch; return them with their final losses.

    pair_ids: B tuples of ids, e.g. (content_id, style_id); with `settings.seed` they seed image
    b's random start (init noise / blend) through `controls.pair_seed`, so a pair gets the same
    pixels in any batch, order or run. With preserve_colors the colours are put back after the
    optimisation, and the losses are those of the images returned. `output_size` is ignored
    here (this is the `max_dim` result): see `stylize_high_res`.
    """
    if not style_targets_batch:
        raise ValueError("style_targets_batch needs at least one style")
    check_settings(settings)
    content = _as_batch(content_image, 1)
    start = _start_images(content[0], settings, len(style_targets_batch), pair_ids)
    curves = [[] for _ in style_targets_batch]
    images = _optimise(extractor, content, content_targets, _stacked_grams(style_targets_batch), settings, start, curves)
    final = ops.convert_to_numpy(images).astype(np.float32)
    if settings.preserve_colors:
        final = np.stack([controls.preserve_colors(image, content[0]) for image in final])
    losses = evaluate_losses(extractor, final, content_targets, style_targets_batch, settings)
    return NSTResult(final, losses, curves if any(curves) else None)


def stylize_high_res(extractor, original, style_targets_batch, settings=NSTSettings(), pair_ids=None) -> NSTResult:
    """The result at `pyramid.output_shape(*original.shape[:2], settings)`, coarse to fine.

    original: the decoded content photo [H,W,3] in [0,1] at its own size (not resized). Level 0
    is `stylize` at max_dim (all its options: steps, scales, init, optimizer); each further level
    of `pyramid.refinement_shapes` upsamples the result (bicubic), takes the content targets of
    the photo resized to that level, and refines for `pyramid.refine_steps_at(level)` steps
    with fresh optimiser state; the style grams (location averages) are the max_dim ones.
    preserve_colors is applied once, at the end, with the photo's own chroma at the output size.
    The batch is split into chunks that fit `max_memory_gb` (`controls.images_that_fit`);
    `controls.TooLargeForMemory` (an `images.ImageTooLarge`) when not even one image fits.
    """
    if not style_targets_batch:
        raise ValueError("style_targets_batch needs at least one style")
    check_settings(settings)
    original = _as_batch(original, 1)[0]
    shapes = pyramid.refinement_shapes(*original.shape[:2], settings)
    biggest = max(shapes, key=lambda shape: shape[0] * shape[1])
    chunk = controls.images_that_fit(*biggest, len(style_targets_batch), settings.max_memory_gb,
                                     resolve_precision(settings))
    ids = list(pair_ids) if pair_ids is not None else None
    parts = [
        _high_res_chunk(extractor, original, shapes, style_targets_batch[i : i + chunk], settings,
                        None if ids is None else ids[i : i + chunk])
        for i in range(0, len(style_targets_batch), chunk)
    ]
    return NSTResult(np.concatenate([p.images for p in parts]), [loss for p in parts for loss in p.losses])


def _high_res_chunk(extractor, original, shapes, style_targets_batch, settings, pair_ids) -> NSTResult:
    base = resize(original, shapes[0])
    grams = _stacked_grams(style_targets_batch)
    start = _start_images(base, settings, len(style_targets_batch), pair_ids)
    images = _optimise(extractor, base[None], content_targets(extractor, base), grams, settings, start)
    for level, shape in enumerate(shapes[1:] if not _keeps_content(settings) else [], start=1):
        upsampled = np.stack([resize(image, shape) for image in ops.convert_to_numpy(images)])
        images = ops.convert_to_tensor(upsampled)
        steps = pyramid.refine_steps_at(level, settings)
        if steps > 0:
            targets = _tensors(content_targets(extractor, resize(original, shape)))
            images = run_optimizer(extractor, settings, images, steps, targets, grams)
    out_shape = pyramid.output_shape(*original.shape[:2], settings)
    if _keeps_content(settings):
        images = np.repeat(original[None], len(style_targets_batch), axis=0)
    final = np.stack([resize(image, out_shape) for image in ops.convert_to_numpy(images)])
    content = resize(original, out_shape)
    if settings.preserve_colors:
        final = np.stack([controls.preserve_colors(image, content) for image in final])
    losses = evaluate_losses(extractor, final, content_targets(extractor, content), style_targets_batch, settings)
    return NSTResult(final.astype(np.float32), losses)
