"""--method feedforward through the pipeline: a training unit per style, every pair through its style's
network (RunInference), models reused by hash, the quality gate, the loss columns, bad training data."""
import hashlib
import json
import shutil

import apache_beam as beam
import numpy as np
import pyarrow.parquet as pq
import pytest
from apache_beam.ml.inference.base import KeyedModelHandler, RunInference
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that

from pipeline import app
from pipeline.io.manifests import ManifestEntry
from pipeline.methods import feedforward
from pipeline.methods.feedforward import StyleExample, StyleNetworkHandler
from pipeline.reporting.contact_sheet import render_contact_sheet
from tests.test_contact_sheet import Page
from tests.conftest import SAMPLES, sample_photo, small_png
from transforms import images, quality
from transforms.feedforward.network import build_network, save_network
from transforms.feedforward.settings import FFSettings
from transforms.nst.extractors import load_extractor
from transforms.nst.optimize import content_targets, evaluate_losses, style_targets
from transforms.nst.settings import NSTSettings

pytestmark = pytest.mark.slow

#: Tiny training: 64 px photos, 32 px crops, 10 steps; random extractor weights (the mechanics, not the art);
#: every pair scored with the seed's loss (the default scores none); no dependence, style or saturation check
#: (10 steps on random weights turn noise photos into mush, which the default gate rightly refuses); no face detection.
TINY = ["--method", "feedforward", "--weights", "random", "--max-dim", "64", "--ff-train-steps", "10",
        "--ff-loss-every", "5", "--ff-train-size", "32", "--ff-width", "8", "--ff-residual-blocks", "1",
        "--ff-gate-steps", "2", "--ff-score-fraction", "1", "--ff-min-dependence", "0",
        "--ff-min-style-progress", "0", "--ff-max-saturated", "1", "--ff-keep-faces", "0"]


def _catalog(tmp_path, contents=3, styles=2):
    (tmp_path / "content").mkdir()
    (tmp_path / "style").mkdir()
    for i in range(contents):
        (tmp_path / "content" / f"c{i}.png").write_bytes(small_png(i, (48, 64)))
    for i in range(styles):
        (tmp_path / "style" / f"s{i}.png").write_bytes(small_png(10 + i, (48, 64)))
    return tmp_path / "content", tmp_path / "style"


def _run(content, style, output, *extra, counters=None):
    """The report rows by (method, content, style); `counters` (a dict) gets the run's Beam counters."""
    _, result = app.run(["--content", str(content), "--style", str(style), "--output", str(output), *TINY, *extra])
    for counter in result.metrics().query()["counters"]:
        (counters if counters is not None else {})[counter.key.metric.name] = counter.committed
    rows = pq.read_table(str(output / "report")).to_pylist()
    return {(r["method"], r["content_id"], r["style_id"]): r for r in rows}


def _no_training(*args, **kwargs):
    raise AssertionError("a model with the same hash exists: nothing may be trained")


def test_trains_once_per_style_then_stylises_every_pair(tmp_path):
    content, style = _catalog(tmp_path)
    counters = {}
    rows = _run(content, style, tmp_path / "out", counters=counters)
    assert counters["ff_training_steps"] == 2 * 10  # each style's steps, counted as training goes
    train_rows = {k: r for k, r in rows.items() if k[0] == "feedforward_train"}
    pair_rows = {k: r for k, r in rows.items() if k[0] == "feedforward"}
    assert sorted(k[2] for k in train_rows) == ["s0", "s1"] and all(k[1] is None for k in train_rows)
    assert len(pair_rows) == 6 and {r["status"] for r in rows.values()} == {"ok"}
    for (_, _, style_id), row in train_rows.items():
        card = json.loads((tmp_path / "out" / "models" / (row["model_uri"].rsplit("/", 1)[1][: -len(".weights.h5")] + ".json")).read_text())
        assert card["style_id"] == style_id and card["steps"] == 10 and len(card["training_set"]["photos"]) == 1
        assert card["heldout"]["photos"] == ["c1", "c2"] and card["heldout"]["ratio_total"] > 0
        assert row["saturated"] == card["heldout"]["ff_saturated"] and row["ssim"] == card["heldout"]["ff_ssim"]
        assert all(r["model_uri"] == row["model_uri"] for k, r in pair_rows.items() if k[2] == style_id)
    for row in pair_rows.values():
        assert (row["height"], row["width"]) == (48, 64) and row["loss_total"] > 0


