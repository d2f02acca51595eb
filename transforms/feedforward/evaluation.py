"""How good a trained network is on held-out photos: the seed's NST loss of its outputs (float32,
seed weights: `NSTSettings()`) against NST's own result after N seed-setting Adam steps on the
same pairs, term by term, and the gray SSIM of each output to its photo (does the photo survive)."""
from __future__ import annotations

import dataclasses

import cv2
import numpy as np

from transforms.feedforward.network import apply
from transforms.feedforward.training import as_float01
from transforms.nst.optimize import content_targets, evaluate_losses, style_targets, stylize
from transforms.nst.settings import NSTSettings

TERMS = ("total", "content", "style", "tv")


def gray_ssim(image: np.ndarray, reference: np.ndarray) -> float:
    """SSIM of the channel means of two [H,W,3] images in [0,1], as
    `skimage.metrics.structural_similarity(a, b, data_range=1.0)` computes it (7x7 uniform
    window, sample covariance, borders cropped), so it matches the NST tests' measure."""
    a, b = (np.asarray(x, np.float64).mean(axis=-1) for x in (image, reference))
    win, pad = 7, 3
    mean = lambda x: cv2.blur(x, (win, win), borderType=cv2.BORDER_REFLECT)  # noqa: E731
    unbias = win * win / (win * win - 1.0)
    mu_a, mu_b = mean(a), mean(b)
    var_a = unbias * (mean(a * a) - mu_a * mu_a)
    var_b = unbias * (mean(b * b) - mu_b * mu_b)
    cov = unbias * (mean(a * b) - mu_a * mu_b)
    c1, c2 = 0.01**2, 0.03**2
    ssim = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return float(ssim[pad:-pad, pad:-pad].mean())


def seed_losses(extractor, image: np.ndarray, photo: np.ndarray, grams) -> dict:
    """The seed's loss terms (float32, NSTSettings() weights) of one stylised [H,W,3] `image` of `photo`."""
    return evaluate_losses(extractor, image[None], content_targets(extractor, photo), [grams], NSTSettings())[0]


@dataclasses.dataclass
class HeldOut:
    """rows: per photo and method ("ff", "nst"), the loss terms and "ssim"; images: the photos,
    NST and feed-forward outputs, for contact sheets; summary: see `summarise`."""

    rows: list[dict]
    photos: list[np.ndarray]
    nst_images: list[np.ndarray]
    ff_images: list[np.ndarray]
    summary: dict


def nst_reference(extractor, photo: np.ndarray, grams, steps: int) -> np.ndarray:
    """NST's result with the seed's settings (Adam, float32) after `steps` steps from the photo."""
    settings = NSTSettings(steps=steps, precision="float32", loss_every=0)
    return stylize(extractor, photo, content_targets(extractor, photo), [grams], settings).images[0]


def evaluate_heldout(network, extractor, photos, style_image, max_dim: int = 256, nst_steps: int = 100,
                     nst_images=None) -> HeldOut:
    """Photos and style resized to `max_dim` (long side); each photo through `network` and through
    `nst_steps` NST steps (or the given `nst_images`, e.g. cached), both scored with the seed's loss."""
    photos = [as_float01(p, max_dim) for p in photos]
    grams = style_targets(extractor, as_float01(style_image, max_dim))
    if nst_images is None:
        nst_images = [nst_reference(extractor, p, grams, nst_steps) for p in photos]
    ff_images = [apply(network, p) for p in photos]
    rows = []
    for index, (photo, nst, ff) in enumerate(zip(photos, nst_images, ff_images)):
        for method, image in (("nst", nst), ("ff", ff)):
            rows.append({"photo": index, "method": method, **seed_losses(extractor, image, photo, grams),
                         "ssim": gray_ssim(image, photo)})
    return HeldOut(rows, photos, list(nst_images), ff_images, summarise(rows))


def summarise(rows: list[dict], method: str = "ff", reference: str = "nst") -> dict:
    """Per term: the mean over photos of `method`'s term / `reference`'s ("ratio_<term>"), and the
    means of both methods' terms and SSIMs."""
    by = {(r["photo"], r["method"]): r for r in rows}
    photos = sorted({r["photo"] for r in rows})
    out = {}
    for term in TERMS:
        out[f"ratio_{term}"] = float(np.mean([by[p, method][term] / by[p, reference][term] for p in photos]))
    for name in (method, reference):
        for term in (*TERMS, "ssim"):
            out[f"{name}_{term}"] = float(np.mean([by[p, name][term] for p in photos]))
    return out
