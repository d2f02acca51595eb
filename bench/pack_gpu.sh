#!/usr/bin/env bash
# Run HERE (a machine with the venv, the Keras cache and a package registry) before bench/gpu.sh:
# packs what a GPU host without TensorFlow, Beam or network needs into bench/results/gpu_bundle
# (git-ignored, ~43 MB: with the ~4.5 MB working tree it stays under the 64 MiB a device command carries):
#   wheels/  keras, namex and optree for CPython 3.12 manylinux: the only Keras dependencies that the
#            lent GPU hosts lack (/work/.library/device/KINDS.md lists numpy, h5py, ml-dtypes, rich,
#            absl-py, packaging, fsspec and pillow there)
#   vgg19_notop_f16.npz  the VGG19 ImageNet weights in float16 (the 80 MB .h5 does not fit)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=bench/results/gpu_bundle
rm -rf "$OUT/wheels"
mkdir -p "$OUT/wheels"
PY=${PY:-.venv/bin/python}
"$PY" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
  --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --implementation cp -d "$OUT/wheels" \
  "keras==$("$PY" -c 'import keras; print(keras.__version__)')" namex optree
KERAS_BACKEND=tensorflow "$PY" - "$OUT/vgg19_notop_f16.npz" <<'PYEOF'
import sys, numpy as np, keras
vgg = keras.applications.VGG19(include_top=False, weights="imagenet")
np.savez(sys.argv[1], *[w.astype(np.float16) for w in vgg.get_weights()])
PYEOF
du -sh "$OUT"
