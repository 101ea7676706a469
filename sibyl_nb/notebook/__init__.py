"""The notebook layer: ``%%sibyl_pipeline``, the live run view, static HTML, display hooks, completion.

Nothing here is imported by ``import sibyl_nb``; each name below loads its module (and IPython
with it) only when first used.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "SibylMagic",
    "LiveRun",
    "RunView",
    "RunInterrupted",
    "run_live",
    "result_html",
    "pipeline_html",
    "pipelines",
    "get_pipeline",
    "load_ipython_extension",
    "unload_ipython_extension",
]

_LAZY = {
    "SibylMagic": "magics",
    "pipelines": "magics",
    "get_pipeline": "magics",
    "load_ipython_extension": "magics",
    "unload_ipython_extension": "magics",
    "LiveRun": "live",
    "RunView": "live",
    "RunInterrupted": "live",
    "run_live": "live",
    "result_html": "render",
    "pipeline_html": "render",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'sibyl_nb.notebook' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
