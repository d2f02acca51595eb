#!/usr/bin/env bash
# NST bench on a GPU host: JAX (default) or PyTorch backend, no TensorFlow, Beam or network needed.
#   1. here:      bench/pack_gpu.sh            (wheels + float16 VGG19 weights, ~43 MB)
#   2. GPU host:  bench/gpu.sh [jax|torch] [extra nst_bench args]
#      (device runner: carry ["bench/results/gpu_bundle"])
# It installs the bundled wheels (--no-deps: numpy, jax/torch are the host's own) into a throw-away target dir if `import keras` fails, turns
# the float16 weights into a .weights.h5, and runs ours only (the seed loop is TensorFlow code):
# 500 steps at 512 px, a batch of 4 styles per content (s/pair = call time / 4), bfloat16,
# plus the bf16 matmul/conv ceiling and the fraction of the GPU's nominal peak (--peak-gflops,
# H100 SXM dense bf16 = 989000). Target: <= 1 s per pair. Not yet run: no GPU was available.
set -euo pipefail
cd "$(dirname "$0")/.."
BACKEND=${1:-jax}; shift || true
BUNDLE=bench/results/gpu_bundle
PY=${PY:-python3}
export KERAS_BACKEND=$BACKEND PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
SITE=$(mktemp -d)/site
if ! "$PY" -c "import keras" 2>/dev/null; then
  "$PY" -m pip install --quiet --no-index --no-deps --target "$SITE" "$BUNDLE"/wheels/*.whl
  export PYTHONPATH="$PYTHONPATH:$SITE"
fi
WEIGHTS=$BUNDLE/vgg19_notop.weights.h5
if [ ! -f "$WEIGHTS" ]; then
  "$PY" - "$BUNDLE/vgg19_notop_f16.npz" "$WEIGHTS" <<'PYEOF'
import sys, numpy as np, keras
arrays = np.load(sys.argv[1]); vgg = keras.applications.VGG19(include_top=False, weights=None)
vgg.set_weights([arrays[f"arr_{i}"].astype(np.float32) for i in range(len(arrays.files))])
vgg.save_weights(sys.argv[2])
PYEOF
fi
"$PY" -c "import keras; print('keras', keras.__version__, 'backend', keras.backend.backend())"
nvidia-smi --query-gpu=name,clocks.max.sm --format=csv,noheader || true
NST_BENCH_WEIGHTS=$PWD/$WEIGHTS exec "$PY" bench/nst_bench.py --no-seed --sizes 512 --steps 500 --batch 4 \
  --precisions bfloat16,float32 --peak-gflops 989000 "$@"