def test_loss_columns_are_the_seed_loss_of_the_written_image(tmp_path):
    content, style = _catalog(tmp_path, contents=1, styles=1)
    row = _run(content, style, tmp_path / "out")[("feedforward", "c0", "s0")]
    extractor = load_extractor("vgg19", "random")
    written = images.to_float01(images.decode_image(open(row["output_uri"], "rb").read()))
    photo = images.to_float01(images.resize_to_max_dim(images.decode_image(small_png(0, (48, 64))), 64))
    grams = style_targets(extractor, images.to_float01(images.resize_to_max_dim(images.decode_image(small_png(10, (48, 64))), 64)))
    expected = evaluate_losses(extractor, written[None], content_targets(extractor, photo), [grams], NSTSettings())[0]
    for term in ("total", "content", "style", "tv"):
        assert row[f"loss_{term}"] == pytest.approx(expected[term], rel=1e-4), term
    assert row["saturated"] == pytest.approx(quality.saturated_share(written))


def test_same_style_and_settings_reuse_the_model_and_a_change_retrains(tmp_path, monkeypatch):
    content, style = _catalog(tmp_path, contents=2, styles=1)
    models = tmp_path / "models"
    first = _run(content, style, tmp_path / "r1", "--ff-model-dir", str(models))
    uri = first[("feedforward_train", None, "s0")]["model_uri"]
    with monkeypatch.context() as patched:
        patched.setattr(feedforward, "train", _no_training)
        again = _run(content, style, tmp_path / "r2", "--ff-model-dir", str(models))
    assert again[("feedforward_train", None, "s0")]["status"] == "skipped"
    assert again[("feedforward_train", None, "s0")]["model_uri"] == uri
    assert again[("feedforward", "c0", "s0")]["status"] == "ok"
    # a changed training setting, and a changed style byte, each make a new model
    steps = _run(content, style, tmp_path / "r3", "--ff-model-dir", str(models), "--ff-train-steps", "5")
    (style / "s0.png").write_bytes(small_png(99, (48, 64)))
    restyled = _run(content, style, tmp_path / "r4", "--ff-model-dir", str(models))
    uris = {uri, steps[("feedforward_train", None, "s0")]["model_uri"], restyled[("feedforward_train", None, "s0")]["model_uri"]}
    assert len(uris) == 3 and all(r["status"] == "ok" for r in restyled.values())


def test_incremental_reuses_a_pairs_image_only_from_the_same_network(tmp_path, monkeypatch):
    """The same settings and inputs with another network (the model trained again elsewhere, or replaced)
    are other pixels: --incremental redoes those pairs, and reuses them from a run with the same network."""
    content, style = _catalog(tmp_path, contents=2, styles=1)
    pairs = lambda rows: {k[1]: r for k, r in rows.items() if k[0] == "feedforward"}  # noqa: E731
    first = pairs(_run(content, style, tmp_path / "r1", "--ff-model-dir", str(tmp_path / "m1")))
    same = pairs(_run(content, style, tmp_path / "r2", "--ff-model-dir", str(tmp_path / "m1"),
                      "--incremental", str(tmp_path / "r1")))
    assert {c: (r["status"], r["output_uri"]) for c, r in same.items()} == {
        c: ("skipped", r["output_uri"]) for c, r in first.items()}

    real_train = feedforward.train

    def other_network(*args, **kwargs):
        result = real_train(*args, **kwargs)
        bias = result.network.trainable_weights[-1]
        bias.assign(bias + 0.1)
        return result

    monkeypatch.setattr(feedforward, "train", other_network)
    other = pairs(_run(content, style, tmp_path / "r3", "--ff-model-dir", str(tmp_path / "m2"),
                       "--incremental", f"{tmp_path}/r[12]/report/*.parquet"))
    assert all(r["status"] == "ok" and r["output_uri"].startswith(str(tmp_path / "r3")) for r in other.values())
    assert {r["params_hash"] for r in other.values()}.isdisjoint(r["params_hash"] for r in first.values())


