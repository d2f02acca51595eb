"""The pyramid: which sizes a run optimises at, with how many steps (no network needed)."""
import pytest

from transforms.nst import pyramid
from transforms.nst.settings import NSTSettings


def test_output_shapes_and_refinement_shapes():
    s = NSTSettings(max_dim=512, output_size="original", max_output_dim=2048)
    assert pyramid.output_shape(3000, 4000, NSTSettings()) == (384, 512)
    assert pyramid.output_shape(3000, 4000, s) == (1536, 2048)  # capped
    assert pyramid.output_shape(768, 1024, s) == (768, 1024)  # the original size
    assert pyramid.output_shape(768, 1024, NSTSettings(output_size="800")) == (600, 800)
    assert pyramid.output_shape(300, 400, NSTSettings(output_size="800")) == (300, 400)  # never above the photo
    assert pyramid.refinement_shapes(1536, 2048, s) == [(384, 512), (768, 1024), (1536, 2048)]
    assert pyramid.refinement_shapes(600, 800, s) == [(384, 512), (600, 800)]
    assert pyramid.refinement_shapes(300, 400, s) == [(384, 512)]  # optimised at max_dim, then downscaled
    assert [pyramid.refine_steps_at(k, NSTSettings(refine_steps=100)) for k in (1, 2, 3)] == [100, 50, 25]


@pytest.mark.parametrize("scales", ["", "0.5", "2,1", "0.5:0.5:1,1", "0,1", "0.5:-1,1", "x,1"])
def test_bad_scales_are_refused(scales):
    with pytest.raises(ValueError):
        pyramid.parse_scales(scales, 10)
