"""Experiments as DataFrames: sweep a pipeline over inputs and grid settings, score, re-run for free, diff.

Small modules, one job each: ``grid`` (keys -> compiled variants), ``metrics``, ``cell`` (one run ->
JSON record), ``runner`` (sweep/asweep), ``store`` and ``manifest`` (what is kept, and what it ran
with), ``loaded`` (load_sweep), ``diff`` (diff_runs), ``accessor`` (``df.sibyl``), ``live`` (the
notebook table), ``dask_runs`` (runs across a cluster). pandas is imported only when a frame is built.
"""

from __future__ import annotations

from typing import Any

__all__ = ["sweep", "asweep", "load_sweep", "diff_runs", "metrics"]

_LAZY = {
    "sweep": ("sibyl_nb.experiments.runner", "sweep"),
    "asweep": ("sibyl_nb.experiments.runner", "asweep"),
    "load_sweep": ("sibyl_nb.experiments.runner", "load_sweep"),
    "diff_runs": ("sibyl_nb.experiments.diff", "diff_runs"),
}


def __getattr__(name: str) -> Any:
    import importlib

    if name == "metrics":
        return importlib.import_module("sibyl_nb.experiments.metrics")
    target = _LAZY.get(name)
    if target is None:
        raise AttributeError(f"module 'sibyl_nb.experiments' has no attribute {name!r}")
    return getattr(importlib.import_module(target[0]), target[1])
