"""The feed-forward model store: a style's network as `<style>-<hash>.weights.h5` plus its JSON card,
under --ff-model-dir (default OUTPUT/models), read and written like every other file of a run.

Reads go through `storage.read_input` under the run's read policy, as inputs do: only regular files
(a FIFO at a model's name is refused, not waited for), --read-timeout, --max-input-bytes and
--allowed-schemes. A card is trusted only when its fields have the types the pipeline reads, and the
weights only when their SHA-256 is the one their card recorded, so that weights replaced, truncated
or written by another run after the card are never applied under that card's scores.
"""
from __future__ import annotations

import hashlib
import json
import numbers
import os
import tempfile

import fsspec

from pipeline.io import storage

#: 2: the card records its weights' SHA-256 (format-1 models are trained again once).
CARD_FORMAT = 2


class ModelMismatch(ValueError):
    """The weights at a model's URI are not the ones its card describes."""


def card_uri(model_uri: str) -> str:
    """The JSON card beside a model's weights."""
    return model_uri[: -len(".weights.h5")] + ".json"


def read_card(model_uri: str, policy: storage.ReadPolicy) -> dict | None:
    """The card of a model whose weights and card both exist and whose card is well-formed, else None
    (the model is then trained again and replaced). A model file that cannot be read (not a regular
    file, a time-out, a scheme not allowed) raises the read's `ReadError`: it is reported, not replaced."""
    try:
        storage.fingerprint(model_uri, policy)  # the weights exist (they are read, bounded, when loaded)
        data = storage.read_bytes(card_uri(model_uri), policy)
    except FileNotFoundError:
        return None
    try:
        card = json.loads(data)
    except ValueError:
        return None
    return card if well_formed(card) else None


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def well_formed(card) -> bool:
    """Whether `card` is a current card with the field types the pipeline reads (a hand-edited or
    foreign card with the right hash must not stop the run)."""
    if not isinstance(card, dict) or card.get("format") != CARD_FORMAT:
        return False
    settings, heldout, training_set = card.get("settings"), card.get("heldout"), card.get("training_set")
    if not (isinstance(card.get("model_hash"), str) and isinstance(card.get("weights_sha256"), str)):
        return False
    if not (isinstance(settings, dict) and isinstance(settings.get("train_steps"), int)):
        return False
    if not (isinstance(training_set, dict) and isinstance(training_set.get("digest"), str)
            and isinstance(training_set.get("broken"), list)):
        return False
    if heldout is None:
        return True
    return (isinstance(heldout, dict) and isinstance(heldout.get("gate_steps"), int)
            and all(_is_number(heldout.get(key)) for key in ("ratio_total", "ff_total", "ff_content", "ff_style", "ff_tv")))


def check_writable(model_dir: str) -> None:
    """OSError when a local model folder could not take a model (it, or a folder above it, is a file; it
    cannot be written), found before any training rather than after it. Nothing is created: the nearest
    existing folder is tried with an unnamed temporary file. Object stores are found out at the write."""
    fs, path = fsspec.core.url_to_fs(model_dir)
    if not isinstance(fs, fsspec.implementations.local.LocalFileSystem):
        return
    folder = os.path.abspath(path)
    while not os.path.lexists(folder):
        folder = os.path.dirname(folder)
    if not os.path.isdir(folder):
        where = "" if folder == os.path.abspath(path) else f"{os.path.basename(folder)} "
        raise NotADirectoryError(f"{where}is a file, not a folder")
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise OSError(f"cannot be written ({exc.strerror or exc})") from None


def read_weights(model_uri: str, weights_sha256: str, policy: storage.ReadPolicy) -> bytes:
    """The weights' bytes, read under `policy`; ModelMismatch when they are not those whose SHA-256
    their card recorded."""
    data = storage.read_bytes(model_uri, policy)
    if hashlib.sha256(data).hexdigest() != weights_sha256:
        raise ModelMismatch(f"{model_uri} is not the network its card describes (its SHA-256 differs)")
    return data


def write_model(model_uri: str, weights: bytes, card: dict) -> dict:
    """The weights, then their card (recording the weights' SHA-256), each written atomically; the card."""
    card = dict(card, format=CARD_FORMAT, weights_sha256=hashlib.sha256(weights).hexdigest())
    storage.write_atomic(model_uri, weights)
    write_card(model_uri, card)
    return card


def write_card(model_uri: str, card: dict) -> None:
    storage.write_atomic(card_uri(model_uri), json.dumps(card, indent=1, sort_keys=True).encode())
