"""Issue 24 (reliability and security, third round): the model store, the run folder, the portable
services and the feed-forward flags, attacked. Each test failed on the code before its fix."""
import hashlib
import json
import os
import pathlib
import subprocess
import sys
import time

import pytest

from pipeline import app, cli
from pipeline.io import run_folder, storage
from pipeline.reporting.schema import read_report
from tests.conftest import ROOT, communicate_or_fail, small_png
from tests.test_feedforward_pipeline import TINY
from tests.test_feedforward_pipeline import _catalog as ff_catalog
from tests.httpserver import serve
from transforms.feedforward.settings import KEEP_FACES, FFSettings, check_settings

def _catalog(tmp_path: pathlib.Path, contents=3, styles=1) -> list[str]:
    """Photos c0.. and styles s0..; the flags of a tiny feed-forward run on them, without --output."""
    content, style = ff_catalog(tmp_path, contents, styles)
    return ["--content", str(content), "--style", str(style), *TINY]


def _rows(output) -> dict:
    return {(r["method"], r["content_id"], r["style_id"]): r for r in read_report(str(output)).to_pylist()}


def _card_path(row: dict) -> pathlib.Path:
    return pathlib.Path(row["model_uri"][: -len(".weights.h5")] + ".json")


def _card(row: dict) -> dict:
    return json.loads(_card_path(row).read_text())


def _train_row(rows: dict, style="s0") -> dict:
    return rows[("feedforward_train", None, style)]


def _pairs(rows: dict) -> dict:
    return {key[1:]: (row["status"], row["error_type"]) for key, row in rows.items() if key[0] == "feedforward"}


def _stderr_line(capsys) -> str:
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    return err.strip()


# --- 6, 8: the quality gate -------------------------------------------------------------------------------


def _model(heldout: dict | None):
    from pipeline.io.manifests import ManifestEntry
    from pipeline.methods.feedforward import StyleModel

    scored = None if heldout is None else {"keep_faces": KEEP_FACES, **heldout}  # as the default run writes
    card = {"heldout": scored, "weights_sha256": "0" * 64}
    return StyleModel(ManifestEntry("s", "s.png"), "sha", "models/s.weights.h5", card, None)


def test_a_nan_held_out_ratio_fails_the_quality_gate():
    from pipeline.methods.feedforward import FFJob, gate_refusal

    job = FFJob(max_loss_ratio=2.0, gate_steps=100)
    refusal = gate_refusal(_model({"ratio_total": float("nan"), "gate_steps": 100}), job)
    assert refusal is not None and refusal.error_type == "quality_gate" and "nan" in str(refusal)
    assert gate_refusal(_model({"ratio_total": 1.5, "gate_steps": 100}), job) is None


def test_the_gate_never_compares_with_a_figure_for_other_gate_steps():
    from pipeline.methods.feedforward import FFJob, gate_refusal

    model = _model({"ratio_total": 1.5, "gate_steps": 1})  # passes 2x against 1 step, but 20 were asked for
    refusal = gate_refusal(model, FFJob(max_loss_ratio=2.0, gate_steps=20))
    assert refusal is not None and refusal.error_type == "quality_gate"
    assert f"scored against 1 NST steps with --ff-keep-faces {KEEP_FACES:g}, not --ff-gate-steps 20" in str(refusal)
    worse = gate_refusal(_model({"ratio_total": 7.5, "gate_steps": 20}), FFJob(max_loss_ratio=2.0, gate_steps=20))
    assert "7.50x that of 20 NST steps" in str(worse)


def test_the_gate_never_judges_images_with_another_face_guard():
    """Figures of the network's images with --ff-keep-faces 0 do not judge a run that writes them with 0.5
    (nor the other way round): without held-out photos to score again, the gate refuses."""
    from pipeline.methods.feedforward import FFJob, gate_refusal

    unguarded = _model({"ratio_total": 1.5, "gate_steps": 20, "keep_faces": 0.0})
    refusal = gate_refusal(unguarded, FFJob(gate_steps=20, keep_faces=0.5))
    assert refusal is not None and "with --ff-keep-faces 0, not --ff-gate-steps 20 with --ff-keep-faces 0.5" in str(refusal)
    assert gate_refusal(unguarded, FFJob(gate_steps=20, keep_faces=0.0)) is None


