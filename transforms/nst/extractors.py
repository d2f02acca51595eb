"""Frozen ImageNet CNNs that turn [0,1] images into the features NST compares.

Each extractor is a `keras.Model` whose input is a float batch [B,H,W,3] in [0,1]
(the network's own preprocessing is inside the model, written in keras.ops so it
compiles on every backend) and whose outputs are the style-layer activations
followed by the content-layer activations.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import keras
from keras import ops

# ImageNet channel means in BGR order, as `keras.applications.vgg19.preprocess_input` uses them.
_CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)


def vgg19_preprocess(images):
    """[0,1] RGB -> VGG19 "caffe" input: scale to [0,255], RGB->BGR, subtract the ImageNet mean."""
    bgr = ops.flip(images * 255.0, axis=-1)
    return bgr - ops.convert_to_tensor(_CAFFE_BGR_MEAN, dtype=bgr.dtype)


def mobilenet_v3_preprocess(images):
    """[0,1] -> [0,255]; MobileNetV3 (include_preprocessing=True) rescales to [-1,1] itself."""
    return images * 255.0


@dataclasses.dataclass(frozen=True)
class ExtractorSpec:
    """Which network and which of its layers."""

    name: str
    content_layers: tuple[str, ...]
    style_layers: tuple[str, ...]
    build: Callable[..., keras.Model]  # build(weights=...) -> the headless application model
    preprocess: Callable  # [0,1] images -> what `build`'s model expects


VGG19 = ExtractorSpec(
    name="vgg19",
    content_layers=("block5_conv2",),
    style_layers=("block1_conv1", "block2_conv1", "block3_conv1", "block4_conv1", "block5_conv1"),
    build=lambda weights: keras.applications.VGG19(include_top=False, weights=weights),
    preprocess=vgg19_preprocess,
)

MOBILENET_V3_LARGE = ExtractorSpec(
    # Layer choice: the residual `expanded_conv_*_add` block outputs, one per resolution
    # (strides 2, 4, 8, 16; 16/24/40/80 channels) for style, mirroring VGG19's
    # block1..block5 conv1 pyramid from edges to textures to motifs, and the last stride-16
    # block (expanded_conv_11_add, 112 ch) for content, as block5_conv2 is VGG19's stride-16
    # content layer. Stride 32 is skipped: too coarse and too class-specific for NST. These
    # are the only block outputs with fixed names (the activation layers' names are
    # auto-numbered per process). The loss weights are VGG19's; expect to retune them.
    name="mobilenet_v3_large",
    content_layers=("expanded_conv_11_add",),
    style_layers=("expanded_conv_add", "expanded_conv_2_add", "expanded_conv_5_add", "expanded_conv_9_add"),
    build=lambda weights: keras.applications.MobileNetV3Large(
        input_shape=(None, None, 3), include_top=False, weights=weights, include_preprocessing=True
    ),
    preprocess=mobilenet_v3_preprocess,
)

EXTRACTORS: dict[str, ExtractorSpec] = {spec.name: spec for spec in (VGG19, MOBILENET_V3_LARGE)}

RANDOM_SEED = 0


class FeatureExtractor:
    """A frozen `model` mapping [B,H,W,3] in [0,1] to (style features, content features)."""

    def __init__(self, spec: ExtractorSpec, base: keras.Model):
        self.spec = spec
        base.trainable = False
        taps = keras.Model(
            base.input, [base.get_layer(name).output for name in spec.style_layers + spec.content_layers]
        )
        images = keras.Input(shape=(None, None, 3), name="images_0_1")
        self.model = keras.Model(images, taps(spec.preprocess(images)), name=f"nst_{spec.name}")
        self.model.trainable = False
        self.compiled: dict = {}  # compiled.py's cache: compiled functions, per settings, precision and kind
        self._models = {"float32": self.model}

    def model_for(self, precision: str = "float32") -> keras.Model:
        """The same network and weights computing in `precision` ("float32" or "bfloat16").

        bfloat16 is Keras mixed precision ("mixed_bfloat16": float32 variables cast to bfloat16
        per call, bfloat16 activations); the [0,1] input image and the preprocessing stay float32,
        and callers cast the features back to float32 before any loss. Built once, then cached.
        """
        if precision not in self._models:
            if precision != "bfloat16":
                raise ValueError(f"precision must be 'float32' or 'bfloat16', got {precision!r}")
            previous = keras.config.dtype_policy()
            keras.config.set_dtype_policy("mixed_bfloat16")
            try:
                twin = FeatureExtractor(self.spec, self.spec.build(weights=None))
            finally:
                keras.config.set_dtype_policy(previous)
            twin.model.set_weights(self.model.get_weights())
            self._models[precision] = twin.model
        return self._models[precision]

    def split(self, outputs):
        """Model outputs -> (style features, content features)."""
        n_style = len(self.spec.style_layers)
        return list(outputs[:n_style]), list(outputs[n_style:])

    def __call__(self, images):
        return self.split(self.model(images, training=False))


def load_extractor(name: str = "vgg19", weights: str = "imagenet") -> FeatureExtractor:
    """Build the extractor with "imagenet" (Keras's own cache, downloading there if it can), "random"
    (seeded, for tests) or a local .h5 / .weights.h5 file (`load_weights`: no pickle). Fetching from
    other places is the caller's (`pipeline.io.weights`)."""
    spec = _spec(name)
    if weights == "imagenet":
        return FeatureExtractor(spec, spec.build(weights="imagenet"))
    if weights == "random":
        keras.utils.set_random_seed(RANDOM_SEED)
        return FeatureExtractor(spec, spec.build(weights=None))
    if not weights.endswith(".h5"):
        raise ValueError(f"weights must be 'imagenet', 'random' or a local .h5 file, got {weights!r}")
    base = spec.build(weights=None)
    base.load_weights(weights)
    return FeatureExtractor(spec, base)


def _spec(name: str) -> ExtractorSpec:
    try:
        return EXTRACTORS[name]
    except KeyError:
        raise ValueError(f"unknown extractor {name!r}; choose from {sorted(EXTRACTORS)}") from None
