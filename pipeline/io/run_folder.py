"""The --output folder as Toonbeam owns it: the run record that marks a folder as Toonbeam's, the only
things a run ever replaces there, and the checks that stop a run, before any work, when the folder
cannot be used.

A run first writes OUTPUT/toonbeam-run.json, its run record (which also proves that OUTPUT can be
created and written, and keeps the run's read policy, which may tighten the contact sheet's reads),
then removes what an earlier run into the same folder left behind: report parts, dead letters, loss
curves, the contact sheet, the temporary folders of Beam's sinks under them, and the temporary files of
writes cut short (`storage.write_atomic`'s). Nothing else is removed or replaced: a folder without a run record that
holds any of these names, or a run's folder holding other files among them, stops the run with one
line. Images stay (--skip-existing reuses them).
"""
from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import logging
import math
import os
import re
import socket
import time

import fsspec

from pipeline.errors import one_line
from pipeline.io import outputs, storage
from transforms.images import DEFAULT_MAX_INPUT_PIXELS

LOG = logging.getLogger(__name__)

RUN_RECORD = "toonbeam-run.json"
CONTACT_SHEET = "index.html"
#: The folders a run replaces, with the names of the files Beam's sinks write in them.
RECORD_FOLDERS = {
    "report": re.compile(r"part-\d+-of-\d+\.parquet"),
    "errors": re.compile(r"errors-\d+-of-\d+\.jsonl"),
    "curves": re.compile(r"curves-\d+-of-\d+\.jsonl"),
}
#: A sink's temporary folder beside its files (left there when a run is killed).
SINK_TEMPORARY = re.compile(r"beam-temp-.+")
#: Everything a run writes directly in OUTPUT.
TOOL_NAMES = ("images", *RECORD_FOLDERS, CONTACT_SHEET, RUN_RECORD)
#: The folders under OUTPUT that a run writes in or cleans up (models: the default --ff-model-dir).
OWNED_FOLDERS = ("images", "models", *RECORD_FOLDERS)
#: The lock a run holds on a local OUTPUT for as long as it runs (one run at a time per folder).
LOCK_FILE = ".toonbeam.lock"
RECORD_FORMAT = 1
#: Seconds before a temporary file of a model write counts as stale: a model folder may be shared by runs
#: into other outputs (no lock covers it), and a write in flight there takes seconds, not minutes.
MODEL_TEMPORARY_AGE = 600
#: How the files of a model end: its weights and its card (pipeline.io.model_store).
MODEL_FILES = (".weights.h5", ".json")
#: What each record folder holds, as a message names it.
RECORD_NAMES = {"report": "the report", "errors": "the dead letters", "curves": "the loss curves"}


class OutputError(ValueError):
    """OUTPUT cannot be used by this run; the one-line message says why (the run has not started)."""


# ---------------------------------------------------------------------------------------- record


def write_run_record(output: str, run_id: str, policy: storage.ReadPolicy, max_input_pixels: int) -> None:
    """OUTPUT/toonbeam-run.json, written first: OutputError when OUTPUT cannot be created or written."""
    record = {
        "tool": "toonbeam", "format": RECORD_FORMAT, "run_id": run_id,
        "read_policy": dataclasses.asdict(policy), "max_input_pixels": max_input_pixels,
    }
    try:
        storage.write_atomic(storage.join_uri(output, RUN_RECORD), json.dumps(record, indent=1).encode("utf-8"))
    except OSError as exc:
        raise OutputError(f"--output {output} cannot be written: {exc}") from None


def read_run_record(output: str) -> dict | None:
    """The run record of OUTPUT, or None when it has none (or something else under that name)."""
    try:
        record = json.loads(storage.read_bytes(storage.join_uri(output, RUN_RECORD)))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and record.get("tool") == "toonbeam" else None


