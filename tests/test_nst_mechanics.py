"""Shapes, ranges and batching of NST with seeded random weights at tiny sizes (fast, offline)."""
import numpy as np
import pytest

from transforms.nst.buckets import bucket_shape
from transforms.nst.extractors import EXTRACTORS, load_extractor
from transforms.nst.optimize import (
    NSTResult, NSTSettings, content_targets, content_targets_for, evaluate_losses, style_targets, stylize,
    stylize_content,
)

RNG = np.random.default_rng(3)
CONTENT = RNG.random((40, 56, 3), dtype=np.float32)
STYLES = [RNG.random((48, 48, 3), dtype=np.float32), RNG.random((32, 64, 3), dtype=np.float32)]
FEW_STEPS = NSTSettings(steps=6)


@pytest.fixture(scope="module", params=sorted(EXTRACTORS))
def extractor(request):
    return load_extractor(request.param, weights="random")


@pytest.fixture(scope="module")
def targets(extractor):
    return content_targets(extractor, CONTENT), [style_targets(extractor, s) for s in STYLES]


def test_target_shapes(extractor, targets):
    content, grams = targets
    assert len(content) == len(extractor.spec.content_layers)
    assert all(c.ndim == 3 and c.dtype == np.float32 for c in content)
    for per_style in grams:
        assert len(per_style) == len(extractor.spec.style_layers)
        assert all(g.ndim == 2 and g.shape[0] == g.shape[1] and g.dtype == np.float32 for g in per_style)


@pytest.mark.slow
def test_stylize_shapes_range_and_losses(extractor, targets):
    content, grams = targets
    result = stylize(extractor, CONTENT, content, grams, FEW_STEPS)
    assert isinstance(result, NSTResult)
    assert result.images.shape == (2, *CONTENT.shape) and result.images.dtype == np.float32
    assert 0.0 <= result.images.min() and result.images.max() <= 1.0
    assert not np.allclose(result.images[0], CONTENT)
    assert len(result.losses) == 2
    for losses in result.losses:
        assert set(losses) == {"total", "content", "style", "tv"}
        assert losses["total"] == pytest.approx(losses["content"] + losses["style"] + losses["tv"], rel=1e-5)


@pytest.mark.slow
def test_batch_equals_each_style_alone(extractor, targets):
    content, grams = targets
    batch = stylize(extractor, CONTENT, content, grams, FEW_STEPS)
    for b, per_style in enumerate(grams):
        alone = stylize(extractor, CONTENT, content, [per_style], FEW_STEPS)
        np.testing.assert_allclose(batch.images[b], alone.images[0], atol=2e-4)
        assert batch.losses[b]["total"] == pytest.approx(alone.losses[0]["total"], rel=1e-3)


def test_zero_steps_returns_the_content_image(extractor, targets):
    content, grams = targets
    result = stylize(extractor, CONTENT, content, grams[:1], NSTSettings(steps=0))
    np.testing.assert_array_equal(result.images[0], CONTENT)
    assert result.losses[0]["content"] == pytest.approx(0.0, abs=1e-9)
    assert result.losses == evaluate_losses(extractor, CONTENT[None], content, grams[:1], NSTSettings(steps=0))


def test_non_finite_loss_is_reported_not_hidden(extractor, targets):
    content, grams = targets
    bad = CONTENT.copy()
    bad[0, 0, 0] = np.nan
    result = stylize(extractor, bad, content, grams[:1], FEW_STEPS)
    assert np.isnan(result.losses[0]["total"])


def test_every_adam_step_is_clipped_to_the_image_range():
    """The seed clips the image after each step; steps this large (lr 0.5, tiny epsilon: about 0.5 a
    pixel) would take much of a random photo outside [0,1] otherwise. The optimiser's, so one extractor."""
    extractor = load_extractor("vgg19", weights="random")
    content, grams = content_targets(extractor, CONTENT), [style_targets(extractor, STYLES[0])]
    result = stylize(extractor, CONTENT, content, grams, NSTSettings(steps=2, learning_rate=0.5, epsilon=1e-8))
    assert 0.0 <= result.images.min() and result.images.max() <= 1.0
    assert np.abs(result.images[0] - CONTENT).max() > 0.25


def test_rejects_a_batch_instead_of_one_image(extractor, targets):
    content, grams = targets
    with pytest.raises(ValueError, match=r"one \[H,W,3\] image"):
        stylize(extractor, CONTENT[None], content, grams, FEW_STEPS)


@pytest.mark.slow
def test_loss_curve_chunks_give_the_pixels_of_an_unbroken_run(extractor):
    content = content_targets(extractor, CONTENT)
    grams = [style_targets(extractor, STYLES[0])]
    plain = stylize(extractor, CONTENT, content, grams, NSTSettings(steps=7, precision="float32", loss_every=0))
    chunked = stylize(extractor, CONTENT, content, grams, NSTSettings(steps=7, precision="float32", loss_every=3))
    np.testing.assert_allclose(chunked.images, plain.images, atol=1e-6)
    assert plain.curves is None
    (curve,) = chunked.curves  # steps 0, 3, 6 and 7 (the end)
    assert len(curve) == 4 and curve[-1] == pytest.approx(chunked.losses[0]["total"], rel=1e-5)
    assert curve[0] > curve[-1]


@pytest.mark.slow
def test_stylize_content_optimises_at_the_bucket_and_answers_at_the_content_size(extractor, targets):
    """What the pipeline calls: at max_dim, one compiled shape per bucket (40 x 56 -> 32 x 64), the
    results back at the content's size; above max_dim, the output size, with no shared targets."""
    _, grams = targets
    settings = NSTSettings(steps=2, loss_every=1)
    shared = content_targets_for(extractor, CONTENT, settings)
    assert shared[0].shape[:2] == (2, 4) == tuple(side // 16 for side in bucket_shape(40, 56))  # stride 16
    result = stylize_content(extractor, CONTENT, grams, settings, pair_ids=[("c", "a"), ("c", "b")], targets=shared)
    assert result.images.shape == (2, *CONTENT.shape) and len(result.losses) == 2 and len(result.curves[0]) == 3
    alone = stylize_content(extractor, CONTENT, grams[:1], settings)  # the targets computed inside
    assert alone.losses[0]["total"] == pytest.approx(result.losses[0]["total"], rel=1e-3)
    high = NSTSettings(steps=2, max_dim=32, output_size="original", refine_steps=1)
    assert content_targets_for(extractor, CONTENT, high) is None
    assert stylize_content(extractor, CONTENT, grams[:1], high).images.shape == (1, *CONTENT.shape)
