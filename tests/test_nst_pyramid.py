"""The pyramid plan: which sizes a run optimises at, with how many steps (no network needed)."""
import pytest

from transforms.nst import pyramid
from transforms.nst.pyramid import Level, Plan
from transforms.nst.settings import NSTSettings, parse_scales


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


def test_a_plan_at_max_dim_is_its_scales_and_ends_at_full_size():
    one = pyramid.plan_at((352, 512), NSTSettings(steps=500))
    assert one == Plan((352, 512), (Level((352, 512), 500, "bilinear"),), (352, 512))
    coarse = pyramid.plan_at((352, 512), NSTSettings(steps=100, scales="0.25:0.5, 0.5:0.3, 1:0.2"))
    assert [(level.shape, level.steps) for level in coarse.levels] == [((88, 128), 50), ((176, 256), 30), ((352, 512), 20)]
    assert coarse.start == coarse.output == coarse.levels[-1].shape == (352, 512)
    assert {level.enlarge for level in coarse.levels} == {"bilinear"}  # no bicubic overshoot to undo
    # no level below what the extractors need (stride 16), each side on its own
    assert pyramid.plan_at((20, 512), NSTSettings(steps=4, scales="0.25,1")).levels[0].shape == (16, 128)


def test_a_high_res_plan_is_the_max_dim_plan_then_refinement_up_to_the_output():
    settings = NSTSettings(steps=100, scales="0.5:0.8,1:0.2", max_dim=512, output_size="original",
                           max_output_dim=2048, refine_steps=40)
    plan = pyramid.plan(1536, 2048, settings)
    assert plan.start == (384, 512) and plan.output == (1536, 2048)
    assert plan.levels == (Level((192, 256), 80, "bilinear"), Level((384, 512), 20, "bilinear"),
                           Level((768, 1024), 40, "bicubic"), Level((1536, 2048), 20, "bicubic"))
    # an output no larger than max_dim: only the max_dim levels, then a downscale to the output
    small = pyramid.plan(300, 400, NSTSettings(steps=10, output_size="original"))
    assert [level.shape for level in small.levels] == [(384, 512)] and small.output == (300, 400)
    # output_size max_dim through the high-res path is the max_dim plan of the photo's max_dim size
    assert pyramid.plan(3000, 4000, NSTSettings(steps=10)) == pyramid.plan_at((384, 512), NSTSettings(steps=10))


@pytest.mark.parametrize("scales", ["", "0.5", "2,1", "0.5:0.5:1,1", "0,1", "0.5:-1,1", "x,1"])
def test_bad_scales_are_refused(scales):
    with pytest.raises(ValueError):
        parse_scales(scales, 10)