@pytest.mark.slow
def test_a_reused_model_is_scored_again_for_other_gate_steps(tmp_path, monkeypatch):
    from pipeline.methods import feedforward

    argv = _catalog(tmp_path)
    models = str(tmp_path / "models")
    first = _rows_of_run(argv, tmp_path / "r1", "--ff-model-dir", models)
    assert _card(_train_row(first))["heldout"]["gate_steps"] == 2
    monkeypatch.setattr(feedforward, "train", _no_training)
    again = _rows_of_run(argv, tmp_path / "r2", "--ff-model-dir", models, "--ff-gate-steps", "3",
                         "--ff-max-loss-ratio", "1e-9")
    assert _train_row(again)["status"] == "skipped"  # reused, not trained again
    card = _card(_train_row(again))
    assert card["heldout"]["gate_steps"] == 3 and card["heldout"]["ratio_total"] > 0  # scored again, card updated
    refused = [r for k, r in again.items() if k[0] == "feedforward"]
    assert {r["error_type"] for r in refused} == {"quality_gate"}
    assert all("that of 3 NST steps" in r["error"] for r in refused)


def _rows_of_run(argv: list[str], output: pathlib.Path, *extra: str) -> dict:
    app.run([*argv, "--output", str(output), *extra])
    return _rows(output)


def _no_training(*args, **kwargs):
    raise AssertionError("the model is reused: nothing may be trained")


# --- 7, 14, 5: flags refused before any work ----------------------------------------------------------------


@pytest.mark.parametrize("field, value", [
    ("style_weight", float("nan")), ("content_weight", float("inf")), ("tv_weight", -1.0),
    ("learning_rate", float("inf")), ("learning_rate", float("nan")), ("final_lr_fraction", float("nan")),
    ("residual_clip", float("nan")), ("seed", -1), ("seed", 2**62), ("content_layer", "block9_conv9"),
    ("content_layer", "block5_pool"), ("train_steps", 10**9),
])
def test_every_training_setting_is_checked(field, value):
    with pytest.raises(ValueError, match=field):
        check_settings(FFSettings(**{field: value}))


def test_every_vgg19_conv_layer_is_a_valid_content_layer():
    from transforms.feedforward.settings import VGG19_CONV_LAYERS

    assert len(VGG19_CONV_LAYERS) == 16 and VGG19_CONV_LAYERS[-1] == "block5_conv4"
    for layer in VGG19_CONV_LAYERS:
        check_settings(FFSettings(content_layer=layer))


@pytest.mark.parametrize("flags", [
    ["--ff-style-weight", "nan"], ["--ff-content-weight", "inf"], ["--ff-tv-weight", "-1"],
    ["--ff-learning-rate", "inf"], ["--ff-seed", "-1"], ["--ff-content-layer", "block9_conv9"],
    ["--ff-train-steps", "1000000000"],
])
def test_bad_training_flags_stop_the_run_before_any_work(tmp_path, capsys, flags):
    argv = _catalog(tmp_path)
    assert cli.main(["run", *argv, "--output", str(tmp_path / "out"), *flags]) == 2
    assert flags[0][len("--ff-"):].replace("-", "_") in _stderr_line(capsys)
    assert not (tmp_path / "out").exists()


