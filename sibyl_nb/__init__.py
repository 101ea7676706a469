"""sibyl_nb: Jupyter-first multi-step AI workflows — YAML pipelines on one graph scheduler.

Heavy pieces (pandas, matplotlib, ipywidgets, IPython) are imported only when used, so
``import sibyl_nb`` stays fast.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = [
    "Pipeline",
    "RunResult",
    "StepRecord",
    "StepContext",
    "Graph",
    "Event",
    "technique",
    "register_technique",
    "graph_builder",
    "register_provider",
    "get_provider",
    "load_document",
    "json_schema",
    "compare_context_strategies",
    "plot_context_comparison",
    "draw_graph",
    "OpenAICompatibleProvider",
    "FallbackProvider",
    "ReplayProvider",
    "enable_replay",
    "DaskExecutor",
    "sweep",
    "asweep",
    "load_sweep",
    "diff_runs",
    "metrics",
    "SibylError",
    "SpecError",
    "ExpressionError",
    "YAMLSyntaxError",
    "YAMLEncodingError",
    "YAMLLimitError",
    "TemplateError",
    "UnknownTechniqueError",
    "NodeExecutionError",
    "ProviderError",
    "StoreError",
    "TrustError",
    "load_ipython_extension",
    "unload_ipython_extension",
    "__version__",
]

_LAZY = {
    "Pipeline": ("sibyl_nb.pipeline", "Pipeline"),
    "load_document": ("sibyl_nb.pipeline", "load_document"),
    "json_schema": ("sibyl_nb.spec.json_schema", "json_schema"),
    "RunResult": ("sibyl_nb.engine.result", "RunResult"),
    "StepRecord": ("sibyl_nb.engine.result", "StepRecord"),
    "StepContext": ("sibyl_nb.techniques.context", "StepContext"),
    "Graph": ("sibyl_nb.engine.builder", "Graph"),
    "Event": ("sibyl_nb.engine.events", "Event"),
    "technique": ("sibyl_nb.techniques.registry", "technique"),
    "register_technique": ("sibyl_nb.techniques.registry", "register_technique"),
    "graph_builder": ("sibyl_nb.engine.dynamic", "graph_builder"),
    "register_provider": ("sibyl_nb.providers.registry", "register_provider"),
    "get_provider": ("sibyl_nb.providers.registry", "get_provider"),
    "compare_context_strategies": ("sibyl_nb.context", "compare_context_strategies"),
    "plot_context_comparison": ("sibyl_nb.notebook.context_plot", "plot_context_comparison"),
    "draw_graph": ("sibyl_nb.draw", "draw_graph"),
    "OpenAICompatibleProvider": ("sibyl_nb.providers.openai_compat", "OpenAICompatibleProvider"),
    "FallbackProvider": ("sibyl_nb.providers.fallback", "FallbackProvider"),
    "ReplayProvider": ("sibyl_nb.providers.replay", "ReplayProvider"),
    "enable_replay": ("sibyl_nb.providers.replay", "enable_replay"),
    "DaskExecutor": ("sibyl_nb.engine.dask_executor", "DaskExecutor"),
    "sweep": ("sibyl_nb.experiments.runner", "sweep"),
    "asweep": ("sibyl_nb.experiments.runner", "asweep"),
    "load_sweep": ("sibyl_nb.experiments.runner", "load_sweep"),
    "diff_runs": ("sibyl_nb.experiments.diff", "diff_runs"),
    "metrics": ("sibyl_nb.experiments", "metrics"),
}

from .errors import (  # noqa: E402  (tiny module, no heavy imports)
    ExpressionError,
    NodeExecutionError,
    ProviderError,
    SibylError,
    SpecError,
    StoreError,
    TemplateError,
    TrustError,
    UnknownTechniqueError,
    YAMLEncodingError,
    YAMLLimitError,
    YAMLSyntaxError,
)


def __getattr__(name: str) -> Any:
    target = _LAZY.get(name)
    if target is None:
        raise AttributeError(f"module 'sibyl_nb' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(target[0]), target[1])
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext sibyl_nb``: registers ``%%sibyl_pipeline``."""
    from .notebook.magics import load_ipython_extension as _load

    _load(ipython)


def unload_ipython_extension(ipython: Any) -> None:
    from .notebook.magics import unload_ipython_extension as _unload

    _unload(ipython)


def _hook_running_ipython() -> None:
    """Inside a running IPython, let the notebook layer register the HTML views of results and
    pipelines (by type name: nothing heavy is imported now). The engine itself knows no display."""
    import sys

    ipython_module = sys.modules.get("IPython")
    shell = ipython_module.get_ipython() if ipython_module is not None else None
    if shell is not None:
        from .notebook.display import register_formatters

        register_formatters(shell)


_hook_running_ipython()
