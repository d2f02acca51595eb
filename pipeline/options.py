"""Toonbeam's flags, as a Beam PipelineOptions subclass, and YAML presets that supply their defaults."""
from __future__ import annotations

import argparse
import dataclasses
import os
import re
import typing

import fsspec
import yaml
from apache_beam.options.pipeline_options import PipelineOptions

from pipeline.io import storage
from pipeline.io.manifests import ManifestRules
from transforms.cartoon import PRESETS, CartoonParams
from transforms.feedforward.settings import KEEP_FACES, MAX_SATURATED, MIN_DEPENDENCE, MIN_STYLE_PROGRESS, FFSettings
from transforms.nst.settings import EXTRACTOR_NAMES, NSTSettings

CARTOON_HELP = {
    "median_ksize": "medianBlur aperture before edge detection (odd)",
    "block_size": "adaptiveThreshold neighbourhood size (odd)",
    "threshold_c": "adaptiveThreshold constant subtracted from the local mean",
    "bilateral_d": "bilateralFilter neighbourhood diameter",
    "sigma_color": "bilateralFilter sigmaColor",
    "sigma_space": "bilateralFilter sigmaSpace",
    "smoothing_passes": "number of bilateral passes",
    "quantize_colors": "k-means palette size (0 = keep all colours)",
    "edge_thickness": "ink line width in pixels",
    "seed": "k-means seed",
}
NST_HELP = {
    "steps": "optimisation steps per pair (seed: 5 epochs x 100)",
    "max_dim": "long side of the optimised image, in pixels",
    "style_weight": "weight of the style loss",
    "content_weight": "weight of the content loss",
    "tv_weight": "weight of the total variation loss",
    "learning_rate": "Adam learning rate",
    "beta_1": "Adam beta_1",
    "beta_2": "Adam beta_2",
    "epsilon": "Adam epsilon",
    "precision": "float32 | bfloat16 | auto (bfloat16 on a GPU or a CPU with AVX512_BF16/AMX, else float32); "
    "the image and the losses stay float32",
    "optimizer": "adam (the seed's) | lbfgs (reaches the seed's loss in far fewer steps)",
    "scales": "coarse-to-fine plan SCALE:FRACTION,..., e.g. 0.5:0.5,1:0.5 = half the steps at half size (the last "
    "scale must be 1; measured: no gain with Adam, better with --optimizer lbfgs)",
    "jit_compile": "XLA: on | off | auto (on only with a GPU; slower than oneDNN on a CPU)",
    "style_strength": "how strongly to stylise: multiplies the style and total-variation weights against the "
    "content weight; 0 returns the photo unchanged",
    "preserve_colors": "keep the photo's colours: the stylised lightness (CIELAB L*) with the photo's a*/b*",
    "init": "starting image: content (the seed's), noise (seeded uniform noise) or blend (half photo, half noise)",
    "seed": "seeds every random choice together with each pair's content and style ids",
    "output_size": "max_dim (the optimised size), original (the photo's size, up to --max-output-dim) or a long "
    "side in pixels; above --max-dim a coarse-to-fine pyramid refines the result",
    "max_output_dim": "cap on the output's long side for --output-size original or N",
    "refine_steps": "steps at the first pyramid level above --max-dim, halved at each further level",
    "loss_every": "record the total loss every this many steps (OUTPUT/curves/, the contact sheet's plot, "
    "the --debug log); 0 = none",
    "max_memory_gb": "refuse outputs estimated to need more memory than this (error row too_large); "
    "0 = 80%% of RAM or the cgroup limit",
}