def test_a_missing_training_folder_stops_the_run_before_any_work(tmp_path, capsys):
    argv = _catalog(tmp_path)
    missing = str(tmp_path / "nowhere")
    assert cli.main(["run", *argv, "--output", str(tmp_path / "out"), "--ff-train-content", missing]) == 2
    assert _stderr_line(capsys).endswith(f"--ff-train-content {missing}: does not exist")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("policy, message", [
    (["--allowed-schemes", "file"], "scheme 'http' is not allowed"),
    ([], "127.0.0.1, a loopback address (--http-allowed-addresses private)"),
])
def test_a_model_folder_obeys_the_read_policy_before_any_request(tmp_path, capsys, policy, message):
    argv = _catalog(tmp_path)
    with serve(small_png(0)) as (base, hits):
        code = cli.main(["run", *argv, "--output", str(tmp_path / "out"), "--ff-model-dir", f"{base}/models", *policy])
        assert code == 2 and message in _stderr_line(capsys)
        assert hits == {}  # no GET of a card (and no upload of a model)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("case", ["a-file", "under-a-file", "read-only", "default-is-a-file"])
def test_a_model_folder_that_cannot_be_written_stops_the_run_before_any_work(tmp_path, capsys, case):
    """Found up front, not as an internal_error of every unit after minutes of training."""
    argv = _catalog(tmp_path)
    (tmp_path / "file.txt").write_text("keep me")
    out = tmp_path / "out"
    model_dir, message = {
        "a-file": (tmp_path / "file.txt", "is a file, not a folder"),
        "under-a-file": (tmp_path / "file.txt" / "models", "file.txt is a file, not a folder"),
        "read-only": ("/sys/kernel/toonbeam-models", "cannot be written"),  # even root may not write in /sys
        "default-is-a-file": (None, "models: is a file, not a folder"),
    }[case]
    if model_dir is None:  # --output's own models/ (the default --ff-model-dir) is a file
        out.mkdir()
        (out / "models").write_text("not a folder")
    flags = [] if model_dir is None else ["--ff-model-dir", str(model_dir)]
    assert cli.main(["run", *argv, "--output", str(out), *flags]) == 2
    line = _stderr_line(capsys)
    assert line.startswith("toonbeam: error: --ff-model-dir") and message in line
    assert (tmp_path / "file.txt").read_text() == "keep me"
    assert sorted(p.name for p in out.iterdir()) == ["models"] if model_dir is None else not out.exists()


# --- 2, 3: folders of --output that are symbolic links ------------------------------------------------------


@pytest.mark.parametrize("link", ["images", "report", "models", "images/classical"])
def test_a_symlinked_folder_of_the_output_stops_the_run_and_nothing_there_is_touched(tmp_path, capsys, link):
    (tmp_path / "a.png").write_bytes(small_png(0))
    out = tmp_path / "out"
    argv = ["run", "--content", str(tmp_path / "a.png"), "--output", str(out)]
    assert cli.main(argv) == 0
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    precious = {"part-00000-of-00001.parquet": b"another run's report", "a.png": b"my image",
                "a.png.0123456789ab.tmp": b"my temporary file", "s-0123.weights.h5": b"my model"}
    for name, data in precious.items():
        (elsewhere / name).write_bytes(data)
    target = out / link
    if target.exists():
        os.rename(target, tmp_path / "moved")
    target.symlink_to(elsewhere, target_is_directory=True)
    capsys.readouterr()
    assert cli.main([*argv, "--skip-existing"]) == 2
    assert f"{link} is a symbolic link" in _stderr_line(capsys)
    assert {p.name: p.read_bytes() for p in elsewhere.iterdir()} == precious


@pytest.mark.parametrize("link", ["images", "images/classical"])
def test_the_stale_temporary_clean_up_never_follows_a_symbolic_link(tmp_path, link):
    out = tmp_path / "out"
    (out / "images" / "nst").mkdir(parents=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "a.png.0123456789ab.tmp").write_bytes(b"not the run's")
    own = out / "images" / "nst" / "own.png.0123456789ab.tmp"
    own.write_bytes(b"the run's")
    if link == "images":
        os.rename(out / "images", tmp_path / "real-images")
    (out / link).symlink_to(elsewhere, target_is_directory=True)
    run_folder.remove_stale_temporaries(str(out))
    assert (elsewhere / "a.png.0123456789ab.tmp").exists()
    assert link == "images" or not own.exists()  # the run's own still go


