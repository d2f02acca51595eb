"""Everything Beam: options, manifests, the methods' steps that wrap `transforms/`, sinks, reports, CLI."""
import os

# TensorFlow's C++ log (oneDNN notes, CUDA probes) hides the run's own output; its errors that matter
# reach Python as exceptions. Users can still set this themselves; `--debug` shows everything.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
