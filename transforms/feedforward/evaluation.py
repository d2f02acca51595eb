"""How good a trained network is on held-out photos, against NST's own result after N seed-setting
Adam steps on the same pairs (and any other method's images, e.g. a peer's): the seed's NST loss
(float32, `NSTSettings()` weights) term by term, and the quality panel (transforms.quality):
structure and faces kept per image, whether the outputs depend on their photos at all, and how far they
move toward the style.
`gate_failures` turns a summary into the reasons a network is refused."""
from __future__ import annotations

import dataclasses

import numpy as np

from transforms import quality
from transforms.feedforward.network import apply
from transforms.feedforward.settings import MAX_SATURATED, MIN_DEPENDENCE, MIN_STYLE_PROGRESS
from transforms.feedforward.training import as_float01
from transforms.nst.optimize import content_targets, evaluate_losses, style_targets, stylize
from transforms.nst.settings import NSTSettings

TERMS = ("total", "content", "style", "tv")


def seed_losses(extractor, image: np.ndarray, photo: np.ndarray, grams) -> dict:
    """The seed's loss terms (float32, NSTSettings() weights) of one stylised [H,W,3] `image` of `photo`."""
    return evaluate_losses(extractor, image[None], content_targets(extractor, photo), [grams], NSTSettings())[0]


@dataclasses.dataclass
class HeldOut:
    """rows: per photo and method ("ff", "nst", ...), the loss terms and the panel; images: per method,
    the outputs (for contact sheets); summary: see `summarise`."""

    rows: list[dict]
    photos: list[np.ndarray]
    images: dict[str, list[np.ndarray]]
    summary: dict


def nst_reference(extractor, photo: np.ndarray, grams, steps: int) -> np.ndarray:
    """NST's result with the seed's settings (Adam, float32) after `steps` steps from the photo."""
    settings = NSTSettings(steps=steps, precision="float32", loss_every=0)
    return stylize(extractor, photo, content_targets(extractor, photo), [grams], settings).images[0]


def score_images(extractor, photos, images: dict, grams, detector=None, photo_faces=None) -> list[dict]:
    """Per method (`images`: name -> one output per photo) and photo: the seed's loss terms and the
    structure panel; each photo's faces are found once (or given: `photo_faces`, one list per photo)."""
    if photo_faces is None:
        photo_faces = [detector(photo) if detector is not None else None for photo in photos]
    rows = []
    for method, outputs in images.items():
        for index, (photo, image, faces) in enumerate(zip(photos, outputs, photo_faces)):
            rows.append({"photo": index, "method": method, **seed_losses(extractor, image, photo, grams),
                         **quality.structure(image, photo, detector, faces)})
    return rows


def evaluate_heldout(network, extractor, photos, style_image, max_dim: int = 256, nst_steps: int = 100,
                     nst_images=None, detector=None, others=None, keep_faces: float = 0.0,
                     network_alone: bool = False) -> HeldOut:
    """Photos and style resized to `max_dim` (long side); each photo through `network` and through
    `nst_steps` NST steps (or the given `nst_images`, e.g. cached), all scored with the seed's loss and
    the panel (faces with `detector`, e.g. `quality.FaceDetector()`); `others`: more methods' outputs
    (name -> images at the photos' sizes) scored the same way. `keep_faces` > 0 (with a `detector`):
    the network's outputs are scored as the pipeline writes them, with that share of the photo kept
    inside its faces (`quality.keep_faces`), and with `network_alone` also as the network returns them
    ("ff_net")."""
    photos = [as_float01(p, max_dim) for p in photos]
    style = as_float01(style_image, max_dim)
    grams = style_targets(extractor, style)
    if nst_images is None:
        nst_images = [nst_reference(extractor, p, grams, nst_steps) for p in photos]
    photo_faces = [detector(p) for p in photos] if detector is not None else None
    raw = [apply(network, p) for p in photos]
    outputs = ([quality.keep_faces(o, p, faces, keep_faces) for o, p, faces in zip(raw, photos, photo_faces)]
               if keep_faces and detector is not None else raw)
    images = {"nst": list(nst_images), "ff": outputs, **({"ff_net": raw} if network_alone else {}), **(others or {})}
    rows = score_images(extractor, photos, images, grams, detector, photo_faces)
    summary = summarise(rows)
    summary["photo_style"] = float(np.mean([seed_losses(extractor, p, p, grams)["style"] for p in photos]))
    summary["photo_saturated"] = float(np.mean([quality.saturated_share(p) for p in photos]))
    summary["style_saturated"] = quality.saturated_share(style)
    for method, outputs in images.items():
        summary[f"{method}_dependence"] = quality.photo_dependence(outputs, photos) if len(photos) > 1 else None
        summary[f"{method}_style_progress"] = style_progress(summary["photo_style"], summary[f"{method}_style"],
                                                             summary["nst_style"])
    return HeldOut(rows, photos, images, summary)


