"""Everything Beam: options, manifests, fan-out, the steps that wrap `transforms/`, sinks and the CLI."""
import os

# TensorFlow's C++ start-up chatter hides the run's own output; users can still set this themselves.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
