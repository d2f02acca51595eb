"""Image bytes <-> RGB arrays, and resizing. Every image inside Toonbeam is RGB uint8 [H, W, 3]."""
from __future__ import annotations

import io

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

#: Refuse images whose header claims more pixels than this (decompression bombs), before decoding.
DEFAULT_MAX_INPUT_PIXELS = 100_000_000


class ImageDecodeError(ValueError):
    """The bytes are not an image we can decode; the message names why."""


class ImageTooLarge(ImageDecodeError):
    """The header claims more pixels than allowed; raised before any pixel is decoded."""


class ImageTooSmall(ValueError):
    """The image is smaller than a computation needs (NST's feature extractors need a minimum side)."""


def decode_image(data: bytes, max_pixels: int = DEFAULT_MAX_INPUT_PIXELS) -> np.ndarray:
    """Decode any Pillow-readable image to RGB uint8, the way a catalog user expects to see it.

    The size is checked from the header before decoding; EXIF orientation is applied; transparency
    is composited on white; CMYK and palette images are converted; 16-bit images are scaled to 8 bits by
    their bit depth;
    animations give their first frame. Whatever goes wrong raises `ImageDecodeError` (or its subclass
    `ImageTooLarge`), never anything else.
    """
    if not data:
        raise ImageDecodeError("empty file (0 bytes)")
    try:
        with Image.open(io.BytesIO(data)) as img:
            check_pixel_count(img, max_pixels)
            img.seek(0)
            img.load()
            return _to_rgb(_upright(img), _bit_depth(img))
    except ImageDecodeError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageTooLarge(str(exc)) from exc
    except UnidentifiedImageError as exc:
        # Pillow's own message names a BytesIO object's address; keep the report's text stable.
        raise ImageDecodeError("cannot decode image: not a recognised image format") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageDecodeError(f"cannot decode image: {exc}") from exc
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 - malformed files reach odd corners of the decoders
        raise ImageDecodeError(f"cannot decode image: {type(exc).__name__}: {exc}") from exc


def check_pixel_count(img: Image.Image, max_pixels: int) -> None:
    """`ImageTooLarge` when an opened (not yet decoded) image's header claims more than `max_pixels`."""
    width, height = img.size
    if width * height > max_pixels:
        raise ImageTooLarge(f"{width}x{height} = {width * height} pixels exceeds the limit of {max_pixels}")


def _upright(img: Image.Image) -> Image.Image:
    """Apply the EXIF orientation; a damaged EXIF block keeps the pixels as stored rather than fail."""
    try:
        return ImageOps.exif_transpose(img)
    except Exception:  # noqa: BLE001
        return img


def check_min_side(image: np.ndarray, min_side: int, why: str = "") -> np.ndarray:
    """`image` unchanged, or `ImageTooSmall` when its short side is below `min_side` pixels."""
    height, width = image.shape[:2]
    if min(height, width) < min_side:
        reason = f" {why}" if why else ""
        raise ImageTooSmall(f"{width}x{height} is too small: the short side must be at least {min_side} pixels{reason}")
    return image


def _to_rgb(img: Image.Image, bit_depth: int) -> np.ndarray:
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        wide = np.asarray(img, dtype=np.float64)
        gray = np.clip(np.rint(wide * (255.0 / (2**bit_depth - 1))), 0, 255).astype(np.uint8)
        return np.ascontiguousarray(np.repeat(gray[..., None], 3, axis=2))
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    return np.ascontiguousarray(np.asarray(img.convert("RGB"), dtype=np.uint8))


def _bit_depth(img: Image.Image) -> int:
    """Bits per sample of a wide grayscale image, from its format, never from its values (an image that
    happens to be dark must not be stretched): 16 for the I;16 modes and for PGM (Pillow scales its
    maxval to 16 bits), a TIFF's BitsPerSample for mode I. Read before EXIF rotation, which drops tags."""
    bits_per_sample = getattr(img, "tag_v2", {}).get(258) if img.mode == "I" else None
    return int(bits_per_sample[0]) if bits_per_sample else 16


def encode_png(rgb: np.ndarray) -> bytes:
    """Lossless, deterministic PNG bytes (same pixels give the same bytes)."""
    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError("PNG encoding failed")
    return buf.tobytes()


#: How `resize` enlarges: bicubic is the sharper (the default); bilinear never overshoots.
ENLARGE = {"bicubic": cv2.INTER_CUBIC, "bilinear": cv2.INTER_LINEAR}


def resize(image: np.ndarray, shape: tuple[int, int], enlarge: str = "bicubic") -> np.ndarray:
    """[H,W,C] uint8 or float image at shape (height, width), the one resize of Toonbeam: area
    averaging to shrink (no aliasing), `enlarge` (an ENLARGE key) to enlarge; floats are clipped back
    to [0,1] (bicubic overshoots) and keep their dtype. An image already that size is returned as is.

    >>> resize(np.zeros((4, 6, 3), np.uint8), (2, 3)).shape, float(resize(np.ones((2, 2, 3), np.float32), (5, 5)).max())
    ((2, 3, 3), 1.0)
    """
    height, width = int(shape[0]), int(shape[1])
    if image.shape[:2] == (height, width):
        return image
    shrink = height * width < image.shape[0] * image.shape[1]
    resized = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA if shrink else ENLARGE[enlarge])
    if np.issubdtype(image.dtype, np.floating):
        return np.clip(resized, 0.0, 1.0).astype(image.dtype, copy=False)
    return resized


def scaled_shape(height: int, width: int, long_side: int) -> tuple[int, int]:
    """(height, width) scaled so that the long side is `long_side`, keeping the aspect ratio.

    >>> scaled_shape(3000, 4000, 512), scaled_shape(100, 50, 200), scaled_shape(10, 20, 20)
    ((384, 512), (200, 100), (10, 20))
    """
    scale = long_side / max(height, width)
    if scale == 1:
        return int(height), int(width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def resize_to_max_dim(image: np.ndarray, max_dim: int) -> np.ndarray:
    """Scale so that the long side is `max_dim` (up or down, as the seed does), keeping the aspect ratio."""
    return resize(image, scaled_shape(*image.shape[:2], max_dim))


def to_float01(rgb: np.ndarray) -> np.ndarray:
    return rgb.astype(np.float32) / 255.0


def to_uint8(image01: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(image01 * 255.0), 0, 255).astype(np.uint8)
