"""The stylisation network (Johnson et al. 2016, with Ulyanov et al.'s instance normalisation)
and `apply`, which runs it on images of any size.

Fully convolutional: a 9x9 conv, two stride-2 3x3 convs, residual blocks at a quarter of the
resolution, two x2 upsamplings as nearest-neighbour resize + 3x3 conv (a transposed conv leaves
checkerboard artefacts), a 9x9 conv to RGB and a sigmoid. Every conv is reflect-padded (zero
padding darkens the borders) and followed by instance normalisation, which makes the style
independent of each image's contrast.
"""
from __future__ import annotations

import os
import tempfile

import fsspec
import keras
import numpy as np
from keras import ops

from transforms.feedforward.settings import FFSettings
from transforms.images import check_min_side

#: Input sides must be a multiple of this (two stride-2 convs); `apply` pads to it.
MULTIPLE = 4
#: The smallest side `apply` accepts: reflect padding needs more pixels than it pads.
MIN_SIDE = 8


class ReflectPad(keras.layers.Layer):
    """Pads H and W by `pad` pixels on each side, mirroring the border (keras.ops, any backend)."""

    def __init__(self, pad: int, **kwargs):
        super().__init__(**kwargs)
        self.pad = pad

    def call(self, x):
        p = self.pad
        return ops.pad(x, [[0, 0], [p, p], [p, p], [0, 0]], mode="reflect")

    def compute_output_shape(self, shape):
        grow = lambda n: None if n is None else n + 2 * self.pad  # noqa: E731
        return shape[0], grow(shape[1]), grow(shape[2]), shape[3]


class _Layers:
    """Layer factory whose kernel initialisers are seeded one by one from `seed`, so that the
    same seed builds the same weights without touching any global random state."""

    def __init__(self, seed: int):
        self.seed, self.count = seed, 0

    def conv(self, x, filters, kernel, stride=1, norm=True, relu=True, zero=False):
        self.count += 1
        init = "zeros" if zero else keras.initializers.GlorotUniform(seed=self.seed * 1000 + self.count)
        x = ReflectPad(kernel // 2)(x)
        x = keras.layers.Conv2D(filters, kernel, strides=stride, kernel_initializer=init, use_bias=not norm)(x)
        if norm:
            x = keras.layers.GroupNormalization(groups=-1, epsilon=1e-5)(x)  # groups=-1: instance norm
        return keras.layers.ReLU()(x) if relu else x

    def residual(self, x):
        channels = x.shape[-1]
        y = self.conv(x, channels, 3)
        return x + self.conv(y, channels, 3, relu=False)

    def upsample(self, x, filters):
        return self.conv(keras.layers.UpSampling2D(2, interpolation="nearest")(x), filters, 3)


def build_network(settings: FFSettings = FFSettings()) -> keras.Model:
    """[B,H,W,3] in [0,1] -> [B,H,W,3] in (0,1); H and W multiples of `MULTIPLE`."""
    make, width = _Layers(settings.seed), settings.width
    images = keras.Input(shape=(None, None, 3), name="images_0_1")
    x = make.conv(images - 0.5, width, 9)
    x = make.conv(x, 2 * width, 3, stride=2)
    x = make.conv(x, 4 * width, 3, stride=2)
    for _ in range(settings.residual_blocks):
        x = make.residual(x)
    x = make.upsample(x, 2 * width)
    x = make.upsample(x, width)
    residual = settings.output == "residual"
    x = make.conv(x, 3, 9, norm=False, relu=False, zero=residual)
    if residual:  # a change around the photo's own logits: the identity at initialisation
        x = x + ops.log(ops.clip(images, 1e-3, 1 - 1e-3) / ops.clip(1 - images, 1e-3, 1 - 1e-3))
    return keras.Model(images, ops.sigmoid(x), name="ff_style_network")


def apply(network: keras.Model, images: np.ndarray, batch_size: int = FFSettings.apply_batch) -> np.ndarray:
    """Stylise [H,W,3] or [B,H,W,3] float images in [0,1] of any size >= MIN_SIDE: each batch is
    reflect-padded to a multiple of MULTIPLE, run through the network `batch_size` images at a
    time (one compiled function per padded shape) and cropped back. Same shape, float32."""
    images = np.asarray(images, dtype=np.float32)
    single = images.ndim == 3
    batch = images[None] if single else images
    if batch.ndim != 4 or batch.shape[-1] != 3:
        raise ValueError(f"expected [H,W,3] or [B,H,W,3] images, got shape {images.shape}")
    height, width = batch.shape[1:3]
    check_min_side(batch[0], MIN_SIDE, "for the feed-forward network")
    pad = [(0, 0), (0, -height % MULTIPLE), (0, -width % MULTIPLE), (0, 0)]
    padded = np.pad(batch, pad, mode="reflect")
    out = np.concatenate([
        np.asarray(network.predict_on_batch(padded[i : i + batch_size]))
        for i in range(0, len(padded), batch_size)
    ])[:, :height, :width].astype(np.float32)
    return out[0] if single else out


def save_network(network: keras.Model, uri: str) -> None:
    """Write the weights to a `.weights.h5` file (Keras' safe format: no pickle) at a local path
    or fsspec URI; the architecture is rebuilt from FFSettings by `load_network`."""
    if not uri.endswith(".weights.h5"):
        raise ValueError(f"the file name must end in .weights.h5, got {uri!r}")
    with tempfile.TemporaryDirectory() as tmp:
        local = os.path.join(tmp, "network.weights.h5")
        network.save_weights(local)
        fs, path = fsspec.core.url_to_fs(uri)
        fs.put_file(local, path)


def load_network(uri: str, settings: FFSettings = FFSettings()) -> keras.Model:
    """`build_network(settings)` with the weights `save_network` wrote (same width and residual
    blocks needed: Keras refuses mismatched shapes)."""
    network = build_network(settings)
    with tempfile.TemporaryDirectory() as tmp:
        local = os.path.join(tmp, "network.weights.h5")
        fs, path = fsspec.core.url_to_fs(uri)
        fs.get_file(path, local)
        network.load_weights(local)
    return network
