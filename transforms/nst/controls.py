"""Style controls as pure numpy functions: seeds, initial images, style blends, colour
preservation and the memory budget of high-resolution NST (its sizes: pyramid.py).

optimize.py applies them (`stylize`, `stylize_high_res`); the pipeline only needs
`parse_style_blend` / `blend_grams` (blends), `pair_seed` (report column) and
`TooLargeForMemory` (error row). Nothing here touches a network or Beam.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
from typing import Sequence

import cv2
import numpy as np

from transforms.images import ImageTooLarge, resize
from transforms.nst.settings import INITS
#: init="blend": (1 - r) * content + r * uniform noise, with this r.
BLEND_NOISE_RATIO = 0.5


class TooLargeForMemory(ImageTooLarge):
    """The requested output would need more memory than the budget (`max_memory_gb`).

    A subclass of `images.ImageTooLarge`, so the pipeline's `classify` already maps it to the
    `too_large` error row; the message names the size, the estimate and the budget.
    """


# ---------------------------------------------------------------------------------------------
# Repeatability: every random choice comes from one generator seeded by (seed, pair ids).


def pair_seed(seed: int, *ids: object) -> int:
    """A 63-bit seed from the run's `seed` and a unit's ids (content id, style id, ...), stable
    across processes, machines and Python versions (sha256 of their JSON, never `hash()`, which
    is salted per process).

    >>> pair_seed(0, "cat", "pop_art") == pair_seed(0, "cat", "pop_art") != pair_seed(1, "cat", "pop_art")
    True
    >>> pair_seed(0, "cat", "pop_art")
    3639241051351628735
    """
    text = json.dumps([int(seed), *[str(i) for i in ids]], ensure_ascii=True)
    return int.from_bytes(hashlib.sha256(text.encode("ascii")).digest()[:8], "big") >> 1


def initial_image(content: np.ndarray, init: str, seed: int) -> np.ndarray:
    """The image the optimisation starts from, [H,W,3] float32 in [0,1].

    content: the content image itself (the seed's choice, and the default);
    noise: uniform noise in [0,1) from numpy's PCG64 seeded with `seed` (see `pair_seed`);
    blend: (1 - BLEND_NOISE_RATIO) * content + BLEND_NOISE_RATIO * that noise.
    """
    content = np.asarray(content, np.float32)
    if init not in INITS:
        raise ValueError(f"init must be one of {INITS}, got {init!r}")
    if init == "content":
        return content
    noise = np.random.default_rng(int(seed)).random(content.shape, dtype=np.float32)
    if init == "noise":
        return noise
    return np.clip((1.0 - BLEND_NOISE_RATIO) * content + BLEND_NOISE_RATIO * noise, 0.0, 1.0).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# Style blends.


def parse_style_blend(text: str) -> list[tuple[str, float]]:
    """ "a:0.7,b:0.3" -> [("a", 0.7), ("b", 0.3)]; a bare name weighs 1 ("a,b" is an even
    blend). Weights must be finite and >= 0 with a positive sum; names non-empty and distinct.
    The weights are returned as given; `blend_grams` normalises them.

    >>> parse_style_blend("pop_art:0.7, wave_bands:0.3"), parse_style_blend("a,b")
    ([('pop_art', 0.7), ('wave_bands', 0.3)], [('a', 1.0), ('b', 1.0)])
    """
    blend = []
    for part in str(text).split(","):
        part = part.strip()
        if not part:
            continue
        name, sep, weight = part.rpartition(":") if ":" in part else (part, "", "1")
        name = name.strip()
        try:
            value = float(weight)
        except ValueError:
            raise ValueError(f"style blend weight of {name!r} is not a number: {weight!r} (in {text!r})") from None
        if not name or not math.isfinite(value) or value < 0:
            raise ValueError(f"style blend entries must be NAME:WEIGHT with a weight >= 0, got {part!r}")
        blend.append((name, value))
    names = [name for name, _ in blend]
    if not blend or sum(w for _, w in blend) <= 0 or len(set(names)) != len(names):
        raise ValueError(f"a style blend needs distinct names and a positive total weight, got {text!r}")
    return blend


def blend_weights(weights: Sequence[float]) -> np.ndarray:
    """`weights` divided by their sum (float64), after the checks of `parse_style_blend`."""
    w = np.asarray(weights, np.float64)
    if w.ndim != 1 or w.size == 0 or not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
        raise ValueError(f"blend weights must be finite, >= 0 and sum to more than 0, got {list(weights)}")
    return w / w.sum()


def blend_grams(gram_lists: Sequence[Sequence[np.ndarray]], weights: Sequence[float]) -> list[np.ndarray]:
    """The style targets of a blend: per style layer, sum_i w_i * gram_i, with the weights
    normalised to sum to 1 (so "a:7,b:3" equals "a:0.7,b:0.3", and the style loss keeps the
    scale of one style). gram_lists[i] is `style_targets` of style i; returns one such list.

    The style loss is a squared distance to these targets, so the optimum matches the weighted
    mean of the styles' channel correlations (as neural-style's -style_blend_weights).
    """
    if len(gram_lists) != len(weights):
        raise ValueError(f"{len(gram_lists)} styles but {len(weights)} weights")
    w = blend_weights(weights)
    layers = len(gram_lists[0])
    if any(len(grams) != layers for grams in gram_lists):
        raise ValueError("every style needs the same style layers (one extractor)")
    return [
        sum(wi * np.asarray(grams[layer], np.float64) for wi, grams in zip(w, gram_lists)).astype(np.float32)
        for layer in range(layers)
    ]


# ---------------------------------------------------------------------------------------------
# Colour preservation: luminance transfer in CIELAB.


def _lab(rgb01: np.ndarray) -> np.ndarray:
    """float32 sRGB [0,1] -> CIELAB (L in [0,100], a and b about [-128,127]), D65, via OpenCV."""
    return cv2.cvtColor(np.ascontiguousarray(rgb01, dtype=np.float32), cv2.COLOR_RGB2Lab)


def preserve_colors(stylized: np.ndarray, content: np.ndarray) -> np.ndarray:
    """Luminance transfer: the stylized image's lightness L* with the content's chroma a*, b*
    (CIELAB), back to sRGB and clipped to [0,1]. [H,W,3] float32 in, same out; a content of
    another size is resized to the stylized one first.

    Why luminance transfer rather than matching colour statistics (Gatys et al. 2016, "Preserving
    colour in neural artistic style transfer", compare both): it keeps each pixel's own colour
    (statistics matching only keeps the means and covariances, so colours move between
    objects), it is a post-process, so one style's Gram targets still serve every content
    image (statistics matching recolours the style image per content image), and it is cheap.
    CIELAB rather than YCbCr/YIQ: its lightness and chroma are perceptually separated, so
    the strokes and shading of the style stay while hues and saturation are the photo's. The
    only chroma change left is where L* + the content's a*, b* leaves the sRGB gamut (clipped).
    """
    stylized = np.asarray(stylized, np.float32)
    content = resize(np.asarray(content, np.float32), stylized.shape[:2])
    lab = _lab(content)
    lab[..., 0] = _lab(stylized)[..., 0]
    return np.clip(cv2.cvtColor(lab, cv2.COLOR_Lab2RGB), 0.0, 1.0).astype(np.float32)


def chroma_difference(image: np.ndarray, reference: np.ndarray) -> tuple[float, float]:
    """(mean |a* - a*_ref|, mean |b* - b*_ref|) in CIELAB units (1 is about a just-noticeable
    difference), for two [H,W,3] images in [0,1] of the same size."""
    diff = np.abs(_lab(image)[..., 1:] - _lab(reference)[..., 1:])
    return float(diff[..., 0].mean()), float(diff[..., 1].mean())


# ---------------------------------------------------------------------------------------------
# Memory budget. Peak RSS of one process running `stylize` (TensorFlow, CPU, VGG19), measured
# with docs/measure_nst_memory.py and fitted as BASE + PER_PIXEL * pixels * batch (see
# `estimate_peak_bytes`). The per-pixel cost is the tape's activations of VGG19 up to
# block5_conv2 (about 330 floats per pixel) plus their gradients and oneDNN's scratch.

# Measured (TF 2.21, 2-core CPU, one image, docs/measure_nst_memory.py), peak RSS in GB:
#   341x512: float32 1.39, bfloat16 1.32;  681x1024: 3.16, 2.42;  1362x2048: 9.75, 6.22.
# Least-squares-ish upper fit through those points:
BASE_BYTES = {"float32": 0.85e9, "bfloat16": 0.90e9}
PER_PIXEL_BYTES = {"float32": 3250.0, "bfloat16": 2000.0}
#: Headroom on top of the fit: allocator fragmentation and the neighbours' differences.
SAFETY = 1.25


def estimate_peak_bytes(height: int, width: int, batch: int = 1, precision: str = "float32") -> int:
    """Estimated peak resident memory (bytes) of one worker optimising `batch` images of
    height x width with VGG19: SAFETY * (BASE + PER_PIXEL * height * width * batch). On a GPU
    the per-pixel part lives in device memory; the same estimate is a fair bound for it."""
    precision = precision if precision in PER_PIXEL_BYTES else "float32"
    return int(SAFETY * (BASE_BYTES[precision] + PER_PIXEL_BYTES[precision] * height * width * batch))


def memory_budget_bytes(max_memory_gb: float) -> int:
    """`max_memory_gb` in bytes; 0 means 80% of this machine's memory (or of its cgroup's limit)."""
    if max_memory_gb > 0:
        return int(max_memory_gb * 1e9)
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(path) as limit:
                text = limit.read().strip()
        except OSError:
            continue
        if text.isdigit():
            total = min(total, int(text))
    return int(0.8 * total)


def images_that_fit(height: int, width: int, batch: int, max_memory_gb: float, precision: str = "float32") -> int:
    """How many of `batch` images of height x width to optimise at once within the budget (the
    rest go in later chunks); TooLargeForMemory when not even one fits."""
    budget = memory_budget_bytes(max_memory_gb)
    one = estimate_peak_bytes(height, width, 1, precision)
    if one > budget:
        raise TooLargeForMemory(
            f"a {width}x{height} NST output needs about {one / 1e9:.1f} GB, over the memory budget of "
            f"{budget / 1e9:.1f} GB (--max-memory-gb); use a smaller --output-size or --max-output-dim"
        )
    for n in range(batch, 0, -1):
        if estimate_peak_bytes(height, width, n, precision) <= budget:
            return n
    return 1

