"""Would a fast convolution algorithm beat the direct one on this CPU? (Evidence for bench/README.md.)

At equal work the NST step is VGG19's 3x3 convolutions, forward and gradient w.r.t. the input, and
TensorFlow's oneDNN direct convolution already runs them near this CPU's bfloat16 ceiling. Winograd
F(m x m, 3x3) does the same convolution with (m+2)^2 / (9 m^2) of the multiplications (F(2x2): 2.25x
fewer, F(4x4): 4x fewer) plus input/output transforms. This probe writes it in keras.ops (so it runs
on TensorFlow and JAX alike), times forward + input gradient per VGG19 layer shape at 341x512 against
`ops.conv`, and prints each one's effective GFLOP/s (direct-convolution FLOPs / time) and its largest
relative error against the float32 direct convolution.

    python bench/winograd_probe.py                 # both backends, each in its own process
    KERAS_BACKEND=jax python bench/winograd_probe.py --here
"""
from __future__ import annotations

import functools
import os
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

#: (height, width, in channels, out channels) of VGG19's conv blocks at 341x512 (one shape per block).
SHAPES = [(341, 512, 64, 64), (171, 256, 128, 128), (86, 128, 256, 256), (43, 64, 512, 512), (22, 32, 512, 512)]

#: Lavin & Gray's transforms: B^T (input), G (filter), A^T (output).
WINOGRAD = {
    2: ([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]],
        [[1, 0, 0], [.5, .5, .5], [.5, -.5, .5], [0, 0, 1]],
        [[1, 1, 1, 0], [0, 1, -1, -1]]),
    4: ([[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0], [0, -2, -1, 2, 1, 0],
         [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]],
        [[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6], [1 / 24, 1 / 12, 1 / 6],
         [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]],
        [[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]]),
}


def _combine(coefficients, parts):
    """sum(c * p), skipping zeros, so that the transforms are additions, not small matmuls."""
    return sum(p if c == 1 else -p if c == -1 else p * c for c, p in zip(coefficients, parts) if c != 0)


def winograd_conv(x, kernel, m):
    """3x3 "same" convolution of x [1,H,W,C] with kernel [3,3,C,Co], as Winograd F(m x m, 3x3)."""
    from keras import ops

    bt, g, at = (np.array(t, dtype="float32") for t in WINOGRAD[m])
    a = m + 2
    _, height, width, channels = x.shape
    th, tw = -(-height // m), -(-width // m)
    padded = ops.pad(x, ((0, 0), (1, m * th + 1 - height), (1, m * tw + 1 - width), (0, 0)))
    rows = [padded[:, r : r + m * (th - 1) + 1 : m] for r in range(a)]
    rows = [_combine(bt[i], rows) for i in range(a)]
    tiles = []
    for row in rows:
        cols = [row[:, :, c : c + m * (tw - 1) + 1 : m] for c in range(a)]
        tiles += [_combine(bt[j], cols) for j in range(a)]
    v = ops.reshape(ops.stack(tiles), (a * a, th * tw, channels))
    u = ops.reshape(ops.einsum("ai,ijco,bj->abco", g, ops.cast(kernel, "float32"), g), (a * a, channels, -1))
    products = ops.reshape(ops.matmul(v, ops.cast(u, v.dtype)), (a, a, 1, th, tw, -1))
    out_rows = [_combine(at[p], [products[i] for i in range(a)]) for p in range(m)]
    blocks = [ops.stack([_combine(at[q], [r[j] for j in range(a)]) for q in range(m)], axis=3) for r in out_rows]
    y = ops.reshape(ops.stack(blocks, axis=2), (1, m * th, m * tw, -1))
    return y[:, :height, :width]


def probe(reps: int = 3) -> None:
    import keras
    from keras import ops

    from transforms.nst import backends

    dummy = keras.Sequential([keras.layers.Identity()])
    dummy.build((None, 1))
    rng = np.random.default_rng(0)
    cases = {"direct": functools.partial(ops.conv, padding="same"),
             "F(2x2,3x3)": functools.partial(winograd_conv, m=2), "F(4x4,3x3)": functools.partial(winograd_conv, m=4)}
    for height, width, cin, cout in SHAPES:
        x = rng.standard_normal((1, height, width, cin)).astype("float32")
        k = (rng.standard_normal((3, 3, cin, cout)) / np.sqrt(9 * cin)).astype("float32")
        reference = ops.convert_to_numpy(ops.conv(x, k, padding="same"))
        flops = 2 * 2 * height * width * cin * cout * 9  # forward + input gradient
        for precision in ("float32", "bfloat16"):
            for name, conv in cases.items():
                def forward(x, k, conv=conv):
                    y = ops.cast(conv(ops.cast(x, precision), ops.cast(k, precision)), "float32")
                    return {"total": ops.sum(y**2, axis=(1, 2, 3)), "y": y}

                def step(_features, x, k, forward=forward):
                    terms, grad = backends.loss_and_grad(lambda x: forward(x, k), x)
                    return terms["y"], grad

                compiled = backends.compile_with_model(dummy, step)
                y, _ = compiled(x, k)
                best = float("inf")
                for _ in range(reps):
                    start = time.perf_counter()
                    ops.convert_to_numpy(compiled(x, k)[1])
                    best = min(best, time.perf_counter() - start)
                error = np.abs(ops.convert_to_numpy(y) - reference).max() / np.abs(reference).max()
                print(f"{keras.backend.backend():10s} {height}x{width} {cin}->{cout} {precision:8s} {name:11s} "
                      f"{best * 1e3:8.1f} ms {flops / best / 1e9:6.0f} GFLOP/s eff  rel.err {error:.1e}", flush=True)


def main(argv: list[str]) -> None:
    if "--here" in argv:
        probe()
        return
    for backend in ("tensorflow", "jax"):
        env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3")
        subprocess.run([sys.executable, os.path.abspath(__file__), "--here"], env=env, check=True)


if __name__ == "__main__":
    main(sys.argv[1:])
