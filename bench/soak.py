"""Soak benchmark (not a CI test): many classical units through the real CLI on the DirectRunner with
worker processes, sampling the resident memory of the whole process tree while it runs.

  .venv/bin/python bench/soak.py                    # 2,000 units, 2 worker processes
  .venv/bin/python bench/soak.py --units 10000 --workers 4 --keep

It generates its images in a temporary folder (a few distinct photos-like images repeated, plus
--bad-fraction broken files, so the error path and the dead letters are exercised too), runs
`python -m pipeline run ... --direct_num_workers N --direct_running_mode multi_processing`, and
every --interval seconds sums VmRSS over the CLI process and all its descendants (Linux /proc).
Progress is the number of completion sidecars written so far.

It prints units per second (end to end, start-up included, and steady: between 10% and 90% of the
units done), the peak RSS, the peak RSS while each quarter of the units was being done, and the growth
from the first quarter's peak to the last quarter's (what runs after the last unit, the report and
the contact sheet, is shown apart). RSS counts as flat when that growth is under --max-growth
(default 10%); otherwise the exit status is 1. --json writes the numbers to a file as well.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def make_inputs(folder: str, units: int, bad_fraction: float, size: tuple[int, int], variants: int = 64) -> int:
    """`units` files in `folder`: copies of `variants` distinct images, every round(1/bad_fraction)-th
    one a broken file. Returns how many are broken."""
    import numpy as np

    from transforms.images import encode_png

    rng = np.random.default_rng(0)
    height, width = size
    encoded = []
    for _ in range(variants):
        y, x = np.mgrid[0:height, 0:width]
        base = rng.integers(0, 255, 3)
        img = (base + 60 * np.sin(x[..., None] / rng.uniform(8, 30) + rng.uniform(0, 6, 3))).clip(0, 255)
        top, left = rng.integers(0, height // 2), rng.integers(0, width // 2)
        img[top : top + height // 3, left : left + width // 3] = rng.integers(0, 255, 3)
        img = (img + rng.normal(0, 6, img.shape)).clip(0, 255).astype(np.uint8)
        encoded.append(encode_png(img))
    every = round(1 / bad_fraction) if bad_fraction > 0 else 0
    bad = 0
    for i in range(units):
        path = os.path.join(folder, f"u{i:06d}.png")
        if every and i % every == every - 1:
            data = b"not an image" if bad % 2 == 0 else encoded[i % variants][:200]  # text, truncated
            bad += 1
        else:
            data = encoded[i % variants]
        with open(path, "wb") as handle:
            handle.write(data)
    return bad


def tree_rss(root_pid: int) -> dict[int, int]:
    """{pid: VmRSS in bytes} of `root_pid` and its descendants."""
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as handle:
                ppid = int(handle.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(name))
    found, todo = {}, [root_pid]
    while todo:
        pid = todo.pop()
        try:
            with open(f"/proc/{pid}/status") as handle:
                for line in handle:
                    if line.startswith("VmRSS:"):
                        found[pid] = int(line.split()[1]) * 1024
                        break
        except OSError:
            pass
        todo.extend(children.get(pid, []))
    return found


def describe_process(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            args = [a.decode(errors="replace") for a in handle.read().split(b"\0") if a]
    except OSError:
        return "?"
    if "-m" in args:
        return args[args.index("-m") + 1]
    return os.path.basename(args[0]) if args else "?"


def count_done(images: str) -> int:
    try:
        return sum(1 for entry in os.scandir(images) if entry.name.endswith(".png.json"))
    except FileNotFoundError:
        return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--units", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=2, help="--direct_num_workers (multi_processing)")
    parser.add_argument("--size", default="240x320", help="HxW of the generated images (default 240x320)")
    parser.add_argument("--preset", default="seed")
    parser.add_argument("--bad-fraction", type=float, default=0.01)
    parser.add_argument("--interval", type=float, default=0.5, help="RSS sampling period in seconds")
    parser.add_argument("--max-growth", type=float, default=0.10)
    parser.add_argument("--json", help="also write the numbers to this file")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (printed)")
    args = parser.parse_args()
    height, width = (int(v) for v in args.size.lower().split("x"))

    tmp = tempfile.mkdtemp(prefix="toonbeam-soak-")
    try:
        inputs, output = os.path.join(tmp, "in"), os.path.join(tmp, "out")
        os.makedirs(inputs)
        t = time.perf_counter()
        bad = make_inputs(inputs, args.units, args.bad_fraction, (height, width))
        print(f"soak: {args.units} inputs ({bad} broken) of {height}x{width} in {time.perf_counter() - t:.1f} s: {inputs}")
        command = [
            sys.executable, "-m", "pipeline", "run", "--content", inputs, "--output", output,
            "--preset", args.preset, "--run_id", "soak",
            "--direct_num_workers", str(args.workers), "--direct_running_mode", "multi_processing",
        ]
        images = os.path.join(output, "images", "classical")
        samples = []  # (seconds, units done, rss bytes, processes)
        per_process: dict[int, tuple[str, int]] = {}  # pid: (what it runs, peak RSS)
        start = time.perf_counter()
        proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        while proc.poll() is None:
            found = tree_rss(proc.pid)
            samples.append((time.perf_counter() - start, count_done(images), sum(found.values()), len(found)))
            for pid, rss in found.items():
                name, peak = per_process.get(pid) or (describe_process(pid), 0)
                per_process[pid] = (name, max(peak, rss))
            time.sleep(args.interval)
        elapsed = time.perf_counter() - start
        stdout, stderr = proc.communicate()
        if proc.returncode != 0:
            print(stdout + stderr[-3000:], file=sys.stderr)
            print(f"soak: the run failed with exit status {proc.returncode}", file=sys.stderr)
            return 2
        result = summarize(args, samples, elapsed, bad)
        result["peak_rss_per_process_mib"] = [
            f"{name}: {peak / 2**20:.0f}" for name, peak in sorted(per_process.values(), key=lambda v: -v[1])
        ]
        print(stdout.strip())
        print_result(result)
        if args.json:
            with open(args.json, "w") as handle:
                json.dump(result, handle, indent=2)
        return 0 if result["rss_flat"] else 1
    finally:
        if args.keep:
            print(f"soak: kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def summarize(args, samples, elapsed: float, bad: int) -> dict:
    good = args.units - bad
    quarters = []  # peak RSS while the units of each quarter were being done (start-up and finish excluded)
    for q in range(4):
        low, high = good * q / 4, good * (q + 1) / 4
        inside = [s[2] for s in samples if low <= s[1] < high and 0 < s[1] < good] or [0]
        quarters.append(max(inside))
    after = [s[2] for s in samples if s[1] >= good] or [0]  # report, dead letters, contact sheet
    first_10 = next((s[0] for s in samples if s[1] >= 0.1 * good), None)
    last_90 = next((s[0] for s in samples if s[1] >= 0.9 * good), None)
    steady = 0.8 * good / (last_90 - first_10) if first_10 is not None and last_90 and last_90 > first_10 else None
    growth = quarters[3] / quarters[0] - 1 if quarters[0] else None
    return {
        "units": args.units, "broken": bad, "workers": args.workers, "size": args.size, "preset": args.preset,
        "seconds": round(elapsed, 1),
        "units_per_second": round(args.units / elapsed, 1),
        "steady_units_per_second": round(steady, 1) if steady else None,
        "peak_rss_mib": round(max(s[2] for s in samples) / 2**20, 1),
        "quarter_peak_rss_mib": [round(q / 2**20, 1) for q in quarters],
        "rss_growth": round(growth, 4) if growth is not None else None,
        "rss_flat": growth is not None and growth < args.max_growth,
        "max_growth": args.max_growth,
        "peak_rss_after_last_unit_mib": round(max(after) / 2**20, 1),
        "max_processes": max(s[3] for s in samples),
        "samples": len(samples),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
    }


def print_result(r: dict) -> None:
    print(
        f"soak: {r['units']} units ({r['broken']} broken) with {r['workers']} workers in {r['seconds']} s: "
        f"{r['units_per_second']} units/s end to end, {r['steady_units_per_second']} units/s steady"
    )
    print(
        f"soak: peak RSS {r['peak_rss_mib']} MiB over {r['max_processes']} processes; per quarter of the units "
        f"{r['quarter_peak_rss_mib']} MiB; growth first->last quarter {r['rss_growth']:+.1%} "
        f"({'flat' if r['rss_flat'] else 'NOT flat'}, limit {r['max_growth']:.0%}); "
        f"after the last unit (report, contact sheet) {r['peak_rss_after_last_unit_mib']} MiB"
        if r["rss_growth"] is not None else "soak: not enough samples to judge RSS"
    )
    print("soak: peak RSS per process (MiB): " + ", ".join(r.get("peak_rss_per_process_mib", [])))


if __name__ == "__main__":
    sys.exit(main())
