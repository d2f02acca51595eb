"""Compiled NST functions, cached on the extractor: one compilation per worker and shape, not per call."""
from __future__ import annotations

import dataclasses
import functools

from transforms.nst import backends
from transforms.nst.extractors import FeatureExtractor
from transforms.nst.settings import NSTSettings

#: Settings that the compiled functions never read (handled around them): left out of the cache key.
NOT_COMPILED = dict(steps=0, scales="1", precision="auto", preserve_colors=False, init="content", seed=0,
                    output_size="max_dim", max_output_dim=2048, refine_steps=0, max_memory_gb=0.0, loss_every=0)


def compiled(extractor: FeatureExtractor, settings: NSTSettings, fn, precision: str = "float32"):
    """`fn(split, settings, features, *args)` compiled once per extractor, settings and precision,
    called as `(*args)`: the backend caches per image shape, so one worker compiles each bucketed
    shape once. Step counts are runtime arguments and the other `NOT_COMPILED` settings are handled
    outside, so they are left out of the key (a new seed or init does not recompile)."""
    key = (fn.__name__, dataclasses.replace(settings, **NOT_COMPILED), precision)
    if key not in extractor.compiled:
        extractor.compiled[key] = backends.compile_with_model(
            extractor.model_for(precision), functools.partial(fn, extractor.split, settings),
            jit_compile=backends.resolve_jit_compile(settings),
        )
    return extractor.compiled[key]
