"""The classical cartoon filter: edge mask from adaptive thresholding, colours from bilateral smoothing.

Preset "seed" is exactly the seed document's recipe (section II), run in OpenCV's BGR order as the
seed does. Preset "comic" adds colour quantisation, repeated smoothing and thicker ink lines.
"""
from __future__ import annotations

import dataclasses

import cv2
import numpy as np


@dataclasses.dataclass(frozen=True)
class CartoonParams:
    """Every knob of the filter; the defaults are the seed's."""

    median_ksize: int = 5  # medianBlur aperture before edge detection (odd)
    block_size: int = 9  # adaptiveThreshold neighbourhood (odd)
    threshold_c: float = 9.0  # adaptiveThreshold constant subtracted from the local mean
    bilateral_d: int = 9  # bilateralFilter pixel neighbourhood diameter
    sigma_color: float = 250.0
    sigma_space: float = 250.0
    smoothing_passes: int = 1  # bilateral passes; several small ones flatten colours without blurring edges
    quantize_colors: int = 0  # k-means palette size; 0 keeps every colour
    edge_thickness: int = 1  # ink line width in pixels (1 = as detected)
    seed: int = 0  # seeds k-means so that re-runs give the same bytes


PRESETS: dict[str, CartoonParams] = {
    "seed": CartoonParams(),
    "comic": CartoonParams(
        median_ksize=7,
        block_size=21,
        threshold_c=10.0,
        bilateral_d=9,
        sigma_color=40.0,
        sigma_space=40.0,
        smoothing_passes=6,
        quantize_colors=24,
        edge_thickness=2,
    ),
}


def cartoonize(rgb: np.ndarray, params: CartoonParams = PRESETS["seed"]) -> np.ndarray:
    """Cartoon of an RGB uint8 image, as RGB uint8 of the same size."""
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    edges = edge_mask(bgr, params)
    color = smooth_colors(bgr, params)
    cartoon = cv2.bitwise_and(color, color, mask=edges)
    return cv2.cvtColor(cartoon, cv2.COLOR_BGR2RGB)


def edge_mask(bgr: np.ndarray, params: CartoonParams) -> np.ndarray:
    """255 where colour shows through, 0 on the ink lines."""
    gray = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    gray = cv2.medianBlur(gray, params.median_ksize)
    edges = cv2.adaptiveThreshold(
        gray, 255, cv2.ADAPTIVE_THRESH_MEAN_C, cv2.THRESH_BINARY, params.block_size, params.threshold_c
    )
    if params.edge_thickness > 1:
        kernel = np.ones((params.edge_thickness, params.edge_thickness), np.uint8)
        edges = cv2.erode(edges, kernel)
    return edges


def smooth_colors(bgr: np.ndarray, params: CartoonParams) -> np.ndarray:
    color = bgr
    for _ in range(params.smoothing_passes):
        color = cv2.bilateralFilter(color, params.bilateral_d, params.sigma_color, params.sigma_space)
    if params.quantize_colors > 0:
        color = quantize(color, params.quantize_colors, params.seed)
    return color


def quantize(bgr: np.ndarray, colors: int, seed: int) -> np.ndarray:
    """Reduce to a `colors`-entry palette with k-means (seeded, so deterministic)."""
    pixels = bgr.reshape(-1, 3).astype(np.float32)
    colors = min(colors, len(pixels))
    cv2.setRNGSeed(seed)
    criteria = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 20, 1.0)
    _, labels, centers = cv2.kmeans(pixels, colors, None, criteria, 1, cv2.KMEANS_PP_CENTERS)
    palette = np.clip(np.rint(centers), 0, 255).astype(np.uint8)
    return palette[labels.ravel()].reshape(bgr.shape)


def params_for(preset: str, **overrides) -> CartoonParams:
    """A preset with some fields replaced (None values are ignored, so unset flags keep the preset)."""
    if preset not in PRESETS:
        raise ValueError(f"unknown classical preset {preset!r}; choose one of {sorted(PRESETS)}")
    return dataclasses.replace(PRESETS[preset], **{k: v for k, v in overrides.items() if v is not None})
