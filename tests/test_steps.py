"""Each method's steps alone, the Beam way: TestPipeline, Create -> one step -> assert_that."""
import apache_beam as beam
import numpy as np
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.utils import shared

from pipeline.io.manifests import ManifestEntry
from pipeline.methods.classical import CartoonizeFn, TriageFn, classical_params_hash
from pipeline.methods.nst import NSTJob, StyleTargetsFn, StylizeFn
from pipeline.pairs import PairTriageFn, StyleTargets
from pipeline.units import DEAD_LETTERS, ROWS, RunContext, UnitContext
from tests.conftest import small_png
from transforms.cartoon import PRESETS, cartoonize
from transforms.images import decode_image, encode_png
from transforms.nst.settings import NSTSettings

PARAMS = PRESETS["seed"]
JOB = NSTJob(weights="random", settings=NSTSettings(steps=2, max_dim=32, loss_every=0))


def _entries(tmp_path, *names):
    entries = []
    for seed, name in enumerate(names):
        path = tmp_path / f"{name}.png"
        path.write_bytes(small_png(seed))
        entries.append(ManifestEntry(id=name, uri=str(path)))
    return entries


def _units(tmp_path, method, **run):
    return UnitContext(RunContext("r1", str(tmp_path / "out"), **run), method)


def _statuses(rows):
    return sorted((row["content_id"], row["style_id"], row["status"], row["error_type"]) for row in rows)


def test_triage_passes_usable_entries_and_fails_bad_rows(tmp_path):
    good, = _entries(tmp_path, "a")
    bad = ManifestEntry(id="b", uri="", error="row 2 has no uri")
    with TestPipeline() as p:
        out = p | beam.Create([good, bad]) | beam.ParDo(TriageFn(_units(tmp_path, "classical"), PARAMS)).with_outputs(
            ROWS, DEAD_LETTERS, main="todo"
        )
        assert_that(out.todo, equal_to([good]), label="Todo")
        assert_that(out[ROWS] | beam.Map(lambda r: (r["content_id"], r["status"], r["error_type"])),
                    equal_to([("b", "error", "bad_manifest_row")]), label="Rows")
        assert_that(out[DEAD_LETTERS] | beam.Map(lambda d: (d["id"], d["error_type"])),
                    equal_to([("b", "bad_manifest_row")]), label="DeadLetters")


def test_cartoonize_writes_the_filtered_image_and_an_ok_row(tmp_path):
    entry, = _entries(tmp_path, "a")
    units = UnitContext(RunContext("r1", str(tmp_path / "out")), "classical", {"preset": "seed"},
                        classical_params_hash(PARAMS))
    with TestPipeline() as p:
        rows = p | beam.Create([entry]) | beam.ParDo(CartoonizeFn(units, PARAMS)).with_outputs(DEAD_LETTERS, main="rows")
        assert_that(rows.rows | beam.Map(lambda r: (r["status"], r["preset"], r["params_hash"], r["height"], r["width"])),
                    equal_to([("ok", "seed", classical_params_hash(PARAMS), 40, 56)]))
    written = (tmp_path / "out" / "images" / "classical" / "a.png").read_bytes()
    assert written == encode_png(cartoonize(decode_image(small_png(0)), PARAMS))


def test_style_targets_are_one_gram_per_style_layer_or_the_reason(tmp_path):
    style, = _entries(tmp_path, "s")
    missing = ManifestEntry(id="gone", uri=str(tmp_path / "gone.png"))

    def check(targets):
        by_id = {t.entry.id: t for t in targets}
        assert [g.shape for g in by_id["s"].grams] == [(64, 64), (128, 128), (256, 256), (512, 512), (512, 512)]
        assert by_id["s"].error is None and len(by_id["s"].sha256) == 64
        assert by_id["gone"].grams is None and by_id["gone"].error[0] == "not_found"

    with TestPipeline() as p:
        targets = p | beam.Create([style, missing]) | beam.ParDo(
            StyleTargetsFn(_units(tmp_path, "nst"), shared.Shared(), JOB)
        )
        assert_that(targets, check)


def test_pair_triage_fails_every_pair_of_a_bad_content_row(tmp_path):
    styles = [ManifestEntry(id="s1", uri="s1.png"), ManifestEntry(id="s2", uri="s2.png")]
    good = ManifestEntry(id="c", uri="c.png")
    bad = ManifestEntry(id="x", uri="", error="no uri")
    with TestPipeline() as p:
        style_side = beam.pvalue.AsList(p | "Styles" >> beam.Create(styles))
        out = p | beam.Create([good, bad]) | beam.ParDo(
            PairTriageFn(_units(tmp_path, "nst"), JOB.recipe), styles=style_side
        ).with_outputs(ROWS, DEAD_LETTERS, main="todo")
        assert_that(out.todo, equal_to([good]), label="Todo")
        assert_that(out[ROWS] | beam.Map(lambda r: (r["content_id"], r["style_id"], r["status"], r["error_type"])),
                    equal_to([("x", "s1", "error", "bad_manifest_row"), ("x", "s2", "error", "bad_manifest_row")]),
                    label="Rows")


@pytest.mark.slow
def test_stylize_gives_one_row_per_pair_with_losses_and_fails_a_broken_style(tmp_path):
    content, = _entries(tmp_path, "c")
    grams = [np.eye(n, dtype=np.float32) for n in (64, 128, 256, 512, 512)]
    styles = [
        StyleTargets(ManifestEntry(id="s1", uri="s1.png"), grams, None, "a" * 64),
        StyleTargets(ManifestEntry(id="s2", uri="s2.png"), None, ("decode_error", "cannot decode image"), "b" * 64),
    ]

    def check(rows):
        assert _statuses(rows) == [("c", "s1", "ok", None), ("c", "s2", "error", "decode_error")]
        ok, failed = sorted(rows, key=lambda r: r["style_id"])
        assert ok["loss_total"] > 0 and (ok["height"], ok["width"]) == (23, 32)  # long side at --max-dim 32
        assert ok["backend"] and ok["device"] and ok["params_hash"] == JOB.params_hash()
        # every failure site of a pair carries the same columns as its ok rows
        assert failed["style_sha256"] == "b" * 64 and failed["content_sha256"] == ok["content_sha256"]

    with TestPipeline() as p:
        style_side = beam.pvalue.AsList(p | "Styles" >> beam.Create(styles))
        out = p | beam.Create([content]) | beam.ParDo(
            StylizeFn(_units(tmp_path, "nst"), shared.Shared(), JOB), styles=style_side
        ).with_outputs(DEAD_LETTERS, "curves", main="rows")
        assert_that(out.rows, check)
    assert (tmp_path / "out" / "images" / "nst" / "s1" / "c.png").is_file()
