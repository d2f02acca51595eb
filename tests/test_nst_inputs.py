"""Decoded photos -> NST's images: the size the run starts at, and a clear error when too small."""
import numpy as np
import pytest

from tests.conftest import sample_photo
from transforms import images
from transforms.nst.inputs import NST_MIN_SIDE, prepare_content, prepare_style
from transforms.nst.settings import NSTSettings

PHOTO = sample_photo("chelsea.png")  # 300 x 451


def test_style_and_content_at_max_dim_are_the_resized_photo_in_0_1():
    settings = NSTSettings(max_dim=64)
    expected = images.to_float01(images.resize_to_max_dim(PHOTO, 64))
    for prepared in (prepare_style(PHOTO, settings), prepare_content(PHOTO, settings)):
        assert prepared.shape == (43, 64, 3) and prepared.dtype == np.float32
        np.testing.assert_array_equal(prepared, expected)


@pytest.mark.parametrize("output_size", ["original", "1024"])
def test_content_for_a_larger_output_is_the_photo_at_its_own_size(output_size):
    settings = NSTSettings(max_dim=64, output_size=output_size)
    np.testing.assert_array_equal(prepare_content(PHOTO, settings), images.to_float01(PHOTO))
    assert prepare_style(PHOTO, settings).shape == (43, 64, 3)  # styles are always at max_dim


@pytest.mark.parametrize("output_size", ["max_dim", "original"])
def test_too_small_at_max_dim_is_refused_with_the_size_and_the_reason(output_size):
    strip = np.zeros((4, 400, 3), np.uint8)  # 1 x 128 at max_dim 128: the short side is what counts
    settings = NSTSettings(max_dim=128, output_size=output_size)
    for prepare in (prepare_style, prepare_content):
        with pytest.raises(images.ImageTooSmall, match=r"128x1 is too small: .* at least 16 pixels after resizing "
                                                       r"to --max-dim 128"):
            prepare(strip, settings)
    # at the limit it is accepted: NST_MIN_SIDE pixels on the short side after resizing
    assert prepare_content(np.zeros((NST_MIN_SIDE, 128, 3), np.uint8), settings).shape[0] == NST_MIN_SIDE
