"""The feed-forward style network: any input size, training lowers the loss, save/load and seeds
are exact, and (real VGG19) a short training beats the unstylised photo on a held-out photo."""
import dataclasses
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from tests.conftest import ROOT, SAMPLES, requires_real_weights, sample_photo
from transforms import images, quality
from transforms.feedforward import evaluation
from transforms.feedforward.network import apply, build_network, load_network, save_network
from transforms.feedforward.settings import FFSettings, check_settings
from transforms.feedforward.training import _PerceptualTrainer, as_float01, loss_settings, train
from transforms.nst.extractors import load_extractor
from transforms.nst.losses import color_loss
from transforms.nst.optimize import style_targets

pytestmark = pytest.mark.slow  # whole pipelines, real training or subprocesses: `make test-fast` leaves these out

#: Small and fast: the mechanics, not the quality.
TINY = FFSettings(image_size=96, train_size=64, train_steps=30, batch_size=2, loss_every=10, width=8,
                  residual_blocks=1, warmup_steps=5, precision="float32")


@pytest.fixture(scope="module")
def random_extractor():
    return load_extractor("vgg19", "random")


@pytest.fixture(scope="module")
def photos():
    return [sample_photo(name) for name in ("chelsea.png", "rocket.jpg")]


@pytest.fixture(scope="module")
def style():
    return images.decode_image((SAMPLES / "style" / "pop_art.png").read_bytes())


@pytest.fixture(scope="module")
def tiny_run(random_extractor, photos, style):
    return train(random_extractor, photos, style, TINY)


def _weights_equal(a, b):
    return all(np.array_equal(x, y) for x, y in zip(a.get_weights(), b.get_weights()))


def test_apply_keeps_any_size_and_batches_like_single_images():
    network = build_network(TINY)
    rng = np.random.default_rng(0)
    for shape in ((64, 48), (37, 50)):
        out = apply(network, rng.random((*shape, 3), dtype=np.float32))
        assert out.shape == (*shape, 3) and out.dtype == np.float32
        assert 0.0 <= out.min() and out.max() <= 1.0
    batch = rng.random((3, 37, 50, 3), dtype=np.float32)
    together = apply(network, batch, batch_size=2)  # a full batch of 2, then 1
    one_by_one = np.stack([apply(network, image) for image in batch])
    np.testing.assert_allclose(together, one_by_one, atol=1e-5)  # instance norm: per image
    with pytest.raises(images.ImageTooSmall):
        apply(network, np.zeros((5, 40, 3), np.float32))


def test_tiny_training_lowers_the_loss(tiny_run):
    losses = [loss for _, loss in tiny_run.history]
    assert [step for step, _ in tiny_run.history] == [10, 20, 30]
    assert np.isfinite(losses).all() and tiny_run.final_loss == losses[-1]
    assert losses[-1] < 0.8 * losses[0], losses


def test_save_then_load_gives_identical_outputs(tiny_run, tmp_path):
    path = str(tmp_path / "style.weights.h5")
    save_network(tiny_run.network, path)
    loaded = load_network(path, TINY)
    image = np.random.default_rng(1).random((37, 50, 3), dtype=np.float32)
    np.testing.assert_array_equal(apply(loaded, image), apply(tiny_run.network, image))
    with pytest.raises(ValueError, match="weights.h5"):
        save_network(tiny_run.network, str(tmp_path / "style.h5"))


def test_same_seed_same_weights(random_extractor, photos, style, tiny_run):
    assert _weights_equal(build_network(TINY), build_network(TINY))
    assert not _weights_equal(build_network(TINY), build_network(dataclasses.replace(TINY, seed=1)))
    again = train(random_extractor, photos, style, TINY)
    assert _weights_equal(again.network, tiny_run.network)
    assert again.history == tiny_run.history