FF_HELP = {
    "train_size": "side of the square random crops the network trains on, in pixels",
    "train_steps": "training steps per style",
    "batch_size": "crops per training step",
    "learning_rate": "Adam's peak learning rate (linear warm-up, then cosine decay)",
    "warmup_steps": "steps of linear learning-rate warm-up",
    "final_lr_fraction": "the learning rate at the last step, as a fraction of the peak",
    "width": "channels of the network's first layer (then 2x and 4x)",
    "residual_blocks": "residual blocks at a quarter of the resolution",
    "output": "residual (a change around the photo: keeps its structure and colours) | sigmoid (a plain image: "
              "about half the style term, the style's palette, faces only where --ff-keep-faces puts them back)",
    "residual_clip": "the residual output's photo is clipped to [c, 1-c] (saturated pixels keep a gradient)",
    "content_layer": "VGG19 layer of the training's content loss",
    "content_weight": "weight of the training's content loss",
    "style_weight": "weight of the training's style loss",
    "style_target": "when > 0, the style weight is chosen per style so that the photos' own style term is this "
    "(style images differ in scale; 0: --ff-style-weight for every style)",
    "tv_weight": "weight of the training's total variation loss",
    "laplacian_weight": "weight of the training's structure term: the photo's Laplacian, pooled (Li et al. 2017)",
    "laplacian_pool": "pixels pooled per cell before the structure term's Laplacian (the scale it keeps)",
    "saturation_weight": "weight of the training's barrier on saturated output pixels (0: off)",
    "saturation_limit": "output values within this of 0 or 1 count as saturated for that barrier",
    "color_weight": "weight of the training's colour term: the photo's colours per region, pooled (0: off)",
    "color_pool": "pixels pooled per cell before the colour term (regions larger than this keep the photo's colours)",
    "seed": "seeds the network's initial weights and the training crops",
    "precision": "the loss network's precision while training: float32 | bfloat16 | auto",
    "loss_every": "record the training loss every this many steps (the model card's history)",
    "apply_batch": "images per network call when stylising",
}
#: FFSettings fields that are not flags: the pipeline sets them (image_size is --max-dim).
FF_NOT_FLAGS = ("image_size",)


def _spellings(dest: str) -> list[str]:
    """Beam's own flags use underscores; people type dashes. Accept both."""
    dashed = dest.replace("_", "-")
    return [f"--{dest}"] if dashed == dest else [f"--{dest}", f"--{dashed}"]


def _add_dataclass_flags(group, cls, prefix: str, helps: dict[str, str], keep_defaults: bool, skip=()) -> None:
    """One flag per dataclass field (but `skip`), typed from the field. Without `keep_defaults` the default
    is None (meaning "the preset's value"), so a preset can fill what the user did not set."""
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        if field.name in skip:
            continue
        default = field.default if keep_defaults else None
        dest = f"{prefix}{field.name}"
        help_text = f"{helps.get(field.name, field.name)} (default: {field.default})"
        if hints[field.name] is bool:  # a switch: argparse's type=bool would read "False" as True
            group.add_argument(*_spellings(dest), dest=dest, action="store_true", default=default, help=help_text)
            continue
        group.add_argument(*_spellings(dest), dest=dest, type=hints[field.name], default=default, help=help_text)


