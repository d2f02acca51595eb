"""The levels an NST run optimises at, planned before any pixel moves (Keras-free).

A level is an image size and a number of steps. Below max_dim, `scales` puts cheap steps on a
fraction of the size first ("0.5:0.8,1:0.2": 80% of the steps at half size); above it, when
`output_size` asks for more, refinement levels grow the max_dim result to the output size, where the
photo's own pixels add the detail. `optimize` walks any plan with one loop (resize the images to
the level, content targets of the photo at that size, the level's steps); the style grams carry
over unchanged, since they are averages over locations.
"""
from __future__ import annotations

import dataclasses
import math

from transforms.images import scaled_shape
from transforms.nst.inputs import NST_MIN_SIDE
from transforms.nst.settings import parse_output_size, parse_scales


@dataclasses.dataclass(frozen=True)
class Level:
    """A size to optimise at for `steps` steps, reached from the previous level's result by an
    `images.resize` that enlarges with `enlarge`."""

    shape: tuple[int, int]  # (height, width)
    steps: int
    enlarge: str  # "bilinear" | "bicubic"


@dataclasses.dataclass(frozen=True)
class Plan:
    """start: the size the starting images are made at (the max_dim size: `init` noise is drawn
    there); levels: in order; output: the result's size, the last level's or smaller (downscaled)."""

    start: tuple[int, int]
    levels: tuple[Level, ...]
    output: tuple[int, int]


def output_shape(height: int, width: int, settings) -> tuple[int, int]:
    """The result's (height, width) for a content photo of (height, width):

    max_dim   the long side is `max_dim` (today's behaviour, up or down);
    original  the photo's own size, scaled down to `max_output_dim` on the long side if larger;
    N         a long side of min(N, the photo's long side, `max_output_dim`): never larger than
              the photo, whose pixels are what the refinement levels add.
    """
    size = parse_output_size(settings.output_size)
    if size == "max_dim":
        return scaled_shape(height, width, settings.max_dim)
    long_side = max(height, width) if size == "original" else min(size, max(height, width))
    return scaled_shape(height, width, min(long_side, settings.max_output_dim))


def refinement_shapes(height: int, width: int, settings) -> list[tuple[int, int]]:
    """The max_dim base, then n = ceil(log2(target / max_dim)) refinement sizes with long sides
    growing geometrically (at most x2 each) up to the output. A target no larger than the base is
    the base alone (optimised at max_dim, then downscaled).

    >>> from types import SimpleNamespace as S
    >>> refinement_shapes(1536, 2048, S(output_size="original", max_dim=512, max_output_dim=4096))
    [(384, 512), (768, 1024), (1536, 2048)]
    >>> refinement_shapes(300, 450, S(output_size="original", max_dim=512, max_output_dim=4096))
    [(341, 512)]
    """
    base = scaled_shape(height, width, settings.max_dim)
    target = output_shape(height, width, settings)
    if max(target) <= max(base):
        return [base]
    levels = math.ceil(math.log2(max(target) / max(base)) - 1e-9)
    ratio = (max(target) / max(base)) ** (1.0 / levels)
    middle = [scaled_shape(height, width, round(max(base) * ratio ** k)) for k in range(1, levels)]
    return [base, *middle, target]


def refine_steps_at(level: int, settings) -> int:
    """Steps at refinement level `level` (1 = the first above the base): `refine_steps`, halved
    at each further level (pixels grow x4 per level, so the cost per level stays about flat)."""
    return max(1, settings.refine_steps // (2 ** (level - 1))) if settings.refine_steps > 0 else 0


def plan_at(shape: tuple[int, int], settings) -> Plan:
    """`stylize`'s plan for a content of `shape`: the `scales` levels of `settings.steps`, the last at
    `shape` itself (a coarse side never below NST_MIN_SIDE); the output is `shape`. A finer scale
    starts from the coarser result enlarged bilinearly: bicubic's overshoot is detail the optimiser
    has to undo (measured at 128 px, "0.5:0.8,1:0.2" of 100 Adam steps: 15% higher final loss).

    >>> from types import SimpleNamespace as S
    >>> [(level.shape, level.steps) for level in plan_at((40, 60), S(scales="0.5:0.8,1:0.2", steps=10)).levels]
    [((20, 30), 8), ((40, 60), 2)]
    """
    height, width = int(shape[0]), int(shape[1])

    def scaled(factor: float) -> tuple[int, int]:
        if factor == 1.0:
            return height, width
        return max(NST_MIN_SIDE, round(height * factor)), max(NST_MIN_SIDE, round(width * factor))

    levels = tuple(Level(scaled(factor), steps, "bilinear") for factor, steps in parse_scales(settings.scales, settings.steps))
    return Plan((height, width), levels, (height, width))


def plan(height: int, width: int, settings) -> Plan:
    """`stylize_high_res`'s plan for a photo of (height, width): `plan_at` its max_dim size, then
    each larger `refinement_shapes` size with `refine_steps_at` its level, enlarged bicubically (as
    this pyramid always was; bilinear measured mixed there: -9% loss for one style, +10% for
    another); the output `output_shape`.

    >>> from types import SimpleNamespace as S
    >>> settings = S(scales="1", steps=10, output_size="original", max_dim=512, max_output_dim=4096, refine_steps=6)
    >>> [(level.shape, level.steps) for level in plan(1536, 2048, settings).levels]
    [((384, 512), 10), ((768, 1024), 6), ((1536, 2048), 3)]
    """
    base, *above = refinement_shapes(height, width, settings)
    refinement = tuple(Level(shape, refine_steps_at(k, settings), "bicubic") for k, shape in enumerate(above, start=1))
    return Plan(base, plan_at(base, settings).levels + refinement, output_shape(height, width, settings))
