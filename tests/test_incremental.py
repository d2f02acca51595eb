"""--incremental: units done in earlier runs with the same input bytes, method and pixel settings are
"skipped" rows naming the earlier image; new, changed and re-parametrised units run; deleted ones have no
row. Catalogs are small generated images in tmp_path."""
import pathlib

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from pipeline import app, cli
from pipeline.io import outputs
from pipeline.methods import nst
from pipeline.methods.classical import classical_params_hash
from pipeline.reporting.incremental import read_previous_rows
from pipeline.reporting.schema import REPORT_SCHEMA, read_report
from tests.conftest import small_png
from transforms.cartoon import PRESETS
from transforms.nst.optimize import NSTSettings

pytestmark = pytest.mark.slow  # whole pipelines, real training or subprocesses: `make test-fast` leaves these out

NST = ["--method", "nst", "--weights", "random", "--steps", "2", "--max_dim", "32"]


def _run(folder, out, *extra, expected):
    """A run on a TestPipeline; asserts (content_id, style_id, status) of every row; returns the rows
    by (content_id, style_id)."""
    def check(rows):
        assert_that(rows | "Keys" >> beam.Map(lambda r: (r["content_id"], r["style_id"], r["status"])), equal_to(expected))

    app.run(["--content", str(folder), "--output", str(out), "--run_id", out.name, *extra],
            test_pipeline=TestPipeline(), test=check)
    return {(r["content_id"], r["style_id"]): r for r in read_report(str(out)).to_pylist()}


def _reports(tmp_path, runs: str):
    """The glob of the reports of `runs` (a glob of run folder names)."""
    return f"{tmp_path}/{runs}/report/*.parquet"


def test_incremental_selection_is_exact_on_a_small_catalog(tmp_path):
    catalog = tmp_path / "catalog"
    catalog.mkdir()
    for seed, name in enumerate("abc"):
        (catalog / f"{name}.png").write_bytes(small_png(seed))
    run1 = _run(catalog, tmp_path / "run1", expected=[(n, None, "ok") for n in "abc"])
    for row in run1.values():  # every ok row says what made it
        assert len(row["content_sha256"]) == 64 and len(row["params_hash"]) == 64 and row["style_sha256"] is None

    (catalog / "b.png").write_bytes(small_png(11))  # changed bytes, same name
    (catalog / "c.png").unlink()  # deleted
    (catalog / "d.png").write_bytes(small_png(3))  # new
    run2 = _run(catalog, tmp_path / "run2", "--incremental", _reports(tmp_path, "run1"),
                expected=[("a", None, "skipped"), ("b", None, "ok"), ("d", None, "ok")])
    a = run2[("a", None)]
    assert a["output_uri"] == run1[("a", None)]["output_uri"]  # the earlier image, not a copy
    assert (a["height"], a["width"], a["content_sha256"], a["params_hash"]) == tuple(
        run1[("a", None)][k] for k in ("height", "width", "content_sha256", "params_hash"))
    assert not (tmp_path / "run2" / "images" / "classical" / "a.png").exists()
    assert run2[("b", None)]["content_sha256"] != run1[("b", None)]["content_sha256"]

    # A pixel parameter changed: nothing earlier matches, over both earlier reports.
    both = _reports(tmp_path, "run[12]")
    run3 = _run(catalog, tmp_path / "run3", "--incremental", both, "--cartoon-block-size", "11",
                expected=[(n, None, "ok") for n in "abd"])
    assert len({r["params_hash"] for r in run3.values()}) == 1 and run3[("a", None)]["params_hash"] != a["params_hash"]

    # Unchanged re-run over every earlier report (globbed): all skipped, chaining through run2's skipped row.
    run4 = _run(catalog, tmp_path / "run4", "--incremental", f"{tmp_path}/run*/report/*.parquet",
                "--cartoon-block-size", "11", expected=[(n, None, "skipped") for n in "abd"])
    assert {k: r["output_uri"] for k, r in run4.items()} == {k: r["output_uri"] for k, r in run3.items()}
    # The same pixels under another name (preset + overrides equal to comic) are the same work.
    comic = PRESETS["comic"]
    same_as_seed = ["--preset", "comic"] + [
        f"--cartoon-{name.replace('_', '-')}={getattr(PRESETS['seed'], name)}" for name in comic.__dataclass_fields__
    ]
    run5 = _run(catalog, tmp_path / "run5", "--incremental", _reports(tmp_path, "run2"), *same_as_seed,
                expected=[("a", None, "skipped"), ("b", None, "skipped"), ("d", None, "skipped")])
    assert run5[("a", None)]["output_uri"] == run1[("a", None)]["output_uri"]


def _must_not_run(*args, **kwargs):
    raise AssertionError("computed a unit that was done earlier")


