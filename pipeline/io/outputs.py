"""Output images and the records that say they are complete (what `--skip-existing` trusts).

Each image is written atomically, then a small sidecar `<image>.json`, also atomically, holding the
image's size and SHA-256, a digest of the recipe that made it (method, settings, input URIs), its
provenance (the SHA-256 of the inputs' bytes and the `params_hash`, for `--incremental`) and each
input's fingerprint as read (`storage.fingerprint`: size and modification time or object version).
An output is complete when its sidecar exists, names the recipe of the current run and describes the
image bytes found there; the unit lifecycle (`pipeline.units`) then also compares the inputs'
fingerprints. The sidecar is written last, so a worker killed between the two writes leaves an image
without a sidecar, which a resumed run redoes; a changed setting or input URI redoes it too.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json

import fsspec

from pipeline.io import storage

SIDECAR_SUFFIX = ".json"
SIDECAR_FORMAT = 1
#: Part of every recipe. Bump it when a change to the image math should make `--skip-existing` redo
#: the outputs of earlier versions. 2: the image code was reorganised (one resize, one pyramid, the
#: numeric --scales): earlier outputs are redone rather than trusted.
RECIPE_VERSION = 2


def recipe_digest(**parts) -> str:
    """A stable digest of what makes an output what it is (dataclasses are taken field by field)."""
    return _digest(parts)


def params_hash(method: str, **params) -> str:
    """The report's `params_hash`: a digest of the method and every parameter that changes an output's
    pixels (whole settings dataclasses, extractor, weights, ...), never the input URIs, whose bytes are
    hashed on their own (`content_sha256`, `style_sha256`). `--incremental` skips a unit only when this
    and the input hashes equal an earlier row's. Anything new that changes pixels (a seed) is one more
    keyword here. Includes RECIPE_VERSION, so a change of the image math redoes earlier work too."""
    return _digest({"method": method, **params})


def _digest(parts: dict) -> str:
    plain = {k: dataclasses.asdict(v) if dataclasses.is_dataclass(v) else v for k, v in parts.items()}
    text = json.dumps({"recipe_version": RECIPE_VERSION, **plain}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()


def sidecar_uri(image_uri: str) -> str:
    return image_uri + SIDECAR_SUFFIX


#: Provenance keys a sidecar may carry (also report columns): what `--skip-existing` rows report.
PROVENANCE_KEYS = ("content_sha256", "style_sha256", "params_hash")
#: The inputs whose fingerprints a sidecar records, as "<role>_fingerprint".
INPUT_ROLES = ("content", "style")


def write_output(
    image_uri: str, data: bytes, recipe: str | None, height: int, width: int, provenance: dict | None = None,
    fingerprints: dict | None = None,
) -> None:
    """The image, then its sidecar; each atomic. `provenance`: the PROVENANCE_KEYS of the unit;
    `fingerprints`: each input's `storage.fingerprint` as read, by role (INPUT_ROLES)."""
    storage.write_atomic(image_uri, data)
    record = {
        "format": SIDECAR_FORMAT,
        "size": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "height": int(height),
        "width": int(width),
        "recipe": recipe,
        **{key: (provenance or {}).get(key) for key in PROVENANCE_KEYS},
        **{f"{role}_fingerprint": (fingerprints or {}).get(role) for role in INPUT_ROLES},
    }
    storage.write_atomic(sidecar_uri(image_uri), json.dumps(record, sort_keys=True).encode("ascii"))


def completed_output(image_uri: str, recipe: str) -> dict | None:
    """The sidecar record when `image_uri` is complete for `recipe`; None when it must be (re)done.

    Never raises: an unreadable or damaged output only means "not complete".
    """
    try:
        record = json.loads(_cat(sidecar_uri(image_uri)))
        if not isinstance(record, dict) or record.get("format") != SIDECAR_FORMAT or record.get("recipe") != recipe:
            return None
        data = _cat(image_uri)
        if len(data) != record["size"] or hashlib.sha256(data).hexdigest() != record["sha256"]:
            return None
        return record
    except Exception:  # noqa: BLE001 - missing, half-written by another tool, unparsable: redo it
        return None


def _cat(uri: str) -> bytes:
    with fsspec.open(uri, "rb") as handle:
        return handle.read()
