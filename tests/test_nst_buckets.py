"""Shape buckets: few shapes per catalog, small aspect change, exact round trip of the shape."""
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


def test_round_trip_restores_shape_dtype_and_range():
    image = np.random.default_rng(0).random((341, 512, 3), dtype=np.float32)
    bucketed = to_bucket(image)
    assert bucketed.shape == (352, 512, 3) and bucketed.dtype == np.float32
    back = from_bucket(bucketed, image.shape)
    assert back.shape == image.shape and back.dtype == np.float32
    assert 0.0 <= back.min() and back.max() <= 1.0
    assert to_bucket(back[:352]) is back[:352] or to_bucket(back[:352]).shape == (352, 512, 3)
