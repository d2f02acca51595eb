import io

import numpy as np
import pytest
from PIL import Image

from transforms.images import (
    ImageDecodeError,
    ImageTooLarge,
    decode_image,
    encode_png,
    resize_to_max_dim,
    to_float01,
    to_uint8,
)


def _save(img: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kwargs)
    return buf.getvalue()


def test_png_round_trip_is_lossless_and_deterministic():
    rgb = np.random.default_rng(0).integers(0, 256, (7, 9, 3), dtype=np.uint8)
    data = encode_png(rgb)
    assert np.array_equal(decode_image(data), rgb)
    assert encode_png(rgb) == data


def test_rgba_is_composited_on_white():
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[0, 0] = (255, 0, 0, 255)  # opaque red stays red
    rgba[1, 1] = (0, 0, 0, 0)  # transparent becomes white
    out = decode_image(_save(Image.fromarray(rgba, "RGBA"), "PNG"))
    assert tuple(out[0, 0]) == (255, 0, 0)
    assert tuple(out[1, 1]) == (255, 255, 255)


def test_grayscale_and_16_bit_become_rgb_uint8():
    gray = decode_image(_save(Image.fromarray(np.full((3, 3), 77, np.uint8)), "PNG"))
    assert gray.shape == (3, 3, 3) and gray.dtype == np.uint8 and (gray == 77).all()
    wide = Image.fromarray(np.full((3, 3), 65535, np.uint16))
    assert (decode_image(_save(wide, "PNG")) == 255).all()


def test_header_size_is_refused_before_decoding():
    data = _save(Image.new("RGB", (300, 200)), "PNG")
    with pytest.raises(ImageTooLarge, match="300x200"):
        decode_image(data, max_pixels=300 * 200 - 1)


@pytest.mark.parametrize("data", [b"", b"this is text, not a jpeg", _save(Image.new("RGB", (64, 64)), "JPEG")[:40]])
def test_bad_bytes_raise_a_decode_error(data):
    with pytest.raises(ImageDecodeError):
        decode_image(data)


def test_resize_sets_the_long_side_both_ways():
    img = np.zeros((100, 50, 3), np.uint8)
    assert resize_to_max_dim(img, 40).shape == (40, 20, 3)
    assert resize_to_max_dim(img, 200).shape == (200, 100, 3)
    floats = resize_to_max_dim(np.ones((10, 20, 3), np.float32), 33)
    assert floats.shape == (16, 33, 3) and floats.max() <= 1.0


def test_float_conversions_invert_each_other():
    rgb = np.arange(256, dtype=np.uint8).reshape(16, 16, 1).repeat(3, axis=2)
    assert np.array_equal(to_uint8(to_float01(rgb)), rgb)
