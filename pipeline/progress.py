"""Progress of a local run: units done / total, errors so far, elapsed and ETA.

Steps report each finished unit to `record()`. On the DirectRunner in its default in-memory mode
the steps run in the driver's process, so a `ProgressReporter` thread there can show the counts as
they grow: a tqdm bar on a terminal, a plain log line every few seconds otherwise. Remote runners
(Dataflow, Flink) show the same counts as the Beam counters `units_<status>` in their own UIs.
"""
from __future__ import annotations

import collections
import sys
import threading
import time

from tqdm import tqdm

_LOCK = threading.Lock()
_COUNTS: collections.Counter = collections.Counter()
_TASKS: dict[str, tuple[int, int]] = {}  # long units under way: name -> (steps done, steps in all)


def record(status: str) -> None:
    with _LOCK:
        _COUNTS[status] += 1


def record_steps(task: str, done: int, total: int) -> None:
    """A long unit's progress inside it (a feed-forward training's steps); gone once done == total."""
    with _LOCK:
        if done >= total:
            _TASKS.pop(task, None)
        else:
            _TASKS[task] = (done, total)


def tasks() -> str:
    """The long units under way, e.g. "training pop_art 150/600 steps" ("" when none)."""
    with _LOCK:
        return ", ".join(f"{task} {done}/{total} steps" for task, (done, total) in sorted(_TASKS.items()))


def snapshot() -> collections.Counter:
    with _LOCK:
        return collections.Counter(_COUNTS)


def describe(done: int, total: int | None, errors: int, elapsed: float) -> str:
    """One progress line, e.g. "12/20 units, 1 error, 35 s elapsed, ETA 23 s"."""
    of_total = f"/{total}" if total else ""
    line = f"{done}{of_total} units, {errors} error{'s' if errors != 1 else ''}, {elapsed:.0f} s elapsed"
    if total and done:
        line += f", ETA {elapsed / done * max(total - done, 0):.0f} s"
    return line


class ProgressReporter(threading.Thread):
    """Shows the counts until `stop()`: a bar when `stream` is a terminal, else a line every `every` s."""

    def __init__(self, total: int | None, stream=sys.stderr, every: float = 10.0, poll: float = 0.5):
        super().__init__(daemon=True)
        self._total = total
        self._stream = stream
        self._every = every
        self._poll = poll
        self._stopped = threading.Event()
        self._start_counts = snapshot()

    def _progress(self) -> tuple[int, int]:
        counts = snapshot() - self._start_counts
        return sum(counts.values()), counts["error"]

    def run(self) -> None:
        start = time.monotonic()
        if self._stream.isatty():
            self._run_bar()
            return
        last = start
        while not self._stopped.wait(self._poll):
            if time.monotonic() - last >= self._every:
                last = time.monotonic()
                self._print_line(start)
        self._print_line(start)

    def _print_line(self, start: float) -> None:
        done, errors = self._progress()
        under_way = tasks()
        line = describe(done, self._total, errors, time.monotonic() - start) + (f"; {under_way}" if under_way else "")
        print(f"progress: {line}", file=self._stream, flush=True)

    def _run_bar(self) -> None:
        with tqdm(total=self._total, unit="unit", file=self._stream, dynamic_ncols=True) as bar:
            while True:
                stopping = self._stopped.wait(self._poll)
                done, errors = self._progress()
                bar.update(done - bar.n)
                under_way = tasks()
                bar.set_postfix(errors=errors, refresh=False, **({"now": under_way} if under_way else {}))
                if stopping:
                    return

    def stop(self) -> None:
        self._stopped.set()
        self.join()
