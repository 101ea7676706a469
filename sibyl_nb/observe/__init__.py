"""Observers built on the engine's events: structured logging and metrics (``observability:``).

Imported lazily: nothing here loads pandas or prometheus-client until a DataFrame or an export is
asked for.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "LoggingObserver",
    "JsonFormatter",
    "MetricsObserver",
    "MetricsCollector",
    "workflow_metrics",
    "metrics_of",
    "start_prometheus_server",
]

_LAZY = {
    "LoggingObserver": ".log",
    "JsonFormatter": ".log",
    "MetricsObserver": ".metrics",
    "MetricsCollector": ".metrics",
    "workflow_metrics": ".metrics",
    "metrics_of": ".metrics",
    "start_prometheus_server": ".metrics",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
