"""Every read and write goes through fsspec, so local paths, memory://, gs://, s3:// and http(s):// all work."""
from __future__ import annotations

import hashlib
import os
import re
import uuid

import fsspec


def read_bytes(uri: str) -> bytes:
    with fsspec.open(uri, "rb") as handle:
        return handle.read()


def write_atomic(uri: str, data: bytes) -> None:
    """Write so that `uri` either does not exist or holds all of `data`, even if the worker is killed.

    Local files are written under a temporary name and renamed; object stores get a single put,
    which is atomic there.
    """
    fs, path = fsspec.core.url_to_fs(uri)
    if isinstance(fs, fsspec.implementations.local.LocalFileSystem):
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        tmp = f"{path}.{uuid.uuid4().hex}.tmp"
        try:
            with open(tmp, "wb") as handle:
                handle.write(data)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
    else:
        fs.pipe_file(path, data)


def join_uri(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *parts])


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_name(identifier: str) -> str:
    """A file-name-safe form of an id that can never leave its folder.

    Ids that needed changing get a short digest of the original, so that two different ids never
    share a file name ("a/b" and "a_b" stay apart).
    """
    cleaned = _UNSAFE.sub("_", identifier).strip("._") or "_"
    if cleaned == identifier:
        return cleaned
    digest = hashlib.sha1(identifier.encode("utf-8", "surrogateescape")).hexdigest()[:8]
    return f"{cleaned[:100]}-{digest}"
