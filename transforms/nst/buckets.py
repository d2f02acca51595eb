"""Shape buckets for NST, so a catalog run compiles a handful of shapes, not one per image.

Every compiled NST function is specialised to its image shape (tf.function / jax.jit trace per
shape, cached per worker on the extractor). With `max_dim` 512 the long side is fixed, and the
short side is rounded to a multiple of 32, so a whole catalog needs at most 2 x 16 shapes.

Resize, not pad or crop: padding adds a flat border that VGG19 sees (it leaks into the style
Gram matrices, the content loss and the total variation, so it would need loss masks), and
cropping loses pixels. Rounding one side to the nearest multiple of 32 changes the aspect by at
most 16/side (3% at 512 px, less for the long side) and is undone by `from_bucket` at the end.
Multiples of 32 also keep every VGG19 pooling level an exact halving.
"""
from __future__ import annotations

import numpy as np

from transforms.images import resize


def bucket_shape(height: int, width: int, multiple: int = 32) -> tuple[int, int]:
    """(height, width) rounded to the nearest multiple of `multiple`, at least `multiple`.

    >>> bucket_shape(341, 512), bucket_shape(512, 496), bucket_shape(10, 700)
    ((352, 512), (512, 512), (32, 704))
    """
    if multiple < 1:
        return height, width
    return tuple(max(multiple, int(round(side / multiple)) * multiple) for side in (height, width))


def to_bucket(image: np.ndarray, multiple: int = 32) -> np.ndarray:
    """[H,W,C] image resized to its `bucket_shape` (unchanged when already there)."""
    return resize(image, bucket_shape(image.shape[0], image.shape[1], multiple))


def from_bucket(image: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """A bucketed [h,w,C] result resized back to `shape`[:2], the pre-bucket (H, W)."""
    return resize(image, shape[:2])
