"""`make bench`: the seed's NST loop against this project's, same pair, same VGG19 weights, one run.

Each case runs in its own worker process (`--worker`), so peak RSS is per worker and start-up
(imports), model load, compilation and the timed steps are measured separately, as a Beam
worker pays them. Times are wall seconds per content x style pair; the seed-style loop is
`bench/seed_loop.py` (eager TF, one Python step at a time, keras Adam on a tf.Variable).

  seed    the seed-style loop, float32 (TensorFlow only: it is the seed's code)
  ours    transforms.nst.stylize at the given settings; compile = its first call minus a
          steady-state call, steps = the steady-state call, loss = float32 `evaluate_losses`

FLOPs per step are counted from the extractor's Conv2D layers (forward + gradient w.r.t. the
input = 2x forward; the seed's eager tape also computes unused filter gradients, not counted),
against the ceiling of a large matmul and 3x3 convolution in the same precision on this machine.
Results: bench/results/nst_bench-<time>.json and .parquet; headline on the last line.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import subprocess
import sys
import time

T0 = time.perf_counter()
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
RESULTS = os.path.join(ROOT, "bench", "results")
CONTENT = os.path.join(ROOT, "samples", "content", "chelsea.png")
STYLE = os.path.join(ROOT, "samples", "style", "pop_art.png")


def _load(path, max_dim):
    import numpy as np
    from PIL import Image

    image = Image.open(path).convert("RGB")
    scale = max_dim / max(image.size)
    size = (max(1, round(image.size[0] * scale)), max(1, round(image.size[1] * scale)))
    return np.asarray(image.resize(size, Image.LANCZOS), dtype=np.float32) / 255.0


def step_flops(model, height, width):
    """Forward FLOPs of the extractor's convolutions at HxW (2 per multiply-add), times 2 for a
    step (forward + gradient w.r.t. the input; no filter gradients are needed)."""
    import keras

    total, scale = 0.0, 1.0
    for layer in _layers(model):
        if isinstance(layer, keras.layers.MaxPooling2D):
            scale *= layer.strides[0]
        elif isinstance(layer, keras.layers.Conv2D):
            k = layer.kernel.shape
            total += 2.0 * (height / scale) * (width / scale) * k[0] * k[1] * k[2] * k[3]
    return 2.0 * total


def _layers(model):
    import keras

    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _layers(layer)
        else:
            yield layer


def ceiling(precision):
    """GFLOP/s of a 4096^3 matmul and a 3x3 256->256 conv on 128x128 (best of 5), compiled."""
    import keras
    from keras import ops

    from transforms.nst import backends

    out = {}
    a = ops.cast(keras.random.uniform((4096, 4096)), precision)
    x = ops.cast(keras.random.uniform((1, 128, 128, 256)), precision)
    w = ops.cast(keras.random.uniform((3, 3, 256, 256)), precision)
    cases = {"matmul": (lambda a: ops.matmul(a, a), (a,), 2 * 4096**3),
             "conv3x3": (lambda x, w: ops.conv(x, w, padding="same"), (x, w), 2 * 128 * 128 * 256 * 256 * 9)}
    dummy = keras.Sequential([keras.layers.Identity()])
    dummy.build((None, 1))
    for name, (fn, args, flops) in cases.items():
        compiled = backends.compile_with_model(dummy, lambda _features, *a, fn=fn: fn(*a))
        ops.convert_to_numpy(compiled(*args)[..., :1])
        best = float("inf")
        for _ in range(5):
            start = time.perf_counter()
            ops.convert_to_numpy(compiled(*args)[..., :1])
            best = min(best, time.perf_counter() - start)
        out[name] = flops / best / 1e9
    return out


def worker(case):
    """One measurement in this fresh process; prints one JSON line."""
    import numpy as np

    started = time.perf_counter()
    import keras  # noqa: F401

    from transforms.nst.extractors import load_extractor
    from transforms.nst.optimize import NSTSettings, content_targets, evaluate_losses, style_targets, stylize

    row = dict(case, backend=keras.backend.backend())
    row["seconds_import"] = started - T0 + (time.perf_counter() - started)
    content, style = _load(CONTENT, case["max_dim"]), _load(STYLE, case["max_dim"])
    start = time.perf_counter()
    extractor = load_extractor("vgg19", os.environ.get("NST_BENCH_WEIGHTS") or "imagenet")
    row["seconds_load"] = time.perf_counter() - start
    targets = content_targets(extractor, content)
    grams = [style_targets(extractor, style)] * case.get("batch", 1)
    row["height"], row["width"] = content.shape[:2]
    flops = step_flops(extractor.model, *content.shape[:2])
    row["gflop_per_step"] = flops / 1e9
    if case["impl"] == "ceiling":
        row.update({f"ceiling_{k}_gflops": v for k, v in ceiling(case["precision"]).items()})
    elif case["impl"] == "seed":
        from bench.seed_loop import run_seed_loop, seed_extractor

        model = seed_extractor()
        settings = NSTSettings()
        checkpoints = sorted(set(case["checkpoints"]))
        _, taken = run_seed_loop(model, content, style, max(checkpoints), settings, snapshots=checkpoints)
        row["checkpoints"] = {}
        for steps, (seconds, image) in taken.items():
            loss = evaluate_losses(extractor, image[None], targets, grams[:1], settings)[0]["total"]
            row["checkpoints"][str(steps)] = {"seconds": seconds, "loss": loss}
        row["seconds_compile"] = 0.0
    else:
        settings = NSTSettings(**case["settings"])
        from transforms.nst.optimize import resolve_precision

        row["precision_used"] = resolve_precision(settings)
        start = time.perf_counter()
        stylize(extractor, content, targets, grams, settings)  # first call: traces + compiles + runs
        first = time.perf_counter() - start
        start = time.perf_counter()
        result = stylize(extractor, content, targets, grams, settings)
        steady = time.perf_counter() - start
        row.update(seconds_first_call=first, seconds_compile=max(0.0, first - steady), seconds_steps=steady,
                   loss=float(np.mean([r["total"] for r in result.losses])))
    row["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    if case["impl"] != "ceiling" and not case.get("label", "").startswith("ttq"):
        # The shared CPU is noisy: each case's own ceiling, measured right after it, same precision.
        own = ceiling(row.get("precision_used", "float32"))
        row["own_ceiling_gflops"] = max(own.values())
    print("RESULT " + json.dumps(row), flush=True)


def run_case(case, env):
    command = [sys.executable, "-m", "bench.nst_bench", "--worker", json.dumps(case)]
    start = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode or not lines:
        raise RuntimeError(f"bench worker failed: {case}\n{done.stderr[-3000:]}")
    row = json.loads(lines[-1][len("RESULT "):])
    row["seconds_process"] = time.perf_counter() - start
    return row


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=100, help="equal-work steps (default 100)")
    parser.add_argument("--sizes", default="256,512", help="long sides for equal work (default 256,512)")
    parser.add_argument("--ttq-steps", type=int, default=500, help="seed steps defining the quality target")
    parser.add_argument("--ttq-size", type=int, default=256, help="long side for time-to-quality (GPU: 512)")
    parser.add_argument("--ttq-candidates", default="lbfgs:bfloat16:1",
                        help="ours' configurations for time-to-quality, OPTIMIZER:PRECISION:SCALES "
                             "(scales with | between levels), tried in order")
    parser.add_argument("--ttq-step-ladder", default="20,40,60,80,120,160,240,320",
                        help="step counts tried per candidate until the target loss is reached")
    parser.add_argument("--precisions", default="bfloat16,float32", help="ours' precisions at equal work")
    parser.add_argument("--no-seed", action="store_true", help="skip the seed-style loop (no TensorFlow: GPU hosts)")
    parser.add_argument("--batch", type=int, default=1, help="pairs per stylize call (styles per content)")
    parser.add_argument("--peak-gflops", type=float, default=0.0,
                        help="the device's nominal peak GFLOP/s, to print the fraction reached (GPU)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 256 px, 20 steps, quality target at 60")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(json.loads(args.worker))
    if args.quick:
        args.sizes, args.steps, args.ttq_steps, args.ttq_step_ladder = "256", 20, 60, "10,20,30,40,60"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    sizes = [int(s) for s in args.sizes.split(",")]
    precisions = args.precisions.split(",")
    rows = []

    def log(row):
        rows.append(row)
        keep = {k: v for k, v in row.items() if k not in ("settings", "checkpoints")}
        print(json.dumps(keep, default=str)[:400], file=sys.stderr, flush=True)

    for precision in precisions:
        log(run_case({"impl": "ceiling", "max_dim": 64, "precision": precision}, env))
    seed_at = {}
    if not args.no_seed:
        for size in sizes:
            checkpoints = [args.steps] + ([args.ttq_steps] if size == args.ttq_size else [])
            row = run_case({"impl": "seed", "max_dim": size, "checkpoints": checkpoints}, env)
            seed_at[size] = row
            log(row)
        if args.ttq_size not in sizes:
            seed_at[args.ttq_size] = run_case({"impl": "seed", "max_dim": args.ttq_size,
                                               "checkpoints": [args.ttq_steps]}, env)
            log(seed_at[args.ttq_size])
    for size in sizes:
        for precision in precisions:
            settings = {"steps": args.steps, "precision": precision}
            log(run_case({"impl": "ours", "max_dim": size, "settings": settings, "batch": args.batch,
                          "label": f"ours {precision}"}, env))
    # Time-to-quality: ours' cheapest configuration reaching the seed's loss after ttq_steps.
    ttq = None
    if seed_at.get(args.ttq_size):
        target = seed_at[args.ttq_size]["checkpoints"][str(args.ttq_steps)]["loss"]
        for candidate in args.ttq_candidates.split(","):
            optimizer, precision, scales = candidate.split(":", 2)
            for steps in [int(s) for s in args.ttq_step_ladder.split(",")]:
                settings = {"steps": steps, "precision": precision, "optimizer": optimizer,
                            "scales": scales.replace("|", ",")}
                row = run_case({"impl": "ours", "max_dim": args.ttq_size, "settings": settings,
                                "label": f"ttq {candidate} {steps}"}, env)
                row["ttq_target"] = target
                log(row)
                if row["loss"] <= target:
                    if ttq is None or row["seconds_steps"] < ttq["seconds_steps"]:
                        ttq = row
                    break
    report(rows, seed_at, ttq, args)


def report(rows, seed_at, ttq, args):
    ceilings = {r["precision"]: r for r in rows if r["impl"] == "ceiling"}
    table = []
    for size in [int(s) for s in args.sizes.split(",")]:
        seed = seed_at.get(size)
        seed_seconds = seed_loss = None
        if seed:
            point = seed["checkpoints"][str(args.steps)]
            seed_seconds, seed_loss = point["seconds"], point["loss"]
            table.append(_line("seed-style eager f32", size, args.steps, seed_seconds, seed_loss, seed,
                               seed_seconds, seed_loss, ceilings.get("float32"), 0.0))
        for row in rows:
            if row["impl"] == "ours" and row["max_dim"] == size and row.get("label", "").startswith("ours"):
                table.append(_line(row["label"], size, args.steps, row["seconds_steps"] / row.get("batch", 1),
                                   row["loss"], row, seed_seconds, seed_loss,
                                   ceilings.get(row["precision_used"]), row["seconds_compile"]))
    headline = {}
    big = max(int(s) for s in args.sizes.split(","))
    best = min((t for t in table if t["size"] == big and t["impl"].startswith("ours")),
               key=lambda t: t["s_per_pair"], default=None)
    if best and best["ratio_seed_over_ours"]:
        headline["equal_work"] = best
    if ttq:
        seed_ttq = seed_at[args.ttq_size]["checkpoints"][str(args.ttq_steps)]
        headline["ttq"] = {"label": ttq["label"], "seconds": ttq["seconds_steps"], "loss": ttq["loss"],
                           "seed_seconds": seed_ttq["seconds"], "seed_loss": seed_ttq["loss"],
                           "speedup": seed_ttq["seconds"] / ttq["seconds_steps"],
                           "compile_s": ttq["seconds_compile"]}
    print(f"\nNST bench, {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"backend {rows[-1].get('backend')}, load avg at end {os.getloadavg()[0]:.2f}")
    head = (f"{'case':28} {'px':>4} {'steps':>5} {'s/pair':>8} {'pairs/min':>9} {'seed/ours':>9} "
            f"{'loss':>11} {'dloss%':>7} {'GFLOP/s':>8} {'ceil%':>6} {'RSS GB':>6} {'start s':>7} {'compile s':>9}")
    print(head)
    for t in table:
        print(f"{t['impl']:28} {t['size']:>4} {t['steps']:>5} {t['s_per_pair']:>8.2f} {t['pairs_per_min']:>9.2f} "
              f"{_f(t['ratio_seed_over_ours'], '9.2f')} {t['loss']:>11.4g} {_f(t['loss_delta_pct'], '+7.2f')} "
              f"{t['gflops']:>8.1f} {_f(t['ceiling_pct'], '6.0f')} {t['peak_rss_gb']:>6.2f} "
              f"{t['seconds_startup']:>7.1f} {t['seconds_compile']:>9.1f}")
    if args.peak_gflops:
        for t in table:
            print(f"{t['impl']} {t['size']}px: {t['gflops']:.0f} GFLOP/s = "
                  f"{100 * t['gflops'] / args.peak_gflops:.1f}% of nominal peak {args.peak_gflops:.0f}")
    for name, c in ceilings.items():
        print(f"ceiling {name}: matmul {c['ceiling_matmul_gflops']:.0f} GFLOP/s, "
              f"conv3x3 {c['ceiling_conv3x3_gflops']:.0f} GFLOP/s")
    if ttq:
        h = headline["ttq"]
        print(f"time-to-quality @{args.ttq_size}px: seed {args.ttq_steps} steps {h['seed_seconds']:.1f}s "
              f"(loss {h['seed_loss']:.4g}); ours {h['label']}: {h['seconds']:.1f}s (loss {h['loss']:.4g}, "
              f"+{h['compile_s']:.1f}s compile once per shape) -> {h['speedup']:.1f}x")
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    os.makedirs(RESULTS, exist_ok=True)
    path = os.path.join(RESULTS, f"nst_bench-{stamp}")
    with open(path + ".json", "w") as out:
        json.dump({"table": table, "rows": rows, "headline": headline, "args": vars(args)}, out, indent=1,
                  default=str)
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(table), path + ".parquet")
    except Exception as error:  # noqa: BLE001 - parquet is a convenience; JSON is the record
        print(f"(no parquet: {error})")
    eq = headline.get("equal_work")
    tq = headline.get("ttq")
    print(f"HEADLINE equal work {big}px x{args.steps}: "
          + (f"seed/ours {eq['ratio_seed_over_ours']:.2f}x ({eq['impl']}, dloss {eq['loss_delta_pct']:+.2f}%)"
             if eq else "n/a")
          + f"; time-to-quality @{args.ttq_size}px vs seed {args.ttq_steps} steps: "
          + (f"{tq['speedup']:.1f}x ({tq['label']})" if tq else "not reached/n/a")
          + f"; results {path}.json")


def _f(value, spec):
    return format(value, ">" + spec) if value is not None else format("-", ">" + spec.lstrip("+").split(".")[0])


def _line(impl, size, steps, seconds, loss, row, seed_seconds, seed_loss, ceiling_row, compile_s):
    gflops = row["gflop_per_step"] * steps * row.get("batch", 1) / (seconds * row.get("batch", 1))
    ceil = row.get("own_ceiling_gflops") or (
        max(ceiling_row["ceiling_matmul_gflops"], ceiling_row["ceiling_conv3x3_gflops"]) if ceiling_row else None)
    return {"impl": impl, "size": size, "steps": steps, "s_per_pair": seconds, "pairs_per_min": 60.0 / seconds,
            "ratio_seed_over_ours": seed_seconds / seconds if seed_seconds else None,
            "ratio_ours_over_seed": seconds / seed_seconds if seed_seconds else None,
            "loss": loss, "loss_delta_pct": 100.0 * (loss / seed_loss - 1) if seed_loss else None,
            "gflops": gflops, "ceiling_pct": 100.0 * gflops / ceil if ceil else None,
            "peak_rss_gb": row["peak_rss_gb"], "seconds_startup": row["seconds_import"] + row["seconds_load"],
            "seconds_compile": compile_s}


if __name__ == "__main__":
    main()