def test_nst_pairs_skip_one_by_one_and_a_changed_style_recomputes(tmp_path):
    content, styles = tmp_path / "c", tmp_path / "s"
    content.mkdir()
    styles.mkdir()
    (content / "c0.png").write_bytes(small_png(0))
    for i in range(2):
        (styles / f"s{i}.png").write_bytes(small_png(10 + i))
    argv = ["--style", str(styles), *NST]
    run1 = _run(content, tmp_path / "run1", *argv, expected=[("c0", "s0", "ok"), ("c0", "s1", "ok")])
    assert all(len(r["style_sha256"]) == 64 for r in run1.values())

    (styles / "s1.png").write_bytes(small_png(21))
    run2 = _run(content, tmp_path / "run2", *argv, "--incremental", str(tmp_path / "run1"),  # a run folder
                expected=[("c0", "s0", "skipped"), ("c0", "s1", "ok")])
    assert run2[("c0", "s0")]["output_uri"] == run1[("c0", "s0")]["output_uri"]
    assert run2[("c0", "s1")]["output_uri"].startswith(str(tmp_path / "run2"))

    # Everything done: no content targets, no optimisation. Then a changed step count recomputes every pair.
    with pytest.MonkeyPatch.context() as mp:  # DirectRunner runs the steps in this process
        mp.setattr(nst, "content_targets_for", _must_not_run)
        mp.setattr(nst, "stylize_content", _must_not_run)
        run3 = _run(content, tmp_path / "run3", *argv, "--incremental", _reports(tmp_path, "run2"),
                    expected=[("c0", "s0", "skipped"), ("c0", "s1", "skipped")])
    assert run3[("c0", "s0")]["output_uri"] == run1[("c0", "s0")]["output_uri"]
    _run(content, tmp_path / "run4", "--style", str(styles), *NST, "--steps", "3", "--incremental", _reports(tmp_path, "run3"),
         expected=[("c0", "s0", "ok"), ("c0", "s1", "ok")])


def test_params_hash_takes_every_field_and_never_the_uris():
    def nst_params_hash(extractor, weights, settings):
        return nst.NSTJob(extractor, weights, settings).params_hash()

    base = nst_params_hash("vgg19", "random", NSTSettings())
    for field, value in (("steps", 7), ("tv_weight", 1.0), ("optimizer", "lbfgs"), ("scales", "0.5:0.5,1:0.5")):
        changed = NSTSettings(**{field: value})
        assert nst_params_hash("vgg19", "random", changed) != base, field
    assert nst_params_hash("vgg19", "imagenet", NSTSettings()) != base
    assert classical_params_hash(PRESETS["seed"]) != classical_params_hash(PRESETS["comic"])
    assert outputs.params_hash("classical", params=PRESETS["seed"]) == classical_params_hash(PRESETS["seed"])


def test_old_reports_without_hashes_match_nothing_and_bad_ones_stop_the_run(tmp_path, capsys):
    (tmp_path / "a.png").write_bytes(small_png(0))
    old = tmp_path / "old" / "report"
    old.mkdir(parents=True)
    legacy = pa.schema([f for f in REPORT_SCHEMA if f.name not in ("content_sha256", "style_sha256", "params_hash")])
    rows = [{"content_id": "a", "method": "classical", "status": "ok", "output_uri": "x.png"}]
    pq.write_table(pa.Table.from_pylist(rows, schema=legacy), old / "part-0.parquet")
    assert read_previous_rows(str(old / "part-0.parquet")) == []
    base = ["run", "--content", str(tmp_path / "a.png")]
    assert cli.main(base + ["--output", str(tmp_path / "r1"), "--incremental", str(old / "*.parquet")]) == 0
    assert "1 units: 1 ok, 0 skipped" in capsys.readouterr().out

    # The very first scheduled run: the glob matches nothing yet. A warning, and everything runs.
    assert cli.main(base + ["--output", str(tmp_path / "r2"), "--incremental", str(tmp_path / "none/*/report/*.parquet")]) == 0
    assert "1 ok, 0 skipped" in capsys.readouterr().out
    assert cli.main(base + ["--output", str(tmp_path / "r3"), "--incremental", str(tmp_path / "r*/report/*.parquet")]) == 0
    assert "1 units: 0 ok, 1 skipped, 0 error" in capsys.readouterr().out

    (old / "part-1.parquet").write_bytes(b"not parquet")
    assert cli.main(base + ["--output", str(tmp_path / "r4"), "--incremental", str(old)]) == 2
    err = capsys.readouterr().err
    assert "--incremental" in err and "part-1.parquet" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r4").exists()


def test_skip_existing_rows_carry_the_hashes_their_sidecars_recorded(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.png").write_bytes(small_png(0))
    first = _run(tmp_path / "in", tmp_path / "out", expected=[("a", None, "ok")])
    again = _run(tmp_path / "in", tmp_path / "out", "--skip-existing", expected=[("a", None, "skipped")])
    keys = ("content_sha256", "style_sha256", "params_hash", "output_uri")
    assert [again[("a", None)][k] for k in keys] == [first[("a", None)][k] for k in keys]
    # So a scheduled run after a resumed one still finds them.
    later = _run(tmp_path / "in", tmp_path / "later", "--incremental", str(tmp_path / "out"), expected=[("a", None, "skipped")])
    assert pathlib.Path(later[("a", None)]["output_uri"]).parent == tmp_path / "out" / "images" / "classical"
