"""Experiments as DataFrames: sweep a pipeline over inputs and grid settings, score, re-run for free, diff.

Small modules, one job each: ``grid`` (keys -> compiled variants), ``metrics``, ``cell`` (one run ->
JSON record), ``runner`` (sweep/asweep), ``store`` and ``manifest`` (what is kept, and what it ran
with), ``loaded`` (load_sweep), ``diff`` (diff_runs), ``accessor`` (``df.sibyl``), ``live`` (the
notebook table), ``dask_runs`` (runs across a cluster). pandas is imported only when a frame is built.
"""

from __future__ import annotations

from .._lazy import lazy_exports

__all__ = ["sweep", "asweep", "load_sweep", "diff_runs", "metrics"]

_LAZY = {
    "sweep": ".runner",
    "asweep": ".runner",
    "load_sweep": ".runner",
    "diff_runs": ".diff",
    "metrics": ".metrics",
}

__getattr__, __dir__ = lazy_exports(__name__, _LAZY, __all__)
