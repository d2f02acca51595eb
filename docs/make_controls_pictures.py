"""Render the README's pictures of the NST style controls into docs/ with the real VGG19 weights:

    docs/controls_strength.png         --style-strength 0 (the photo), 0.01, 0.1, 1
    docs/controls_preserve_colors.png  content, style, --preserve-colors off, on
    docs/controls_blend.png            style A alone, --style-blend "A:0.5,B:0.5", style B alone
    docs/controls_high_res.png         crops at the photo's own size: bicubic upscale of the max_dim
                                       result vs --output-size original (coarse-to-fine pyramid)

    .venv/bin/python docs/make_controls_pictures.py [--steps 150] [--max-dim 192]

Small on purpose (192 px, 150 steps; about 5-8 minutes on a shared 2-core CPU); the pixels are
repeatable (init "content", seeded everything else), so re-running gives the same files on the
same software and hardware. Prints the measured numbers the README quotes.
"""
from __future__ import annotations

import argparse
import pathlib
import time

import cv2
import numpy as np
from skimage import metrics

from transforms import images
from transforms.nst import controls, pyramid
from transforms.nst.extractors import load_extractor
from transforms.nst.optimize import NSTSettings, content_targets, style_targets, stylize, stylize_high_res

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"


def load(folder: str, name: str, max_dim: int | None = None) -> np.ndarray:
    rgb = images.decode_image((ROOT / "samples" / folder / name).read_bytes())
    return images.to_float01(images.resize_to_max_dim(rgb, max_dim) if max_dim else rgb)


def tile(image: np.ndarray, label: str, height: int) -> np.ndarray:
    """uint8 tile scaled to `height`, with a white label bar underneath."""
    image = images.to_uint8(images.resize(image, (height, round(image.shape[1] * height / image.shape[0]))))
    bar = np.full((22, image.shape[1], 3), 255, np.uint8)
    cv2.putText(bar, label, (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    return np.vstack([image, bar])


def strip(tiles: list[np.ndarray]) -> np.ndarray:
    gap = np.full((tiles[0].shape[0], 4, 3), 255, np.uint8)
    parts = []
    for t in tiles:
        parts += [t, gap]
    return np.hstack(parts[:-1])


def save(name: str, rgb: np.ndarray) -> None:
    path = DOCS / name
    path.write_bytes(images.encode_png(rgb))
    print(f"wrote {path.relative_to(ROOT)} ({rgb.shape[1]}x{rgb.shape[0]}, {path.stat().st_size // 1024} KB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--max-dim", type=int, default=192)
    parser.add_argument("--refine-steps", type=int, default=40)
    parser.add_argument("--strengths", default="0,0.01,0.1,1",
                        help="log-spaced: with the seed's weights and Adam, 0.3..3 look alike (README)")
    args = parser.parse_args()
    started = time.perf_counter()
    vgg = load_extractor("vgg19", "imagenet")
    base = NSTSettings(steps=args.steps, max_dim=args.max_dim)
    h = args.max_dim * 2 // 3

    content = load("content", "chelsea.png", args.max_dim)
    pop, waves = load("style", "pop_art.png", args.max_dim), load("style", "wave_bands.png", args.max_dim)
    targets = content_targets(vgg, content)
    pop_grams, wave_grams = style_targets(vgg, pop), style_targets(vgg, waves)

    # Strength strip (strength 0 costs nothing: the content image is returned as is).
    results = {}
    for strength in [float(s) for s in args.strengths.split(",")]:
        t0 = time.perf_counter()
        result = stylize(vgg, content, targets, [pop_grams], NSTSettings(**{**base.__dict__, "style_strength": strength}))
        results[strength] = result.images[0]
        ssim = metrics.structural_similarity(result.images[0], content, channel_axis=-1, data_range=1.0)
        print(f"strength {strength}: SSIM vs content {ssim:.3f}, style loss {result.losses[0]['style']:.3g} "
              f"({time.perf_counter() - t0:.0f} s)")
    save("controls_strength.png", strip([tile(results[s], f"strength {s:g}" + (" (= photo)" if s == 0 else ""), h)
                                         for s in results]))

    # Preserve colours: the setting applies `preserve_colors` after the optimisation (tested equal).
    kept = controls.preserve_colors(results[1.0], content)
    before, after = controls.chroma_difference(results[1.0], content), controls.chroma_difference(kept, content)
    print(f"preserve_colors: Lab chroma vs content, mean |da|, |db|: off {before[0]:.2f}, {before[1]:.2f}; "
          f"on {after[0]:.2f}, {after[1]:.2f}")
    save("controls_preserve_colors.png", strip([tile(content, "content", h), tile(pop, "style", h),
                                                tile(results[1.0], "colours: style", h),
                                                tile(kept, "--preserve-colors", h)]))

    # Blend: style B alone and the 50/50 blend in one batch; style A alone is the strength-1 result.
    t0 = time.perf_counter()
    blend = controls.blend_grams([pop_grams, wave_grams], [0.5, 0.5])
    batch = stylize(vgg, content, targets, [wave_grams, blend], base)
    print(f"blend batch of 2: {time.perf_counter() - t0:.0f} s")
    save("controls_blend.png", strip([tile(pop, "style A", h), tile(results[1.0], "A", h),
                                      tile(batch.images[1], "A:0.5,B:0.5", h), tile(batch.images[0], "B", h),
                                      tile(waves, "style B", h)]))

    # High resolution: the photo at its own size (coffee.png, 600x400) vs a plain upscale.
    photo = load("content", "coffee.png")
    small = images.resize_to_max_dim(photo, args.max_dim)
    settings = NSTSettings(**{**base.__dict__, "output_size": "original", "refine_steps": args.refine_steps})
    print(f"pyramid levels for {photo.shape[1]}x{photo.shape[0]}: "
          f"{[f'{w}x{hh}' for hh, w in pyramid.refinement_shapes(*photo.shape[:2], settings)]}, refine steps "
          f"{[pyramid.refine_steps_at(k, settings) for k in (1, 2)]}")
    t0 = time.perf_counter()
    plain = stylize(vgg, small, content_targets(vgg, small), [pop_grams], base).images[0]
    t1 = time.perf_counter()
    high = stylize_high_res(vgg, photo, [pop_grams], settings).images[0]
    t2 = time.perf_counter()
    print(f"high res: max_dim result {t1 - t0:.0f} s, pyramid to {high.shape[1]}x{high.shape[0]} {t2 - t1:.0f} s")
    upscaled = images.resize(plain, photo.shape[:2])
    y, x, size = 80, 220, 180  # the cup's rim and saucer, at 1:1 pixels
    save("controls_high_res.png", strip([
        tile(upscaled[y:y + size, x:x + size], "bicubic upscale of 192 px", size),
        tile(high[y:y + size, x:x + size], "--output-size original", size),
        tile(photo[y:y + size, x:x + size], "photo (600x400)", size),
    ]))
    print(f"total {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
