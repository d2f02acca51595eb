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
from transforms.feedforward.settings import FFSettings, check_settings

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

    card = {"heldout": heldout, "weights_sha256": "0" * 64}
    return StyleModel(ManifestEntry("s", "s.png"), "sha", "models/s.weights.h5", card, None)


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
    ("content_layer", "block5_pool"),
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
])
def test_bad_training_flags_stop_the_run_before_any_work(tmp_path, capsys, flags):
    argv = _catalog(tmp_path)
    assert cli.main(["run", *argv, "--output", str(tmp_path / "out"), *flags]) == 2
    assert flags[0][len("--ff-"):].replace("-", "_") in _stderr_line(capsys)
    assert not (tmp_path / "out").exists()


# --- 2, 3: folders of --output that are symbolic links ------------------------------------------------------


# --- 15: one run at a time per output folder -----------------------------------------------------------------


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


def _is_services(pid: int) -> bool:
    try:
        cmdline = pathlib.Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        parent = int(pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError):
        return False
    return parent == os.getpid() and b"pipeline.portable" in cmdline and b"serve" in cmdline


# --- 1, 12, 13: the model store's files, read like inputs ----------------------------------------------------


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


# --- 9, 10, 11: what a model was trained on -------------------------------------------------------------------