def test_unscored_pairs_have_no_loss_columns_and_the_training_row_has_the_panel(tmp_path):
    content, style = _catalog(tmp_path, contents=3, styles=1)
    rows = _run(content, style, tmp_path / "out", "--ff-score-fraction", "0")
    pairs = [r for k, r in rows.items() if k[0] == "feedforward"]
    assert len(pairs) == 3 and all(r["status"] == "ok" and r["loss_total"] is None for r in pairs)
    card = json.loads(open(rows[("feedforward_train", None, "s0")]["model_uri"].replace(".weights.h5", ".json")).read())
    heldout = card["heldout"]
    assert heldout["faces_photo"] == 0 and -1 <= heldout["ff_dependence"] <= 1 and -1 <= heldout["ff_edges"] <= 1
    assert {"nst_ssim", "ff_ssim", "nst_dependence", "ff_faces_kept", "nst_faces_kept"} <= set(heldout)


def test_keep_faces_blends_the_photo_back_inside_its_faces_and_nowhere_else(tmp_path):
    """--ff-keep-faces 1 against 0, one model: inside the face MTCNN finds in astronaut the written image
    is the photo, outside the face the two images are the same network output."""
    content, style = tmp_path / "content", tmp_path / "style"
    shutil.copytree(SAMPLES / "content", content)
    style.mkdir()
    (style / "s0.png").write_bytes(small_png(10, (48, 64)))
    models, size = str(tmp_path / "models"), ["--max-dim", "128"]
    written = {}
    for keep in ("0", "1"):
        row = _run(content, style, tmp_path / f"keep{keep}", *size, "--ff-model-dir", models, "--ff-keep-faces", keep)
        written[keep] = images.to_float01(images.decode_image(open(row[("feedforward", "astronaut", "s0")]["output_uri"], "rb").read()))
    photo = images.to_float01(images.resize_to_max_dim(sample_photo("astronaut.png"), 128))
    faces = quality.FaceDetector()(photo)
    assert len(faces) == 1
    mask = quality.face_mask(photo.shape, faces)[..., 0]
    inside, outside = mask > 0.999, mask == 0.0
    assert inside.sum() > 100 and outside.sum() > photo.shape[0] * photo.shape[1] // 2
    np.testing.assert_allclose(written["1"][inside], photo[inside], atol=1.5 / 255)
    assert np.abs(written["0"][inside] - photo[inside]).mean() > 5 * np.abs(written["1"][inside] - photo[inside]).mean()
    np.testing.assert_array_equal(written["1"][outside], written["0"][outside])


def test_the_quality_gate_refuses_a_model_above_the_ratio(tmp_path):
    content, style = _catalog(tmp_path, contents=3, styles=1)
    rows = _run(content, style, tmp_path / "out", "--ff-max-loss-ratio", "1e-9")
    assert rows[("feedforward_train", None, "s0")]["status"] == "ok"
    pairs = [r for k, r in rows.items() if k[0] == "feedforward"]
    assert len(pairs) == 3 and {(r["status"], r["error_type"]) for r in pairs} == {("error", "quality_gate")}
    assert "--ff-max-loss-ratio" in pairs[0]["error"]
    dead = [json.loads(line) for f in (tmp_path / "out" / "errors").glob("*.jsonl") for line in f.read_text().splitlines()]
    assert sorted(d["id"] for d in dead) == ["c0", "c1", "c2"]


