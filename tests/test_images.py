import io

import numpy as np
import pytest
from PIL import Image

from transforms.images import (
    ImageDecodeError,
    ImageTooLarge,
    decode_image,
    encode_png,
    resize,
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


def test_16_bit_gray_is_scaled_by_its_bit_depth_not_by_its_values():
    # Issue 10, defect 7: values all <= 255 used to decode as if 8-bit (white); one pixel at 256 flipped
    # the whole image to near-black. The scale must come from the bit depth: 65535 -> 255 in every case.
    low = np.full((4, 4), 200, np.uint16)
    raised = low.copy()
    raised[0, 0] = 256
    for wide in (low, raised):
        out = decode_image(_save(Image.fromarray(wide), "PNG"))
        assert (out[1:, 1:] == 1).all(), out[..., 0]  # 200 * 255 / 65535 = 0.78, rounded to 1
    pgm = b"P5 2 1 1000\n" + np.array([500, 1000], ">u2").tobytes()  # Pillow scales a PGM's maxval to 16 bits
    assert decode_image(pgm)[0, :, 0].tolist() == [128, 255]
    tiff32 = _save(Image.fromarray(np.full((2, 2), 70000, np.int32)), "TIFF")  # BitsPerSample 32
    assert (decode_image(tiff32) == 0).all()


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


def test_resize_averages_to_shrink_and_is_smooth_and_clipped_to_enlarge():
    stripes = np.zeros((8, 8, 3), np.uint8)
    stripes[:, ::2] = 200  # one-pixel stripes: area averaging gives their mean, not a sample of them
    assert (resize(stripes, (4, 4)) == 100).all()
    step = np.zeros((4, 8, 3), np.float32)
    step[:, 4:] = 1.0  # bicubic overshoots at an edge; floats come back clipped to [0, 1], same dtype
    bigger = resize(step, (8, 16))
    assert bigger.dtype == np.float32 and bigger.min() == 0.0 and bigger.max() == 1.0
    assert 0 < bigger[0, 7, 0] < 1  # interpolated across the edge, not nearest-neighbour
    assert resize(step, (4, 8)) is step  # already that size: no copy, no resampling


def test_float_conversions_invert_each_other_and_round_to_the_nearest_level():
    """An optimised float image is written at its nearest levels: truncating would darken it by up to one."""
    rgb = np.arange(256, dtype=np.uint8).reshape(16, 16, 1).repeat(3, axis=2)
    assert np.array_equal(to_uint8(to_float01(rgb)), rgb)
    for off_by in (-0.4 / 255, 0.4 / 255):
        assert np.array_equal(to_uint8(to_float01(rgb) + off_by), rgb)


# --- Inputs a catalog meets (issue 6): each decodes to RGB uint8 or raises ImageDecodeError. ---------

import struct
import zlib

from PIL import ImageOps

from transforms.images import ImageTooSmall, check_min_side


def _noise(h, w, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def png_bomb(width=40000, height=40000) -> bytes:
    """A ~60-byte PNG whose header claims width x height RGB pixels (no pixel data)."""
    def chunk(kind, payload):
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def jpeg_bomb(width=40000, height=40000) -> bytes:
    """A small real JPEG whose SOF header is patched to claim width x height."""
    data = bytearray(_save(Image.new("RGB", (8, 8), "red"), "JPEG"))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


@pytest.mark.parametrize("bomb", [png_bomb, jpeg_bomb], ids=["png", "jpeg"])
def test_decompression_bombs_are_refused_from_the_header(bomb):
    data = bomb()
    assert len(data) < 1000
    with pytest.raises(ImageTooLarge, match="40000x40000|exceeds"):
        decode_image(data)
    with pytest.raises(ImageTooLarge, match="5000x5000"):  # our limit, below Pillow's own
        decode_image(bomb(5000, 5000), max_pixels=1_000_000)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_files_raise_a_decode_error(fmt):
    data = _save(Image.fromarray(_noise(64, 64)), fmt)
    for cut in (len(data) // 2, len(data) * 9 // 10):
        with pytest.raises(ImageDecodeError, match="cannot decode"):
            decode_image(data[:cut])


def test_unrecognised_bytes_give_a_stable_message():
    with pytest.raises(ImageDecodeError) as info:
        decode_image(b"GIF89a but not really" + bytes(100))
    assert "0x" not in str(info.value)  # no object addresses: the report's messages stay stable


def test_palette_with_transparency_la_and_cmyk_become_rgb():
    palette = Image.new("P", (2, 1))
    palette.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    palette.putpixel((0, 0), 0)
    palette.putpixel((1, 0), 1)
    palette.info["transparency"] = 1
    out = decode_image(_save(palette, "PNG"))
    assert tuple(out[0, 0]) == (255, 0, 0) and tuple(out[0, 1]) == (255, 255, 255)
    la = decode_image(_save(Image.new("LA", (2, 2), (10, 0)), "PNG"))
    assert (la == 255).all()  # fully transparent grey on white
    cmyk = decode_image(_save(Image.new("CMYK", (4, 4), (0, 255, 255, 0)), "JPEG"))
    assert cmyk.shape == (4, 4, 3) and cmyk[0, 0, 0] > 200 and cmyk[0, 0, 1] < 60


def test_exif_orientation_is_applied():
    stored = np.zeros((16, 32, 3), np.uint8)
    stored[:, :16] = (255, 0, 0)  # left half red
    stored[:, 16:] = (0, 0, 255)  # right half blue
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    out = decode_image(_save(Image.fromarray(stored), "JPEG", exif=exif, quality=95))
    assert out.shape == (32, 16, 3)
    assert out[4, 8, 0] > 200 and out[4, 8, 2] < 60  # the left half is now on top
    assert out[28, 8, 2] > 200 and out[28, 8, 0] < 60


def test_animated_gif_gives_its_first_frame():
    frames = [Image.new("RGB", (4, 4), colour) for colour in ("red", "blue")]
    data = _save(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    out = decode_image(data)
    assert out.shape == (4, 4, 3) and tuple(out[0, 0]) == (255, 0, 0)


@pytest.mark.parametrize("fmt, kwargs", [("WEBP", {"lossless": True}), ("TIFF", {}), ("BMP", {})])
def test_webp_tiff_bmp(fmt, kwargs):
    rgb = _noise(5, 7)
    assert np.array_equal(decode_image(_save(Image.fromarray(rgb), fmt, **kwargs)), rgb)


@pytest.mark.parametrize("shape", [(1, 1), (1, 4000), (4000, 1)])
def test_degenerate_sizes_decode(shape):
    rgb = _noise(*shape)
    assert np.array_equal(decode_image(_save(Image.fromarray(rgb), "PNG")), rgb)


def test_min_side_check():
    assert check_min_side(np.zeros((16, 40, 3)), 16).shape == (16, 40, 3)
    with pytest.raises(ImageTooSmall, match="40x15 is too small"):
        check_min_side(np.zeros((15, 40, 3)), 16)


def test_damaged_exif_keeps_the_pixels(monkeypatch):
    def broken(img, **kwargs):
        raise SyntaxError("bad EXIF")

    monkeypatch.setattr(ImageOps, "exif_transpose", broken)
    rgb = _noise(3, 4)
    assert np.array_equal(decode_image(_save(Image.fromarray(rgb), "PNG")), rgb)
