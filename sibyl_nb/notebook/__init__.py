"""The notebook layer: ``%%sibyl_pipeline``, the live run widget, static HTML fallbacks.

Nothing here is imported by ``import sibyl_nb``; each name below loads its module (and IPython,
ipywidgets or matplotlib with it) only when first used.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "SibylMagic",
    "RunWidget",
    "LiveRun",
    "RunView",
    "GraphPainter",
    "run_live",
    "result_html",
    "pipeline_mimebundle",
    "load_ipython_extension",
    "unload_ipython_extension",
]

_LAZY = {
    "SibylMagic": "magics",
    "load_ipython_extension": "magics",
    "unload_ipython_extension": "magics",
    "RunWidget": "widget",
    "LiveRun": "widget",
    "run_live": "widget",
    "RunView": "live",
    "GraphPainter": "graphview",
    "result_html": "render",
    "pipeline_mimebundle": "render",
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
