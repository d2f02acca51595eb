"""Gatys neural style transfer: optimise the pixels of B copies of one content image, each
towards its own style, with the seed's losses, weights and Adam settings.

One step (shared keras.ops; only the gradient and the compiler are per backend):
    loss_b = style_b + content_b + tv_b             per image b, see `loss_terms`
    g      = d sum_b(loss_b) / d images             = each image's own gradient
    images = clip(adam_update(images, g), 0, 1)     (or an L-BFGS step, `optimizer="lbfgs"`)

All `steps` run inside one compiled call (`tf.function` / `jax.jit` around a `fori_loop`), so
Python dispatches once per scale, not once per step. Options (NSTSettings): `precision`
(bfloat16 features, float32 image and losses), `optimizer` (adam | lbfgs), `scales`
(coarse-to-fine), `jit_compile` (XLA on TensorFlow). Final losses are always evaluated in float32.
"""
from __future__ import annotations

import dataclasses
import functools
import logging

import numpy as np
from keras import ops

from transforms.images import resize
from transforms.nst import backends, controls
from transforms.nst.extractors import FeatureExtractor
from transforms.nst.losses import content_loss, gram_matrix, style_loss, total_variation
from transforms.nst.settings import NSTSettings


LOG = logging.getLogger(__name__)

@dataclasses.dataclass
class NSTResult:
    """images: [B,H,W,3] float32 in [0,1]; losses: per image, the final images' weighted
    "content", "style", "tv" terms and their sum "total" (NaN stays NaN); curves: per image, the
    float32 total loss at step 0, loss_every, 2 x loss_every, ... (with `loss_every` and Adam)."""

    images: np.ndarray
    losses: list[dict]
    curves: list[list[float]] | None = None


def adam_update(x, m, v, step, grad, settings: NSTSettings):
    """Keras 3 `Adam.update_step` as a pure function (same op order); `step` counts from 1."""
    step = ops.cast(step, x.dtype)
    beta_1_power, beta_2_power = ops.power(settings.beta_1, step), ops.power(settings.beta_2, step)
    alpha = settings.learning_rate * ops.sqrt(1 - beta_2_power) / (1 - beta_1_power)
    m = m + (grad - m) * (1 - settings.beta_1)
    v = v + (ops.square(grad) - v) * (1 - settings.beta_2)
    return x - (m * alpha) / (ops.sqrt(v) + settings.epsilon), m, v


LBFGS_HISTORY = 10
PRECISIONS = ("float32", "bfloat16")
OPTIMIZERS = ("adam", "lbfgs")


def resolve_precision(settings: NSTSettings) -> str:
    """"auto": bfloat16 on a GPU and on CPUs with native bfloat16 dot products (AVX512_BF16 /
    AMX), where it measured faster at an equal final float32 loss (bench/README.md); else float32."""
    if settings.precision == "auto":
        return "bfloat16" if backends.has_accelerator() or backends.cpu_has_bf16() else "float32"
    if settings.precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS} or 'auto', got {settings.precision!r}")
    return settings.precision


def resolve_jit_compile(settings: NSTSettings) -> bool:
    """"auto": XLA only with an accelerator; on this project's CPU it measured slower than
    TensorFlow's oneDNN kernels (bench/README.md)."""
    if settings.jit_compile == "auto":
        return backends.has_accelerator()
    if settings.jit_compile not in ("on", "off"):
        raise ValueError(f"jit_compile must be 'on', 'off' or 'auto', got {settings.jit_compile!r}")
    return settings.jit_compile == "on"


def parse_scales(scales: str, steps: int) -> list[tuple[float, int]]:
    """"0.5:0.8,1:0.2" with 100 steps -> [(0.5, 80), (1.0, 20)]; "0.5,1" splits evenly; "1" is
    single-scale. The last scale gets the rounding remainder and must be 1 (full size).

    >>> parse_scales("0.5:0.8,1:0.2", 100), parse_scales("0.25,0.5,1", 10), parse_scales("1", 7)
    ([(0.5, 80), (1.0, 20)], [(0.25, 3), (0.5, 3), (1.0, 4)], [(1.0, 7)])
    """
    parts = [p.split(":") for p in str(scales).replace(" ", "").split(",") if p]
    if not parts or any(len(p) > 2 for p in parts):
        raise ValueError(f"scales must look like '0.5:0.8,1:0.2' or '0.5,1', got {scales!r}")
    factors = [float(p[0]) for p in parts]
    fractions = [float(p[1]) if len(p) == 2 else 1.0 / len(parts) for p in parts]
    if factors[-1] != 1.0 or any(not 0 < f <= 1 for f in factors) or any(f < 0 for f in fractions):
        raise ValueError(f"scales must be in (0, 1] and end with 1, got {scales!r}")
    counts = [int(round(steps * f)) for f in fractions[:-1]]
    counts.append(max(0, steps - sum(counts)))
    return list(zip(factors, counts))


