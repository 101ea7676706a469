"""The notebook layer: ``%%sibyl_pipeline``, the live run view, static HTML, display hooks, completion.

Nothing here is imported by ``import sibyl_nb``; each name below loads its module (and IPython
with it) only when first used.
"""

from __future__ import annotations

from .._lazy import lazy_exports

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
    "SibylMagic": ".magics",
    "pipelines": ".shell",
    "get_pipeline": ".magics",
    "load_ipython_extension": ".magics",
    "unload_ipython_extension": ".magics",
    "LiveRun": ".live",
    "RunView": ".live",
    "RunInterrupted": ".live",
    "run_live": ".live",
    "result_html": ".render",
    "pipeline_html": ".render",
}


__getattr__, __dir__ = lazy_exports(__name__, _LAZY, __all__)