class ToonbeamOptions(PipelineOptions):
    @classmethod
    def _add_argparse_args(cls, parser):
        io_group = parser.add_argument_group("Toonbeam inputs and outputs")
        io_group.add_argument(
            "--content",
            help="content images: a folder, a glob, an image, or a .txt/.csv/.jsonl/.parquet manifest (any fsspec URI)",
        )
        io_group.add_argument("--style", help="style images, in any of the --content forms (needed by nst)")
        io_group.add_argument("--output", default="out", help="output folder or URI (default: out)")
        io_group.add_argument(*_spellings("run_id"), dest="run_id", help="id written in every report row (default: a timestamp)")
        io_group.add_argument(
            *_spellings("max_input_pixels"),
            dest="max_input_pixels",
            type=int,
            default=100_000_000,
            help="refuse images whose header claims more pixels than this (default: 100000000)",
        )
        safety = parser.add_argument_group("Reliability and safety")
        io_group.add_argument(
            "--dry-run",  # dashes only: Beam's TestOptions already owns --dry_run
            dest="dry_run_only",
            action="store_true",
            default=False,
            help="build the pipeline with the chosen runner's options, print the effective options and the "
            "transform names, and exit without running, submitting or touching the network",
        )
        safety.add_argument(
            *_spellings("skip_existing"),
            dest="skip_existing",
            action="store_true",
            default=False,
            help="skip units whose output is already complete (checked against its sidecar digest) for the same "
            "settings and input URIs, with inputs of the same size and modification time (object stores: version) "
            "as when it was made (or, when only the time differs, the same SHA-256), and report them as skipped: "
            "re-running an interrupted run finishes only the rest. HTTP inputs are trusted by URL (their hash "
            "columns stay empty); --incremental hashes the bytes",
        )
        io_group.add_argument(
            "--incremental",
            default=None,
            metavar="PREVIOUS_REPORT_GLOB",
            help="earlier runs' reports (an fsspec glob of Parquet files, e.g. gs://b/toonbeam/runs/*/report/*.parquet, "
            "or a run's folder): units done there with the same input bytes (SHA-256), method and pixel settings "
            "are reported as skipped, naming the earlier image, and not computed; matching no file means no "
            "earlier work (a warning)",
        )
        safety.add_argument(
            *_spellings("max_error_fraction"),
            dest="max_error_fraction",
            type=float,
            default=None,
            help="exit with status 1 when more than this fraction of units fail (default: no limit)",
        )
        safety.add_argument(
            *_spellings("allowed_schemes"),
            dest="allowed_schemes",
            default=",".join(storage.DEFAULT_ALLOWED_SCHEMES),
            help="URI schemes that may be read or written, comma-separated; plain paths are 'file' "
            f"(default: {','.join(storage.DEFAULT_ALLOWED_SCHEMES)})",
        )
        safety.add_argument(
            *_spellings("max_input_bytes"),
            dest="max_input_bytes",
            type=int,
            default=storage.DEFAULT_MAX_INPUT_BYTES,
            help=f"refuse input files larger than this many bytes (default: {storage.DEFAULT_MAX_INPUT_BYTES})",
        )
        safety.add_argument(
            *_spellings("follow_symlinks"),
            dest="follow_symlinks",
            action="store_true",
            default=False,
            help="read files of a folder input that are symbolic links to places outside that folder (by default "
            "they are error rows, symlink_refused)",
        )
        safety.add_argument(
            *_spellings("read_timeout"),
            dest="read_timeout",
            type=float,
            default=storage.DEFAULT_READ_TIMEOUT,
            help="seconds allowed for one whole read from a file system or object store (local, memory, gs, s3; "
            f"HTTP reads have --http-timeout) (default: {storage.DEFAULT_READ_TIMEOUT:g})",
        )
        safety.add_argument(
            *_spellings("http_timeout"),
            dest="http_timeout",
            type=float,
            default=storage.DEFAULT_HTTP_TIMEOUT,
            help=f"seconds allowed for one whole HTTP read (default: {storage.DEFAULT_HTTP_TIMEOUT:g})",
        )
        safety.add_argument(
            *_spellings("http_retries"),
            dest="http_retries",
            type=int,
            default=storage.DEFAULT_HTTP_RETRIES,
            help="retries of an HTTP read after a time-out, a lost connection, 5xx or 429 "
            f"(default: {storage.DEFAULT_HTTP_RETRIES})",
        )
        safety.add_argument(
            *_spellings("http_allowed_addresses"),
            dest="http_allowed_addresses",
            choices=storage.HTTP_ADDRESS_POLICIES,
            default=storage.DEFAULT_HTTP_ALLOWED_ADDRESSES,
            help="addresses an HTTP read (and each redirect) may connect to: public (the internet), private "
            "(also RFC 1918 / unique-local networks) or any (also loopback, link-local such as the cloud "
            "metadata service, and reserved; e.g. a test server on localhost) "
            f"(default: {storage.DEFAULT_HTTP_ALLOWED_ADDRESSES})",
        )
        method = parser.add_argument_group("Method")
        method.add_argument(
            "--method",
            default="classical",
            help="classical, nst, feedforward, or a comma list of them (both = classical,nst; default: classical)",
        )
        classical = parser.add_argument_group("Classical cartoon filter (defaults come from --preset)")
        classical.add_argument("--preset", choices=sorted(PRESETS), default="seed", help="default: seed")
        _add_dataclass_flags(classical, CartoonParams, "cartoon_", CARTOON_HELP, keep_defaults=False)
        nst = parser.add_argument_group("Neural style transfer")
        nst.add_argument(
            "--backend",
            choices=("tensorflow", "jax", "torch"),
            help="Keras backend (sets KERAS_BACKEND before Keras is imported; default: KERAS_BACKEND or tensorflow). "
            "Remote workers take KERAS_BACKEND from their container's environment",
        )
        nst.add_argument(
            *_spellings("style_blend"),
            dest="style_blend",
            help='optimise towards a blend of styles from --style, e.g. "pop_art:0.7,wave_bands:0.3" (weights '
            "are normalised; the targets are the weighted mean of the styles' Gram matrices): one unit per content",
        )
        nst.add_argument("--extractor", choices=EXTRACTOR_NAMES, default="vgg19", help="default: vgg19")
        nst.add_argument(
            "--weights",
            default="imagenet",
            help="imagenet (Keras download and cache), random (tests only), or a .h5/.weights.h5 path or URI",
        )
        _add_dataclass_flags(nst, NSTSettings, "", NST_HELP, keep_defaults=True)
        ff = parser.add_argument_group(
            "Feed-forward stylisation (--method feedforward; --max-dim, --output-size, --style-strength and "
            "--preserve-colors apply too)"
        )
        ff.add_argument(
            *_spellings("ff_train_content"),
            dest="ff_train_content",
            help="photos to train on, in any --content form (default: a seeded sample of --content)",
        )
        ff.add_argument(
            *_spellings("ff_train_images"), dest="ff_train_images", type=int, default=16,
            help="at most this many photos of the training set, a seeded sample (default: 16)",
        )
        ff.add_argument(
            *_spellings("ff_heldout_images"), dest="ff_heldout_images", type=int, default=2,
            help="of those, how many are held out of training to score the model against NST (default: 2)",
        )
        ff.add_argument(
            *_spellings("ff_gate_steps"), dest="ff_gate_steps", type=int, default=100,
            help="NST steps (seed settings) the held-out score compares against (default: 100)",
        )
        ff.add_argument(
            *_spellings("ff_max_loss_ratio"), dest="ff_max_loss_ratio", type=float, default=None,
            help="refuse to apply a model whose held-out loss is above this many times NST's: its pairs become "
            "quality_gate error rows (default: no gate)",
        )
        ff.add_argument(
            *_spellings("ff_min_dependence"), dest="ff_min_dependence", type=float, default=MIN_DEPENDENCE,
            help="refuse a model whose held-out outputs hardly depend on their photos (a texture generator: the "
            "correlation of where outputs and photos differ, transforms.quality.photo_dependence), and one that "
            f"keeps fewer faces than NST at --ff-gate-steps; 0 turns the dependence check off (default: {MIN_DEPENDENCE})",
        )
        ff.add_argument(
            *_spellings("ff_min_style_progress"), dest="ff_min_style_progress", type=float, default=MIN_STYLE_PROGRESS,
            help="refuse a model whose held-out outputs move less than this toward the style, as a share of how far "
            "NST at --ff-gate-steps moves them (the seed's style term; a model that returns the photo scores about 0); "
            f"0 turns the check off (default: {MIN_STYLE_PROGRESS})",
        )
        ff.add_argument(
            *_spellings("ff_max_saturated"), dest="ff_max_saturated", type=float, default=MAX_SATURATED,
            help="refuse a model whose held-out outputs have this share of saturated pixels (pure colours such as "
            "(0, 0, 1): flat stamps pasted on the photo, transforms.quality.saturated_share) more than the style "
            f"image or the held-out photos have; 1 turns the check off (default: {MAX_SATURATED})",
        )
        ff.add_argument(
            *_spellings("ff_keep_faces"), dest="ff_keep_faces", type=float, default=KEEP_FACES,
            help="share of the photo blended back inside each face MTCNN finds in it (feathered ellipses), so that "
            f"the style stays on a face, weaker, and the face stays the sitter's; 0 turns it off (default: {KEEP_FACES})",
        )
        ff.add_argument(
            *_spellings("ff_score_fraction"), dest="ff_score_fraction", type=float, default=0.0,
            help="share of the pairs whose written image is scored (the seed's loss columns, a seeded sample: "
            "1 scores every pair, at about the cost of one VGG19 pass each; default: 0, the model's held-out "
            "scores are in its training row)",
        )
        ff.add_argument(
            *_spellings("ff_model_dir"), dest="ff_model_dir",
            help="where models and their cards are kept and looked up, any fsspec URI; share it between runs "
            "(default: OUTPUT/models)",
        )
        _add_dataclass_flags(ff, FFSettings, "ff_", FF_HELP, keep_defaults=True, skip=FF_NOT_FLAGS)


