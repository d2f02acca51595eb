"""`make mutation`: do the tests catch realistic one-line bugs? Each mutation below is put, one at a
time, into a temporary copy of the working tree (never the tree itself), and the tests that cover its
code are run there; a mutation the tests still pass "survived", and the check exits 1.

Each mutation is an exact text replacement that must match its file exactly once: when the code it
targets is rewritten, the check stops and names the mutation to update instead of testing nothing.
Before any mutation, the selected tests must pass on the unmutated copy.

Output: a table on stdout (mutation, file:line, caught/survived, by which tests, seconds), and the
same as bench/results/mutation.md and mutation.json. `--only TEXT` runs the mutations whose name
contains TEXT.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.ff_bench import cpu_name  # noqa: E402

RESULTS = os.path.join(ROOT, "bench", "results")
FF_UNITS = "tests/test_feedforward_units.py"


@dataclasses.dataclass(frozen=True)
class Mutation:
    name: str
    path: str
    old: str
    new: str
    tests: tuple[str, ...]  # pytest node ids or files: the tests that cover this code


MUTATIONS = (
    # The eight bugs of issue 25 that the tests used to miss.
    Mutation("model hash leaves out --weights", "pipeline/methods/feedforward.py",
             "settings=training, extractor=self.extractor,\n            weights=self.weights, ",
             "settings=training, extractor=self.extractor,\n            ", (FF_UNITS,)),
    Mutation("--skip-existing trusts a same-size input whose time moved", "pipeline/units.py",
             "        return self.read(entry).sha256 == sha256", "        return True",
             ("tests/test_storage.py", "tests/test_reliability.py::test_skip_existing_redoes_an_input_changed_in_place_"
              "and_reports_only_hashes_it_verified")),
    Mutation("quality gate lets an unscored model through", "pipeline/methods/feedforward.py",
             "    if heldout is None:\n        if job.max_loss_ratio is None:\n            return None",
             "    if heldout is None:\n        return None", (FF_UNITS,)),
    Mutation("every training step gets the same crops", "transforms/feedforward/training.py",
             "np.random.default_rng([self.settings.seed, index])", "np.random.default_rng(self.settings.seed)",
             (FF_UNITS,)),
    Mutation("the saturation barrier sees the sigmoid's outputs, not its logits", "transforms/feedforward/training.py",
             "saturation_loss(logits,", "saturation_loss(outputs,",
             ("tests/test_feedforward.py::test_the_saturation_barrier_gives_saturated_pixels_a_gradient",)),
    Mutation("the colour term compares the photo with itself", "transforms/feedforward/training.py",
             "color_loss(outputs, x,", "color_loss(x, x,",
             ("tests/test_feedforward.py::test_the_color_term_charges_a_recoloured_region_and_not_a_finer_texture",)),
    Mutation("the face guard blends nothing back", "transforms/quality.py",
             "amount * face_mask(photo.shape, faces) * (photo - stylised)",
             "amount * face_mask(photo.shape, faces) * (stylised - stylised)",
             ("tests/test_feedforward_pipeline.py::test_keep_faces_blends_the_photo_back_inside_its_faces_and_nowhere_else",)),
    Mutation("the gate ignores style progress", "transforms/feedforward/evaluation.py",
             "and not progress >= min_style_progress:", "and progress < -1e9:", (FF_UNITS,)),
    Mutation("the gate ignores stamps", "transforms/feedforward/evaluation.py",
             "and not saturated <= own + max_saturated:", "and saturated > 1.0:", (FF_UNITS,)),
    Mutation("white counts as a saturated colour", "transforms/quality.py",
             "np.mean((image.min(axis=-1) <= SATURATION) & (image.max(axis=-1) >= 1 - SATURATION))",
             "np.mean(image.max(axis=-1) >= 1 - SATURATION)", ("transforms/quality.py",)),
    Mutation("reflect padding becomes zero padding", "transforms/feedforward/network.py",
             '[p, p], [p, p], [0, 0]], mode="reflect")', '[p, p], [p, p], [0, 0]], mode="constant")', (FF_UNITS,)),
    Mutation("Adam beta_1 becomes Keras's default 0.9", "transforms/nst/settings.py",
             "beta_1: float = 0.99", "beta_1: float = 0.9", ("tests/test_nst_losses.py",)),
    Mutation("comic ink lines dilated instead of eroded", "transforms/cartoon.py",
             "cv2.erode(edges, kernel)", "cv2.dilate(edges, kernel)", ("tests/test_cartoon.py",)),
    Mutation("write_atomic writes straight into the final file", "pipeline/io/storage.py",
             '        tmp = f"{path}.{uuid.uuid4().hex[:12]}.tmp"\n        try:\n            with open(tmp, "wb") as handle:\n'
             "                handle.write(data)\n                handle.flush()\n                os.fsync(handle.fileno())\n"
             "            os.replace(tmp, path)\n        finally:\n            if os.path.exists(tmp):\n"
             "                os.remove(tmp)\n",
             '        with open(path, "wb") as handle:\n            handle.write(data)\n', ("tests/test_storage.py",)),
    # The seven the suite caught already (issue 25), kept so that they stay caught.
    Mutation("Gram matrix not averaged over locations", "transforms/nst/losses.py",
             'features, features) / locations', 'features, features)',
             ("tests/test_nst_losses.py", "transforms/nst/losses.py")),
    Mutation("--http-allowed-addresses public lets private addresses through", "pipeline/io/storage.py",
             'kind == "public" or (policy == "private" and kind == "private")', 'kind in ("public", "private")',
             ("tests/test_storage.py",)),
    Mutation("--max-input-bytes refuses a file of exactly the limit", "pipeline/io/storage.py",
             "if size is not None and size > policy.max_bytes:", "if size is not None and size >= policy.max_bytes:",
             ("tests/test_storage.py",)),
    Mutation("contact sheet stops escaping report values", "pipeline/reporting/contact_sheet.py",
             "autoescape=True,", "autoescape=False,", ("tests/test_contact_sheet.py",)),
    Mutation("summary percentiles count error rows", "pipeline/reporting/summary.py",
             'if r["status"] == "ok" and _is_number(r["seconds_total"])', 'if _is_number(r["seconds_total"])',
             ("tests/test_summary.py",)),
    Mutation("skipped units reported as ok", "pipeline/units.py",
             'report_row(**base, status="skipped", **fields)', 'report_row(**base, status="ok", **fields)',
             ("tests/test_storage.py", "tests/test_reliability.py::test_skip_existing_redoes_an_input_changed_in_place_"
              "and_reports_only_hashes_it_verified")),
    Mutation("Adam's step no longer clipped to [0,1]", "transforms/nst/optimizers.py",
             "return ops.clip(x, 0.0, 1.0), m, v", "return x, m, v",
             ("tests/test_nst_mechanics.py::test_every_adam_step_is_clipped_to_the_image_range",)),
    # More of the same kind.
    Mutation("seed's content layer moved to block4_conv2", "transforms/nst/extractors.py",
             'content_layers=("block5_conv2",)', 'content_layers=("block4_conv2",)', ("tests/test_nst_losses.py",)),
    Mutation("seed's Adam epsilon becomes Keras's 1e-7", "transforms/nst/settings.py",
             "epsilon: float = 0.1", "epsilon: float = 1e-7", ("tests/test_nst_losses.py",)),
    Mutation("seed's style weight 1e-2", "transforms/nst/settings.py",
             "style_weight: float = 1e-3", "style_weight: float = 1e-2", ("tests/test_nst_losses.py",)),
    Mutation("comic preset loses its thick ink", "transforms/cartoon.py",
             "edge_thickness=2,", "edge_thickness=1,", ("tests/test_cartoon.py",)),
    Mutation("images written truncated to uint8 instead of rounded", "transforms/images.py",
             "np.clip(np.rint(image01 * 255.0), 0, 255)", "np.clip(image01 * 255.0, 0, 255)",
             ("tests/test_images.py", "transforms/images.py")),
    Mutation("transparent pixels composited on black", "transforms/images.py",
             'Image.new("RGBA", rgba.size, (255, 255, 255, 255))', 'Image.new("RGBA", rgba.size, (0, 0, 0, 255))',
             ("tests/test_images.py",)),
    Mutation("feed-forward outputs' hash leaves out the style controls", "pipeline/methods/feedforward.py",
             "controls=self.apply_controls(),\n", "\n", (FF_UNITS,)),
    Mutation("sidecar check trusts a same-size damaged image", "pipeline/io/outputs.py",
             'len(data) != record["size"] or hashlib.sha256(data).hexdigest() != record["sha256"]',
             'len(data) != record["size"]', ("tests/test_storage.py",)),
    Mutation("safe names may start with a dot", "pipeline/io/storage.py",
             '_UNSAFE.sub("_", identifier).strip("._")', '_UNSAFE.sub("_", identifier).strip("_")',
             ("tests/test_storage.py",)),
    Mutation("--ff-heldout-images 0 holds out every photo", "pipeline/methods/feedforward.py",
             "heldout = usable[len(usable) - heldout_images :]", "heldout = usable[-heldout_images:]",
             (FF_UNITS,)),
    Mutation("the quality gate refuses a model at its limit", "transforms/feedforward/evaluation.py",
             "not ratio <= max_loss_ratio:", "not ratio < max_loss_ratio:", (FF_UNITS,)),
    Mutation("the quality gate lets a network through that keeps fewer faces than NST",
             "transforms/feedforward/evaluation.py", "and kept < reference_kept:", "and kept < reference_kept - 1:",
             (FF_UNITS,)),
    Mutation("--incremental reuses a feed-forward pair made by another network", "pipeline/methods/feedforward.py",
             "heldout_images=self.heldout_images, network_sha256=weights_sha256,", "heldout_images=self.heldout_images,",
             ("tests/test_feedforward_pipeline.py::test_incremental_reuses_a_pairs_image_only_from_the_same_network",)),
)


def apply(text: str, mutation: Mutation) -> tuple[str, int]:
    """`text` mutated, and the line the mutation starts on; ValueError unless `old` occurs exactly once."""
    count = text.count(mutation.old)
    if count != 1:
        raise ValueError(f"mutation {mutation.name!r}: its target occurs {count} times in {mutation.path}, not once; "
                         f"update the mutation to the code as it is now")
    return text.replace(mutation.old, mutation.new), text[: text.index(mutation.old)].count("\n") + 1


def copy_tree(target: str) -> None:
    """The files git tracks and the untracked ones it does not ignore, as they are in the working tree."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, check=True).stdout.decode().split("\0")
    for path in filter(None, listed):
        if os.path.isfile(os.path.join(ROOT, path)):
            os.makedirs(os.path.dirname(os.path.join(target, path)), exist_ok=True)
            shutil.copy2(os.path.join(ROOT, path), os.path.join(target, path))


