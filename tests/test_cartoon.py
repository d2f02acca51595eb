import dataclasses
import re
import subprocess
import sys

import cv2
import numpy as np
import pytest

from tests.conftest import ROOT, sample_photo
from transforms.cartoon import PRESETS, CartoonParams, cartoonize, edge_mask, params_for


def seed_recipe(bgr):
    """The seed document's code, verbatim (section II), on an OpenCV BGR image."""
    gray = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    gray = cv2.medianBlur(gray, 5)
    edges = cv2.adaptiveThreshold(gray, 255, cv2.ADAPTIVE_THRESH_MEAN_C, cv2.THRESH_BINARY, 9, 9)
    color = cv2.bilateralFilter(bgr, 9, 250, 250)
    return cv2.bitwise_and(color, color, mask=edges)


@pytest.mark.parametrize("name", ["astronaut.png", "coffee.png", "chelsea.png", "rocket.jpg"])
def test_seed_preset_is_byte_identical_to_the_seed_recipe(name):
    rgb = sample_photo(name)
    expected_bgr = seed_recipe(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    ours = cartoonize(rgb, PRESETS["seed"])
    assert ours.dtype == np.uint8 and ours.shape == rgb.shape
    assert np.array_equal(cv2.cvtColor(ours, cv2.COLOR_RGB2BGR), expected_bgr)


@pytest.mark.parametrize(
    "field, value",
    [
        ("median_ksize", 3), ("block_size", 15), ("threshold_c", 2.0), ("bilateral_d", 5),
        ("sigma_color", 20.0), ("sigma_space", 20.0), ("smoothing_passes", 2), ("quantize_colors", 4),
        ("edge_thickness", 3),
    ],
)
def test_every_parameter_changes_the_output(field, value):
    rgb = sample_photo("chelsea.png")[:120, :160]
    base = cartoonize(rgb, CartoonParams())
    changed = cartoonize(rgb, dataclasses.replace(CartoonParams(), **{field: value}))
    assert not np.array_equal(base, changed)


def test_comic_preset_is_deterministic_and_uses_its_palette():
    rgb = sample_photo("coffee.png")[:150, :200]
    first = cartoonize(rgb, PRESETS["comic"])
    assert np.array_equal(first, cartoonize(rgb, PRESETS["comic"]))
    colours = {tuple(c) for c in first.reshape(-1, 3)} - {(0, 0, 0)}
    assert len(colours) <= PRESETS["comic"].quantize_colors


def test_comic_ink_lines_are_the_detected_lines_thickened():
    """edge_thickness 2 grows every detected ink line (erodes the colour mask); dilating would thin them."""
    bgr = np.full((96, 96, 3), 230, np.uint8)
    cv2.rectangle(bgr, (10, 10), (50, 40), (40, 60, 200), -1)
    cv2.circle(bgr, (65, 65), 20, (20, 120, 30), -1)
    comic = PRESETS["comic"]
    detected = edge_mask(bgr, dataclasses.replace(comic, edge_thickness=1)) == 0
    inked = edge_mask(bgr, comic) == 0
    assert comic.edge_thickness == 2 and detected.any()
    assert np.all(inked[detected]) and inked.sum() > detected.sum()


def test_params_for_applies_overrides_and_rejects_unknown_presets():
    assert params_for("comic", block_size=5, sigma_color=None).block_size == 5
    assert params_for("comic", sigma_color=None).sigma_color == PRESETS["comic"].sigma_color
    with pytest.raises(ValueError, match="unknown classical preset"):
        params_for("nope")


@pytest.mark.slow
def test_transforms_never_import_beam():
    sources = [p for p in (ROOT / "transforms").rglob("*.py")]
    assert sources
    beam_import = re.compile(r"^\s*(import|from)\s+apache_beam", re.MULTILINE)
    for path in sources:
        assert not beam_import.search(path.read_text()), path
    code = (
        "import sys, transforms.images, transforms.cartoon, transforms.nst.optimize, transforms.nst.extractors;"
        "sys.exit('apache_beam' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 0