def cartoon_overrides(options: ToonbeamOptions) -> dict:
    return {f.name: getattr(options, f"cartoon_{f.name}") for f in dataclasses.fields(CartoonParams)}


def nst_settings(options: ToonbeamOptions) -> NSTSettings:
    return NSTSettings(**{f.name: getattr(options, f.name) for f in dataclasses.fields(NSTSettings)})


def ff_settings(options: ToonbeamOptions) -> FFSettings:
    """The feed-forward settings of the flags; image_size is --max-dim (train at the apply scale)."""
    flags = {f.name: getattr(options, f"ff_{f.name}") for f in dataclasses.fields(FFSettings) if f.name not in FF_NOT_FLAGS}
    return FFSettings(image_size=options.max_dim, **flags)


def allowed_schemes(options: ToonbeamOptions) -> tuple[str, ...]:
    return tuple(sorted({s.strip().lower() for s in (options.allowed_schemes or "").split(",") if s.strip()}))


def read_policy(options: ToonbeamOptions) -> storage.ReadPolicy:
    return storage.ReadPolicy(
        allowed_schemes=allowed_schemes(options),
        max_bytes=options.max_input_bytes,
        read_timeout=options.read_timeout,
        http_timeout=options.http_timeout,
        http_retries=options.http_retries,
        http_allowed_addresses=options.http_allowed_addresses,
    )


