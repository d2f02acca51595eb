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
    # Speed options (bench/README.md has the measurements behind the defaults).
    precision: str = "auto"  # float32 | bfloat16 | auto (see `resolve_precision`)
    optimizer: str = "adam"  # adam (the seed's) | lbfgs (fixed step 1, no line search, as neural-style)
    scales: str = "1"  # coarse-to-fine "SCALE:FRACTION,...", e.g. "0.5:0.8,1:0.2"; last scale must be 1
    jit_compile: str = "auto"  # on | off | auto: XLA for TensorFlow (auto = on only with a GPU)


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
    step = backends.compile_step(step, resolve_jit_compile(settings))
    return ops.fori_loop(0, steps, step, (images, zeros, zeros))[0]


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


def _compiled(extractor: FeatureExtractor, settings: NSTSettings, fn, precision: str = "float32"):
    """`fn` compiled once per extractor, settings and precision (the backend caches per image
    shape, so one worker compiles each bucketed shape once). `steps` and `scales` are runtime
    arguments or handled outside, so they are left out of the key."""
    key = (fn.__name__, dataclasses.replace(settings, steps=0, scales="1", precision="auto"), precision)
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


def stylize(extractor, content_image, content_targets, style_targets_batch, settings=NSTSettings()) -> NSTResult:
    """Optimise B = len(style_targets_batch) copies of `content_image` [H,W,3] in [0,1], copy b
    towards style b, for `settings.steps` steps, as one batch; return them with their final losses."""
    if not style_targets_batch:
        raise ValueError("style_targets_batch needs at least one style")
    if settings.optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {settings.optimizer!r}")
    precision = resolve_precision(settings)
    run = _compiled(extractor, settings, _run_lbfgs if settings.optimizer == "lbfgs" else _run_steps, precision)
    content = _as_batch(content_image, 1)
    height, width = content.shape[1:3]
    grams = _stacked_grams(style_targets_batch)
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
            start = content if size == (height, width) else ops.image.resize(
                content, size, interpolation="bilinear", antialias=True)
            images = ops.repeat(ops.convert_to_tensor(start), len(style_targets_batch), axis=0)
        elif tuple(ops.shape(images)[1:3]) != size:
            images = ops.clip(ops.image.resize(images, size, interpolation="bilinear"), 0.0, 1.0)
        if steps > 0:
            images = run(images, ops.convert_to_tensor(steps, dtype="int32"), targets, grams)
    final = ops.convert_to_numpy(images).astype(np.float32)
    return NSTResult(final, evaluate_losses(extractor, final, content_targets, style_targets_batch, settings))