def test_an_untrained_residual_network_returns_the_photo_clipped():
    """The residual output starts from the photo (its last layer is zero), clipped to
    [residual_clip, 1 - residual_clip] so that saturated pixels keep a gradient."""
    photo = np.random.default_rng(1).random((40, 48, 3), dtype=np.float32)
    photo[0, :8] = 0.0
    photo[1, :8] = 1.0
    out = apply(build_network(dataclasses.replace(TINY, residual_clip=0.1)), photo)
    np.testing.assert_allclose(out, np.clip(photo, 0.1, 0.9), atol=1e-5)


@pytest.mark.parametrize("bad", [dict(train_steps=35), dict(train_size=62), dict(train_size=512),
                                 dict(output="tanh"), dict(precision="float16"), dict(content_layer="pool5"),
                                 dict(residual_clip=0.5), dict(saturation_limit=0.0), dict(color_pool=0),
                                 dict(color_pool=33), dict(color_weight=float("nan"))])
def test_check_settings_names_the_bad_field(bad):
    assert check_settings(TINY) is TINY
    with pytest.raises(ValueError, match=next(iter(bad)).split("_")[0]):
        check_settings(dataclasses.replace(TINY, **bad))


@pytest.mark.parametrize("barrier", [0.0, 1e9])
def test_the_saturation_barrier_gives_saturated_pixels_a_gradient(random_extractor, photos, style, barrier):
    """A network whose output is saturated (pure blue: logits of -20, -20, +20) gets no gradient through
    its sigmoid, so training would leave it there; the barrier on the logits pulls it back to the range."""
    import tensorflow as tf

    settings = dataclasses.replace(TINY, saturation_weight=barrier)
    network = build_network(settings)
    last = [layer for layer in network.layers if isinstance(layer, keras.layers.Conv2D)][-1]  # the conv to RGB
    saturated = np.array([-20.0, -20.0, 20.0], np.float32)
    last.set_weights([last.get_weights()[0], saturated])
    crops = np.stack([as_float01(photo, 64)[:40, :40] for photo in photos])
    out = apply(network, crops)
    assert np.all((out < 1e-6) | (out > 1 - 1e-6))
    grams = style_targets(random_extractor, as_float01(style, 64))
    trainer = _PerceptualTrainer(network, random_extractor, grams, loss_settings(settings, 1e-3), settings)
    with tf.GradientTape() as tape:
        loss = trainer.compute_loss(crops, None, trainer(crops, training=True))
    bias_gradient = tape.gradient(loss, last.bias).numpy()
    if barrier:  # descent moves each channel's bias towards 0, out of saturation
        assert np.all(np.sign(bias_gradient) == np.sign(saturated)) and np.abs(bias_gradient).min() > 1.0, bias_gradient
    else:
        assert np.abs(bias_gradient).max() < 1e-6 * float(loss), (bias_gradient, float(loss))


def test_the_color_term_charges_a_recoloured_region_and_not_a_finer_texture(random_extractor, photos, style):
    """The training loss grows by color_weight x the pooled colour difference: a network that tints the
    photo (its RGB biases) pays for it, one that only adds a pattern finer than `color_pool` does not."""
    crops = np.stack([as_float01(photo, 64)[:32, :32] for photo in photos])
    grams = style_targets(random_extractor, as_float01(style, 64))

    def training_loss(network, settings):
        trainer = _PerceptualTrainer(network, random_extractor, grams, loss_settings(settings, 1e-3), settings)
        return float(trainer.compute_loss(crops, None, trainer(crops)))

    colour = dataclasses.replace(TINY, color_weight=1e6, color_pool=4)
    network = build_network(colour)
    last = [layer for layer in network.layers if isinstance(layer, keras.layers.Conv2D)][-1]  # the conv to RGB
    kernel = last.get_weights()[0]
    last.set_weights([kernel, np.array([0.5, 0.0, -0.5], np.float32)])  # a tint: every region recoloured
    tinted = apply(network, crops)
    extra = training_loss(network, colour) - training_loss(network, dataclasses.replace(colour, color_weight=0.0))
    expected = 1e6 * np.mean((tinted - crops).reshape(2, 8, 4, 8, 4, 3).mean(axis=(2, 4)) ** 2)  # 4 x 4 cells
    assert expected > 1e3 and extra == pytest.approx(expected, rel=1e-3)
    checkerboard = np.where((np.indices((32, 32)).sum(axis=0) % 2)[..., None], 0.05, -0.05).astype(np.float32)
    assert float(np.asarray(color_loss(crops + checkerboard, crops, 4, 1e6)).max()) < 1e-6 * expected


