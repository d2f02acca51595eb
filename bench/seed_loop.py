"""The seed document's NST loop (section III.6), honestly reproduced as the benchmark baseline.

Eager TensorFlow, one Python iteration per step: a `tf.GradientTape` around the extractor and
the loss, `keras.optimizers.Adam(0.02, beta_1=0.99, epsilon=0.1)` applying the gradient to a
`tf.Variable` image, then `clip_0_1`. Same model (VGG19 up to block5_conv2, keras
`vgg19.preprocess_input`), same losses and weights as the seed; nothing compiled.
"""
from __future__ import annotations

import time



def seed_extractor():
    """The seed's `StyleContentModel` pieces: a keras Model tapping VGG19's style+content layers."""
    import keras

    from transforms.nst.extractors import VGG19

    vgg = keras.applications.VGG19(include_top=False, weights="imagenet")
    vgg.trainable = False
    layers = VGG19.style_layers + VGG19.content_layers
    model = keras.Model([vgg.input], [vgg.get_layer(name).output for name in layers])
    model.trainable = False
    return model, len(VGG19.style_layers)


def run_seed_loop(model_and_n_style, content, style, steps, settings, snapshots=(), on_step=None):
    """Run `steps` seed-style steps on one content/style pair ([H,W,3] float32 in [0,1]).

    Returns (final image [H,W,3], {step: (seconds since the first step started, image copy)}
    for each step count in `snapshots` (the image after that many steps; copying it is the only
    addition to the seed's loop, and is excluded from the timing).
    """
    import keras
    import tensorflow as tf

    model, n_style = model_and_n_style

    def gram_matrix(input_tensor):
        result = tf.linalg.einsum("bijc,bijd->bcd", input_tensor, input_tensor)
        input_shape = tf.shape(input_tensor)
        num_locations = tf.cast(input_shape[1] * input_shape[2], tf.float32)
        return result / num_locations

    def extractor(inputs):
        inputs = inputs * 255.0
        outputs = model(keras.applications.vgg19.preprocess_input(inputs))
        return [gram_matrix(o) for o in outputs[:n_style]], outputs[n_style:]

    style_targets, _ = extractor(tf.constant(style[None]))
    _, content_targets = extractor(tf.constant(content[None]))

    def style_content_loss(outputs):
        style_outputs, content_outputs = outputs
        style_loss = tf.add_n([tf.reduce_mean((o - t) ** 2) for o, t in zip(style_outputs, style_targets)])
        style_loss *= settings.style_weight / len(style_outputs)
        content_loss = tf.add_n([tf.reduce_mean((o - t) ** 2) for o, t in zip(content_outputs, content_targets)])
        content_loss *= settings.content_weight / len(content_outputs)
        return style_loss + content_loss

    optimizer = keras.optimizers.Adam(
        learning_rate=settings.learning_rate, beta_1=settings.beta_1, beta_2=settings.beta_2, epsilon=settings.epsilon
    )
    image = tf.Variable(content[None])
    snapshots = set(snapshots)
    taken = {}
    elapsed = 0.0
    for step in range(1, steps + 1):
        start = time.perf_counter()
        with tf.GradientTape() as tape:
            outputs = extractor(image)
            loss = style_content_loss(outputs) + settings.tv_weight * tf.image.total_variation(image)
        grad = tape.gradient(loss, image)
        optimizer.apply_gradients([(grad, image)])
        image.assign(tf.clip_by_value(image, 0.0, 1.0))
        _ = image.numpy()  # eager CPU ops are synchronous; this only makes the timing explicit
        elapsed += time.perf_counter() - start
        if on_step:
            on_step(step, elapsed)
        if step in snapshots:
            taken[step] = (elapsed, image.numpy()[0].copy())
    return image.numpy()[0], taken
