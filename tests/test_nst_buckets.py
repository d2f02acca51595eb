"""Shape buckets: few shapes per catalog, small aspect change, a round trip that restores shape and pixels."""
import numpy as np

from transforms.nst.buckets import bucket_shape, from_bucket, to_bucket


def test_a_catalog_at_512_px_needs_few_shapes():
    shapes = {bucket_shape(h, 512) for h in range(1, 513)} | {bucket_shape(512, w) for w in range(1, 513)}
    assert len(shapes) <= 32
    assert all(h % 32 == 0 and w % 32 == 0 for h, w in shapes)


def test_aspect_change_is_at_most_half_a_bucket():
    for height in range(64, 513, 7):
        bucket = bucket_shape(height, 512)[0]
        assert abs(bucket - height) <= 16


def test_round_trip_restores_shape_dtype_and_pixels():
    """A smooth image (what NST results are, at the bucket's scale) survives the round trip to within
    1/1000 of the range: the resize is undone, not just the shape."""
    rows, cols = np.mgrid[0:341, 0:512].astype(np.float32)
    image = np.stack([0.5 + 0.4 * np.sin(cols / 40), 0.5 + 0.4 * np.cos(rows / 30), (rows + cols) / 853], axis=-1)
    bucketed = to_bucket(image.astype(np.float32))
    assert bucketed.shape == (352, 512, 3) and bucketed.dtype == np.float32
    back = from_bucket(bucketed, image.shape)
    assert back.shape == image.shape and back.dtype == np.float32
    assert np.abs(back - image).max() < 1e-3  # measured 5.2e-4
    assert 0.0 <= back.min() and back.max() <= 1.0
    assert to_bucket(bucketed) is bucketed  # already a bucket: no resize at all
