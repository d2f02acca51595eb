"""The NST style controls through the pipeline: flags, report columns, error rows."""
import hashlib
import json
import pathlib

import pyarrow.parquet as pq
import pytest

from pipeline import app
from tests.conftest import small_png
from transforms.images import decode_image

pytestmark = pytest.mark.slow  # whole pipelines, real training or subprocesses: `make test-fast` leaves these out

NST = ["--method", "nst", "--weights", "random", "--steps", "2", "--max_dim", "32"]


def _catalog(root: pathlib.Path, contents=2, styles=2):
    for i in range(contents):
        (root / "c").mkdir(parents=True, exist_ok=True)
        (root / "c" / f"c{i}.png").write_bytes(small_png(i))
    for i in range(styles):
        (root / "s").mkdir(parents=True, exist_ok=True)
        (root / "s" / f"s{i}.png").write_bytes(small_png(20 + i))
    return ["--content", str(root / "c"), "--style", str(root / "s")]


def _rows(argv):
    plan, _ = app.run(argv)
    return sorted(pq.read_table(plan.toon.output + "/report").to_pylist(), key=lambda r: (r["content_id"], r["style_id"]))


def _digest(row):
    return hashlib.sha256(pathlib.Path(row["output_uri"]).read_bytes()).hexdigest()


def test_a_style_blend_is_one_unit_per_content_and_is_recorded(tmp_path):
    catalog = _catalog(tmp_path)
    rows = _rows(catalog + NST + ["--style-blend", "s0:0.7,s1:0.3", "--output", str(tmp_path / "o")])
    assert [(r["content_id"], r["style_id"], r["status"]) for r in rows] == [
        ("c0", "s0:0.7+s1:0.3", "ok"), ("c1", "s0:0.7+s1:0.3", "ok")
    ]
    assert {r["style_blend"] for r in rows} == {"s0:0.7,s1:0.3"}
    again = _rows(catalog + NST + ["--style-blend", "s0:0.7,s1:0.3", "--output", str(tmp_path / "o"), "--skip-existing"])
    assert {(r["status"], r["style_blend"]) for r in again} == {("skipped", "s0:0.7,s1:0.3")}
    missing = _rows(catalog + NST + ["--style-blend", "s0:0.5,nope:0.5", "--output", str(tmp_path / "m")])
    assert {(r["status"], r["error_type"]) for r in missing} == {("error", "bad_manifest_row")}
    assert "nope" in missing[0]["error"]


def test_seeded_noise_init_repeats_byte_for_byte_and_the_seed_is_recorded(tmp_path):
    argv = _catalog(tmp_path, contents=1, styles=2) + NST + ["--init", "noise", "--seed", "5"]
    first = _rows(argv + ["--output", str(tmp_path / "a")])
    again = _rows(argv + ["--output", str(tmp_path / "b")])
    other = _rows(argv[:-1] + ["6", "--output", str(tmp_path / "other")])
    assert [_digest(r) for r in first] == [_digest(r) for r in again]
    assert [_digest(r) for r in first] != [_digest(r) for r in other]
    assert _digest(first[0]) != _digest(first[1])  # the pair's ids seed it too
    assert {(r["seed"], r["init"]) for r in first} == {(5, "noise")}
    assert first[0]["params_hash"] == again[0]["params_hash"] != other[0]["params_hash"]


def test_original_output_size_and_memory_refusal(tmp_path):
    argv = _catalog(tmp_path, contents=1, styles=1) + NST + ["--output-size", "original", "--refine-steps", "2"]
    (row,) = _rows(argv + ["--preserve-colors", "--output", str(tmp_path / "o")])
    assert row["status"] == "ok" and (row["height"], row["width"]) == (40, 56)  # small_png's own size
    assert decode_image(pathlib.Path(row["output_uri"]).read_bytes()).shape == (40, 56, 3)
    assert row["preserve_colors"] is True and row["output_size"] == "original"
    (refused,) = _rows(argv + ["--max-memory-gb", "0.0001", "--output", str(tmp_path / "r")])
    assert (refused["status"], refused["error_type"]) == ("error", "too_large")
    assert "memory" in refused["error"]


def test_bad_control_values_stop_the_run_before_any_work(tmp_path):
    for flags in (["--init", "sideways"], ["--style-strength", "-1"], ["--style-blend", "a:x"]):
        try:
            app.plan_run(_catalog(tmp_path) + NST + flags + ["--output", str(tmp_path / "o")])
        except app.UsageError:
            continue
        raise AssertionError(f"{flags} was accepted")


def test_loss_curves_are_written_for_every_pair(tmp_path):
    out = tmp_path / "o"
    rows = _rows(_catalog(tmp_path) + NST + ["--loss-every", "1", "--output", str(out)])
    records = [json.loads(line) for path in sorted((out / "curves").glob("*.jsonl")) for line in path.read_text().splitlines()]
    assert sorted((r["content_id"], r["style_id"]) for r in records) == [(r["content_id"], r["style_id"]) for r in rows]
    for record in records:
        assert record["step_every"] == 1 and len(record["losses"]) == 3  # steps 0, 1 and 2


def test_a_pair_whose_loss_turns_nan_is_an_error_row_never_a_black_image(tmp_path):
    out = tmp_path / "o"
    rows = _rows(_catalog(tmp_path, contents=1, styles=1) + NST + ["--learning-rate", "nan", "--output", str(out)])
    assert [(r["status"], r["error_type"]) for r in rows] == [("error", "non_finite_loss")]
    assert "loss became nan" in rows[0]["error"] and rows[0]["output_uri"] is None
    assert not (out / "images").exists()