def pytest(copy: str, *args: str) -> subprocess.CompletedProcess:
    """pytest in the copy, importing the copy's code (checked in main), never writing bytecode: a
    mutation that keeps a file's size within its second must not be served from a stale cache."""
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1", TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args], cwd=copy, env=env,
                          capture_output=True, text=True)


def failed_tests(output: str) -> list[str]:
    return sorted(set(re.findall(r"^(?:FAILED|ERROR) (\S+)", output, re.MULTILINE)))


def run(mutations, copy: str) -> list[dict]:
    rows = []
    for mutation in mutations:
        path = os.path.join(copy, mutation.path)
        with open(path) as handle:
            original = handle.read()
        mutated, line = apply(original, mutation)
        start = time.perf_counter()
        try:
            with open(path, "w") as handle:
                handle.write(mutated)
            result = pytest(copy, "-rfE", *mutation.tests)
        finally:
            with open(path, "w") as handle:
                handle.write(original)
        outcome = {0: "SURVIVED", 1: "caught"}.get(result.returncode, f"pytest exit {result.returncode}")
        rows.append(dict(mutation=mutation.name, where=f"{mutation.path}:{line}", outcome=outcome,
                         by=failed_tests(result.stdout), seconds=round(time.perf_counter() - start, 1)))
        print(f"{outcome:>9}  {rows[-1]['seconds']:5.1f} s  {mutation.name}", flush=True)
        if outcome not in ("caught", "SURVIVED"):
            print(result.stdout[-3000:] + result.stderr[-3000:], flush=True)
    return rows


