"""What a feed-forward style network is trained and applied with, importable without Keras
(the pipeline turns every field into a `--ff-<name>` flag; its driver reads them without
loading TensorFlow or JAX). bench/FF_RESEARCH.md has the measurements behind the defaults."""
from __future__ import annotations

import dataclasses
import math


@dataclasses.dataclass(frozen=True)
class FFSettings:
    """Training and apply knobs of one style's network. Plain int/float/str/bool fields."""

    # Data: photos and the style image are resized so that their long side is `image_size` (the
    # size the network will mostly be applied at, so that the style's texture scale matches), then
    # training takes random `train_size` px square crops of the photos. The defaults are the best
    # CPU-sized budget measured (bench/FF_RESEARCH.md, runs r10 and r36: 1000 steps, 11-14 min per
    # style alone on a 2-core EPYC).
    image_size: int = 256
    train_size: int = 128
    train_steps: int = 1000
    batch_size: int = 8
    # Adam with a linear warmup to `learning_rate`, then cosine decay to lr x `final_lr_fraction`.
    learning_rate: float = 3e-2
    warmup_steps: int = 50
    final_lr_fraction: float = 0.01
    # Network (Johnson et al. 2016 with instance normalisation): channels `width`, 2 x width and
    # 4 x width, `residual_blocks` residual blocks at a quarter of the resolution.
    width: int = 16
    residual_blocks: int = 5
    output: str = "residual"  # sigmoid(net) | residual: sigmoid(logit(photo) + net), the photo at start
    # The residual output's photo is clipped to [c, 1 - c] before the logit: near 0 or 1 the sigmoid's
    # gradient vanishes, and 1e-3 left saturated pixels stuck (pop_art 5.87x NST-100; 0.05: 2.59x; r20).
    residual_clip: float = 0.05
    # Training loss: the seed's NST terms (transforms.nst.losses) on the VGG19 features, with its
    # weights by default. The evaluation always uses the seed's loss (NSTSettings()).
    content_layer: str = "block5_conv2"
    content_weight: float = 1e3
    style_weight: float = 1e-3
    # > 0: the style weight is set per style so that the untrained network's style term (the photos' own)
    # is this much (training.calibrated_style_weight); 0: `style_weight` for every style.
    style_target: float = 7.3e8
    tv_weight: float = 30.0
    # Structure term (Li et al. 2017): the Laplacian of the output's and the photo's luminance, average-pooled
    # `laplacian_pool` x `laplacian_pool`, compared pixel by pixel (transforms.nst.losses.laplacian_loss).
    laplacian_weight: float = 1e9
    laplacian_pool: int = 4
    # A barrier on output logits beyond [saturation_limit, 1 - saturation_limit] (transforms.nst.losses.
    # saturation_loss): a saturated sigmoid has no gradient, so pixels pushed there early stayed there
    # (r28's pure-blue stamps on pop_art, stained_glass and wave_bands; r29).
    saturation_weight: float = 1e9
    saturation_limit: float = 0.02
    # Colour term: the output's and the photo's RGB, average-pooled `color_pool` x `color_pool`, compared cell
    # by cell (transforms.nst.losses.color_loss): the photo's colours per region, the style's below that scale
    # (r34, r36: with 1000 steps, a lower style term than r29's on every style and stained_glass's cells).
    color_weight: float = 1e9
    color_pool: int = 16
    seed: int = 0
    precision: str = "auto"  # the extractor's: float32 | bfloat16 | auto (bfloat16 where the CPU has it)
    loss_every: int = 25  # training history: the mean loss of every `loss_every` steps
    apply_batch: int = 4  # images per network call in `apply`


#: The quality gate's default floor on photo dependence (transforms.quality.photo_dependence of the
#: held-out outputs): texture generators measured below it, stylised photos above (bench/FF_RESEARCH.md).
MIN_DEPENDENCE = 0.3
#: The quality gate's default floor on style progress (`evaluation.style_progress` of the held-out outputs): how far
#: toward the style a network takes the photos, as a share of how far NST takes them. Networks that return the
#: photo measured 0.00-0.05, every stylising network of r22-r34 0.62-0.99, the peer 0.23-0.85 (bench/FF_RESEARCH.md).
MIN_STYLE_PROGRESS = 0.5
#: The quality gate's default ceiling on saturated pixels (`quality.saturated_share` of the held-out outputs, above
#: the style image's or the photos' own share): networks that paste flat pure-colour stamps measured 5.9-71%, every other network
#: and NST-100 at most 2.5% (bench/FF_RESEARCH.md finding 29).
MAX_SATURATED = 0.04
#: The default share of the photo blended back inside detected faces when a network is applied
#: (transforms.quality.keep_faces; the pipeline's --ff-keep-faces): at 0.7 MTCNN finds every held-out face
#: again under all four sample styles, at 0.5 one of pop_art's is lost (bench/FF_RESEARCH.md findings 25, 28).
KEEP_FACES = 0.7