def loss_terms(split, settings: NSTSettings, features, images, content_targets, target_grams):
    """Weighted per-image loss terms, each [B]. `features(images)` runs the extractor model,
    `split` separates its outputs into (style, content) features (cast to float32, so a
    bfloat16 model's losses and gradients are still accumulated in float32)."""
    style_features, content_features = split(features(images))
    style_features = [ops.cast(f, "float32") for f in style_features]
    content_features = [ops.cast(f, "float32") for f in content_features]
    style = style_loss(style_features, target_grams, settings.style_weight * settings.style_strength)
    content = content_loss(content_features, content_targets, settings.content_weight)
    # style_strength scales the stylising terms against the content term: the style term and the
    # total variation that regularises it (alone, TV would only blur the photo), so 0 keeps the photo.
    tv = settings.tv_weight * settings.style_strength * total_variation(images)
    return {"total": style + content + tv, "content": content, "style": style, "tv": tv}


def _run_steps(split, settings, features, images, steps, content_targets, target_grams, m, v, done):
    """`steps` Adam steps from `images` and the optimiser state (m, v) after `done` earlier steps,
    as one on-device loop; returns (images, m, v)."""
    loss_fn = functools.partial(
        loss_terms, split, settings, features, content_targets=content_targets, target_grams=target_grams
    )

    def step(i, state):
        x, m, v = state
        _, grad = backends.loss_and_grad(loss_fn, x)
        x, m, v = adam_update(x, m, v, i + done + 1, grad, settings)
        return ops.clip(x, 0.0, 1.0), m, v

    step = backends.compile_step(step, resolve_jit_compile(settings))
    return ops.fori_loop(0, steps, step, (images, m, v))


def _per_image(values):
    """[B] -> [B,1,1,1], to scale a batch image by image."""
    return ops.reshape(values, (-1, 1, 1, 1))


def _lbfgs_direction(grad, s_hist, y_hist, rho, gamma, newest):
    """L-BFGS two-loop recursion per image: -H g from the last LBFGS_HISTORY (s, y) pairs.
    Histories are [m,B,H,W,C] ring buffers, `newest` the slot written last; empty or rejected
    slots have rho = 0 and so contribute nothing."""
    dot = lambda a, b: ops.sum(a * b, axis=(1, 2, 3))  # noqa: E731
    order = [(newest - j) % LBFGS_HISTORY for j in range(LBFGS_HISTORY)]  # newest first
    q, alphas = grad, []
    for slot in order:
        s, y, r = ops.take(s_hist, slot, axis=0), ops.take(y_hist, slot, axis=0), ops.take(rho, slot, axis=0)
        alpha = r * dot(s, q)
        q = q - _per_image(alpha) * y
        alphas.append(alpha)
    direction = _per_image(gamma) * q
    for slot, alpha in reversed(list(zip(order, alphas))):
        s, y, r = ops.take(s_hist, slot, axis=0), ops.take(y_hist, slot, axis=0), ops.take(rho, slot, axis=0)
        beta = r * dot(y, direction)
        direction = direction + _per_image(alpha - beta) * s
    return -direction


