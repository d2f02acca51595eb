"""NST math against hand-computed values and against the TensorFlow/Keras code the seed used."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from transforms.nst.extractors import VGG19, vgg19_preprocess
from transforms.nst.losses import content_loss, gram_matrix, style_loss, total_variation
from transforms.nst.optimize import NSTSettings, adam_update

RNG = np.random.default_rng(7)


def test_gram_matrix_by_hand():
    # One image, 2x2 locations, 2 channels: features (1,0), (0,2), (1,1), (0,0).
    x = np.array([[[[1, 0], [0, 2]], [[1, 1], [0, 0]]]], np.float32)
    expected = np.array([[2, 1], [1, 5]], np.float32) / 4
    np.testing.assert_allclose(keras.ops.convert_to_numpy(gram_matrix(x))[0], expected)


def test_gram_matrix_equals_seed_einsum():
    x = RNG.normal(size=(3, 5, 7, 4)).astype(np.float32)
    seed = tf.linalg.einsum("bijc,bijd->bcd", x, x) / tf.cast(5 * 7, tf.float32)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(gram_matrix(x)), seed.numpy(), rtol=1e-6)


def test_style_loss_is_per_image_and_layer_averaged():
    features = [np.ones((2, 1, 1, 2), np.float32), np.zeros((2, 1, 1, 3), np.float32)]
    # Layer 1 grams are all-ones; targets 0 for image 0 and 3 for image 1 -> means 1 and 4.
    targets = [np.stack([np.zeros((2, 2)), np.full((2, 2), 3.0)]).astype(np.float32), np.zeros((3, 3), np.float32)]
    np.testing.assert_allclose(keras.ops.convert_to_numpy(style_loss(features, targets, weight=10.0)), [5.0, 20.0])


def test_content_loss_broadcasts_one_target_over_the_batch():
    features = [np.stack([np.full((2, 2, 1), 1.0), np.full((2, 2, 1), 3.0)]).astype(np.float32)]
    target = [np.full((2, 2, 1), 1.0, np.float32)]
    np.testing.assert_allclose(keras.ops.convert_to_numpy(content_loss(features, target, weight=1e3)), [0.0, 4e3])


def test_total_variation_equals_tf_image():
    images = RNG.random((3, 6, 5, 3), dtype=np.float32)
    ours = keras.ops.convert_to_numpy(total_variation(images))
    np.testing.assert_allclose(ours, tf.image.total_variation(tf.constant(images)).numpy(), rtol=1e-6)


def test_vgg19_preprocess_equals_keras():
    images = RNG.random((2, 4, 3, 3), dtype=np.float32)
    expected = keras.applications.vgg19.preprocess_input(images.copy() * 255.0)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(vgg19_preprocess(images)), expected, rtol=1e-6, atol=1e-4)


def test_defaults_are_the_seed_recipe():
    """The seed's values written out: tests that build their reference from NSTSettings cannot see a
    changed default (Keras's Adam beta_1 0.9 instead of 0.99 would pass them all)."""
    settings = NSTSettings()
    assert (settings.style_weight, settings.content_weight, settings.tv_weight) == (1e-3, 1e3, 30)
    assert (settings.learning_rate, settings.beta_1, settings.beta_2, settings.epsilon) == (0.02, 0.99, 0.999, 0.1)
    assert (settings.steps, settings.max_dim) == (500, 512)
    assert VGG19.content_layers == ("block5_conv2",)
    assert VGG19.style_layers == ("block1_conv1", "block2_conv1", "block3_conv1", "block4_conv1", "block5_conv1")


@pytest.mark.parametrize("settings, keras_adam_args", [
    (NSTSettings(), dict(learning_rate=0.02, beta_1=0.99, epsilon=0.1)),  # the seed's optimiser, as it built it
    (NSTSettings(learning_rate=0.1, beta_1=0.9, epsilon=1e-7), dict(learning_rate=0.1, beta_1=0.9, epsilon=1e-7)),
])
def test_adam_update_equals_keras_adam(settings, keras_adam_args):
    """Toy problem: minimise sum((x - target)^2) for a few steps, both ways."""
    target = RNG.normal(size=(2, 3)).astype(np.float32)
    start = RNG.normal(size=(2, 3)).astype(np.float32)
    variable = keras.Variable(start)
    keras_adam = keras.optimizers.Adam(**keras_adam_args)
    x, m, v = start, np.zeros_like(start), np.zeros_like(start)
    for step in range(1, 6):
        keras_adam.apply_gradients([(2 * (variable.numpy() - target), variable)])
        x, m, v = adam_update(x, m, v, step, 2 * (x - target), settings)
        x = keras.ops.convert_to_numpy(x)
    np.testing.assert_allclose(x, variable.numpy(), rtol=1e-6, atol=1e-7)


@pytest.mark.slow
def test_nst_code_does_not_import_apache_beam():
    """transforms/ is framework-free: workers and tests use it without Beam."""
    import subprocess
    import sys

    code = "import sys, transforms.nst.optimize; sys.exit('apache_beam' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 0
