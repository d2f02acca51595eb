"""The quality panel (transforms.quality) on inputs whose answer is known: the photo itself, a blank,
a blurred copy, a face kept and a face erased, a texture that ignores the photo."""
import cv2
import numpy as np
import pytest
from skimage import metrics

from tests.conftest import sample_photo
from transforms import images, quality


@pytest.fixture(scope="module")
def astronaut():
    return images.to_float01(images.resize_to_max_dim(sample_photo("astronaut.png"), 256))


@pytest.fixture(scope="module")
def detector():
    return quality.FaceDetector()


def _erase_face(photo, face: quality.Box):
    """The photo with the face's box filled by the mean colour of its border: the subject is gone,
    the rest of the picture is untouched."""
    erased = photo.copy()
    left, top = int(face.left), int(face.top)
    right, bottom = left + int(face.width), top + int(face.height)
    ring = np.concatenate([photo[top, left:right], photo[bottom, left:right], photo[top:bottom, left], photo[top:bottom, right]])
    erased[top:bottom, left:right] = ring.mean(axis=0)
    return erased


def test_gray_ssim_matches_skimage():
    rng = np.random.default_rng(2)
    photo = images.to_float01(images.resize_to_max_dim(sample_photo("coffee.png"), 64))
    noisy = np.clip(photo + rng.normal(0, 0.1, photo.shape), 0, 1)
    expected = metrics.structural_similarity(noisy.mean(axis=-1), photo.mean(axis=-1), data_range=1.0)
    assert quality.gray_ssim(noisy, photo) == pytest.approx(expected, abs=1e-7)


def test_structure_of_the_photo_itself_a_blur_and_a_blank(astronaut):
    itself = quality.structure(astronaut, astronaut)
    blurred = quality.structure(cv2.GaussianBlur(astronaut, (0, 0), 2.0), astronaut)
    blank = quality.structure(np.full_like(astronaut, 0.5), astronaut)
    assert itself["ssim"] == pytest.approx(1.0) and itself["edges"] == pytest.approx(1.0)
    assert 0.3 < blurred["ssim"] < 0.95 and 0.7 < blurred["edges"] < 0.99
    assert blank["ssim"] < 0.3 and blank["edges"] == 0.0  # SSIM keeps a luminance term where the photo is flat


def test_edges_prefer_the_photo_under_a_texture_to_the_texture_alone(astronaut):
    texture = np.random.default_rng(0).random(astronaut.shape)
    textured = 0.6 * astronaut + 0.4 * texture
    assert quality.edge_correlation(textured, astronaut) > 0.6 > 0.1 > quality.edge_correlation(texture, astronaut)


def test_a_face_kept_and_a_face_erased(astronaut, detector):
    faces = detector(astronaut)
    assert len(faces) == 1  # Eileen Collins
    kept = quality.structure(cv2.GaussianBlur(astronaut, (0, 0), 1.0), astronaut, detector, faces)
    erased = quality.structure(_erase_face(astronaut, faces[0]), astronaut, detector, faces)
    assert (kept["faces_photo"], kept["faces_kept"]) == (1, 1)
    assert (erased["faces_photo"], erased["faces_kept"]) == (1, 0)
    assert erased["ssim"] > 0.8  # the rest of the picture survives: only the face measure sees the loss
    assert quality.structure(np.full_like(astronaut, 0.5), astronaut, detector)["faces_kept"] == 0


def test_no_face_found_in_an_object_photo(detector):
    coffee = images.to_float01(images.resize_to_max_dim(sample_photo("coffee.png"), 256))
    assert quality.structure(coffee, coffee, detector)["faces_photo"] == 0


def test_faces_kept_matches_each_output_face_once():
    photo_faces = [quality.Box(0, 0, 10, 10), quality.Box(2, 0, 10, 10)]
    assert quality.faces_kept(photo_faces, [quality.Box(1, 0, 10, 10)]) == 1
    assert quality.faces_kept(photo_faces, [quality.Box(30, 30, 10, 10)]) == 0
    assert quality.faces_kept(photo_faces, [quality.Box(0, 0, 10, 10), quality.Box(2, 0, 10, 10)]) == 2


def test_photo_dependence_tells_a_stylised_photo_from_a_texture():
    photos = [images.to_float01(images.resize_to_max_dim(sample_photo(name), 128))
              for name in ("astronaut.png", "coffee.png", "chelsea.png")]
    texture = np.random.default_rng(1).random((128, 128, 3))
    stylised = [0.5 * cv2.resize(p, (128, 128)) + 0.5 * texture for p in photos]
    assert quality.photo_dependence(photos, photos) == pytest.approx(1.0)
    assert quality.photo_dependence(stylised, photos) > 0.9
    assert abs(quality.photo_dependence([texture] * 3, photos)) < 1e-9
    noise = [np.random.default_rng(i).random((128, 128, 3)) for i in range(3)]  # differs, but not where the photos do
    assert abs(quality.photo_dependence(noise, photos)) < 0.2
    with pytest.raises(ValueError, match="at least two"):
        quality.photo_dependence(photos[:1], photos[:1])
