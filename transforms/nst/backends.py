"""The only backend-specific NST code: a gradient with respect to the image, compilation, and the
"auto" settings that depend on the device.

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


def has_accelerator() -> bool:
    """Whether the Keras backend computes on a GPU (or TPU) rather than the CPU."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return bool(tf.config.list_logical_devices("GPU"))
    if backend == "jax":
        import jax

        return jax.default_backend() != "cpu"
    if backend == "torch":
        import torch

        return torch.cuda.is_available()
    return False


def cpu_has_bf16() -> bool:
    """Whether this x86 CPU has native bfloat16 dot products (AVX512_BF16 or AMX-BF16)."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            flags = cpuinfo.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(settings) -> str:
    """The precision to compute in, the setting's or for "auto": bfloat16 on a GPU and on CPUs with
    native bfloat16 dot products (AVX512_BF16 / AMX), where it measured faster at an equal final
    float32 loss (bench/README.md); else float32. Names are checked by `settings.check_settings`."""
    if settings.precision == "auto":
        return "bfloat16" if has_accelerator() or cpu_has_bf16() else "float32"
    return settings.precision


def resolve_jit_compile(settings) -> bool:
    """Whether to compile with XLA, the setting's or for "auto": only with an accelerator; on this
    project's CPU it measured slower than TensorFlow's oneDNN kernels (bench/README.md)."""
    if settings.jit_compile == "auto":
        return has_accelerator()
    return settings.jit_compile == "on"


def compile_with_model(model, fn, jit_compile: bool = False):
    """Compile `fn(features, *args)`, where `features(images)` runs the frozen `model`.

    TensorFlow traces a `tf.function` (retraced, and cached, per image shape), through XLA when
    `jit_compile`; JAX jits (always XLA) with the model's variables as arguments (so 80 MB of
    weights are not baked in as constants); torch runs eagerly here, its step is compiled by
    `compile_step`.
    """
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.function(lambda *args: fn(lambda x: model(x, training=False), *args), jit_compile=jit_compile)
    if backend == "jax":
        import jax

        def stateless(trainable, non_trainable, *args):
            return fn(lambda x: model.stateless_call(trainable, non_trainable, x, training=False)[0], *args)

        jitted = jax.jit(stateless)
        return lambda *args: jitted(
            [v.value for v in model.trainable_variables], [v.value for v in model.non_trainable_variables], *args
        )
    return lambda *args: fn(lambda x: model(x, training=False), *args)


def compile_step(step, enabled: bool):
    """torch with `enabled`: `torch.compile` one optimisation step (Keras' torch `fori_loop` is a
    Python loop, so compiling the whole loop would unroll it); other backends compile the whole
    loop in `compile_with_model` instead. The loop's step number arrives as a Python int, which
    torch.compile would specialise on (a recompilation per step), so it is passed as a tensor."""
    if not enabled or keras.backend.backend() != "torch":
        return step
    import torch

    compiled = torch.compile(step, dynamic=False)
    return lambda i, state: compiled(torch.as_tensor(i, device=state[0].device), state)
