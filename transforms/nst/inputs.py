"""Decoded photos (uint8 RGB) -> the float images NST starts from, or `images.ImageTooSmall`."""
from __future__ import annotations

import numpy as np

from transforms import images
from transforms.nst.settings import NSTSettings, is_high_res

#: Both extractors read features at stride 16 (VGG19's block5 after four poolings), so NST needs images
#: at least this many pixels on the short side after resizing to max_dim.
NST_MIN_SIDE = 16


def prepare_style(rgb: np.ndarray, settings: NSTSettings) -> np.ndarray:
    """A style photo as its grams are taken: float32 [0,1], long side `max_dim`."""
    return images.to_float01(_checked_at_max_dim(rgb, settings))


def prepare_content(rgb: np.ndarray, settings: NSTSettings) -> np.ndarray:
    """A content photo as `optimize.stylize_content` takes it: float32 [0,1], long side `max_dim`;
    or, for an output at another size (`is_high_res`), the photo at its own size, which the pyramid
    resizes level by level. Either way it must be usable at max_dim, where every run starts."""
    resized = _checked_at_max_dim(rgb, settings)
    return images.to_float01(rgb if is_high_res(settings) else resized)


def _checked_at_max_dim(rgb: np.ndarray, settings: NSTSettings) -> np.ndarray:
    """`rgb` resized to the long side `max_dim`; ImageTooSmall if its short side is then below NST_MIN_SIDE."""
    resized = images.resize_to_max_dim(rgb, settings.max_dim)
    return images.check_min_side(resized, NST_MIN_SIDE, f"after resizing to --max-dim {settings.max_dim}")
