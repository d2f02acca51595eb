"""Gatys neural style transfer: optimise the pixels of B copies of one content image, each
towards its own style, with the seed's losses, weights and Adam settings.

One step (shared keras.ops; only the gradient and the compiler are per backend, backends.py):
    loss_b = style_b + content_b + tv_b             per image b, see `losses.loss_terms`
    g      = d sum_b(loss_b) / d images             = each image's own gradient
    images = clip(adam_update(images, g), 0, 1)     (or an L-BFGS step: optimizers.py)

A run walks the levels of its plan (pyramid.py: the `scales` below max_dim, refinement above it
for `output_size`); all the steps of a level run inside one compiled call (compiled.py), so Python
dispatches once per level. Final losses are always evaluated in float32.

`stylize` optimises a content at its own size, `stylize_high_res` a photo to `output_size`, and
`stylize_content` is what the pipeline calls: either, with shape buckets at max_dim.
"""
from __future__ import annotations

import dataclasses

import numpy as np
from keras import ops

from transforms.images import resize
from transforms.nst import controls, pyramid
from transforms.nst.backends import resolve_jit_compile, resolve_precision
from transforms.nst.buckets import from_bucket, to_bucket
from transforms.nst.compiled import compiled
from transforms.nst.extractors import FeatureExtractor
from transforms.nst.losses import gram_matrix, loss_terms
from transforms.nst.optimizers import adam_update, run_optimizer
from transforms.nst.settings import NSTSettings, check_settings, is_high_res

__all__ = [  # the last row: re-exported from their own modules for the callers of this one
    "NSTResult", "style_targets", "content_targets", "evaluate_losses", "stylize", "stylize_high_res",
    "stylize_content", "content_targets_for",
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


def _as_image(image) -> np.ndarray:
    image = np.asarray(image, dtype=np.float32)
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"expected one [H,W,3] image, got shape {image.shape}")
    return image


def _stacked_grams(style_targets_batch):
    """B per-style gram lists -> one [B,C,C] tensor per style layer."""
    return [ops.convert_to_tensor(np.stack(layer).astype(np.float32)) for layer in zip(*style_targets_batch)]


def _tensors(arrays):
    return [ops.convert_to_tensor(np.asarray(a, dtype=np.float32)) for a in arrays]


def style_targets(extractor: FeatureExtractor, style_image: np.ndarray) -> list[np.ndarray]:
    """Gram matrices ([C,C] float32, one per style layer) of one [H,W,3] image in [0,1]."""
    style_features, _ = extractor(_as_image(style_image)[None])
    return [ops.convert_to_numpy(gram_matrix(f))[0] for f in style_features]


def content_targets(extractor: FeatureExtractor, content_image: np.ndarray) -> list[np.ndarray]:
    """Content-layer activations ([h,w,C] float32, one per content layer) of one image."""
    _, content_features = extractor(_as_image(content_image)[None])
    return [ops.convert_to_numpy(f)[0] for f in content_features]


def evaluate_losses(extractor, images, content_targets, style_targets_batch, settings=NSTSettings()) -> list[dict]:
    """Per-image float losses of `images` [B,H,W,3] against the content and B style targets."""
    evaluate = compiled(extractor, settings, loss_terms)  # float32, whatever settings.precision says
    images = ops.convert_to_tensor(np.asarray(images, np.float32))
    terms = evaluate(images, _tensors(content_targets), _stacked_grams(style_targets_batch))
    terms = {name: ops.convert_to_numpy(value) for name, value in terms.items()}
    return [{name: float(value[b]) for name, value in terms.items()} for b in range(len(style_targets_batch))]


def _targets_at(extractor, photo, shape, known=None):
    """Content targets of `photo` resized to `shape`; `known`, the targets of `photo` itself when the
    caller has them, at its own size."""
    if known is not None and tuple(shape) == photo.shape[:2]:
        return known
    return content_targets(extractor, resize(photo, shape))


def _optimise(extractor, photo, plan: pyramid.Plan, grams, settings, images, curves=None, targets=None):
    """The step loop: `images` [B,h,w,3] at `plan.start` through each level of `plan`, resized to the
    level, optimised towards the content targets of `photo` at that size (`targets`: see `_targets_at`)
    from fresh optimiser state. The style `grams` (stacked [B,C,C] per layer) serve every level: they
    are averages over locations. Returns the images at the last level, [B,H,W,3] numpy."""
    for level in plan.levels:
        images = np.stack([resize(image, level.shape, level.enlarge) for image in images])
        if level.steps > 0:
            level_targets = _tensors(_targets_at(extractor, photo, level.shape, targets))
            images = ops.convert_to_numpy(run_optimizer(
                extractor, settings, ops.convert_to_tensor(images), level.steps, level_targets, grams, curves))
    return images


def _start_images(content: np.ndarray, settings: NSTSettings, batch: int, pair_ids) -> np.ndarray:
    """[B,H,W,3] starting images, image b seeded by `controls.pair_seed(settings.seed, *pair_ids[b])`
    (all by `pair_seed(settings.seed)` without ids); B copies of `content` for init="content"."""
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


