"""Observers built on the engine's events: structured logging and metrics (``observability:``).

Imported lazily: nothing here loads pandas or prometheus-client until a DataFrame or an export is
asked for.
"""

from __future__ import annotations

from .._lazy import lazy_exports

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


__getattr__, __dir__ = lazy_exports(__name__, _LAZY, __all__)