def manifest_rules(toon: ToonbeamOptions) -> ManifestRules:
    """How --content, --style and --ff-train-content are read: under the run's read policy, never yielding the images the
    run writes (OUTPUT/images/, where a content folder may hold the output folder, or be it)."""
    exclude = storage.join_uri(toon.output, "images")
    return ManifestRules(read_policy(toon), exclude=exclude, follow_symlinks=toon.follow_symlinks)


_PLACEHOLDER = re.compile(r"\$\{(\w+)(?::-([^}]*))?\}")


def fill_placeholders(value):
    """`${VAR}` and `${VAR:-default}` in a preset's strings, from the environment. A variable that is
    unset and has no default stays as written, so that `--dry-run` shows it and a real run refuses it."""
    if isinstance(value, list):
        return [fill_placeholders(item) for item in value]
    if not isinstance(value, str):
        return value

    def fill(match):
        found = os.environ.get(match.group(1))
        if found:
            return found
        return match.group(2) if match.group(2) is not None else match.group(0)

    return _PLACEHOLDER.sub(fill, value)


def unfilled_placeholders(argv: list[str]) -> list[str]:
    return [arg for arg in argv if _PLACEHOLDER.search(arg)]


def split_config(argv: list[str]) -> tuple[str | None, list[str]]:
    """(the --config value or None, the other arguments)."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config")
    known, rest = pre.parse_known_args(argv)
    return known.config, rest


def read_config(uri: str) -> dict:
    """A YAML preset (any fsspec URI) as a mapping of flag names to values."""
    with fsspec.open(uri, "r", encoding="utf-8") as handle:
        preset = yaml.safe_load(handle) or {}
    if not isinstance(preset, dict):
        raise ValueError(f"{uri}: a config must be a mapping of flag names to values")
    return preset


def expand_config(argv: list[str]) -> list[str]:
    """Replace `--config FILE` by the flags of that YAML preset, placed first so that flags given on the
    command line win. Keys are flag names (`max_dim` or `max-dim`); `true` means a bare switch."""
    config, rest = split_config(argv)
    if not config:
        return list(argv)
    preset = read_config(config)
    flags = []
    for key, value in preset.items():
        value = fill_placeholders(value)
        flag = f"--{key}"
        if value is True:
            flags.append(flag)
        elif isinstance(value, list):
            flags.extend(f"{flag}={item}" for item in value)
        elif value is not None and value is not False:
            flags.append(f"{flag}={value}")
    return flags + rest


def help_parser(prog: str) -> argparse.ArgumentParser:
    """A parser that only prints `--help`: Toonbeam's flags plus a pointer to Beam's own."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Cartoonize every content image (classical) or every content x style pair (nst).",
        epilog="Every standard Beam pipeline option (--runner, --direct_num_workers, --project, ...) "
        "passes through unchanged.",
    )
    parser.add_argument("--config", help="YAML preset of flag values (flags given here override it)")
    ToonbeamOptions._add_argparse_args(parser)
    return parser