def test_broken_training_photos_are_skipped_and_none_usable_is_one_error_row_per_style(tmp_path):
    content, style = _catalog(tmp_path, contents=3, styles=2)
    (content / "c9.png").write_bytes(b"not an image")
    rows = _run(content, style, tmp_path / "out")
    card_uri = rows[("feedforward_train", None, "s0")]["model_uri"].replace(".weights.h5", ".json")
    assert json.loads(open(card_uri).read())["training_set"]["broken"] == ["c9"]
    # no usable photo at all: the training unit of each style is the clear error; its pairs fail with it
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "x.png").write_bytes(b"garbage")
    rows = _run(content, style, tmp_path / "out2", "--ff-train-content", str(broken))
    for style_id in ("s0", "s1"):
        train_row = rows[("feedforward_train", None, style_id)]
        assert (train_row["status"], train_row["error_type"]) == ("error", "no_training_data")
        assert "no usable training photo" in train_row["error"]
    pairs = {k[1]: r["error_type"] for k, r in rows.items() if k[0] == "feedforward"}
    assert pairs == {"c0": "no_training_data", "c1": "no_training_data", "c2": "no_training_data", "c9": "decode_error"}


def test_the_apply_step_is_run_inference_with_a_keyed_handler(tmp_path):
    settings = FFSettings(width=8, residual_blocks=1)
    path = str(tmp_path / "net.weights.h5")
    save_network(build_network(settings), path)
    digest = hashlib.sha256(open(path, "rb").read()).hexdigest()  # what the model's card records
    photo = np.random.default_rng(0).random((20, 28, 3), dtype=np.float32)
    examples = [
        ("s", StyleExample(ManifestEntry("a", "a.png"), ManifestEntry("s", "s.png"), photo, path, {}, 0.0,
                           weights_sha256=digest)),
        ("s", StyleExample(ManifestEntry("b", "b.png"), ManifestEntry("s", "s.png"), photo[:13], path, {}, 0.0,
                           weights_sha256=digest)),
    ]

    def check(results):
        by_content = {prediction.example.content.id: prediction for _, prediction in results}
        assert sorted(by_content) == ["a", "b"]
        for content_id, shape in (("a", (20, 28, 3)), ("b", (13, 28, 3))):
            image, seconds = by_content[content_id].inference
            assert image.shape == shape and 0 <= image.min() and image.max() <= 1 and seconds >= 0
            assert by_content[content_id].model_id == path

    with TestPipeline() as p:
        results = p | beam.Create(examples) | RunInference(KeyedModelHandler(StyleNetworkHandler(settings)))
        assert_that(results, check)


def test_samples_run_with_every_method_side_by_side(tmp_path):
    """--method takes a comma list; nst and feedforward rows of the same pairs sit side by side."""
    content = tmp_path / "content"
    shutil.copytree(SAMPLES / "content", content)
    rows = _run(content, SAMPLES / "style", tmp_path / "out", "--method", "classical,nst,feedforward", "--steps", "2")
    methods = sorted({k[0] for k in rows})
    assert methods == ["classical", "feedforward", "feedforward_train", "nst"]
    assert len(rows) == 4 + 16 + 16 + 4 and {r["status"] for r in rows.values()} == {"ok"}
    # the contact sheet: nst and feedforward of each style side by side, the models in their own table
    page = Page(render_contact_sheet(str(tmp_path / "out")))
    labels = [th["text"].strip() for th in page.find("th", cls="col")]
    assert "pop_art (nst)" in " ".join(labels) and "pop_art (feedforward)" in " ".join(labels)
    models = page.find("tr", cls="model")
    assert len(models) == 4 and all("0/0" in row["text"] for row in models)  # the panel: no face in 2 held-out photos
    assert len(page.find("img")) == 4 + 8 + 4 + 16 + 16  # photos, a style per column, classical, nst, feedforward