def style_progress(photo_style: float, style: float, reference_style: float) -> float | None:
    """How far toward the style an output takes the photos, as a share of how far the reference (NST)
    takes them, on the seed's style term: 1 as far as NST, 0 not at all (the photo itself), below 0
    further away; None when the reference does not move. The seed's loss ratio cannot say this: a
    network that returns the photo has a fine content term and keeps every face.

    >>> style_progress(100.0, 20.0, 10.0), style_progress(100.0, 100.0, 10.0), style_progress(10.0, 5.0, 10.0)
    (0.8888888888888888, 0.0, None)
    """
    if not photo_style > reference_style:
        return None
    return (photo_style - style) / (photo_style - reference_style)


PANEL = ("ssim", "edges", "faces_kept")


def summarise(rows: list[dict], method: str = "ff", reference: str = "nst") -> dict:
    """Per loss term: the mean over photos of `method`'s term / `reference`'s ("ratio_<term>"), and
    per method the mean terms, SSIM, edge correlation and saturated share, and the faces kept in all
    photos (of "faces_photo" found there)."""
    by = {(r["photo"], r["method"]): r for r in rows}
    photos = sorted({r["photo"] for r in rows})
    methods = sorted({r["method"] for r in rows})
    out = {}
    for term in TERMS:
        out[f"ratio_{term}"] = float(np.mean([by[p, method][term] / by[p, reference][term] for p in photos]))
    for name in methods:
        for term in (*TERMS, "ssim", "edges", "saturated"):
            out[f"{name}_{term}"] = float(np.mean([by[p, name][term] for p in photos]))
        if "faces_kept" in by[photos[0], name]:
            out[f"{name}_faces_kept"] = int(sum(by[p, name]["faces_kept"] for p in photos))
            out["faces_photo"] = int(sum(by[p, name]["faces_photo"] for p in photos))
    return out


def gate_failures(summary: dict, max_loss_ratio: float | None = None, min_dependence: float | None = MIN_DEPENDENCE,
                  reference: str = "NST", min_style_progress: float | None = MIN_STYLE_PROGRESS,
                  max_saturated: float | None = MAX_SATURATED) -> list[str]:
    """Why a network's held-out `summary` is refused (empty: accepted): fewer faces kept than the
    reference (NST after the gate's steps), outputs that hardly depend on their photos (below
    `min_dependence`), outputs that hardly move toward the style (`style_progress` below
    `min_style_progress`), a saturated share `max_saturated` above both the style image's and the
    photos' (flat stamps), a loss ratio over `max_loss_ratio` or not a number.

    >>> gate_failures({"faces_photo": 2, "ff_faces_kept": 2, "nst_faces_kept": 2, "ff_dependence": 0.6,
    ...                "ff_style_progress": 0.9, "ff_saturated": 0.01, "style_saturated": 0.0, "ratio_total": 1.2},
    ...               max_loss_ratio=1.5, min_dependence=0.3)
    []
    >>> gate_failures({"faces_photo": 2, "ff_faces_kept": 0, "nst_faces_kept": 1, "ff_dependence": 0.1,
    ...                "ff_style_progress": 0.1, "ff_saturated": 0.12, "style_saturated": 0.0,
    ...                "ratio_total": float("nan")}, max_loss_ratio=1.5, min_dependence=0.3, min_style_progress=0.5,
    ...               max_saturated=0.04)  # doctest: +NORMALIZE_WHITESPACE
    ['keeps 0 of the 2 faces in the held-out photos, fewer than NST (1)',
     'its outputs hardly depend on their photos (dependence 0.10, below 0.3)',
     'its outputs hardly move toward the style (style progress 0.10, below 0.5; NST: 1)',
     'its outputs have 12.0% saturated pixels, flat pure colours (style image or photos: 0.0%; at most 4.0% more)',
     'held-out loss nanx that of NST, above 1.5']
    """
    reasons = []
    kept, reference_kept = summary.get("ff_faces_kept"), summary.get("nst_faces_kept")
    if kept is not None and reference_kept is not None and kept < reference_kept:
        reasons.append(f"keeps {kept} of the {summary['faces_photo']} faces in the held-out photos, "
                       f"fewer than {reference} ({reference_kept})")
    dependence = summary.get("ff_dependence")
    if min_dependence is not None and dependence is not None and not dependence >= min_dependence:
        reasons.append(f"its outputs hardly depend on their photos (dependence {dependence:.2f}, below {min_dependence:g})")
    progress = summary.get("ff_style_progress")
    if min_style_progress is not None and progress is not None and not progress >= min_style_progress:
        reasons.append(f"its outputs hardly move toward the style (style progress {progress:.2f}, "
                       f"below {min_style_progress:g}; {reference}: 1)")
    saturated = summary.get("ff_saturated")
    own = max(summary.get("style_saturated") or 0.0, summary.get("photo_saturated") or 0.0)  # pure colours are theirs
    if max_saturated is not None and saturated is not None and not saturated <= own + max_saturated:
        reasons.append(f"its outputs have {saturated:.1%} saturated pixels, flat pure colours (style image or "
                       f"photos: {own:.1%}; at most {max_saturated:.1%} more)")
    ratio = summary.get("ratio_total")
    if max_loss_ratio is not None and ratio is None:
        reasons.append(f"it has no held-out loss ratio to hold against {max_loss_ratio:g}")
    elif max_loss_ratio is not None and not ratio <= max_loss_ratio:
        reasons.append(f"held-out loss {ratio:.2f}x that of {reference}, above {max_loss_ratio:g}")
    return reasons
