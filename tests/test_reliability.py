"""Issue 6 end to end: a catalog mixing every bad input with good images runs to the end with one
report row per unit (right status and error_type), dead letters, nothing written outside --output,
and a SIGKILLed run that resumes with --skip-existing to a complete, correct output."""
import errno
import glob
import hashlib
import io
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from pipeline import app, cli
from pipeline.reporting.schema import read_report
from tests.conftest import ROOT, communicate_or_fail, small_png
from tests.httpserver import serve
from tests.test_images import jpeg_bomb, png_bomb
from transforms.cartoon import PRESETS, cartoonize
from transforms.images import decode_image, encode_png


def _save(img: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kwargs)
    return buf.getvalue()


def _photo(seed: int, size=(48, 64)) -> Image.Image:
    return Image.open(io.BytesIO(small_png(seed, size)))


def _files(root: pathlib.Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def _catalog(folder: pathlib.Path, http_base: str) -> tuple[bytes, list[tuple[str, str, str | None]]]:
    """Writes the catalog's files; returns the CSV manifest (bytes) and the expected
    (content_id, status, error_type) of each of its rows."""
    folder.mkdir()
    (folder / "dir.jpg").mkdir()
    files = {
        "good.png": _save(_photo(1), "PNG"),
        "good2.jpg": _save(_photo(2), "JPEG"),
        "spaces and é.png": _save(_photo(3), "PNG"),
        "gray.png": _save(_photo(4).convert("L"), "PNG"),
        "gray16.png": _save(Image.fromarray(np.full((20, 30), 40000, np.uint16)), "PNG"),
        "palette.png": _save(_photo(5).convert("P", palette=Image.Palette.ADAPTIVE), "PNG"),
        "rgba.png": _save(_photo(6).convert("RGBA"), "PNG"),
        "cmyk.jpg": _save(_photo(7).convert("CMYK"), "JPEG"),
        "exif.jpg": _save(_photo(8, (30, 50)), "JPEG", exif=_rotated()),
        "anim.gif": _save(_photo(9), "GIF", save_all=True, append_images=[_photo(10)], duration=50),
        "photo.webp": _save(_photo(11), "WEBP"),
        "photo2.tiff": _save(_photo(12), "TIFF"),
        "one.png": _save(Image.new("RGB", (1, 1), "red"), "PNG"),
        "strip.png": _save(_photo(13, (1, 4000)), "PNG"),
        "zero.jpg": b"",
        "text.jpg": b"just some text saved as .jpg\n",
        "trunc.jpg": _save(_photo(14), "JPEG")[:300],
        "trunc2.png": _save(_photo(15), "PNG")[:500],
        "bomb.png": png_bomb(),
        "bomb2.jpg": jpeg_bomb(),
        "heavy.bmp": _save(Image.new("RGB", (300, 300), "blue"), "BMP"),  # 270 KB > --max-input-bytes
        "gray16dark.png": _save(Image.fromarray(np.full((20, 30), 200, np.uint16)), "PNG"),  # all values <= 255
    }
    for name, data in files.items():
        (folder / name).write_bytes(data)
    os.mkfifo(folder / "fifo.png")  # opening it would wait for a writer forever
    (folder / os.fsdecode(b"caf\xe9.png")).write_bytes(_save(_photo(16), "PNG"))  # a Latin-1 file name

    ok, decode, large = ("ok", None), ("error", "decode_error"), ("error", "too_large")
    rows = [  # (id column, uri column, expected)
        ("", "good.png", ok), ("", "good2.jpg", ok), ("", "spaces and é.png", ok), ("", "gray.png", ok),
        ("", "gray16.png", ok), ("", "palette.png", ok), ("", "rgba.png", ok), ("", "cmyk.jpg", ok),
        ("", "exif.jpg", ok), ("", "anim.gif", ok), ("", "photo.webp", ok), ("", "photo2.tiff", ok),
        ("", "one.png", ok), ("", "strip.png", ok),
        ("", "zero.jpg", decode), ("", "text.jpg", decode), ("", "trunc.jpg", decode), ("", "trunc2.png", decode),
        ("", "bomb.png", large), ("", "bomb2.jpg", large), ("", "heavy.bmp", large),
        ("", "missing.png", ("error", "not_found")), ("", "dir.jpg", ("error", "not_a_file")),
        ("", "ftp://example.com/x.png", ("error", "unsupported_scheme")),
        ("", f"{http_base}/ok.png", ok), ("web404", f"{http_base}/missing.png", ("error", "not_found")),
        ("web500", f"{http_base}/error.png", ("error", "http_error")),
        ("", f"{http_base}/slow.png", ("error", "timeout")),
        ("good", "good2.jpg", ("error", "bad_manifest_row")),  # "good" is good.png's id already
        ("nouri", "", ("error", "bad_manifest_row")),
        ("../../escape", "good.png", ok), ("/abs/evil", "good.png", ok), ("sub/dir/id", "good.png", ok),
        # issue 10: a FIFO, a NUL byte, a malformed URL, dark 16-bit gray, an id shaped like another's file name
        ("", "fifo.png", ("error", "not_a_file")), ("nul", "a\0b.png", ("error", "bad_manifest_row")),
        ("", "http://127.1:99999/port.png", ("error", "bad_manifest_row")), ("", "gray16dark.png", ok),
        ("a/b", "good.png", ok), ("a_b-3ec69c85", "good2.jpg", ok),
    ]
    lines = [b"id,uri,note"]
    expected = []
    for number, (row_id, uri, (status, error_type)) in enumerate(rows):
        lines.append(f"{row_id},{uri},n{number}".encode())
        if number % 7 == 3:
            lines.append(b"")  # blank lines are skipped
        content_id = row_id or os.path.splitext(os.path.basename(uri))[0]
        expected.append((content_id, status, error_type))
    lines.append(b",caf\xe9.png,latin1")  # non-UTF-8 bytes in the manifest, naming a real file
    expected.append(("caf\\udce9", "ok", None))
    return b"\n".join(lines) + b"\n", expected


def _rotated() -> Image.Exif:
    exif = Image.Exif()
    exif[0x0112] = 6
    return exif


@pytest.mark.slow
def test_a_catalog_of_bad_inputs_runs_to_the_end_with_one_row_per_unit(tmp_path):
    with serve(small_png(0)) as (base, _):
        manifest, expected = _catalog(tmp_path / "in", base)
        (tmp_path / "in" / "list.csv").write_bytes(manifest)
        before = _files(tmp_path)
        out = tmp_path / "out"
        app.run([
            "--content", str(tmp_path / "in" / "list.csv"), "--output", str(out), "--run_id", "bad",
            "--max-input-bytes", "200000", "--http-timeout", "0.5", "--http-retries", "1",
            "--http-allowed-addresses", "any",
        ])
    rows = read_report(str(out)).to_pylist()
    assert sorted((r["content_id"], r["status"], r["error_type"]) for r in rows) == sorted(expected)

    for row in rows:
        if row["status"] == "error":  # one line that names the input
            assert "\n" not in row["error"] and row["output_uri"] is None
            assert (row["content_uri"] or row["content_id"]) in row["error"], row
        else:
            image = decode_image(pathlib.Path(row["output_uri"]).read_bytes())
            assert image.shape == (row["height"], row["width"], 3)
            assert pathlib.Path(row["output_uri"] + ".json").exists()
    by_id = {r["content_id"]: r for r in rows if r["status"] == "ok"}
    assert (by_id["exif"]["height"], by_id["exif"]["width"]) == (50, 30)  # EXIF orientation applied
    assert (by_id["strip"]["height"], by_id["strip"]["width"]) == (1, 4000)

    # Nothing outside --output; inside it, only images with their sidecars, the report and the errors.
    created = _files(tmp_path) - before
    assert created and all(path == "out" or path.startswith("out/") for path in created)
    names = sorted(os.listdir(out / "images" / "classical"))
    assert len(names) == 2 * sum(r["status"] == "ok" for r in rows)
    assert all(n.endswith((".png", ".png.json")) and not n.startswith(".") for n in names)

    # Dead letters: one JSON line per error row, with the original manifest row to fix and re-submit.
    letters = [json.loads(line) for path in glob.glob(str(out / "errors" / "*.jsonl")) for line in open(path)]
    errors = [r for r in rows if r["status"] == "error"]
    assert sorted(x["error_type"] for x in letters) == sorted(r["error_type"] for r in errors)
    web500 = next(x for x in letters if x["id"] == "web500")
    assert web500["manifest_row"] == {"id": "web500", "uri": f"{base}/error.png", "note": "n26"}
    assert web500["uri"] == f"{base}/error.png" and "after 2 attempts" in web500["error"]


@pytest.mark.slow
def test_nst_pairs_resume_and_fail_one_by_one(memfs, tmp_path):
    memfs.pipe("/c/c0.png", small_png(0))
    memfs.pipe("/c/strip.png", small_png(1, (1, 400)))  # 1 x 32 at --max_dim 32: too small for VGG19
    for i in range(2):
        memfs.pipe(f"/s/s{i}.png", small_png(10 + i))
    memfs.pipe("/s/zero.png", b"")
    argv = [
        "--content", "memory://c", "--style", "memory://s", "--output", str(tmp_path), "--method", "nst",
        "--weights", "random", "--steps", "2", "--max_dim", "32",
    ]
    app.run(argv)
    first = {(r["content_id"], r["style_id"]): (r["status"], r["error_type"]) for r in read_report(str(tmp_path)).to_pylist()}
    assert first == {
        ("c0", "s0"): ("ok", None), ("c0", "s1"): ("ok", None), ("c0", "zero"): ("error", "decode_error"),
        ("strip", "s0"): ("error", "too_small"), ("strip", "s1"): ("error", "too_small"),
        ("strip", "zero"): ("error", "too_small"),
    }
    letters = [json.loads(line) for path in glob.glob(str(tmp_path / "errors" / "*.jsonl")) for line in open(path)]
    zero = next(x for x in letters if x["id"] == "c0")
    assert zero["style_manifest_row"] == {"uri": "memory:///s/zero.png"} and zero["error"].startswith("style memory:///s/zero.png")

    os.remove(tmp_path / "images" / "nst" / "s1" / "c0.png.json")  # as if killed before the sidecar
    app.run(argv + ["--skip-existing"])
    second = {(r["content_id"], r["style_id"]): (r["status"], r["error_type"]) for r in read_report(str(tmp_path)).to_pylist()}
    assert second == {**first, ("c0", "s0"): ("skipped", None)}
    skipped = next(r for r in read_report(str(tmp_path)).to_pylist() if r["status"] == "skipped")
    assert skipped["output_uri"].endswith("s0/c0.png") and max(skipped["height"], skipped["width"]) == 32


def _cli(*args):
    return subprocess.Popen(
        [sys.executable, "-m", "pipeline", "run", *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, start_new_session=True,
    )


@pytest.mark.slow
def test_a_sigkilled_run_resumes_with_skip_existing(tmp_path):
    count = 32
    folder = tmp_path / "in"
    folder.mkdir()
    rng = np.random.default_rng(0)
    sources = {}
    for i in range(count):
        rgb = np.clip(rng.normal(128, 60, (256, 256, 3)), 0, 255).astype(np.uint8)
        rgb[64:192, 32 + i : 128 + i] = rng.integers(0, 255, 3)
        sources[f"img{i:02d}"] = rgb
        (folder / f"img{i:02d}.png").write_bytes(encode_png(rgb))
    out = tmp_path / "out"
    images = out / "images" / "classical"
    args = ["--content", str(folder), "--output", str(out), "--preset", "comic"]

    proc = _cli(*args)
    deadline = time.monotonic() + 120
    while len(glob.glob(str(images / "*.png.json"))) < 4:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the first run wrote nothing in time"
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate()
    done = {os.path.basename(p)[: -len(".png.json")] for p in glob.glob(str(images / "*.png.json"))}
    assert 4 <= len(done) < count, "the run was not killed part-way"
    assert not (out / "report").exists() or not glob.glob(str(out / "report" / "*.parquet"))

    # Damage one finished image the way another tool might; its sidecar no longer matches.
    damaged = sorted(done)[0]
    (images / f"{damaged}.png").write_bytes((images / f"{damaged}.png").read_bytes()[:100])
    # What a kill between a write and its rename leaves (the kill above may or may not have hit one).
    (images / f"{damaged}.png.0123456789ab.tmp").write_bytes(b"half an image")

    proc = _cli(*args, "--skip-existing")
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr
    rows = read_report(str(out)).to_pylist()
    assert sorted(r["content_id"] for r in rows) == sorted(sources)  # every unit exactly once
    status = {r["content_id"]: r["status"] for r in rows}
    assert {i for i, s in status.items() if s == "skipped"} == done - {damaged}
    assert f"{count - len(done) + 1} ok, {len(done) - 1} skipped, 0 error" in stdout
    leftovers = [str(p.relative_to(out)) for p in out.rglob("*") if p.name.endswith(".tmp") or "beam-temp" in p.name]
    assert leftovers == []  # no temporary files of either run remain
    for content_id in sources:
        written = (images / f"{content_id}.png").read_bytes()
        assert decode_image(written).shape == (256, 256, 3)
    # Same bytes as computing afresh, whether the image came from the killed run or the resumed one.
    for content_id in (damaged, sorted(done)[-1], sorted(set(sources) - done)[0]):
        expected = encode_png(cartoonize(sources[content_id], PRESETS["comic"]))
        assert (images / f"{content_id}.png").read_bytes() == expected, content_id


def test_max_error_fraction_sets_the_exit_status(tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.png").write_bytes(small_png(0))
    (folder / "b.png").write_bytes(b"broken")
    base = ["run", "--content", str(folder), "--output", str(tmp_path / "out")]
    assert cli.main(base + ["--max-error-fraction", "0.6"]) == 0
    assert "2 units: 1 ok, 0 skipped, 1 error" in capsys.readouterr().out
    assert cli.main(base + ["--max-error-fraction", "0.25", "--skip-existing"]) == 1
    captured = capsys.readouterr()
    assert "1 ok" not in captured.out and "1 skipped" in captured.out and "1 decode_error" in captured.out
    assert "1 of 2 units failed (50.0%), more than --max-error-fraction 0.25" in captured.err


@pytest.mark.parametrize(
    "content, extra, message",
    [
        ("empty.txt", [], "no images found"),
        ("nouri.csv", [], "no 'uri' column"),
        ("list.xlsx", [], "unknown manifest format"),
        ("ftp://host/list.txt", [], "--content ftp://host/list.txt: scheme 'ftp' is not allowed"),
        ("a.png", ["--allowed-schemes", "memory"], "scheme 'file' is not allowed"),
        ("a.png", ["--max-error-fraction", "2"], "between 0 and 1"),
    ],
)
def test_unusable_runs_stop_before_any_work_with_one_line(tmp_path, capsys, content, extra, message):
    (tmp_path / "empty.txt").write_text("# nothing\n\n")
    (tmp_path / "nouri.csv").write_text("path\na.png\n")
    (tmp_path / "list.xlsx").write_bytes(b"PK")
    (tmp_path / "a.png").write_bytes(small_png(0))
    spec = content if "://" in content else str(tmp_path / content)
    assert cli.main(["run", "--content", spec, "--output", str(tmp_path / "out"), *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_no_unsafe_deserialisation_in_toonbeam():
    """Weights load with Keras `load_weights` from .h5 (no pickle); nothing turns safe mode off."""
    sources = [p for d in ("pipeline", "transforms") for p in (ROOT / d).rglob("*.py")]
    text = "\n".join(p.read_text() for p in sources)
    for needle in ("pickle.load", "allow_pickle=True", "safe_mode=False", "enable_unsafe_deserialization", "yaml.load("):
        assert needle not in text, needle


def test_the_cloud_metadata_address_is_an_error_row_by_default(tmp_path):
    manifest = tmp_path / "list.txt"
    manifest.write_text("http://169.254.169.254/computeMetadata/v1/instance/image.png\n")
    app.run(["--content", str(manifest), "--output", str(tmp_path / "out"), "--run_id", "ssrf"])
    (row,) = read_report(str(tmp_path / "out")).to_pylist()
    assert (row["status"], row["error_type"]) == ("error", "address_not_allowed")
    assert "169.254.169.254, a link-local address" in row["error"]


# --- Second round (issue 10): each test failed on the code before its fix -----------------------------


def _report(out) -> dict:
    return {r["content_id"]: r for r in read_report(str(out)).to_pylist()}


def _jsonl(path: pathlib.Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


def test_a_nul_byte_or_a_malformed_url_is_a_bad_manifest_row_never_requested(tmp_path, monkeypatch):
    from pipeline.io import storage

    requests = []
    real_get = storage._http_get
    monkeypatch.setattr(storage, "_http_get", lambda uri, policy: requests.append(uri) or real_get(uri, policy))
    manifest = _jsonl(tmp_path / "list.jsonl", [
        {"id": "nul", "uri": str(tmp_path / "a\0b.png")},
        {"id": "port", "uri": "http://127.1:99999/x.png"},
        {"id": "badport", "uri": "http://127.1:abc/x.png"},
        {"id": "nohost", "uri": "http:///x.png"},
    ])
    app.run(["--content", manifest, "--output", str(tmp_path / "out"), "--http-allowed-addresses", "any"])
    rows = _report(tmp_path / "out")
    assert {i: (r["status"], r["error_type"]) for i, r in rows.items()} == dict.fromkeys(
        ("nul", "port", "badport", "nohost"), ("error", "bad_manifest_row"))
    assert "NUL byte" in rows["nul"]["error"] and "malformed URL" in rows["port"]["error"]
    assert requests == []  # refused before any attempt, so never retried


def _finish(proc, timeout=120):
    """(returncode, stdout, stderr) of a `_cli` process; killed (and the test failed) when it hangs."""
    stdout, stderr = communicate_or_fail(proc, timeout, "the run")
    return proc.returncode, stdout, stderr


def _one_line(stderr: str) -> str:
    """The one line a CLI run printed about its failure (Beam's import may log warnings before it)."""
    ours = [line for line in stderr.splitlines() if line.startswith("toonbeam: ")]
    assert len(ours) == 1 and "Traceback" not in stderr, stderr
    return ours[0]


@pytest.mark.slow
def test_a_fifo_in_a_folder_or_as_a_manifest_is_refused_not_waited_for(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "good.png").write_bytes(small_png(0))
    os.mkfifo(folder / "x.png")  # opening it for reading would wait for a writer forever
    code, stdout, stderr = _finish(_cli("--content", str(folder), "--output", str(tmp_path / "out")))
    assert code == 0, stderr
    rows = _report(tmp_path / "out")
    assert (rows["good"]["status"], rows["x"]["error_type"]) == ("ok", "not_a_file")
    assert "not a regular file" in rows["x"]["error"]

    os.mkfifo(tmp_path / "list.txt")
    code, _, stderr = _finish(_cli("--content", str(tmp_path / "list.txt"), "--output", str(tmp_path / "out2")))
    assert code == 2 and _one_line(stderr).endswith("list.txt: cannot read: is a FIFO (named pipe), not a regular file")


@pytest.mark.slow
def test_an_http_manifest_is_read_once_under_the_run_policy(tmp_path, capsys):
    with serve(small_png(0)) as (base, hits):
        refused = ["run", "--content", f"{base}/list.txt", "--output", str(tmp_path / "refused")]
        assert cli.main(refused) == 2  # loopback is refused by default, for manifests as for images
        err = capsys.readouterr().err
        assert "127.0.0.1, a loopback address" in err and len(err.strip().splitlines()) == 1
        assert hits.get("/list.txt", 0) == 0

        start = time.perf_counter()
        slow = ["run", "--content", f"{base}/slow-list.txt", "--output", str(tmp_path / "slow"),
                "--http-allowed-addresses", "any", "--http-timeout", "0.5", "--http-retries", "0"]
        assert cli.main(slow) == 2 and "0.5 s (--http-timeout)" in capsys.readouterr().err
        assert time.perf_counter() - start < 1.8  # the server pauses 2 s

        allowed = ["run", "--content", f"{base}/list.txt", "--output", str(tmp_path / "out"),
                   "--http-allowed-addresses", "any"]
        assert cli.main(allowed) == 0
        assert hits["/list.txt"] == 1  # not once to check, once to count and once to list
    rows = _report(tmp_path / "out")
    assert (rows["ok"]["status"], rows["missing"]["error_type"]) == ("ok", "not_found")


@pytest.mark.slow
def test_an_output_inside_the_content_folder_is_not_read_back_as_input(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(2):
        (folder / f"p{i}.png").write_bytes(small_png(i))
    argv = ["--content", str(folder), "--output", str(folder / "cartoons")]
    app.run(argv)
    app.run(argv)  # the first run's cartoons are in the content folder now
    rows = read_report(str(folder / "cartoons")).to_pylist()
    assert sorted((r["content_uri"], r["status"]) for r in rows) == [(str(folder / f"p{i}.png"), "ok") for i in range(2)]


def test_an_id_shaped_like_another_ids_file_name_gets_its_own_file(tmp_path):
    for i in range(2):
        (tmp_path / f"p{i}.png").write_bytes(small_png(i))
    # "a_b-3ec69c85" is what "a/b" used to be written as (its sanitised form plus its digest).
    manifest = _jsonl(tmp_path / "list.jsonl", [{"id": "a/b", "uri": "p0.png"}, {"id": "a_b-3ec69c85", "uri": "p1.png"}])
    app.run(["--content", manifest, "--output", str(tmp_path / "out")])
    rows = _report(tmp_path / "out")
    assert {r["status"] for r in rows.values()} == {"ok"}
    assert rows["a/b"]["output_uri"] != rows["a_b-3ec69c85"]["output_uri"]
    for content_id, source in (("a/b", 0), ("a_b-3ec69c85", 1)):
        expected = cartoonize(decode_image(small_png(source)), PRESETS["seed"])
        assert decode_image(pathlib.Path(rows[content_id]["output_uri"]).read_bytes()).tolist() == expected.tolist()


@pytest.mark.parametrize("earlier_run", [False, True], ids=["no-earlier-run", "earlier-run"])
def test_only_what_toonbeam_wrote_is_ever_replaced(tmp_path, capsys, earlier_run):
    (tmp_path / "a.png").write_bytes(small_png(0))
    out = tmp_path / "out"
    argv = ["run", "--content", str(tmp_path / "a.png"), "--output", str(out)]
    if earlier_run:
        assert cli.main(argv) == 0
    (out / "report").mkdir(parents=True, exist_ok=True)
    (out / "report" / "Q3.xlsx").write_bytes(b"quarterly figures")
    if not earlier_run:
        (out / "index.html").write_text("<p>my page</p>")
    before = {path: path.read_bytes() for path in out.rglob("*") if path.is_file()}
    capsys.readouterr()
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert ("report/Q3.xlsx was not written by Toonbeam" if earlier_run else "Toonbeam did not write") in err
    assert {path: path.read_bytes() for path in out.rglob("*") if path.is_file()} == before  # nothing touched


def test_a_rerun_replaces_its_own_records_and_only_them(tmp_path):
    (tmp_path / "a.png").write_bytes(small_png(0))
    out = tmp_path / "out"
    argv = ["--content", str(tmp_path / "a.png"), "--output", str(out)]
    assert cli.main(["run", *argv]) == 0
    (out / "notes.txt").write_text("mine")  # beside the run's folders: never touched
    (out / "report" / "beam-temp-part-0123abcd").mkdir()  # a sink's temporary folder left by a killed run
    assert cli.main(["run", *argv, "--run_id", "second"]) == 0
    assert [r["run_id"] for r in read_report(str(out)).to_pylist()] == ["second"]
    assert (out / "notes.txt").read_text() == "mine" and not (out / "report" / "beam-temp-part-0123abcd").exists()


@pytest.mark.parametrize("case", ["a-file", "under-a-file", "memory", "unwritable"])
def test_an_output_that_cannot_be_written_stops_the_run_before_any_work(tmp_path, capsys, case):
    (tmp_path / "a.png").write_bytes(small_png(0))
    (tmp_path / "file.txt").write_text("keep me")
    output, message = {
        "a-file": (str(tmp_path / "file.txt"), "is a file, not a folder"),
        "under-a-file": (str(tmp_path / "file.txt" / "out"), "cannot be written"),
        "memory": ("memory://out", "Beam's file sinks cannot write memory://"),
        "unwritable": ("/sys/toonbeam-out", "cannot be written"),  # even root may not create folders in /sys
    }[case]
    assert cli.main(["run", "--content", str(tmp_path / "a.png"), "--output", output]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and message in err and "Traceback" not in err
    assert (tmp_path / "file.txt").read_text() == "keep me" and not (tmp_path / "a.png.json").exists()


def _no_space(path):
    return OSError(errno.ENOSPC, "No space left on device", path)


def test_a_full_disk_mid_run_makes_error_rows_and_keeps_the_report(tmp_path, capsys, monkeypatch):
    from pipeline.io import storage

    for i in range(3):
        (tmp_path / f"p{i}.png").write_bytes(small_png(i))
    real_write = storage.write_atomic

    def write_atomic(uri, data):
        if uri.endswith("p1.png"):  # the disk is full when p1 is written
            raise _no_space(uri)
        real_write(uri, data)

    monkeypatch.setattr(storage, "write_atomic", write_atomic)
    out = tmp_path / "out"
    assert cli.main(["run", "--content", str(tmp_path), "--output", str(out)]) == 0
    rows = _report(out)
    assert (rows["p0"]["status"], rows["p1"]["error_type"], rows["p2"]["status"]) == ("ok", "write_error", "ok")
    assert "No space left on device" in rows["p1"]["error"] and (out / "index.html").exists()
    letters = [json.loads(line) for path in glob.glob(str(out / "errors" / "*.jsonl")) for line in open(path)]
    assert [x["id"] for x in letters] == ["p1"]


def test_a_full_disk_for_the_report_ends_with_one_line_naming_what_was_lost(tmp_path, capsys, monkeypatch):
    from apache_beam.io import localfilesystem

    (tmp_path / "a.png").write_bytes(small_png(0))
    real_create = localfilesystem.LocalFileSystem.create

    def create(self, path, *args, **kwargs):
        if "/report/" in path:
            raise _no_space(path)
        return real_create(self, path, *args, **kwargs)

    monkeypatch.setattr(localfilesystem.LocalFileSystem, "create", create)
    out = tmp_path / "out"
    assert cli.main(["run", "--content", str(tmp_path / "a.png"), "--output", str(out)]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert "No space left on device" in err and "lost: the report" in err and "index.html" in err
    assert (out / "images" / "classical" / "a.png").exists()  # what was written stays, for --skip-existing


def test_a_run_removes_its_own_stale_temporaries_and_nothing_else(tmp_path):
    (tmp_path / "a.png").write_bytes(small_png(0))
    out = tmp_path / "out"
    argv = ["--content", str(tmp_path / "a.png"), "--output", str(out)]
    app.run(argv)
    images = out / "images" / "classical"
    stale = [images / "a.png.0123456789ab.tmp", images / "b.png.json.ba9876543210.tmp", out / "index.html.00112233aabb.tmp"]
    for path in stale:
        path.write_bytes(b"half written")  # as a SIGKILL between write and rename leaves them
    foreign = [images / "notes.tmp", out / "mine.0123456789ab.tmp"]
    for path in foreign:
        path.write_bytes(b"not ours")
    app.run(argv + ["--skip-existing"])
    assert [path for path in stale if path.exists()] == [] and all(path.exists() for path in foreign)


def test_the_contact_sheet_reads_only_what_the_run_accepted_under_its_policy(tmp_path, capsys, monkeypatch):
    from pipeline.io import storage
    from tests.test_contact_sheet import Page

    real_kind = storage.address_kind  # the test server's 127.0.0.1 stands for a private network here
    monkeypatch.setattr(storage, "address_kind", lambda a: "private" if a == "127.0.0.1" else real_kind(a))
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "good.png").write_bytes(small_png(0))  # 40 x 56
    (folder / "later.png").write_bytes(small_png(1))  # replaced by a larger image after the run
    (folder / "huge.png").write_bytes(_save(Image.new("RGB", (200, 200)), "PNG"))  # refused: too many pixels
    out = tmp_path / "out"
    with serve(small_png(2)) as (base, hits):
        manifest = folder / "list.txt"
        manifest.write_text(f"good.png\nlater.png\nhuge.png\n{base}/ok.png\n{base}/slow.png\n")
        argv = ["run", "--content", str(manifest), "--output", str(out), "--max-input-pixels", "5000",
                "--http-allowed-addresses", "public", "--http-timeout", "0.5", "--http-retries", "0"]
        assert cli.main(argv) == 0
        rows = _report(out)
        assert {i: r["error_type"] for i, r in rows.items()} == {
            "good": None, "later": None, "huge": "too_large", "ok": "address_not_allowed", "slow": "address_not_allowed"}
        (folder / "later.png").write_bytes(_save(Image.new("RGB", (100, 100)), "PNG"))  # 10000 pixels > 5000
        start = time.perf_counter()
        assert cli.main(["report", str(out)]) == 0  # rewrites index.html, as the run did
        assert time.perf_counter() - start < 1.5  # /slow.png pauses 2 s
        assert hits == {}  # the page requested nothing the run refused
    page = Page((out / "index.html").read_text("utf-8"))
    assert len(page.find("img")) == 3  # good's source and result, later's result: nothing the run refused
    sources = {m["attrs"]["title"].split(": ")[0]: m["text"] for m in page.find("div", cls="hthumb") if "title" in m["attrs"]}
    assert sources == {  # the refusals of the run, and of the page for a source that grew past --max-input-pixels
        str(folder / "huge.png"): "too_large", f"{base}/ok.png": "address_not_allowed",
        f"{base}/slow.png": "address_not_allowed", str(folder / "later.png"): "too_large",
    }


def test_skip_existing_redoes_an_input_changed_in_place_and_reports_only_hashes_it_verified(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for name, seed in (("same", 0), ("changed", 1), ("touched", 4)):
        (folder / f"{name}.png").write_bytes(small_png(seed))
    out = tmp_path / "out"
    with serve(small_png(2)) as (base, hits):
        manifest = folder / "list.txt"
        manifest.write_text(f"same.png\nchanged.png\ntouched.png\n{base}/ok.png\n")
        argv = ["--content", str(manifest), "--output", str(out), "--http-allowed-addresses", "any"]
        app.run(argv)
        (folder / "changed.png").write_bytes(small_png(3))  # new bytes at the same path
        os.utime(folder / "touched.png", (1e9, 1e9))  # the same bytes with another time: hashed, still the same
        app.run(argv + ["--skip-existing"])
        assert hits["/ok.png"] == 1  # skipped without a request
    rows = _report(out)
    sha = {name: hashlib.sha256((folder / f"{name}.png").read_bytes()).hexdigest() for name in ("same", "changed", "touched")}
    assert (rows["same"]["status"], rows["same"]["content_sha256"]) == ("skipped", sha["same"])  # verified
    assert (rows["touched"]["status"], rows["touched"]["content_sha256"]) == ("skipped", sha["touched"])
    assert (rows["changed"]["status"], rows["changed"]["content_sha256"]) == ("ok", sha["changed"])  # redone
    expected = cartoonize(decode_image(small_png(3)), PRESETS["seed"])
    assert decode_image(pathlib.Path(rows["changed"]["output_uri"]).read_bytes()).tolist() == expected.tolist()
    # An HTTP input has no size and time to compare: skipped on its sidecar, its hash left empty.
    assert (rows["ok"]["status"], rows["ok"]["content_sha256"]) == ("skipped", None)


@pytest.mark.slow
def test_skip_existing_redoes_the_pairs_of_a_style_changed_in_place(memfs, tmp_path):
    memfs.pipe("/c/c0.png", small_png(0))
    for i in range(2):
        memfs.pipe(f"/s/s{i}.png", small_png(10 + i))
    argv = ["--content", "memory://c", "--style", "memory://s", "--output", str(tmp_path), "--method", "nst",
            "--weights", "random", "--steps", "2", "--max_dim", "32"]
    app.run(argv)
    memfs.pipe("/s/s1.png", small_png(20))
    app.run(argv + ["--skip-existing"])
    rows = {r["style_id"]: r for r in read_report(str(tmp_path)).to_pylist()}
    assert (rows["s0"]["status"], rows["s1"]["status"]) == ("skipped", "ok")
    assert rows["s0"]["style_sha256"] == hashlib.sha256(small_png(10)).hexdigest()
    assert rows["s1"]["style_sha256"] == hashlib.sha256(small_png(20)).hexdigest()


def test_toonbeam_report_never_replaces_an_index_html_it_did_not_write(tmp_path, capsys):
    from tests.test_contact_sheet import write_report

    out = tmp_path / "out"
    out.mkdir()
    write_report(out, [])  # a report, but no run record: not a folder Toonbeam's run wrote
    (out / "index.html").write_text("<p>my page</p>")
    assert cli.main(["report", str(out)]) == 2
    assert "index.html exists" in capsys.readouterr().err and (out / "index.html").read_text() == "<p>my page</p>"