def markdown(rows: list[dict], slow: set[str], header: str) -> str:
    def by(row):
        return "<br>".join(f"`{t}`" + (" (slow)" if t.split("[")[0] in slow else "") for t in row["by"]) or "-"

    lines = [header, "", "| mutation | file:line | outcome | caught by | s |", "| --- | --- | --- | --- | --- |"]
    lines += [f"| {r['mutation']} | `{r['where']}` | {r['outcome']} | {by(r)} | {r['seconds']} |" for r in rows]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default="", help="run only the mutations whose name contains this text")
    args = parser.parse_args(argv)
    mutations = [m for m in MUTATIONS if args.only in m.name]
    for mutation in mutations:  # every target first: a stale one stops the check before it runs anything
        with open(os.path.join(ROOT, mutation.path)) as handle:
            apply(handle.read(), mutation)
    selected = sorted({test for m in mutations for test in m.tests})
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="toonbeam-mutation-") as copy:
        copy_tree(copy)
        probe = subprocess.run([sys.executable, "-c", "import pipeline, transforms; print(pipeline.__file__, "
                                "transforms.__file__)"], cwd=copy, capture_output=True, text=True, check=True)
        if not all(p.startswith(copy) for p in probe.stdout.split()):
            sys.exit(f"the copy's tests would import {probe.stdout.strip()}, not the copy's code")
        baseline = pytest(copy, *selected)
        if baseline.returncode != 0:
            sys.exit(f"the selected tests fail without any mutation:\n{baseline.stdout[-3000:]}")
        collected = pytest(copy, "--collect-only", "-m", "slow", *selected)
        slow = {line.split("[")[0] for line in collected.stdout.splitlines() if "::" in line}
        rows = run(mutations, copy)
    minutes = (time.perf_counter() - start) / 60
    caught = sum(r["outcome"] == "caught" for r in rows)
    header = (f"`make mutation`, {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC: {caught} of "
              f"{len(rows)} mutations caught in {minutes:.1f} min on {cpu_name()}")
    table = markdown(rows, slow, header)
    print("\n" + table)
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, "mutation.md"), "w") as handle:
        handle.write(table)
    with open(os.path.join(RESULTS, "mutation.json"), "w") as handle:
        json.dump(dict(caught=caught, total=len(rows), minutes=round(minutes, 2), cpu=cpu_name(), rows=rows,
                       slow_tests=sorted(slow)), handle, indent=1)
    return 0 if caught == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
