"""Draws the bundled style images, so their origin is this script (public domain, like the rest of samples/).

Run: python samples/make_styles.py   (rewrites samples/style/*.png; seeded, so the bytes are stable)
"""
import pathlib

import cv2
import numpy as np

SIZE = 512
POP_PALETTE = [(230, 57, 70), (255, 209, 102), (6, 214, 160), (17, 138, 178), (255, 255, 255), (247, 127, 0)]
GLASS_PALETTE = [(155, 34, 38), (238, 155, 0), (10, 147, 150), (0, 95, 115), (233, 216, 166), (174, 32, 18)]


def pop_art(rng: np.random.Generator) -> np.ndarray:
    """Flat colour blobs with heavy ink outlines and halftone dots, like a comic panel."""
    img = np.full((SIZE, SIZE, 3), 255, np.uint8)
    for _ in range(40):
        center = tuple(int(v) for v in rng.integers(0, SIZE, 2))
        axes = tuple(int(v) for v in rng.integers(20, 110, 2))
        color = POP_PALETTE[rng.integers(len(POP_PALETTE))]
        angle = float(rng.uniform(0, 180))
        cv2.ellipse(img, center, axes, angle, 0, 360, color, -1, cv2.LINE_AA)
        cv2.ellipse(img, center, axes, angle, 0, 360, (0, 0, 0), 6, cv2.LINE_AA)
    for y in range(0, SIZE, 12):
        for x in range((y // 12) % 2 * 6, SIZE, 12):
            cv2.circle(img, (x, y), 2, (0, 0, 0), -1, cv2.LINE_AA)
    return img


def stained_glass(rng: np.random.Generator) -> np.ndarray:
    """Voronoi cells in a warm palette with dark leading between them."""
    points = rng.integers(0, SIZE, (90, 2))
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    dist = (yy[..., None] - points[:, 0]) ** 2 + (xx[..., None] - points[:, 1]) ** 2
    cell = dist.argmin(axis=2)
    colors = np.array([GLASS_PALETTE[i] for i in rng.integers(len(GLASS_PALETTE), size=len(points))], np.uint8)
    img = colors[cell]
    borders = (np.diff(cell, axis=0, prepend=cell[:1]) != 0) | (np.diff(cell, axis=1, prepend=cell[:, :1]) != 0)
    lead = cv2.dilate(borders.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    img[lead] = (25, 20, 20)
    return img


def wave_bands(rng: np.random.Generator) -> np.ndarray:
    """Wavy bands of flat colour with ink contours, like a screen print."""
    yy, xx = np.mgrid[0:SIZE, 0:SIZE] / SIZE
    phase = rng.uniform(0, 2 * np.pi, 3)
    field = np.sin(9 * yy + 2.5 * np.sin(6 * xx + phase[0])) + np.cos(7 * xx + 2 * np.sin(5 * yy + phase[1]))
    bands = np.floor((field + 2) * 2).astype(int) % len(POP_PALETTE)
    img = np.array(POP_PALETTE, np.uint8)[bands]
    edges = (np.diff(bands, axis=0, prepend=bands[:1]) != 0) | (np.diff(bands, axis=1, prepend=bands[:, :1]) != 0)
    img[cv2.dilate(edges.astype(np.uint8), np.ones((4, 4), np.uint8)).astype(bool)] = (0, 0, 0)
    return img


def crayon_hatch(rng: np.random.Generator) -> np.ndarray:
    """Short crossing crayon strokes on warm paper."""
    img = np.full((SIZE, SIZE, 3), (245, 235, 215), np.uint8)
    for _ in range(2500):
        x, y = (int(v) for v in rng.integers(0, SIZE, 2))
        angle = rng.choice([np.pi / 4, 3 * np.pi / 4]) + rng.normal(0, 0.15)
        length = rng.integers(10, 30)
        end = (int(x + length * np.cos(angle)), int(y + length * np.sin(angle)))
        color = GLASS_PALETTE[rng.integers(len(GLASS_PALETTE))]
        cv2.line(img, (x, y), end, color, int(rng.integers(2, 5)), cv2.LINE_AA)
    return img


def main() -> None:
    out = pathlib.Path(__file__).parent / "style"
    out.mkdir(exist_ok=True)
    for name, draw in [
        ("pop_art", pop_art),
        ("stained_glass", stained_glass),
        ("wave_bands", wave_bands),
        ("crayon_hatch", crayon_hatch),
    ]:
        rgb = draw(np.random.default_rng(7))
        cv2.imwrite(str(out / f"{name}.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))


if __name__ == "__main__":
    main()
