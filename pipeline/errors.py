"""Why a unit failed: short stable codes for the report, one-line messages naming the input, and the
dead-letter records (the failed unit with its original manifest rows, to fix and re-submit)."""
from __future__ import annotations

import json
import re

from pipeline.io import storage
from pipeline.io.manifests import ManifestEntry
from transforms import images

#: Every `error_type` a report row can carry, with what it means. Codes are stable: scripts match them.
ERROR_TYPES: dict[str, str] = {
    "bad_manifest_row": "the manifest row is unusable: no uri, a duplicate id, a line that is not JSON, a URI with a "
    "NUL byte, a malformed URL (never requested, never retried)",
    "unsupported_scheme": "the URI's scheme is not in --allowed-schemes",
    "symlink_refused": "a file of a folder input is a symbolic link to a place outside that folder (--follow-symlinks "
    "reads it)",
    "not_found": "the input does not exist (also HTTP 404)",
    "not_a_file": "the URI names a folder, a FIFO, a device or a socket, not a regular file (refused without "
    "opening it)",
    "too_large": "more pixels than --max-input-pixels (read from the header) or bytes than --max-input-bytes, "
    "or an NST output that would need more memory than --max-memory-gb",
    "too_small": "too small for NST's feature extractor after resizing to --max-dim",
    "decode_error": "not a decodable image: empty, truncated, text, an unsupported format",
    "http_error": "an HTTP error status (5xx and 429 after --http-retries retries), or too many redirects",
    "address_not_allowed": "the HTTP host (or a redirect's) resolves to an address --http-allowed-addresses "
    "refuses: by default loopback, link-local (the cloud metadata service) and reserved ones",
    "timeout": "no complete HTTP response within --http-timeout (after --http-retries retries), or no complete "
    "read from a file system or object store within --read-timeout",
    "read_error": "any other failure to read: permission denied, connection refused or reset",
    "non_finite_loss": "NST's loss became NaN or infinite",
    "no_training_data": "feedforward: no usable training photo for a style, so it has no model (the training row and "
    "every pair of that style)",
    "quality_gate": "feedforward: the style's model scored above --ff-max-loss-ratio times NST's loss on held-out "
    "photos (or could not be scored), so it is not applied",
    "model_error": "feedforward: the style's network could not be loaded when applied (its weights changed, or "
    "were damaged, after the training step checked them against their card)",
    "write_error": "the output image or its sidecar could not be written",
    "internal_error": "anything else, which is a bug: the message names the exception",
}

MAX_MESSAGE = 500


class UnitError(Exception):
    """A unit of work failed for a known reason: `error_type` is a short stable code."""

    def __init__(self, error_type: str, message: str):
        super().__init__(message)
        self.error_type = error_type


def one_line(text: str, limit: int = MAX_MESSAGE) -> str:
    """`text` on one line (whitespace runs collapsed), at most `limit` characters."""
    text = re.sub(r"\s+", " ", str(text)).strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


def classify(exc: Exception) -> tuple[str, str]:
    """(error_type, one-line message) for any failure of a unit. The message says what went wrong;
    callers prefix the input it happened to (see `describe`)."""
    if isinstance(exc, (UnitError, storage.ReadError)):
        return exc.error_type, one_line(str(exc))
    if isinstance(exc, images.ImageTooLarge):
        return "too_large", one_line(str(exc))
    if isinstance(exc, images.ImageDecodeError):
        return "decode_error", one_line(str(exc))
    if isinstance(exc, images.ImageTooSmall):
        return "too_small", one_line(str(exc))
    if isinstance(exc, FileNotFoundError):
        return "not_found", "does not exist"
    if isinstance(exc, IsADirectoryError):
        return "not_a_file", "is a directory, not a file"
    if isinstance(exc, PermissionError):
        return "read_error", "permission denied"
    return "internal_error", one_line(f"{type(exc).__name__}: {exc}")


def describe(exc: Exception, subject: str) -> tuple[str, str]:
    """(error_type, "<subject>: <what went wrong>"): the message names the input."""
    error_type, message = classify(exc)
    return error_type, one_line(f"{subject}: {message}" if subject else message)


def dead_letter(row: dict, content: ManifestEntry | None, style: ManifestEntry | None = None) -> dict:
    """The dead-letter record of a failed unit. Its `id` and `uri` are the content's, so that a file of
    these lines is itself a JSONL manifest; `manifest_row` / `style_manifest_row` are the rows as read."""
    return {
        "id": row["content_id"],
        "uri": row["content_uri"],
        "style_id": row.get("style_id"),
        "style_uri": row.get("style_uri"),
        "method": row.get("method"),
        "run_id": row.get("run_id"),
        "error_type": row["error_type"],
        "error": row["error"],
        "manifest_row": None if content is None else content.row,
        "style_manifest_row": None if style is None else style.row,
    }


def dead_letter_json(record: dict) -> str:
    """One JSON line. ASCII-only, so that file names that are not UTF-8 survive unchanged."""
    return json.dumps(record, ensure_ascii=True, default=str)
