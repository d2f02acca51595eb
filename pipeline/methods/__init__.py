"""The stylisation methods. Each is one module here with one `Method` subclass; they share the unit
lifecycle (`pipeline.units`) and the I/O (`pipeline.io`), never each other.

A method's transform takes {"contents": entries, "styles": entries} (styles only when the method
needs them) and returns {"rows": report rows, "dead_letters": records of failed units}: exactly one
row per unit, whatever happens to it. Method modules are imported only when a run asks for them, so a
classical-only run (driver and workers) never imports Keras.
"""
from __future__ import annotations

import importlib

import apache_beam as beam

#: Every method, in the order runs and reports list them; `both` is the historical "classical,nst".
METHODS = ("classical", "nst", "feedforward")
ALIASES = {"both": ("classical", "nst")}
#: The module and class of each method (imported on demand).
_CLASSES = {
    "classical": ("pipeline.methods.classical", "Classical"),
    "nst": ("pipeline.methods.nst", "NST"),
    "feedforward": ("pipeline.methods.feedforward", "FeedForward"),
}
#: Methods whose units are content x style pairs (they read --style).
STYLED = frozenset({"nst", "feedforward"})


def parse_methods(text: str) -> tuple[str, ...]:
    """`--method`: one name, a comma list, or `both`; in METHODS order, without repeats.

    >>> parse_methods("nst,classical"), parse_methods("both"), parse_methods("feedforward")
    (('classical', 'nst'), ('classical', 'nst'), ('feedforward',))
    """
    names = set()
    for part in str(text).split(","):
        part = part.strip()
        if part in ALIASES:
            names.update(ALIASES[part])
        elif part in METHODS:
            names.add(part)
        elif part:
            raise ValueError(f"--method {text}: unknown method {part!r}; choose from {', '.join(METHODS)} or both")
    if not names:
        raise ValueError("--method is empty")
    return tuple(m for m in METHODS if m in names)


def method_class(name: str) -> type[Method]:
    module, cls = _CLASSES[name]
    return getattr(importlib.import_module(module), cls)


class Method(beam.PTransform):
    """Base of every method's transform (see the module docstring for its inputs and outputs).

    Subclasses are built with `from_options` in the driver, after `preflight` has checked, before any
    work, everything that would otherwise fail every unit (settings, weights)."""

    #: Whether units are content x style pairs.
    needs_style = False
    #: Whether the method computes with Keras (and so loads TensorFlow, JAX or PyTorch).
    neural = False

    def __init__(self, units, settings, previous=None):
        """`units`: the method's UnitContext; `settings`: what its steps compute with; `previous`: the
        --incremental side input of earlier rows by content_id (None without --incremental)."""
        super().__init__()
        self.units = units
        self.settings = settings
        self.previous = previous

    def previous_side_input(self) -> dict:
        """The keyword side input of the compute steps: {"previous": ...} with --incremental, else {}."""
        return {} if self.previous is None else {"previous": self.previous}

    @classmethod
    def preflight(cls, toon, dry_run: bool) -> None:
        """Raise ValueError (a one-line usage error) when the run cannot work. `dry_run`: only what
        needs no network and no files."""

    @classmethod
    def from_options(cls, run, toon, previous=None) -> Method:
        """The transform for this run. `previous`: the --incremental side input (or None)."""
        raise NotImplementedError

    @classmethod
    def count_units(cls, toon, contents: int, styles: int) -> int:
        """How many report rows the method will add (for the progress total)."""
        return contents * styles if cls.needs_style else contents
