"""Fast unit tests of the feed-forward layer (tiny networks, random weights, no training): the padding
of the network, the seeding of the training crops, what the model's and the outputs' hashes cover, the
quality gate and the held-out split. test_feedforward.py and test_feedforward_pipeline.py train and run
whole pipelines; those are in the slow tier."""
import dataclasses
import types

import numpy as np
import pytest
from apache_beam.utils import shared

from pipeline.errors import UnitError
from pipeline.io.manifests import ManifestEntry
from pipeline.methods import feedforward
from pipeline.methods.feedforward import TRAIN_METHOD, FFJob, StyleModel, TrainFn, TrainingPhoto, gate_refusal
from pipeline.units import RunContext, UnitContext
from transforms.feedforward.network import ReflectPad, apply, build_network
from transforms.feedforward.settings import KEEP_FACES, FFSettings
from transforms.feedforward.training import TrainResult, _Crops
from transforms.nst.settings import NSTSettings

TINY = FFSettings(width=4, residual_blocks=0, output="sigmoid")
STYLE_SHA256 = "ab" * 32


def test_reflect_pad_mirrors_the_border():
    x = np.arange(2 * 5 * 6 * 3, dtype=np.float32).reshape(2, 5, 6, 3)
    expected = np.pad(x, [(0, 0), (2, 2), (2, 2), (0, 0)], mode="reflect")
    np.testing.assert_array_equal(np.asarray(ReflectPad(2)(x)), expected)


def test_an_untrained_network_keeps_a_uniform_image_uniform_to_its_borders():
    """Every conv is reflect-padded, so no pixel near a border sees anything but the image; zero
    padding would make the borders of every output darker or lighter than its middle."""
    out = apply(build_network(TINY), np.full((16, 20, 3), 0.3, np.float32))
    assert np.ptp(out) < 1e-4, f"border pixels differ from the middle by up to {np.ptp(out):.3f}"


def _crop_batches(seed: int = 0) -> _Crops:
    rng = np.random.default_rng(1)
    photos = [rng.random((40, 48, 3), dtype=np.float32) for _ in range(3)]
    return _Crops(photos, dataclasses.replace(TINY, train_size=16, batch_size=4, train_steps=10, seed=seed))


def test_training_crops_differ_by_step_and_seed_and_repeat_across_runs():
    """A generator seeded without the step would train every step on the same few crops."""
    crops = _crop_batches()
    assert crops[3].shape == (4, 16, 16, 3)
    np.testing.assert_array_equal(crops[3], _crop_batches()[3])  # the same step in another run
    assert not np.array_equal(crops[3], crops[4])
    assert not np.array_equal(crops[3], _crop_batches(seed=1)[3])


@pytest.mark.parametrize("change", [
    dict(weights="random"), dict(extractor="mobilenet_v3_large"), dict(train_images=8), dict(heldout_images=1),
    dict(settings=dataclasses.replace(FFSettings(), train_steps=300)),
    dict(settings=dataclasses.replace(FFSettings(), residual_clip=0.1)),
])
def test_the_model_hash_covers_every_training_input(change):
    """A model trained with `--weights random` (or any other training setting) must never be reused
    by a run that asks for another."""
    assert FFJob(**change).model_hash(STYLE_SHA256) != FFJob().model_hash(STYLE_SHA256)


def test_the_model_hash_ignores_what_never_changes_the_weights():
    apply_only = FFJob(settings=dataclasses.replace(FFSettings(), apply_batch=1, loss_every=50), model_dir="elsewhere")
    assert apply_only.model_hash(STYLE_SHA256) == FFJob().model_hash(STYLE_SHA256)
    assert FFJob().model_hash("cd" * 32) != FFJob().model_hash(STYLE_SHA256)


@pytest.mark.parametrize("controls", [dict(style_strength=0.5), dict(preserve_colors=True), dict(output_size="1024")])
def test_style_controls_change_the_outputs_hash_but_not_the_models(controls):
    """They act after the network: one model serves them all, but an output made with other controls is
    never reused for these (--skip-existing, --incremental)."""
    job = FFJob(controls=dataclasses.replace(NSTSettings(), **controls))
    assert job.model_hash(STYLE_SHA256) == FFJob().model_hash(STYLE_SHA256)
    assert job.params_hash() != FFJob().params_hash()