def _run_plan(extractor, photo, plan, style_targets_batch, settings, pair_ids, targets=None,
              record_curves=False) -> NSTResult:
    """One batch of styles through `plan` from `photo`, then resized to `plan.output`, colours
    preserved there (with the photo's own chroma at that size) and its final losses evaluated.
    targets: the content targets of `photo` itself, if known."""
    batch = len(style_targets_batch)
    curves = [[] for _ in range(batch)] if record_curves else None
    content = resize(photo, plan.output)
    if _keeps_content(settings):
        final = np.repeat(content[None], batch, axis=0)
    else:
        start = _start_images(resize(photo, plan.start), settings, batch, pair_ids)
        images = _optimise(extractor, photo, plan, _stacked_grams(style_targets_batch), settings, start, curves, targets)
        final = np.stack([resize(image, plan.output) for image in images])
    if settings.preserve_colors:
        final = np.stack([controls.preserve_colors(image, content) for image in final])
    output_targets = _targets_at(extractor, photo, plan.output, targets)
    losses = evaluate_losses(extractor, final, output_targets, style_targets_batch, settings)
    return NSTResult(final.astype(np.float32), losses, curves if curves and any(curves) else None)


def _checked(style_targets_batch, settings: NSTSettings) -> None:
    if not style_targets_batch:
        raise ValueError("style_targets_batch needs at least one style")
    check_settings(settings)


def stylize(
    extractor, content_image, content_targets, style_targets_batch, settings=NSTSettings(), pair_ids=None
) -> NSTResult:
    """Optimise B = len(style_targets_batch) copies of `content_image` [H,W,3] in [0,1], copy b
    towards style b, for `settings.steps` steps (over the `scales` levels), as one batch; return them
    with their final losses.

    pair_ids: B tuples of ids, e.g. (content_id, style_id); with `settings.seed` they seed image
    b's random start (init noise / blend) through `controls.pair_seed`, so a pair gets the same
    pixels in any batch, order or run. With preserve_colors the colours are put back after the
    optimisation, and the losses are those of the images returned. `output_size` is ignored
    here (this is the `max_dim` result): see `stylize_high_res`.
    """
    _checked(style_targets_batch, settings)
    content = _as_image(content_image)
    plan = pyramid.plan_at(content.shape[:2], settings)
    return _run_plan(extractor, content, plan, style_targets_batch, settings, pair_ids, content_targets,
                     record_curves=True)


def stylize_high_res(extractor, original, style_targets_batch, settings=NSTSettings(), pair_ids=None) -> NSTResult:
    """The result at `pyramid.output_shape(*original.shape[:2], settings)`, coarse to fine.

    original: the decoded content photo [H,W,3] in [0,1] at its own size (not resized). The plan
    (`pyramid.plan`) is `stylize`'s at max_dim (all its options: steps, scales, init, optimizer), then
    refinement levels up to the output, each from the previous result upsampled (bicubic), with the
    content targets of the photo at that size and `refine_steps_at` steps; the style grams are the
    max_dim ones. preserve_colors is applied once, at the end, with the photo's own chroma at the
    output size. No loss curves. The batch is split into chunks that fit `max_memory_gb`
    (`controls.images_that_fit`); `controls.TooLargeForMemory` (an `images.ImageTooLarge`) when not
    even one image fits.
    """
    _checked(style_targets_batch, settings)
    original = _as_image(original)
    plan = pyramid.plan(*original.shape[:2], settings)
    biggest = max((level.shape for level in plan.levels), key=lambda shape: shape[0] * shape[1])
    chunk = controls.images_that_fit(*biggest, len(style_targets_batch), settings.max_memory_gb,
                                     resolve_precision(settings))
    ids = list(pair_ids) if pair_ids is not None else None
    parts = [
        _run_plan(extractor, original, plan, style_targets_batch[i : i + chunk], settings,
                  None if ids is None else ids[i : i + chunk])
        for i in range(0, len(style_targets_batch), chunk)
    ]
    return NSTResult(np.concatenate([p.images for p in parts]), [loss for p in parts for loss in p.losses])


def content_targets_for(extractor, content: np.ndarray, settings: NSTSettings) -> list[np.ndarray] | None:
    """The content targets `stylize_content` optimises towards, to compute once for all the style
    batches of one content (`inputs.prepare_content`); None for an output at another size than max_dim,
    where the pyramid takes them level by level."""
    return None if is_high_res(settings) else content_targets(extractor, to_bucket(content))


def stylize_content(
    extractor, content, style_targets_batch, settings=NSTSettings(), pair_ids=None, targets=None
) -> NSTResult:
    """Style b of the batch on the content (`inputs.prepare_content`), at the size `settings` ask for.

    At max_dim the content is optimised at its shape bucket (buckets.py: a catalog compiles a
    handful of shapes, not one per image) and each result resized back to the content's size; the
    losses are the bucket's. `targets`: `content_targets_for` the content, computed here if None.
    Other output sizes are `stylize_high_res`.
    """
    if is_high_res(settings):
        return stylize_high_res(extractor, content, style_targets_batch, settings, pair_ids)
    bucketed = to_bucket(content)
    targets = targets if targets is not None else content_targets(extractor, bucketed)
    result = stylize(extractor, bucketed, targets, style_targets_batch, settings, pair_ids)
    return dataclasses.replace(result, images=np.stack([from_bucket(image, content.shape) for image in result.images]))
