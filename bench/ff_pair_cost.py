"""What a catalog pays per pair in the pipeline (decode, apply, write, row: the report's seconds_total),
feed-forward against NST at 100 steps, on this machine in one run (issue 22's per-pair target).

The samples' photos are copied under new names into a catalog of --photos photos; feedforward runs
on all of them with one style (a short training: its cost is not per pair, and the network's cost
does not depend on its weights) with the default --ff-keep-faces and with none, NST-100 on --nst-photos
of them, all at --max-dim. Prints the median per-pair seconds of each and their ratios.

    python bench/ff_pair_cost.py [--photos 16] [--nst-photos 2] [--max-dim 256]
"""
import argparse
import os
import shutil
import statistics
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "bench"))


def catalog(folder: str, photos: int) -> str:
    content = os.path.join(folder, "content")
    os.makedirs(content)
    sources = sorted(os.listdir(os.path.join(ROOT, "samples", "content")))
    for i in range(photos):
        name = sources[i % len(sources)]
        shutil.copy(os.path.join(ROOT, "samples", "content", name), os.path.join(content, f"p{i:03d}-{name}"))
    return content


def per_pair_seconds(output: str, method: str) -> list[float]:
    from pipeline.reporting.schema import read_report

    rows = read_report(output).to_pylist()
    return [r["seconds_total"] for r in rows if r["method"] == method and r["status"] == "ok"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", type=int, default=16)
    parser.add_argument("--nst-photos", type=int, default=2)
    parser.add_argument("--max-dim", type=int, default=256)
    parser.add_argument("--style", default="crayon_hatch")
    args = parser.parse_args()
    from ff_bench import cpu_name
    from pipeline import app
    from transforms.feedforward.settings import KEEP_FACES

    style = os.path.join(ROOT, "samples", "style", f"{args.style}.png")
    with tempfile.TemporaryDirectory() as folder:
        content = catalog(folder, args.photos)
        common = ["--style", style, "--max-dim", str(args.max_dim)]
        ff = {}
        for keep in (str(KEEP_FACES), "0"):  # the default face guard (MTCNN on each photo), and none
            output = os.path.join(folder, f"ff-keep{keep}")
            app.run(["--content", content, "--output", output, "--method", "feedforward", *common,
                     "--ff-train-steps", "25", "--ff-heldout-images", "0", "--ff-keep-faces", keep])
            ff[keep] = per_pair_seconds(output, "feedforward")
        nst_content = catalog(os.path.join(folder, "nst"), args.nst_photos)
        app.run(["--content", nst_content, "--output", os.path.join(folder, "nst-out"), "--method", "nst", *common,
                 "--steps", "100"])
        nst = per_pair_seconds(os.path.join(folder, "nst-out"), "nst")
    nst_median = statistics.median(nst)
    print(f"{cpu_name()}; {args.max_dim} px, style {args.style}")
    print(f"nst-100: {len(nst)} pairs, median {nst_median:.1f} s/pair")
    for keep, seconds in ff.items():
        median = statistics.median(seconds)
        print(f"feedforward --ff-keep-faces {keep}: {len(seconds)} pairs, median {median:.3f} s/pair (min "
              f"{min(seconds):.3f}, max {max(seconds):.3f}): {nst_median / median:.0f}x faster than NST-100")


if __name__ == "__main__":
    main()