def read_limits(output: str, policy: storage.ReadPolicy = storage.ReadPolicy(),
                max_input_pixels: int = DEFAULT_MAX_INPUT_PIXELS) -> tuple[storage.ReadPolicy, int]:
    """The reader's read policy and pixel limit, tightened where the run record of OUTPUT is stricter
    (the run refused more than the reader would): whoever wrote the folder may narrow what reading it
    fetches, never widen it. A field of the wrong type is ignored, with a warning naming it."""
    record = read_run_record(output) or {}
    saved = record.get("read_policy", {})
    if not isinstance(saved, dict):
        _ignored(output, "read_policy", saved)
        saved = {}
    tighter = {}
    for name, value in saved.items():
        current = getattr(policy, name, None)
        if name == "allowed_schemes" and isinstance(value, list) and all(isinstance(s, str) for s in value):
            tighter[name] = tuple(s for s in current if s in value)
        elif name == "http_allowed_addresses" and value in storage.HTTP_ADDRESS_POLICIES:
            tighter[name] = min(current, value, key=storage.HTTP_ADDRESS_POLICIES.index)  # strictest first
        elif isinstance(current, (int, float)) and _limit(value, type(current)):
            tighter[name] = min(current, value)
        else:
            _ignored(output, f"read_policy.{name}", value)
    pixels = record.get("max_input_pixels", max_input_pixels)
    if not _limit(pixels, int):
        _ignored(output, "max_input_pixels", pixels)
        pixels = max_input_pixels
    return dataclasses.replace(policy, **tighter), min(max_input_pixels, pixels)


def _ignored(output: str, field: str, value) -> None:
    LOG.warning("%s/%s: ignored %s (%s): the reader's own limit applies", output, RUN_RECORD, field,
                one_line(repr(value), 60))


def _limit(value, kind: type) -> bool:
    """Whether `value` is a usable limit of type `kind` (int: an int; float: any finite number), >= 0."""
    if isinstance(value, bool) or not isinstance(value, int if kind is int else (int, float)):
        return False
    return math.isfinite(value) and value >= 0


# ---------------------------------------------------------------------------------------- checks


def check_output(output: str) -> None:
    """Before any work: OUTPUT is, or can become, a folder that Beam's sinks can write, and holds nothing
    a run would replace that Toonbeam did not write. Raises OutputError with one line."""
    _check_sinks_can_write(output)
    fs, path = fsspec.core.url_to_fs(output)
    if not fs.exists(path):
        return
    if not fs.isdir(path):
        raise OutputError(f"--output {output} is a file, not a folder")
    root = path.rstrip("/")
    if isinstance(fs, fsspec.implementations.local.LocalFileSystem):
        _check_no_links(output, root)
    if read_run_record(output) is None:
        present = [name for name in _names(fs, root) if name in TOOL_NAMES]
        if present:
            raise OutputError(
                f"--output {output} holds {', '.join(present)} but no {RUN_RECORD}: Toonbeam did not write them "
                "(or a version from before run records did); choose a new folder or move them away"
            )
        return
    foreign = next(_foreign_records(fs, root), None)
    if foreign is not None:
        raise OutputError(
            f"--output {output}: {foreign} was not written by Toonbeam, and a run replaces "
            f"{'/, '.join(RECORD_FOLDERS)}/; move it away first"
        )


def _check_no_links(output: str, root: str) -> None:
    """A local OUTPUT's folders that a run writes in or cleans up (images/, models/, report/, errors/,
    curves/ and every folder under images/ and models/) are real folders inside OUTPUT: a symbolic link
    there would make the run write, replace and delete files wherever it leads."""
    for name in OWNED_FOLDERS:
        top = os.path.join(root, name)
        for folder in [top, *_subfolders(top)]:
            if os.path.islink(folder):
                raise OutputError(
                    f"--output {output}: {os.path.relpath(folder, root)} is a symbolic link (to {os.readlink(folder)}); "
                    "a run writes and cleans up only inside --output: replace it with a folder"
                )


def _files_under(folder: str) -> list[str]:
    """Every file under `folder`, never following a symbolic link (`folder` itself included)."""
    if os.path.islink(folder):
        return []
    return [os.path.join(parent, name) for parent, _, names in os.walk(folder, followlinks=False) for name in names]


