"""The quality panel of a stylised image: does the photo's subject survive, beside the seed's loss.

The seed's loss (transforms.nst) is what Gatys optimises; its content term hardly tells a stylised
photo from a texture (bench/FF_RESEARCH.md), so a method is also judged by what a person checks:
  structure   gray SSIM and the correlation of edge maps, output against its photo;
  faces       the faces a detector finds in the photo that it finds again in the output;
  dependence  over several photos: do the outputs differ where the photos differ (a texture
              generator returns the same picture whatever the photo: dependence about 0);
  saturated   the share of pure-colour pixels, such as (0, 0, 1): flat stamps pasted on an untouched
              photo, which SSIM rates well.
`keep_faces` uses the same detector to blend some of the photo back into its faces (`--ff-keep-faces`).
numpy in, plain values out. Faces use MTCNN (the `mtcnn` package, MIT licence, weights in its wheel:
no download), loaded on first use.
"""
from __future__ import annotations

import itertools
import typing

import cv2
import numpy as np

#: A photo face counts as kept when a face found in the output overlaps it by at least this IoU.
MIN_IOU = 0.3
#: Detections below this confidence are ignored, in photos and outputs alike.
MIN_CONFIDENCE = 0.9
#: A pixel is saturated when one channel is at most this and another at least 1 - this.
SATURATION = 0.03


def _float01(image: np.ndarray) -> np.ndarray:
    """uint8 or float [0,1] RGB -> float64 in [0,1]: the panel takes either."""
    image = np.asarray(image)
    return image.astype(np.float64) / (255.0 if image.dtype == np.uint8 else 1.0)


def _gray(image: np.ndarray) -> np.ndarray:
    return _float01(image).mean(axis=-1)


