"""Quiet by default: a user of a run sees its progress, its summary and Toonbeam's own warnings;
what libraries print is for `--debug`.

TensorFlow's C++ runtime writes its start-up lines (oneDNN notes, `cudart_stub`, `failed call to
cuInit` on a machine without a GPU) straight to file descriptor 2 before its logging is set up, so
neither Python's logging nor TF_CPP_MIN_LOG_LEVEL can hide them (`quiet_startup`); later ones obey
TF_CPP_MIN_LOG_LEVEL. Beam and TensorFlow log Python warnings that are not the user's business (a
BigQuery client missing at import, RunInference's memory probe, Keras retracing notes), so other
libraries' log records show from ERROR up (`configure_logging`).
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile


#: Loggers whose warnings a user should see.
OWN_LOGGERS = ("pipeline", "transforms", "__main__")


class _OwnWarnings(logging.Filter):
    """Toonbeam's records from WARNING up, every other library's from ERROR up."""

    def filter(self, record: logging.LogRecord) -> bool:
        own = record.name.split(".")[0] in OWN_LOGGERS
        return record.levelno >= (logging.WARNING if own else logging.ERROR)


def configure_logging(debug: bool) -> None:
    """--debug: every record from DEBUG up, and TensorFlow's C++ log too; otherwise `_OwnWarnings`."""
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if debug:
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0"
    else:
        for handler in logging.getLogger().handlers:
            handler.addFilter(_OwnWarnings())


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