@pytest.mark.parametrize("where", ["default", "ff-model-dir", "ff-model-dir-is-the-default"])
def test_stale_temporaries_of_model_writes_are_removed_and_nothing_else(tmp_path, where):
    out = tmp_path / "out"
    models = tmp_path / "shared-models" if where == "ff-model-dir" else out / "models"
    models.mkdir(parents=True)
    out.mkdir(exist_ok=True)
    elsewhere = tmp_path / "elsewhere.weights.h5.0123456789ab.tmp"
    elsewhere.write_bytes(b"not the run's")
    stale = [models / "s0-0123.weights.h5.0123456789ab.tmp", models / "s0-0123.json.ba9876543210.tmp"]
    kept = [models / "s0-0123.weights.h5.00112233aabb.tmp",  # fresh: maybe a write in flight of another run
            models / "notes.0123456789ab.tmp", models / "s0.weights.h5.tmp", models / "s0-0123.weights.h5"]
    for path in stale + kept:
        path.write_bytes(b"half written")
    (models / "link.weights.h5.0123456789ab.tmp").symlink_to(elsewhere)
    long_ago = time.time() - 2 * run_folder.MODEL_TEMPORARY_AGE
    for path in [*stale, *kept[1:], elsewhere]:
        os.utime(path, (long_ago, long_ago))
    run_folder.remove_stale_temporaries(str(out), None if where == "default" else f"{models}/")
    assert [path for path in stale if path.exists()] == [] and all(path.exists() for path in kept)
    assert (models / "link.weights.h5.0123456789ab.tmp").is_symlink() and elsewhere.exists()


# --- 15: one run at a time per output folder -----------------------------------------------------------------


def test_a_second_run_on_a_locked_output_is_refused_and_the_lock_goes_with_its_run(tmp_path, capsys, monkeypatch):
    (tmp_path / "a.png").write_bytes(small_png(0))
    out = tmp_path / "out"
    argv = ["run", "--content", str(tmp_path / "a.png"), "--output", str(out)]
    assert cli.main(argv) == 0 and not (out / run_folder.LOCK_FILE).exists()
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    capsys.readouterr()
    with run_folder.output_lock(str(out), "first"):  # another run holds the folder
        assert cli.main([*argv, "--run_id", "second"]) == 2
        line = _stderr_line(capsys)
        assert "is in use by another run" in line and f"pid {os.getpid()}" in line and "run first" in line
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before  # nothing of it touched
    # a lock file left by a run that is gone holds no lock: the next run goes ahead
    (out / run_folder.LOCK_FILE).write_text('{"pid": 999999, "host": "elsewhere", "run_id": "dead"}')
    assert cli.main(argv) == 0 and not (out / run_folder.LOCK_FILE).exists()

    def stopped(plan, *args, **kwargs):
        raise app.RunStopped("the run stopped")

    monkeypatch.setattr(app, "execute", stopped)
    assert cli.main(argv) == 1 and not (out / run_folder.LOCK_FILE).exists()  # released on failure too


@pytest.mark.slow
def test_a_second_run_process_is_refused_while_the_first_runs(tmp_path):
    (tmp_path / "a.png").write_bytes(small_png(0))
    out = tmp_path / "out"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom pipeline.io.run_folder import output_lock\n"
         f"with output_lock({str(out)!r}, 'first'):\n    print('held', flush=True)\n    sys.stdin.read()"],
        cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, start_new_session=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        second = subprocess.Popen([sys.executable, "-m", "pipeline", "run", "--content", str(tmp_path / "a.png"),
                                   "--output", str(out)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True, start_new_session=True)
        _, stderr = communicate_or_fail(second, 120, "the second run")
        assert second.returncode == 2 and f"in use by another run (pid {holder.pid}" in stderr
    finally:
        holder.kill()
        holder.communicate()
    assert cli.main(["run", "--content", str(tmp_path / "a.png"), "--output", str(out)]) == 0  # its holder died


# --- 4: the portable services listen on loopback only ----------------------------------------------------------


def _listening(pids: set[int]) -> list[str]:
    """The addresses the TCP sockets of `pids` listen on (from /proc: no psutil here)."""
    import ipaddress

    inodes = set()
    for pid in pids:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[len("socket:["):-1])
    found = []
    for table in ("tcp", "tcp6"):
        for line in pathlib.Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # LISTEN
                raw = bytes.fromhex(fields[1].split(":")[0])
                address = ipaddress.ip_address(b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4)))
                found.append(str(getattr(address, "ipv4_mapped", None) or address))  # ::ffff:127.0.0.1 is 127.0.0.1
    return found


