"""The only backend-specific NST code: a gradient with respect to the image, and compilation.

Everything else (losses, Adam, the step loop) is shared keras.ops.
"""
import keras


def loss_and_grad(loss_fn, images):
    """(terms, d sum(terms["total"]) / d images) for `loss_fn(images) -> dict of [B] tensors`.

    Summing per-image losses keeps each image's gradient equal to its own loss's gradient.
    """
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            tape.watch(images)
            terms = loss_fn(images)
            total = tf.reduce_sum(terms["total"])
        return terms, tape.gradient(total, images)
    if backend == "jax":
        import jax

        def total(x):
            terms = loss_fn(x)
            return terms["total"].sum(), terms

        (_, terms), grad = jax.value_and_grad(total, has_aux=True)(images)
        return terms, grad
    if backend == "torch":
        import torch

        images = images.detach().requires_grad_(True)
        terms = loss_fn(images)
        (grad,) = torch.autograd.grad(terms["total"].sum(), images)
        return {k: v.detach() for k, v in terms.items()}, grad
    raise NotImplementedError(f"NST has no gradient for Keras backend {backend!r}")


def compile_with_model(model, fn):
    """Compile `fn(features, *args)`, where `features(images)` runs the frozen `model`.

    TensorFlow traces a `tf.function` (retraced per image shape); JAX jits with the model's
    variables as arguments (so 80 MB of weights are not baked in as constants); torch runs eagerly.
    """
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.function(lambda *args: fn(lambda x: model(x, training=False), *args))
    if backend == "jax":
        import jax

        def stateless(trainable, non_trainable, *args):
            return fn(lambda x: model.stateless_call(trainable, non_trainable, x, training=False)[0], *args)

        jitted = jax.jit(stateless)
        return lambda *args: jitted(
            [v.value for v in model.trainable_variables], [v.value for v in model.non_trainable_variables], *args
        )
    return lambda *args: fn(lambda x: model(x, training=False), *args)