def _run_lbfgs(split, settings, features, images, steps, content_targets, target_grams):
    """`steps` L-BFGS iterations (one gradient each, plus one at the start) as one on-device loop.

    As torch.optim.LBFGS / neural-style without a line search: step 1 is min(1, 1/|g|_1) * g,
    then unit steps along the quasi-Newton direction, scaled by gamma = s.y / y.y. The [0,1] clip
    is applied after each step and the (s, y) pair is taken from the clipped step; pairs without
    positive curvature are skipped. Per image, so a batch optimises independently.
    """
    loss_fn = functools.partial(
        loss_terms, split, settings, features, content_targets=content_targets, target_grams=target_grams
    )
    dot = lambda a, b: ops.sum(a * b, axis=(1, 2, 3))  # noqa: E731
    batch = ops.shape(images)[0]
    slots = ops.reshape(ops.arange(LBFGS_HISTORY), (LBFGS_HISTORY, 1, 1, 1, 1))

    def step(i, state):
        x, grad, s_hist, y_hist, rho, gamma, newest = state
        direction = _lbfgs_direction(grad, s_hist, y_hist, rho, gamma, newest)
        first = 1.0 / ops.maximum(ops.sum(ops.abs(grad), axis=(1, 2, 3)), 1.0)
        t = ops.where(ops.equal(i, 0), first, ops.ones_like(first))
        x_new = ops.clip(x + _per_image(t) * direction, 0.0, 1.0)
        _, grad_new = backends.loss_and_grad(loss_fn, x_new)
        s, y = x_new - x, grad_new - grad
        ys, yy = dot(y, s), dot(y, y)
        ok = ys > 1e-10
        slot = (newest + 1) % LBFGS_HISTORY
        here = ops.equal(slots, slot)
        s_hist = ops.where(here, ops.expand_dims(s, 0), s_hist)
        y_hist = ops.where(here, ops.expand_dims(y, 0), y_hist)
        rho = ops.where(ops.equal(ops.reshape(slots, (-1, 1)), slot),
                        ops.expand_dims(ops.where(ok, 1.0 / ops.where(ok, ys, 1.0), 0.0), 0), rho)
        gamma = ops.where(ok, ys / ops.maximum(yy, 1e-30), gamma)
        return x_new, grad_new, s_hist, y_hist, rho, gamma, slot

    _, grad = backends.loss_and_grad(loss_fn, images)
    history = ops.zeros((LBFGS_HISTORY, *ops.shape(images)), dtype=images.dtype)
    state = (images, grad, history, history, ops.zeros((LBFGS_HISTORY, batch)), ops.ones((batch,)),
             ops.convert_to_tensor(LBFGS_HISTORY - 1, dtype="int32"))
    step = backends.compile_step(step, resolve_jit_compile(settings))
    return ops.fori_loop(0, steps, step, state)[0]


#: Settings that the compiled loss and step never read (handled around them): left out of the cache key.
_NOT_COMPILED = dict(preserve_colors=False, init="content", seed=0, output_size="max_dim", max_output_dim=2048,
                     refine_steps=0, max_memory_gb=0.0, loss_every=0)