def _subfolders(folder: str) -> list[str]:
    """Every folder under `folder`, symbolic links to folders included, never followed."""
    found = []
    for parent, names, _ in os.walk(folder, followlinks=False):
        found += [os.path.join(parent, name) for name in names]
    return found


def check_replaceable(output: str, name: str) -> None:
    """OutputError when OUTPUT/`name` exists in a folder that has no run record (not Toonbeam's to replace)."""
    fs, path = fsspec.core.url_to_fs(storage.join_uri(output, name))
    if fs.exists(path) and read_run_record(output) is None:
        raise OutputError(f"{output}/{name} exists and {output} has no {RUN_RECORD}: Toonbeam did not write it")


def _check_sinks_can_write(output: str) -> None:
    """The report and the dead letters are written by Beam's sinks, through Beam's own file systems."""
    from apache_beam.io.filesystems import FileSystems

    try:
        FileSystems.get_filesystem(output)
    except ValueError:
        raise OutputError(
            f"--output {output}: Beam's file sinks cannot write {storage.scheme(output)}:// (use a local path, "
            "gs:// with apache-beam[gcp] or s3:// with apache-beam[aws])"
        ) from None


def _names(fs, folder: str) -> list[str]:
    return sorted(name for name, _ in _entries(fs, folder))


def _entries(fs, folder: str) -> list[tuple[str, str]]:
    """(name, "file" | "directory" | "other") of each entry of an existing folder."""
    listing = fs.ls(folder, detail=True)
    return [(info["name"].rstrip("/").rsplit("/", 1)[-1], info.get("type", "file")) for info in listing]


def _foreign_records(fs, root: str):
    """The paths (relative to OUTPUT) in a run's record folders that are not a run's own."""
    for folder, pattern in RECORD_FOLDERS.items():
        where = f"{root}/{folder}"
        if not fs.exists(where):
            continue
        if not fs.isdir(where):
            yield folder
            continue
        for name, kind in _entries(fs, where):
            if not _replaceable(pattern, name, kind):
                yield f"{folder}/{name}"


def _replaceable(pattern: re.Pattern, name: str, kind: str) -> bool:
    """Whether a record folder's entry is a run's own: a sink's file, or a sink's temporary folder."""
    if kind == "directory":
        return bool(SINK_TEMPORARY.fullmatch(name))
    return kind == "file" and bool(pattern.fullmatch(name))


def missing_records(output: str) -> list[str]:
    """The records every run writes (report, dead letters) that OUTPUT has no file of, as a message names
    them: what a run that stopped part-way lost."""
    fs, path = fsspec.core.url_to_fs(output)
    missing = []
    for folder in ("report", "errors"):
        where = f"{path.rstrip('/')}/{folder}"
        names = _names(fs, where) if fs.isdir(where) else []
        if not any(RECORD_FOLDERS[folder].fullmatch(name) for name in names):
            missing.append(f"{RECORD_NAMES[folder]} ({folder}/)")
    return missing


# ----------------------------------------------------------------------------------------- clean up


def remove_earlier_records(output: str) -> None:
    """What an earlier run into OUTPUT wrote that describes that run (its records, its contact sheet,
    its sinks' temporary folders): only those names, after `check_output` said they are a run's."""
    fs, path = fsspec.core.url_to_fs(output)
    root = path.rstrip("/")
    for folder, pattern in RECORD_FOLDERS.items():
        if not fs.isdir(f"{root}/{folder}"):
            continue
        for name, kind in _entries(fs, f"{root}/{folder}"):
            if _replaceable(pattern, name, kind):
                fs.rm(f"{root}/{folder}/{name}", recursive=kind == "directory")
    if fs.isfile(f"{root}/{CONTACT_SHEET}"):
        fs.rm(f"{root}/{CONTACT_SHEET}")


