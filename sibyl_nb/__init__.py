"""sibyl_nb: Jupyter-first multi-step AI workflows — YAML pipelines on one graph scheduler.

Heavy pieces (pandas, matplotlib, ipywidgets, IPython) are imported only when used, so
``import sibyl_nb`` stays fast.
"""

from __future__ import annotations

from typing import Any

from ._version import __version__

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
    "CheckpointNotFoundError",
    "ConfigError",
    "ExecutorError",
    "StoreUnavailableError",
    "SweepNotFoundError",
    "TechniqueError",
    "load_ipython_extension",
    "unload_ipython_extension",
    "__version__",
]

_LAZY = {
    "Pipeline": ".pipeline",
    "load_document": ".pipeline",
    "json_schema": ".document.json_schema",
    "RunResult": ".engine.result",
    "StepRecord": ".engine.result",
    "StepContext": ".techniques.context",
    "Graph": ".engine.builder",
    "Event": ".engine.events",
    "technique": ".techniques.registry",
    "register_technique": ".techniques.registry",
    "graph_builder": ".engine.dynamic",
    "register_provider": ".providers.registry",
    "get_provider": ".providers.registry",
    "compare_context_strategies": ".context",
    "plot_context_comparison": ".notebook.context_plot",
    "draw_graph": ".draw",
    "OpenAICompatibleProvider": ".providers.openai_compat",
    "FallbackProvider": ".providers.fallback",
    "ReplayProvider": ".providers.replay",
    "enable_replay": ".providers.registry",
    "DaskExecutor": ".engine.dask_executor",
    "sweep": ".experiments.runner",
    "asweep": ".experiments.runner",
    "load_sweep": ".experiments.runner",
    "diff_runs": ".experiments.diff",
    "metrics": ".experiments",
}

from ._lazy import lazy_exports  # noqa: E402  (tiny modules, no heavy imports)
from .errors import (  # noqa: E402
    CheckpointNotFoundError,
    ConfigError,
    ExecutorError,
    ExpressionError,
    NodeExecutionError,
    ProviderError,
    SibylError,
    SpecError,
    StoreError,
    StoreUnavailableError,
    SweepNotFoundError,
    TechniqueError,
    TemplateError,
    TrustError,
    UnknownTechniqueError,
    YAMLEncodingError,
    YAMLLimitError,
    YAMLSyntaxError,
)

__getattr__, __dir__ = lazy_exports(__name__, _LAZY, __all__)


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
