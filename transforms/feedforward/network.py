"""The stylisation network (Johnson et al. 2016, with Ulyanov et al.'s instance normalisation)
and `apply`, which runs it on images of any size.

Fully convolutional: a 9x9 conv, two stride-2 3x3 convs, residual blocks at a quarter of the
resolution, two x2 upsamplings as nearest-neighbour resize + 3x3 conv (a transposed conv leaves
checkerboard artefacts), a 9x9 conv to RGB and a sigmoid. Every conv is reflect-padded (zero
padding darkens the borders) and followed by instance normalisation, which makes the style
independent of each image's contrast.
"""
from __future__ import annotations

import keras
import numpy as np
from keras import ops

from transforms.feedforward.settings import FFSettings
from transforms.images import check_min_side
from transforms.nst.controls import TooLargeForMemory, memory_budget_bytes

#: Input sides must be a multiple of this (two stride-2 convs); `apply` pads to it.
MULTIPLE = 4
#: The name of the layer holding the output's logits (before the sigmoid).
LOGITS = "logits"
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
    if residual:  # a change around the photo's own logits: the (clipped) photo at initialisation
        low, high = settings.residual_clip, 1 - settings.residual_clip
        x = x + ops.log(ops.clip(images, low, high) / ops.clip(1 - images, low, high))
    logits = keras.layers.Identity(name=LOGITS)(x)
    return keras.Model(images, keras.layers.Activation("sigmoid")(logits), name="ff_style_network")


def with_logits(network: keras.Model) -> keras.Model:
    """The same network (shared weights) returning [its logits, its output]: training penalises saturated
    logits and trains the output itself, so a change to the output activation reaches training too."""
    return keras.Model(network.inputs, [network.get_layer(LOGITS).output, network.output])


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


# Peak RSS of one process applying a width-32 network to one image (TensorFlow, CPU, float32), measured
# on a 2-core Intel Xeon (AVX512_BF16/AMX): 0.88 GB before, 1.08 / 1.61 / 3.78 GB at 384x512 / 768x1024
# / 1536x2048: about 0.9 GB plus 1 kB per pixel, the activations scaling with the width.
BASE_BYTES = 0.9e9
PER_PIXEL_BYTES = 1000.0
SAFETY = 1.25


def estimate_apply_bytes(height: int, width: int, settings: FFSettings = FFSettings(), batch: int = 1) -> int:
    """Estimated peak resident memory of applying the network to `batch` images of height x width."""
    per_pixel = PER_PIXEL_BYTES * settings.width / 32
    return int(SAFETY * (BASE_BYTES + per_pixel * height * width * batch))


def check_memory(height: int, width: int, settings: FFSettings, max_memory_gb: float) -> None:
    """TooLargeForMemory (a `too_large` row) when one image of that size would not fit the budget
    (`max_memory_gb`; 0: 80% of this machine's or cgroup's memory)."""
    need, budget = estimate_apply_bytes(height, width, settings), memory_budget_bytes(max_memory_gb)
    if need > budget:
        raise TooLargeForMemory(
            f"a {width}x{height} feed-forward output needs about {need / 1e9:.1f} GB, over the memory budget of "
            f"{budget / 1e9:.1f} GB (--max-memory-gb); use a smaller --output-size or --max-output-dim"
        )


def save_network(network: keras.Model, path: str) -> None:
    """Write the weights to a local `.weights.h5` file (Keras' safe format: no pickle); the architecture
    is rebuilt from FFSettings by `load_network`. Other stores: the caller copies the file."""
    if not path.endswith(".weights.h5"):
        raise ValueError(f"the file name must end in .weights.h5, got {path!r}")
    network.save_weights(path)


def load_network(path: str, settings: FFSettings = FFSettings()) -> keras.Model:
    """`build_network(settings)` with the weights `save_network` wrote to the local file `path` (same
    width and residual blocks needed: Keras refuses mismatched shapes)."""
    network = build_network(settings)
    network.load_weights(path)
    return network
