"""The optimisers of NST's step loop, each running all its steps as one compiled on-device loop
(`tf.function` / `jax.jit` around a `fori_loop`): Adam, the seed's, and L-BFGS, as neural-style
runs it. `run_optimizer` runs one at a level of the pyramid, with fresh optimiser state.
"""
from __future__ import annotations

import functools
import logging

from keras import ops

from transforms.nst import backends
from transforms.nst.compiled import compiled
from transforms.nst.losses import loss_terms
from transforms.nst.settings import NSTSettings

LOG = logging.getLogger(__name__)
LBFGS_HISTORY = 10


def adam_update(x, m, v, step, grad, settings: NSTSettings):
    """Keras 3 `Adam.update_step` as a pure function (same op order); `step` counts from 1."""
    step = ops.cast(step, x.dtype)
    beta_1_power, beta_2_power = ops.power(settings.beta_1, step), ops.power(settings.beta_2, step)
    alpha = settings.learning_rate * ops.sqrt(1 - beta_2_power) / (1 - beta_1_power)
    m = m + (grad - m) * (1 - settings.beta_1)
    v = v + (ops.square(grad) - v) * (1 - settings.beta_2)
    return x - (m * alpha) / (ops.sqrt(v) + settings.epsilon), m, v


def run_adam(split, settings, features, images, steps, content_targets, target_grams, m, v, done):
    """`steps` Adam steps from `images` and the optimiser state (m, v) after `done` earlier steps,
    each clipped to [0,1] as the seed does; returns (images, m, v)."""
    loss_fn = functools.partial(
        loss_terms, split, settings, features, content_targets=content_targets, target_grams=target_grams
    )

    def step(i, state):
        x, m, v = state
        _, grad = backends.loss_and_grad(loss_fn, x)
        x, m, v = adam_update(x, m, v, i + done + 1, grad, settings)
        return ops.clip(x, 0.0, 1.0), m, v

    step = backends.compile_step(step, backends.resolve_jit_compile(settings))
    return ops.fori_loop(0, steps, step, (images, m, v))


def _per_image(values):
    """[B] -> [B,1,1,1], to scale a batch image by image."""
    return ops.reshape(values, (-1, 1, 1, 1))


def _dot(a, b):
    """Per-image dot product of two [B,H,W,C] tensors: [B]."""
    return ops.sum(a * b, axis=(1, 2, 3))


def _lbfgs_direction(grad, s_hist, y_hist, rho, gamma, newest):
    """L-BFGS two-loop recursion per image: -H g from the last LBFGS_HISTORY (s, y) pairs.
    Histories are [m,B,H,W,C] ring buffers, `newest` the slot written last; empty or rejected
    slots have rho = 0 and so contribute nothing."""
    order = [(newest - j) % LBFGS_HISTORY for j in range(LBFGS_HISTORY)]  # newest first
    q, alphas = grad, []
    for slot in order:
        s, y, r = ops.take(s_hist, slot, axis=0), ops.take(y_hist, slot, axis=0), ops.take(rho, slot, axis=0)
        alpha = r * _dot(s, q)
        q = q - _per_image(alpha) * y
        alphas.append(alpha)
    direction = _per_image(gamma) * q
    for slot, alpha in reversed(list(zip(order, alphas))):
        s, y, r = ops.take(s_hist, slot, axis=0), ops.take(y_hist, slot, axis=0), ops.take(rho, slot, axis=0)
        beta = r * _dot(y, direction)
        direction = direction + _per_image(alpha - beta) * s
    return -direction


def run_lbfgs(split, settings, features, images, steps, content_targets, target_grams):
    """`steps` L-BFGS iterations from `images` (one gradient each, plus one at the start).

    As torch.optim.LBFGS / neural-style without a line search: step 1 is min(1, 1/|g|_1) * g,
    then unit steps along the quasi-Newton direction, scaled by gamma = s.y / y.y. The [0,1] clip
    is applied after each step and the (s, y) pair is taken from the clipped step; pairs without
    positive curvature are skipped. Per image, so a batch optimises independently.
    """
    loss_fn = functools.partial(
        loss_terms, split, settings, features, content_targets=content_targets, target_grams=target_grams
    )
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
        ys, yy = _dot(y, s), _dot(y, y)
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
    step = backends.compile_step(step, backends.resolve_jit_compile(settings))
    return ops.fori_loop(0, steps, step, state)[0]


def run_optimizer(extractor, settings: NSTSettings, images, steps: int, targets, grams, curves=None):
    """`steps` steps of `settings.optimizer` from `images` [B,H,W,3] towards the content `targets` and
    the stacked style `grams`, from fresh optimiser state. With Adam and `loss_every`, in chunks of
    that many steps (optimiser state carried over, so the pixels are those of an unbroken run),
    appending each image's float32 total loss to `curves` (a list per image) before the first chunk
    and after each, and logging it at DEBUG."""
    precision = backends.resolve_precision(settings)
    if settings.optimizer == "lbfgs":
        run = compiled(extractor, settings, run_lbfgs, precision)
        return run(images, ops.convert_to_tensor(steps, dtype="int32"), targets, grams)
    run = compiled(extractor, settings, run_adam, precision)
    recording = curves is not None and settings.loss_every > 0
    every = settings.loss_every if recording else steps
    m = v = ops.zeros_like(images)
    done = 0
    while done < steps:
        if recording:
            _record(extractor, settings, images, targets, grams, curves, done)
        chunk = min(every, steps - done)
        images, m, v = run(images, ops.convert_to_tensor(chunk, dtype="int32"), targets, grams, m, v,
                           ops.convert_to_tensor(done, dtype="int32"))
        done += chunk
    if recording:
        _record(extractor, settings, images, targets, grams, curves, done)
    return images


def _record(extractor, settings, images, targets, grams, curves, step):
    totals = ops.convert_to_numpy(compiled(extractor, settings, loss_terms)(images, targets, grams)["total"])
    for curve, total in zip(curves, totals):
        curve.append(float(total))
    LOG.debug("NST step %d: total loss %s", step, " ".join(f"{t:.6g}" for t in totals))