def _compiled(extractor: FeatureExtractor, settings: NSTSettings, fn, precision: str = "float32"):
    """`fn` compiled once per extractor, settings and precision (the backend caches per image
    shape, so one worker compiles each bucketed shape once). `steps` and `scales` are runtime
    arguments or handled outside, so they are left out of the key."""
    key = (fn.__name__, dataclasses.replace(settings, steps=0, scales="1", precision="auto", **_NOT_COMPILED), precision)
    if key not in extractor.compiled:
        extractor.compiled[key] = backends.compile_with_model(
            extractor.model_for(precision), functools.partial(fn, extractor.split, settings),
            jit_compile=resolve_jit_compile(settings),
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
    evaluate = _compiled(extractor, settings, loss_terms)  # float32, whatever settings.precision says
    images = ops.convert_to_tensor(np.asarray(images, np.float32))
    terms = evaluate(images, _tensors(content_targets), _stacked_grams(style_targets_batch))
    terms = {name: ops.convert_to_numpy(value) for name, value in terms.items()}
    return [{name: float(value[b]) for name, value in terms.items()} for b in range(len(style_targets_batch))]


def check_settings(settings: NSTSettings) -> NSTSettings:
    """`settings` unchanged, or a ValueError naming the first bad field (call it in the driver to
    fail before any work; `stylize` and `stylize_high_res` call it too)."""
    if settings.optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {settings.optimizer!r}")
    if settings.init not in controls.INITS:
        raise ValueError(f"init must be one of {controls.INITS}, got {settings.init!r}")
    if not (np.isfinite(settings.style_strength) and settings.style_strength >= 0):
        raise ValueError(f"style_strength must be a finite number >= 0, got {settings.style_strength!r}")
    controls.parse_output_size(settings.output_size)
    if settings.max_output_dim < 32 or settings.refine_steps < 0 or not settings.max_memory_gb >= 0:
        raise ValueError("max_output_dim must be >= 32, refine_steps >= 0 and max_memory_gb >= 0 (0 = auto)")
    resolve_precision(settings)
    resolve_jit_compile(settings)
    return settings


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
    `curves`, see `_run`)."""
    height, width = content.shape[1:3]
    batch = ops.shape(grams[0])[0]
    if _keeps_content(settings) and start is None:
        return ops.repeat(ops.convert_to_tensor(content), batch, axis=0)
    images = None
    for scale, steps in parse_scales(settings.scales, settings.steps):
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
            images = _run(extractor, settings, images, steps, targets, grams, curves)
    return images


def _run(extractor, settings: NSTSettings, images, steps: int, targets, grams, curves=None):
    """`steps` steps of the chosen optimiser from `images`. With Adam and `loss_every`, in chunks of
    that many steps (optimiser state carried over), appending each image's float32 total loss to
    `curves` (a list per image) before the first chunk and after each, and logging it at DEBUG."""
    precision = resolve_precision(settings)
    if settings.optimizer == "lbfgs":
        run = _compiled(extractor, settings, _run_lbfgs, precision)
        return run(images, ops.convert_to_tensor(steps, dtype="int32"), targets, grams)
    run = _compiled(extractor, settings, _run_steps, precision)
    every = settings.loss_every if settings.loss_every > 0 and curves is not None else steps
    m = v = ops.zeros_like(images)
    done = 0
    while done < steps:
        if curves is not None and settings.loss_every > 0:
            _record(extractor, settings, images, targets, grams, curves, done)
        chunk = min(every, steps - done)
        images, m, v = run(images, ops.convert_to_tensor(chunk, dtype="int32"), targets, grams, m, v,
                           ops.convert_to_tensor(done, dtype="int32"))
        done += chunk
    if curves is not None and settings.loss_every > 0:
        _record(extractor, settings, images, targets, grams, curves, done)
    return images


def _record(extractor, settings, images, targets, grams, curves, step):
    totals = ops.convert_to_numpy(_compiled(extractor, settings, loss_terms)(images, targets, grams)["total"])
    for curve, total in zip(curves, totals):
        curve.append(float(total))
    LOG.debug("NST step %d: total loss %s", step, " ".join(f"{t:.6g}" for t in totals))


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
    """The result at `controls.output_shape(*original.shape[:2], settings)`, coarse to fine.

    original: the decoded content photo [H,W,3] in [0,1] at its own size (not resized). Level 0
    is `stylize` at max_dim (all its options: steps, scales, init, optimizer); each further level
    of `controls.pyramid_shapes` upsamples the result (bicubic), takes the content targets of
    the photo resized to that level, and refines for `controls.refine_steps_at(level)` steps
    with fresh optimiser state; the style grams (location averages) are the max_dim ones.
    preserve_colors is applied once, at the end, with the photo's own chroma at the output size.
    The batch is split into chunks that fit `max_memory_gb` (`controls.images_that_fit`);
    `controls.TooLargeForMemory` (an `images.ImageTooLarge`) when not even one image fits.
    """
    if not style_targets_batch:
        raise ValueError("style_targets_batch needs at least one style")
    check_settings(settings)
    original = _as_batch(original, 1)[0]
    shapes = controls.pyramid_shapes(*original.shape[:2], settings)
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
        steps = controls.refine_steps_at(level, settings)
        if steps > 0:
            targets = _tensors(content_targets(extractor, resize(original, shape)))
            images = _run(extractor, settings, images, steps, targets, grams)
    out_shape = controls.output_shape(*original.shape[:2], settings)
    if _keeps_content(settings):
        images = np.repeat(original[None], len(style_targets_batch), axis=0)
    final = np.stack([resize(image, out_shape) for image in ops.convert_to_numpy(images)])
    content = resize(original, out_shape)
    if settings.preserve_colors:
        final = np.stack([controls.preserve_colors(image, content) for image in final])
    losses = evaluate_losses(extractor, final, content_targets(extractor, content), style_targets_batch, settings)
    return NSTResult(final.astype(np.float32), losses)
