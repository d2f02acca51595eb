"""Peak RSS of one process optimising one image with `stylize` at given sizes (the numbers behind
`transforms.nst.controls.estimate_peak_bytes`). Each size runs in a fresh child process, so the
peak is that size's alone.

    .venv/bin/python docs/measure_nst_memory.py --sizes 512,1024,2048 --precisions float32,bfloat16

Prints one line per (size, precision): shape, steps, seconds per step, peak RSS, and the
estimate for comparison. Uses real VGG19 weights when staged, else random ones (same memory).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys

CHILD = r"""
import json, resource, sys, time
import numpy as np
from skimage import data
from transforms import images
from transforms.nst import controls
from transforms.nst.extractors import load_extractor
from transforms.nst.optimize import NSTSettings, content_targets, style_targets, stylize
long_side, precision, steps, weights = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4]
extractor = load_extractor("vgg19", weights)
photo = images.to_float01(data.chelsea())  # 300x451, 4:3-ish
content = images.resize_to_max_dim(photo, long_side)
style = images.to_float01(images.resize_to_max_dim(data.coffee(), 512))
settings = NSTSettings(steps=steps, precision=precision)
grams = [style_targets(extractor, style)]
targets = content_targets(extractor, content)
stylize(extractor, content, targets, grams, NSTSettings(steps=1, precision=precision))  # compile
start = time.perf_counter()
stylize(extractor, content, targets, grams, settings)
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps(dict(shape=list(content.shape[:2]), precision=precision, steps=steps,
                      s_per_step=seconds / steps, peak_rss_gb=peak / 1e9,
                      estimate_gb=controls.estimate_peak_bytes(*content.shape[:2], 1, precision) / 1e9)))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="512,1024,2048")
    parser.add_argument("--precisions", default="float32,bfloat16")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--weights", default="imagenet", help="imagenet | random")
    args = parser.parse_args()
    for size in args.sizes.split(","):
        for precision in args.precisions.split(","):
            out = subprocess.run([sys.executable, "-c", CHILD, size, precision, str(args.steps), args.weights],
                                 capture_output=True, text=True)
            lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
            if out.returncode or not lines:
                print(f"{size} {precision}: failed (rc {out.returncode}): {out.stderr.strip().splitlines()[-1:]}")
                continue
            row = json.loads(lines[-1])
            print(f"{row['shape'][0]}x{row['shape'][1]} {precision:8s} {row['s_per_step']:6.2f} s/step  "
                  f"peak RSS {row['peak_rss_gb']:.2f} GB  (estimate {row['estimate_gb']:.2f} GB)", flush=True)


if __name__ == "__main__":
    main()
