"""What an NST run is asked for, and whether it is valid, importable without Keras: the pipeline's
options, its classical-only workers and its driver read these without loading TensorFlow (or JAX,
or PyTorch). Resolving "auto" needs the backend: see `backends.resolve_precision`."""
from __future__ import annotations

import dataclasses
import math

#: The feature extractors `transforms.nst.extractors.EXTRACTORS` builds, by name.
EXTRACTOR_NAMES = ("mobilenet_v3_large", "vgg19")
PRECISIONS = ("float32", "bfloat16")
OPTIMIZERS = ("adam", "lbfgs")
INITS = ("content", "noise", "blend")  # the starting images of `controls.initial_image`
JIT_COMPILE = ("on", "off", "auto")
OUTPUT_SIZES = ("max_dim", "original")  # or a long side in pixels, as a string ("1536")


@dataclasses.dataclass(frozen=True)
class NSTSettings:
    """The seed's hyper-parameters. `max_dim` is the long side callers resize both images to."""

    steps: int = 500
    max_dim: int = 512
    style_weight: float = 1e-3
    content_weight: float = 1e3
    tv_weight: float = 30.0
    learning_rate: float = 0.02
    beta_1: float = 0.99
    beta_2: float = 0.999
    epsilon: float = 0.1
    # Speed options (bench/README.md has the measurements behind the defaults).
    precision: str = "auto"  # float32 | bfloat16 | auto (see `backends.resolve_precision`)
    optimizer: str = "adam"  # adam (the seed's) | lbfgs (fixed step 1, no line search, as neural-style)
    scales: str = "1"  # coarse-to-fine "SCALE:FRACTION,...", e.g. "0.5:0.8,1:0.2"; last scale must be 1
    jit_compile: str = "auto"  # on | off | auto: XLA for TensorFlow (auto = on only with a GPU)
    # Style controls (controls.py). The defaults reproduce the seed's pixels exactly.
    style_strength: float = 1.0  # multiplies style_weight and tv_weight; 0 gives back the content image
    preserve_colors: bool = False  # keep the content's colours: stylized L* with the content's a*, b*
    init: str = "content"  # content | noise | blend: the image the optimisation starts from
    seed: int = 0  # with the pair's ids, seeds every random choice (noise / blend init)
    output_size: str = "max_dim"  # max_dim | original | a long side in px; above max_dim: pyramid
    max_output_dim: int = 2048  # cap on the output's long side for output_size original / N
    refine_steps: int = 100  # steps at the first pyramid level above max_dim, halved per level
    max_memory_gb: float = 0.0  # refuse (too_large) outputs estimated above this; 0 = 80% of RAM
    # Observability: the total loss every `loss_every` Adam steps (0 = none), for the report's
    # loss curves and the debug log. The steps run in chunks of that many with the optimiser state
    # carried over, so the pixels are those of an unbroken run.
    loss_every: int = 25


def parse_output_size(value: str) -> str | int:
    """ "max_dim" | "original" | a long side in pixels ("1536" -> 1536).

    >>> parse_output_size("Original"), parse_output_size("1536")
    ('original', 1536)
    """
    text = str(value).strip().lower()
    if text in OUTPUT_SIZES:
        return text
    if text.isdigit() and int(text) >= 32:
        return int(text)
    raise ValueError(f"output_size must be 'max_dim', 'original' or a long side in pixels >= 32, got {value!r}")


def is_high_res(settings: NSTSettings) -> bool:
    """Whether the output is asked at another size than the max_dim result (original or N): the photo
    is then kept at its own size, and `stylize_high_res` refines above max_dim what it needs to."""
    return parse_output_size(settings.output_size) != "max_dim"


def parse_scales(scales: str, steps: int) -> list[tuple[float, int]]:
    """"0.5:0.8,1:0.2" with 100 steps -> [(0.5, 80), (1.0, 20)]; "0.5,1" splits evenly; "1" is
    single-scale. The last scale gets the rounding remainder and must be 1 (full size).

    >>> parse_scales("0.5:0.8,1:0.2", 100), parse_scales("0.25,0.5,1", 10), parse_scales("1", 7)
    ([(0.5, 80), (1.0, 20)], [(0.25, 3), (0.5, 3), (1.0, 4)], [(1.0, 7)])
    """
    parts = [p.split(":") for p in str(scales).replace(" ", "").split(",") if p]
    if not parts or any(len(p) > 2 for p in parts):
        raise ValueError(f"scales must look like '0.5:0.8,1:0.2' or '0.5,1', got {scales!r}")
    factors = [float(p[0]) for p in parts]
    fractions = [float(p[1]) if len(p) == 2 else 1.0 / len(parts) for p in parts]
    if factors[-1] != 1.0 or any(not 0 < f <= 1 for f in factors) or any(f < 0 for f in fractions):
        raise ValueError(f"scales must be in (0, 1] and end with 1, got {scales!r}")
    counts = [int(round(steps * f)) for f in fractions[:-1]]
    counts.append(max(0, steps - sum(counts)))
    return list(zip(factors, counts))


def check_settings(settings: NSTSettings) -> NSTSettings:
    """`settings` unchanged, or a ValueError naming the first bad field (call it in the driver to
    fail before any work; `stylize` and `stylize_high_res` call it too)."""
    if settings.optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {settings.optimizer!r}")
    if settings.init not in INITS:
        raise ValueError(f"init must be one of {INITS}, got {settings.init!r}")
    if not (math.isfinite(settings.style_strength) and settings.style_strength >= 0):
        raise ValueError(f"style_strength must be a finite number >= 0, got {settings.style_strength!r}")
    parse_output_size(settings.output_size)
    parse_scales(settings.scales, settings.steps)
    if settings.max_output_dim < 32 or settings.refine_steps < 0 or not settings.max_memory_gb >= 0:
        raise ValueError("max_output_dim must be >= 32, refine_steps >= 0 and max_memory_gb >= 0 (0 = auto)")
    if settings.precision not in (*PRECISIONS, "auto"):
        raise ValueError(f"precision must be one of {PRECISIONS} or 'auto', got {settings.precision!r}")
    if settings.jit_compile not in JIT_COMPILE:
        raise ValueError(f"jit_compile must be 'on', 'off' or 'auto', got {settings.jit_compile!r}")
    return settings