def _model(heldout: dict | None) -> StyleModel:
    card = {"heldout": None if heldout is None else {"keep_faces": KEEP_FACES, **heldout}}  # scored as written
    return StyleModel(ManifestEntry("s", "s.png"), STYLE_SHA256, "models/s.weights.h5", card, grams=None)


def _refusal(max_loss_ratio: float | None, heldout: dict | None) -> UnitError | None:
    return gate_refusal(_model(heldout), FFJob(max_loss_ratio=max_loss_ratio))


@pytest.mark.parametrize("max_loss_ratio, heldout, refused", [
    (2.0, None, True),  # no held-out photos: no score to trust
    (2.0, {"ratio_total": 3.0, "gate_steps": 100}, True),
    (2.0, {"ratio_total": 2.0, "gate_steps": 100}, False),  # at the limit is not above it
    (None, None, False),  # no gate asked for
])
def test_the_quality_gate_refuses_unscored_and_worse_models(max_loss_ratio, heldout, refused):
    refusal = _refusal(max_loss_ratio, heldout)
    assert (refusal is not None) == refused
    if refused:
        assert refusal.error_type == "quality_gate" and "--ff-max-loss-ratio" in str(refusal)


@pytest.mark.parametrize("heldout_images, held_out", [(1, ["p2"]), (0, []), (3, [])])
def test_training_holds_out_the_last_photos_and_trains_on_the_rest(heldout_images, held_out, tmp_path, monkeypatch):
    """--ff-heldout-images 0 (or as many as there are photos) trains on every photo and leaves the
    model unscored; the training and the scoring are stubbed: this is about which photos each gets."""
    seen = {}

    def fake_train(extractor, photos, style, settings, callbacks=()):
        seen["trained"] = len(photos)
        return TrainResult(build_network(TINY), [(25, 1.0)], 1.0, 0.0, 1e-3)

    def fake_evaluate(network, extractor, photos, style, max_dim, nst_steps, detector=None, keep_faces=0.0):
        seen["scored"] = len(photos)
        return types.SimpleNamespace(summary={"ratio_total": 1.0})

    monkeypatch.setattr(feedforward, "train", fake_train)
    monkeypatch.setattr(feedforward, "evaluate_heldout", fake_evaluate)
    job = FFJob(settings=TINY, heldout_images=heldout_images, model_dir=str(tmp_path))
    step = TrainFn(UnitContext(RunContext("run", str(tmp_path)), TRAIN_METHOD), shared.Shared(), job)
    step._extractor = None  # what setup() loads; the stubs never use it
    photos = [TrainingPhoto(f"p{i}", str(i) * 64, np.zeros((16, 16, 3), np.float32)) for i in range(3)]
    style = np.zeros((16, 16, 3), np.float32)
    card = step._train(ManifestEntry("s", "s.png"), STYLE_SHA256, job.model_uri("s", STYLE_SHA256), style, photos)
    trained = [p.id for p in photos if p.id not in held_out]
    assert card["training_set"]["photos"] == trained and seen["trained"] == len(trained)
    assert (card["heldout"] or {}).get("photos", []) == held_out and seen.get("scored", 0) == len(held_out)


def test_only_the_sampled_share_of_pairs_is_scored():
    job = FFJob()
    pairs = [(ManifestEntry(f"c{i}", f"c{i}.png"), ManifestEntry(f"s{i % 3}", "s.png")) for i in range(400)]
    def scored(fraction):
        return [p for p in pairs if dataclasses.replace(job, score_fraction=fraction).scores(*p)]
    assert scored(0.0) == [] and scored(1.0) == pairs
    assert 0.15 < len(scored(0.25)) / len(pairs) < 0.35 and set(scored(0.1)) <= set(scored(0.25))