def test_heldout_finds_each_photos_faces_once_and_scores_the_written_and_the_raw_outputs(tiny_run, random_extractor,
                                                                                        photos, style):
    """With the face guard, the held-out panel judges the images as written ("ff") and, asked, the network's
    own ("ff_net"); the detector runs once per photo and once per scored output, never twice on a photo."""
    calls = []

    def detector(image):
        calls.append(image)
        return [quality.Box(10.0, 10.0, 30.0, 30.0, 1.0)]

    nst = [as_float01(p, 96)[:, ::-1] for p in photos]  # any other image will do: the test counts, it does not judge
    held = evaluation.evaluate_heldout(tiny_run.network, random_extractor, photos, style, 96, nst_images=nst,
                                       detector=detector, keep_faces=1.0, network_alone=True)
    assert list(held.images) == ["nst", "ff", "ff_net"]
    assert len(calls) == len(photos) * 4  # each photo, then the nst, ff and ff_net outputs
    for photo, written, raw in zip(held.photos, held.images["ff"], held.images["ff_net"]):
        mask = quality.face_mask(photo.shape, detector(photo))[..., 0]
        assert np.abs(written[mask > 0.999] - photo[mask > 0.999]).max() < 1e-3  # the photo inside the face
        assert np.array_equal(written[mask == 0], raw[mask == 0])  # the network's own outside it
    assert held.summary["ff_ssim"] > held.summary["ff_net_ssim"]


@requires_real_weights
def test_short_training_beats_the_photo_on_a_held_out_photo(photos, style):
    """Real VGG19, 60 steps at 64 px crops (about 15 s here): the seed's loss of the network's
    output on astronaut (never trained on) is below that of the unstylised photo."""
    extractor = load_extractor("vgg19", "imagenet")
    settings = dataclasses.replace(TINY, image_size=128, train_steps=60, batch_size=4, width=16,
                                   residual_blocks=3, warmup_steps=10, learning_rate=1e-2, precision="auto")
    network = train(extractor, photos, style, settings).network
    photo = as_float01(sample_photo("astronaut.png"), 128)
    grams = style_targets(extractor, as_float01(style, 128))
    stylised = evaluation.seed_losses(extractor, apply(network, photo), photo, grams)
    unstylised = evaluation.seed_losses(extractor, photo, photo, grams)
    print(f"\nheld-out seed loss: network {stylised}, photo {unstylised}")
    assert stylised["total"] < unstylised["total"]


@pytest.mark.slow
def test_trains_and_applies_on_jax(tmp_path):
    """The same tiny run on the JAX backend, in a subprocess: the loss falls, weights load back."""
    code = (
        "import dataclasses, numpy as np\n"
        "from tests.test_feedforward import TINY\n"
        "from tests.conftest import sample_photo, SAMPLES\n"
        "from transforms import images\n"
        "from transforms.nst.extractors import load_extractor\n"
        "from transforms.feedforward.training import train\n"
        "from transforms.feedforward.network import apply, save_network, load_network\n"
        "style = images.decode_image((SAMPLES / 'style' / 'pop_art.png').read_bytes())\n"
        "run = train(load_extractor('vgg19', 'random'), [sample_photo('chelsea.png')], style, TINY)\n"
        f"save_network(run.network, {str(tmp_path / 'jax.weights.h5')!r})\n"
        f"loaded = load_network({str(tmp_path / 'jax.weights.h5')!r}, TINY)\n"
        "x = np.random.default_rng(0).random((37, 50, 3), dtype=np.float32)\n"
        "assert np.array_equal(apply(loaded, x), apply(run.network, x))\n"
        "print([round(l) for _, l in run.history])\n"
        "assert run.history[-1][1] < 0.8 * run.history[0][1], run.history\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=dict(os.environ, KERAS_BACKEND="jax"),
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