def remove_stale_temporaries(output: str, model_dir: str | None = None) -> None:
    """The temporary files of this tool's atomic writes that a killed run left (local folders only: object
    stores get single puts): those of images and their sidecars under OUTPUT/images/, of OUTPUT's own
    files, and of models and their cards in OUTPUT/models/ and `model_dir` (--ff-model-dir), these once
    MODEL_TEMPORARY_AGE old. Any other file stays, whatever its name."""
    fs, path = fsspec.core.url_to_fs(output)
    if not isinstance(fs, fsspec.implementations.local.LocalFileSystem) or not fs.isdir(path):
        return
    root = path.rstrip("/")
    images = _files_under(f"{root}/images")
    image_names = (".png", ".png" + outputs.SIDECAR_SUFFIX)
    stale = [p for p in images if (storage.temporary_of(p) or "").endswith(image_names)]
    stale += [f"{root}/{n}" for n in _names(fs, root) if storage.temporary_of(n) in (CONTACT_SHEET, RUN_RECORD)]
    for folder in (f"{root}/models", model_dir):
        stale += _stale_model_temporaries(folder) if folder else []
    for name in sorted({os.path.abspath(name) for name in stale}):  # --ff-model-dir may be OUTPUT/models
        fs.rm(name)


def _stale_model_temporaries(model_dir: str) -> list[str]:
    """The temporary files of weights and cards directly in a local model folder that are at least
    MODEL_TEMPORARY_AGE old: regular files only, never through a symbolic link."""
    fs, folder = fsspec.core.url_to_fs(model_dir)
    local = isinstance(fs, fsspec.implementations.local.LocalFileSystem)
    if not local or os.path.islink(folder) or not os.path.isdir(folder):
        return []
    oldest_kept = time.time() - MODEL_TEMPORARY_AGE
    with os.scandir(folder) as entries:
        return [
            entry.path for entry in entries
            if entry.is_file(follow_symlinks=False) and (storage.temporary_of(entry.name) or "").endswith(MODEL_FILES)
            and entry.stat(follow_symlinks=False).st_mtime < oldest_kept
        ]


# ------------------------------------------------------------------------------------------- lock


@contextlib.contextmanager
def output_lock(output: str, run_id: str):
    """Hold OUTPUT/.toonbeam.lock for the block: OutputError, naming the holder, when another run holds
    it (a second run's clean-up would delete the first one's files and mix both in one report).

    An advisory `flock` on a local folder, which the kernel releases when its process ends however it
    ends (a SIGKILLed run leaves no stale lock); the file holds the holder's pid, host and run id for the
    message, and is removed at the end. Object stores (gs://, s3://) have no such lock: one run at a time."""
    fs, path = fsspec.core.url_to_fs(output)
    if not isinstance(fs, fsspec.implementations.local.LocalFileSystem):
        yield
        return
    lock = os.path.join(path, LOCK_FILE)
    try:
        os.makedirs(path, exist_ok=True)
        descriptor = _acquire(lock)
    except BlockingIOError:
        raise OutputError(
            f"--output {output} is in use by another run ({_holder(lock)}); run one run at a time per output folder"
        ) from None
    except OSError as exc:
        raise OutputError(f"--output {output} cannot be written: {exc}") from None
    try:
        os.write(descriptor, json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "run_id": run_id}).encode())
        yield
    finally:
        with contextlib.suppress(OSError):
            os.remove(lock)  # while still held: a run waiting on this file sees it gone and takes a new one
        os.close(descriptor)


def _acquire(lock: str) -> int:
    """A descriptor of `lock` holding its exclusive flock (BlockingIOError while another holds it). A
    file removed by its holder between our open and our flock is not the lock any more: open again."""
    while True:
        descriptor = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if os.path.exists(lock) and os.path.samestat(os.fstat(descriptor), os.stat(lock)):
                os.ftruncate(descriptor, 0)
                return descriptor
        except BaseException:
            os.close(descriptor)
            raise
        os.close(descriptor)


def _holder(lock: str) -> str:
    try:
        holder = json.loads(storage.read_bytes(lock))
        return f"pid {holder['pid']} on {holder['host']}, run {holder['run_id']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "its lock file is unreadable"