OUTPUTS = ("residual", "sigmoid")
PRECISIONS = ("auto", "float32", "bfloat16")
#: The conv layers of Keras's VGG19 (the training's loss network), the names `content_layer` may take.
VGG19_CONV_LAYERS = tuple(
    f"block{block}_conv{conv}" for block, convs in enumerate((2, 2, 4, 4, 4), start=1) for conv in range(1, convs + 1)
)
#: The most training steps per style: 2.5x Johnson et al.'s 40,000 (two COCO epochs), about a day on a CPU
#: at 1 s/step (bench/FF_RESEARCH.md). A typo such as 1000000000 would otherwise train until killed.
MAX_TRAIN_STEPS = 100_000
#: The largest seed: the network's initialisers are seeded with seed x 1000 + layer, which must fit 64 bits.
MAX_SEED = 2**31 - 1


def check_settings(settings: FFSettings) -> FFSettings:
    """`settings` unchanged, or a ValueError naming the first bad field (the driver can call it
    before any work, without Keras; `train` calls it too)."""
    if settings.train_steps <= 0 or settings.loss_every <= 0 or settings.train_steps % settings.loss_every:
        raise ValueError(f"train_steps ({settings.train_steps}) must be a positive multiple of loss_every "
                         f"({settings.loss_every})")
    if settings.train_steps > MAX_TRAIN_STEPS:
        raise ValueError(f"train_steps must be at most {MAX_TRAIN_STEPS} (about a day per style on a CPU), "
                         f"got {settings.train_steps}")
    if settings.train_size % 4 or settings.train_size < 16 or settings.image_size < settings.train_size:
        raise ValueError(f"train_size must be a multiple of 4, >= 16 and <= image_size ({settings.image_size}), "
                         f"got {settings.train_size}")
    if min(settings.batch_size, settings.width, settings.apply_batch) < 1 or settings.residual_blocks < 0:
        raise ValueError("batch_size, width and apply_batch must be >= 1 and residual_blocks >= 0")
    if settings.output not in OUTPUTS:
        raise ValueError(f"output must be one of {OUTPUTS}, got {settings.output!r}")
    if not 0 < settings.residual_clip < 0.5:
        raise ValueError(f"residual_clip must be in (0, 0.5), got {settings.residual_clip!r}")
    if not 1 <= settings.laplacian_pool <= settings.train_size // 4:
        raise ValueError(f"laplacian_pool must be in [1, train_size / 4], got {settings.laplacian_pool!r}")
    if not 1 <= settings.color_pool <= settings.train_size // 2:
        raise ValueError(f"color_pool must be in [1, train_size / 2], got {settings.color_pool!r}")
    if not 0 < settings.saturation_limit < 0.5:
        raise ValueError(f"saturation_limit must be in (0, 0.5), got {settings.saturation_limit!r}")
    if settings.precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {settings.precision!r}")
    if not (math.isfinite(settings.learning_rate) and settings.learning_rate > 0):
        raise ValueError(f"learning_rate must be a finite number > 0, got {settings.learning_rate!r}")
    if not (0 <= settings.final_lr_fraction <= 1 and settings.warmup_steps >= 0):
        raise ValueError("final_lr_fraction must be in [0, 1] and warmup_steps >= 0")
    for name in ("content_weight", "style_weight", "style_target", "tv_weight", "laplacian_weight",
                 "saturation_weight", "color_weight"):
        value = getattr(settings, name)
        if not (math.isfinite(value) and value >= 0):  # NaN or inf trains a NaN network: black images
            raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    if not 0 <= settings.seed <= MAX_SEED:
        raise ValueError(f"seed must be in [0, {MAX_SEED}], got {settings.seed!r}")
    if settings.content_layer not in VGG19_CONV_LAYERS:
        raise ValueError(f"content_layer must be a VGG19 conv layer (block1_conv1 .. block5_conv4), "
                         f"got {settings.content_layer!r}")
    return settings
