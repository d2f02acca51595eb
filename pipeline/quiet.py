"""Quiet start-up: what libraries print while they load is not for the user of a run.

TensorFlow's C++ runtime writes its start-up lines (oneDNN notes, `cudart_stub`, `failed call to
cuInit` on a machine without a GPU) straight to file descriptor 2 before its logging is set up, so
neither Python's logging nor TF_CPP_MIN_LOG_LEVEL can hide them; Beam logs a warning about BigQuery
client libraries at import. `--debug` shows all of it.
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile


@contextlib.contextmanager
def quiet_startup(enabled: bool = True):
    """While the block runs, file descriptor 2 goes to a discarded temporary file and the root logger
    shows errors only. Python exceptions leaving the block are printed after it, as usual."""
    if not enabled:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    root = logging.getLogger()
    level = root.level
    with tempfile.TemporaryFile() as discarded:
        os.dup2(discarded.fileno(), 2)
        root.setLevel(logging.ERROR)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            root.setLevel(level)