@pytest.mark.parametrize("heldout, reason", [
    (dict(faces_photo=2, ff_faces_kept=1, nst_faces_kept=2, ff_dependence=0.8, ff_style_progress=0.9, gate_steps=2),
     "keeps 1 of the 2 faces in the held-out photos, fewer than 2 NST steps (2)"),
    (dict(faces_photo=0, ff_faces_kept=0, nst_faces_kept=0, ff_dependence=0.05, ff_style_progress=0.9, gate_steps=2),
     "hardly depend on their photos (dependence 0.05, below 0.3)"),
    (dict(faces_photo=2, ff_faces_kept=2, nst_faces_kept=2, ff_dependence=1.0, ff_style_progress=0.06, gate_steps=2),
     "hardly move toward the style (style progress 0.06, below 0.5; 2 NST steps: 1)"),  # the photo returned
    (dict(faces_photo=2, ff_faces_kept=2, nst_faces_kept=2, ff_dependence=1.0, ff_style_progress=0.9, gate_steps=2,
          ff_saturated=0.08, style_saturated=0.01, photo_saturated=0.03),
     "have 8.0% saturated pixels, flat pure colours (style image or photos: 3.0%; at most 4.0% more)"),  # stamps
])
def test_the_quality_gate_refuses_lost_faces_photo_free_textures_the_photo_itself_and_stamps(heldout, reason):
    model = _model(heldout)
    refusal = gate_refusal(model, FFJob(gate_steps=2))
    assert refusal.error_type == "quality_gate" and reason in str(refusal)
    accepted = dict(heldout, ff_faces_kept=heldout["nst_faces_kept"], ff_dependence=0.5, ff_style_progress=0.5,
                    ff_saturated=heldout.get("photo_saturated", 0.0) + 0.04)
    assert gate_refusal(_model(accepted), FFJob(gate_steps=2)) is None
    if "style progress" in reason:  # --ff-min-style-progress 0 turns that floor off
        assert gate_refusal(model, FFJob(gate_steps=2, min_style_progress=0)) is None
    if "saturated" in reason:  # --ff-max-saturated 1 turns that ceiling off
        assert gate_refusal(model, FFJob(gate_steps=2, max_saturated=1.0)) is None


def test_a_style_target_sets_the_style_weight_per_style():
    """With style_target, the photos' own style term is the target whatever the style's scale; without,
    every style gets style_weight."""
    from transforms.feedforward.training import calibrated_style_weight
    from transforms.nst.extractors import load_extractor
    from transforms.nst.losses import style_loss
    from transforms.nst.optimize import style_targets

    extractor = load_extractor("vgg19", "random")
    rng = np.random.default_rng(0)
    crops = rng.random((2, 32, 32, 3), dtype=np.float32)
    faint, strong = (style_targets(extractor, scale * rng.random((32, 32, 3), dtype=np.float32)) for scale in (0.2, 1.0))
    settings = dataclasses.replace(TINY, style_target=5.0)
    weights = [calibrated_style_weight(extractor, crops, grams, settings) for grams in (faint, strong)]
    assert weights[0] != pytest.approx(weights[1], rel=0.1)
    for weight, grams in zip(weights, (faint, strong)):
        features, _ = extractor(crops)
        assert float(np.mean(style_loss(features, grams, weight))) == pytest.approx(5.0, rel=1e-3)
    assert calibrated_style_weight(extractor, crops, strong, dataclasses.replace(TINY, style_target=0.0)) == TINY.style_weight


@pytest.mark.parametrize("flag, value", [("--ff-keep-faces", "1.5"), ("--ff-min-style-progress", "-0.1"),
                                         ("--ff-min-dependence", "2"), ("--ff-score-fraction", "nan"),
                                         ("--ff-max-saturated", "-0.01")])
def test_the_run_refuses_a_share_outside_0_to_1_before_any_work(tmp_path, flag, value):
    from pipeline import app

    with pytest.raises(app.UsageError, match=f"{flag} must be in \\[0, 1\\], got"):
        app.run(["--content", str(tmp_path), "--style", str(tmp_path), "--output", str(tmp_path / "out"),
                 "--method", "feedforward", flag, value])
    assert not (tmp_path / "out").exists()