def _group(pgid: int) -> set[int]:
    """The processes of a process group (the services and the SDK workers they started)."""
    pids = set()
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                stat = pathlib.Path(f"/proc/{name}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[2]) == pgid:
                pids.add(int(name))
    return pids


def hold_until_released(element, started: str, release: str):
    """A step that keeps the job (and the runner's servers) up until the test has looked."""
    pathlib.Path(started).touch()
    deadline = time.monotonic() + 120
    while not os.path.exists(release) and time.monotonic() < deadline:
        time.sleep(0.05)
    return element


@pytest.mark.slow
def test_the_portable_services_listen_on_loopback_only_while_a_job_runs(tmp_path):
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    from pipeline import portable

    started, release = str(tmp_path / "started"), str(tmp_path / "release")
    def services_pids():
        return {int(p) for p in os.listdir("/proc") if p.isdigit() and _is_services(int(p))}

    others = services_pids()  # the session's portable_services fixture may hold one already
    with portable.local_services() as services:
        (pid,) = services_pids() - others
        options = PipelineOptions([
            "--runner=PortableRunner", f"--job_endpoint={services.job_endpoint}", "--environment_type=EXTERNAL",
            f"--environment_config={services.worker_pool}", "--sdk_worker_parallelism=1",
        ])
        p = beam.Pipeline(options=options)
        _ = p | beam.Create([1]) | beam.Map(hold_until_released, started, release)
        result = p.run()
        try:
            deadline = time.monotonic() + 120
            while not os.path.exists(started):
                assert time.monotonic() < deadline, "the job did not start"
                time.sleep(0.05)
            addresses = _listening(_group(pid))
        finally:
            pathlib.Path(release).touch()
            result.wait_until_finish()
    # the job service and the worker pool, and the runner's control, data, state and logging servers
    assert len(addresses) >= 6, addresses
    assert all(address in ("127.0.0.1", "::1") for address in addresses), addresses


def _is_services(pid: int) -> bool:
    try:
        cmdline = pathlib.Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        parent = int(pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError):
        return False
    return parent == os.getpid() and b"pipeline.portable" in cmdline and b"serve" in cmdline


# --- 1, 12, 13: the model store's files, read like inputs ----------------------------------------------------


def test_model_reads_are_bounded_like_input_reads(tmp_path):
    from pipeline.io import model_store

    weights = tmp_path / "s-0123.weights.h5"
    os.mkfifo(weights)  # opening it for reading would wait for a writer forever
    card = {"format": model_store.CARD_FORMAT}
    (tmp_path / "s-0123.json").write_text(json.dumps(card))
    policy = storage.ReadPolicy(read_timeout=2)
    start = time.perf_counter()
    with pytest.raises(storage.NotAFile):
        model_store.read_weights(str(weights), "0" * 64, policy)
    assert time.perf_counter() - start < 1.5
    with pytest.raises(storage.UnsupportedScheme):
        model_store.read_card(str(weights), storage.ReadPolicy(allowed_schemes=("gs",)))


@pytest.mark.slow
def test_a_fifo_at_a_models_name_is_an_error_row_not_a_hang(tmp_path):
    argv = _catalog(tmp_path)
    first = _rows_of_run(argv, tmp_path / "out", "--method", "classical,feedforward")
    weights = pathlib.Path(_train_row(first)["model_uri"])
    weights.unlink()
    os.mkfifo(weights)
    proc = subprocess.Popen([sys.executable, "-m", "pipeline", "run", *argv, "--method", "classical,feedforward",
                             "--output", str(tmp_path / "out")], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    _, stderr = communicate_or_fail(proc, 180, "the run with a FIFO as a model")
    assert proc.returncode == 0, stderr
    rows = _rows(tmp_path / "out")
    train_row = _train_row(rows)
    assert train_row["error_type"] == "not_a_file" and f"model {weights}: is a FIFO" in train_row["error"]
    assert set(_pairs(rows).values()) == {("error", "not_a_file")}
    assert {r["status"] for k, r in rows.items() if k[0] == "classical"} == {"ok"}
    assert weights.is_fifo()  # reported, never replaced


def _break_model(row: dict, how: str) -> None:
    """Damage a trained model the way a crash, a copy or a hand edit might."""
    weights = pathlib.Path(row["model_uri"])
    card_path = _card_path(row)
    card = json.loads(card_path.read_text())
    if how == "truncated":
        weights.write_bytes(weights.read_bytes()[:1000])
    elif how == "not-hdf5":
        weights.write_text("not a network")
        card["weights_sha256"] = hashlib.sha256(b"not a network").hexdigest()  # even with a matching digest
    elif how == "other-architecture":
        from transforms.feedforward.network import build_network, save_network

        save_network(build_network(FFSettings(width=4, residual_blocks=1)), str(weights))
        card["weights_sha256"] = hashlib.sha256(weights.read_bytes()).hexdigest()
    elif how == "card-types":
        card.pop("settings")
        card["heldout"] = "good"
    elif how == "ratio-a-string":
        card["heldout"]["ratio_total"] = "1.5"
    card_path.write_text(json.dumps(card))


@pytest.mark.slow
def test_a_broken_model_or_card_is_trained_again_and_the_run_keeps_every_row(tmp_path):
    breakages = ["truncated", "not-hdf5", "other-architecture", "card-types", "ratio-a-string"]
    argv = _catalog(tmp_path, contents=3, styles=len(breakages))
    out = tmp_path / "out"
    first = _rows_of_run(argv, out, "--method", "classical,feedforward")
    for index, how in enumerate(breakages):
        _break_model(_train_row(first, f"s{index}"), how)
    again = _rows_of_run(argv, out, "--method", "classical,feedforward", "--ff-max-loss-ratio", "1e9")
    for index, how in enumerate(breakages):
        row = _train_row(again, f"s{index}")
        assert (row["status"], row["model_uri"]) == ("ok", _train_row(first, f"s{index}")["model_uri"]), how
        weights = pathlib.Path(row["model_uri"]).read_bytes()
        assert _card(row)["weights_sha256"] == hashlib.sha256(weights).hexdigest(), how  # replaced by a good one
    assert set(_pairs(again).values()) == {("ok", None)}
    assert {r["status"] for k, r in again.items() if k[0] == "classical"} == {"ok"}


def test_weights_changed_after_their_check_make_error_rows_not_a_failed_bundle(tmp_path):
    from pipeline.io.manifests import ManifestEntry
    from pipeline.methods.feedforward import ModelFailure, StyleExample, StyleNetworkHandler

    import numpy as np

    settings = FFSettings(width=8, residual_blocks=1)
    weights = tmp_path / "s.weights.h5"
    weights.write_bytes(b"truncated")
    photo = np.zeros((16, 16, 3), np.float32)
    example = StyleExample(ManifestEntry("a", "a.png"), ManifestEntry("s", "s.png"), photo, str(weights), {}, 0.0,
                           None, hashlib.sha256(b"truncated").hexdigest())
    other = example._replace(weights_sha256="0" * 64)
    handler = StyleNetworkHandler(settings)
    results = handler.run_inference([example, other], handler.load_model())
    failures = [result.inference for result in results]
    assert all(isinstance(failure, ModelFailure) and failure.error_type == "model_error" for failure in failures)
    assert str(weights) in failures[0].message and "its SHA-256 differs" in failures[1].message


# --- 9, 10, 11: what a model was trained on -------------------------------------------------------------------


@pytest.mark.slow
def test_skip_existing_redoes_the_pairs_of_a_model_trained_again(tmp_path):
    argv = _catalog(tmp_path, contents=2)
    other = tmp_path / "other"
    other.mkdir()
    for i in range(3):
        (other / f"o{i}.png").write_bytes(small_png(50 + i, (48, 64)))
    out = tmp_path / "out"
    first = _rows_of_run(argv, out)
    old_images = {k: pathlib.Path(r["output_uri"]).read_bytes() for k, r in first.items() if k[0] == "feedforward"}
    old_weights = pathlib.Path(_train_row(first)["model_uri"]).read_bytes()
    for path in (out / "models").iterdir():
        path.unlink()  # the model is gone; the next run trains it again, on other photos
    again = _rows_of_run(argv, out, "--skip-existing", "--ff-train-content", str(other))
    assert pathlib.Path(_train_row(again)["model_uri"]).read_bytes() != old_weights
    assert set(_pairs(again).values()) == {("ok", None)}  # redone, not skipped with the old network's images
    assert all(pathlib.Path(again[k]["output_uri"]).read_bytes() != data for k, data in old_images.items())
    once_more = _rows_of_run(argv, out, "--skip-existing", "--ff-train-content", str(other))
    assert {status for status, _ in _pairs(once_more).values()} == {"skipped"}  # the same model: kept


@pytest.mark.slow
def test_a_photo_too_small_to_train_or_score_on_is_skipped_not_fatal(tmp_path):
    argv = _catalog(tmp_path)
    (tmp_path / "content" / "zz_banner.png").write_bytes(small_png(7, (20, 200)))  # 200x20: held out (last id)
    rows = _rows_of_run(argv, tmp_path / "out")
    train_row = _train_row(rows)
    assert train_row["status"] == "ok", train_row["error"]
    card = _card(train_row)
    assert card["training_set"]["broken"] == ["zz_banner"] and "zz_banner" not in card["heldout"]["photos"]
    assert {k[0]: v for k, v in _pairs(rows).items() if k[0] != "zz_banner"} == dict.fromkeys(
        ("c0", "c1", "c2"), ("ok", None))


@pytest.mark.slow
def test_a_model_trained_on_broken_photos_is_trained_again_once_they_are_fixed(tmp_path):
    argv = _catalog(tmp_path, contents=4)
    photos = {name: (tmp_path / "content" / name).read_bytes() for name in ("c1.png", "c2.png", "c3.png")}
    for name in photos:
        (tmp_path / "content" / name).write_bytes(b"unreadable for now")
    gate = ("--ff-max-loss-ratio", "1e9", "--ff-model-dir", str(tmp_path / "models"))
    first = _rows_of_run(argv, tmp_path / "r1", *gate)
    card = _card(_train_row(first))
    assert card["training_set"]["broken"] == ["c1", "c2", "c3"] and card["heldout"] is None
    assert {v for k, v in _pairs(first).items() if k[0] == "c0"} == {("error", "quality_gate")}
    still = _rows_of_run(argv, tmp_path / "r2", *gate)  # nothing fixed: the same model, reused
    assert _train_row(still)["status"] == "skipped"
    for name, data in photos.items():
        (tmp_path / "content" / name).write_bytes(data)
    fixed = _rows_of_run(argv, tmp_path / "r3", *gate)
    assert _train_row(fixed)["status"] == "ok"  # trained again, on the fixed photos
    card = _card(_train_row(fixed))
    assert card["training_set"]["broken"] == [] and card["heldout"]["photos"] == ["c2", "c3"]
    assert set(_pairs(fixed).values()) == {("ok", None)}