def gray_ssim(image: np.ndarray, reference: np.ndarray) -> float:
    """SSIM of the channel means of two [H,W,3] images, as
    `skimage.metrics.structural_similarity(a, b, data_range=1.0)` computes it (7x7 uniform
    window, sample covariance, borders cropped).

    >>> import numpy as np
    >>> photo = np.random.default_rng(0).random((32, 32, 3))
    >>> round(gray_ssim(photo, photo), 6), round(gray_ssim(np.full_like(photo, 0.5), photo), 1)
    (1.0, 0.0)
    """
    a, b = _gray(image), _gray(reference)
    win, pad = 7, 3
    mean = lambda x: cv2.blur(x, (win, win), borderType=cv2.BORDER_REFLECT)  # noqa: E731
    unbias = win * win / (win * win - 1.0)
    mu_a, mu_b = mean(a), mean(b)
    var_a = unbias * (mean(a * a) - mu_a * mu_a)
    var_b = unbias * (mean(b * b) - mu_b * mu_b)
    cov = unbias * (mean(a * b) - mu_a * mu_b)
    c1, c2 = 0.01**2, 0.03**2
    ssim = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return float(ssim[pad:-pad, pad:-pad].mean())


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation; 0 where either side is flat (nothing to correlate)."""
    a, b = a.ravel() - a.mean(), b.ravel() - b.mean()
    norm = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / norm) if norm > 1e-12 else 0.0


def edge_map(image: np.ndarray, sigma: float = 2.0) -> np.ndarray:
    """Gradient magnitude (Sobel) of the gray image, blurred by `sigma` px: where the outlines are,
    tolerant of strokes that move an edge by a pixel or two."""
    gray = cv2.GaussianBlur(_gray(image), (0, 0), sigma)
    return np.hypot(cv2.Sobel(gray, cv2.CV_64F, 1, 0), cv2.Sobel(gray, cv2.CV_64F, 0, 1))


def edge_correlation(image: np.ndarray, reference: np.ndarray, sigma: float = 2.0) -> float:
    """Correlation of the two images' edge maps: 1 for the photo itself, about 0 for a blank or a
    texture that ignores it.

    >>> import numpy as np
    >>> photo = np.zeros((32, 32, 3)); photo[8:24, 8:24] = 1.0
    >>> edge_correlation(photo, photo), edge_correlation(np.zeros_like(photo), photo)
    (1.0, 0.0)
    """
    return _correlation(edge_map(image, sigma), edge_map(reference, sigma))


def photo_dependence(outputs: typing.Sequence[np.ndarray], photos: typing.Sequence[np.ndarray],
                     size: int = 128, sigma: float = 2.0) -> float:
    """Do the outputs differ where their photos differ? Over every pair of photos (all resized to
    `size` x `size`), the correlation of |photo_i - photo_j| with |output_i - output_j| (gray,
    blurred by `sigma`), averaged: 1 when the outputs are the photos, about 0 for a network that
    draws the same texture whatever the photo. Needs at least two photos.

    >>> import numpy as np
    >>> photos = [np.random.default_rng(i).random((40, 30, 3)) for i in range(3)]
    >>> texture = np.random.default_rng(9).random((40, 30, 3))
    >>> round(photo_dependence(photos, photos), 6), photo_dependence([texture] * 3, photos)
    (1.0, 0.0)
    """
    if len(outputs) != len(photos) or len(photos) < 2:
        raise ValueError(f"photo_dependence needs at least two photos and one output each, got {len(photos)} "
                         f"photos and {len(outputs)} outputs")
    def prepare(image):
        gray = cv2.resize(_gray(image), (size, size), interpolation=cv2.INTER_AREA)
        return cv2.GaussianBlur(gray, (0, 0), sigma)
    outs, refs = [prepare(o) for o in outputs], [prepare(p) for p in photos]
    pairs = itertools.combinations(range(len(photos)), 2)
    return float(np.mean([_correlation(np.abs(refs[i] - refs[j]), np.abs(outs[i] - outs[j])) for i, j in pairs]))


class Box(typing.NamedTuple):
    """A detected face: left, top, width, height in pixels, and the detector's confidence."""

    left: float
    top: float
    width: float
    height: float
    confidence: float = 1.0


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two boxes.

    >>> iou(Box(0, 0, 10, 10), Box(5, 0, 10, 10))  # half of each overlaps: 50 / 150
    0.3333333333333333
    """
    width = min(a.left + a.width, b.left + b.width) - max(a.left, b.left)
    height = min(a.top + a.height, b.top + b.height) - max(a.top, b.top)
    inter = max(0.0, width) * max(0.0, height)
    union = a.width * a.height + b.width * b.height - inter
    return inter / union if union > 0 else 0.0


def faces_kept(photo_faces: typing.Sequence[Box], output_faces: typing.Sequence[Box], min_iou: float = MIN_IOU) -> int:
    """How many of the photo's faces are found again in the output (each output face matches one).

    >>> faces_kept([Box(0, 0, 10, 10), Box(50, 50, 10, 10)], [Box(1, 1, 10, 10)])
    1
    """
    unused, kept = list(output_faces), 0
    for face in photo_faces:
        best = max(unused, key=lambda other: iou(face, other), default=None)
        if best is not None and iou(face, best) >= min_iou:
            unused.remove(best)
            kept += 1
    return kept


def face_mask(shape: tuple, faces: typing.Sequence[Box], margin: float = 0.3, feather: float = 0.3) -> np.ndarray:
    """[H,W,1] float32 in [0,1]: 1 inside an ellipse around each face (its box grown by `margin` of
    its size), falling to 0 over a Gaussian edge of about `feather` x its width, so that no seam shows.

    >>> m = face_mask((40, 40), [Box(10, 10, 20, 20)])
    >>> round(float(m[20, 20, 0]), 4), float(m[2, 2, 0]), m.shape
    (1.0, 0.0, (40, 40, 1))
    """
    mask = np.zeros(shape[:2], np.float32)
    for face in faces:
        one = np.zeros_like(mask)
        centre = (int(round(face.left + face.width / 2)), int(round(face.top + face.height / 2)))
        axes = (int(round(face.width / 2 * (1 + margin))), int(round(face.height / 2 * (1 + margin))))
        cv2.ellipse(one, centre, axes, 0, 0, 360, 1.0, -1)
        kernel = 2 * int(round(feather * face.width)) + 1
        mask = np.maximum(mask, cv2.GaussianBlur(one, (kernel, kernel), 0))
    return mask[..., None]


def keep_faces(stylised: np.ndarray, photo: np.ndarray, faces: typing.Sequence[Box], amount: float) -> np.ndarray:
    """`stylised` with `amount` of the photo blended back inside `face_mask(faces)` (a spatial control,
    Gatys et al. 2017, "Controlling Perceptual Factors in Neural Style Transfer"): the style stays on the
    face, weaker, so that the face is still the sitter's; elsewhere the image is unchanged. Float [0,1].

    >>> photo, stylised = np.ones((40, 40, 3), np.float32), np.zeros((40, 40, 3), np.float32)
    >>> out = keep_faces(stylised, photo, [Box(10, 10, 20, 20)], 0.5)
    >>> round(float(out[20, 20, 0]), 4), float(out[2, 2, 0]), float(keep_faces(stylised, photo, [], 0.5).max())
    (0.5, 0.0, 0.0)
    """
    if not faces or not amount:
        return stylised
    return (stylised + amount * face_mask(photo.shape, faces) * (photo - stylised)).astype(np.float32)


class FaceDetector:
    """MTCNN (Zhang et al. 2016; the `mtcnn` package, MIT licence, weights shipped in its wheel),
    built on first call: [H,W,3] uint8 or float [0,1] RGB -> faces of at least `min_confidence`."""

    def __init__(self, min_confidence: float = MIN_CONFIDENCE, min_face: int = 20):
        self.min_confidence, self.min_face = min_confidence, min_face
        self._mtcnn = None

    def __call__(self, image: np.ndarray) -> list[Box]:
        if self._mtcnn is None:
            from mtcnn import MTCNN  # TensorFlow-based: loaded only where faces are counted

            self._mtcnn = MTCNN(device="CPU:0")
        image = np.asarray(image)
        rgb = image if image.dtype == np.uint8 else np.clip(np.round(image * 255.0), 0, 255).astype(np.uint8)
        found = self._mtcnn.detect_faces(rgb, min_face_size=self.min_face)
        return [Box(*map(float, f["box"]), float(f["confidence"])) for f in found
                if f["confidence"] >= self.min_confidence]


def saturated_share(image: np.ndarray) -> float:
    """The share of pixels with one channel at most SATURATION and another at least 1 - SATURATION: pure
    colours, where a sigmoid output has no gradient left. A network stuck there pastes flat stamps on the
    photo (bench/FF_RESEARCH.md findings 19, 29: 6-71% of such networks' pixels, against at most 2.5% for
    the others and 0.5-1.6% for NST-100; the sample styles have none). Float [0,1] or uint8 RGB.

    >>> image = np.full((2, 2, 3), 0.5)
    >>> image[0, 0], image[0, 1], image[1, 0] = (0.0, 0.0, 1.0), (1.0, 1.0, 1.0), (0.01, 0.5, 0.99)
    >>> saturated_share(image)  # pure blue and the near-pure mix; white is not a colour
    0.5
    """
    image = _float01(image)
    return float(np.mean((image.min(axis=-1) <= SATURATION) & (image.max(axis=-1) >= 1 - SATURATION)))


def structure(image: np.ndarray, photo: np.ndarray, detector=None, photo_faces=None) -> dict:
    """The panel of one output against its photo: "ssim", "edges", "saturated", and with a `detector`
    (or the photo's faces already found) "faces_photo" and "faces_kept"."""
    panel = {"ssim": gray_ssim(image, photo), "edges": edge_correlation(image, photo),
             "saturated": saturated_share(image)}
    if detector is not None:
        photo_faces = detector(photo) if photo_faces is None else photo_faces
        panel.update(faces_photo=len(photo_faces), faces_kept=faces_kept(photo_faces, detector(image)))
    return panel
