"""What an NST run is asked for, importable without Keras: the pipeline's options, its classical-only
workers and its driver read these without loading TensorFlow (or JAX, or PyTorch)."""
from __future__ import annotations

import dataclasses

#: The feature extractors `transforms.nst.extractors.EXTRACTORS` builds, by name.
EXTRACTOR_NAMES = ("mobilenet_v3_large", "vgg19")


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
    precision: str = "auto"  # float32 | bfloat16 | auto (see `resolve_precision`)
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
