"""``observability.metrics``: workflow and step durations, error rate and retry counts, per run and
across runs, as pandas DataFrames, with an optional Prometheus text export.

The collector keeps recent rows (bounded deques, for DataFrames) *and* running totals (never
evicted, for Prometheus counters), so a long-lived kernel neither grows without bound nor reports
counters that go down. pandas and prometheus-client are imported only when asked for.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Mapping
from typing import Any

from ..engine.events import Event, Observer

__all__ = ["MetricsCollector", "MetricsObserver", "workflow_metrics", "metrics_of", "start_prometheus_server"]


class MetricsCollector:
    """Process-wide metrics across runs (``workflow_metrics()`` returns the shared one)."""

    def __init__(self, max_runs: int = 10_000, max_steps: int = 200_000) -> None:
        self._lock = threading.Lock()
        self.runs: deque[dict[str, Any]] = deque(maxlen=max_runs)
        self.steps: deque[dict[str, Any]] = deque(maxlen=max_steps)
        # running totals for counters: key -> value
        self._run_totals: dict[tuple[str, str], int] = {}  # (pipeline, status) -> runs
        self._run_time: dict[str, list[float]] = {}  # pipeline -> [sum, count]
        self._step_time: dict[tuple[str, str], list[float]] = {}  # (pipeline, node) -> [sum, count]
        self._step_status: dict[tuple[str, str, str], int] = {}  # (pipeline, node, status) -> n
        self._retries: dict[tuple[str, str], int] = {}  # (pipeline, node) -> n

    # ---------------------------------------------------------------- recording
    def add_run(self, row: Mapping[str, Any], steps: list[dict[str, Any]]) -> None:
        with self._lock:
            self.runs.append(dict(row))
            self.steps.extend(steps)
            p = str(row.get("pipeline"))
            key = (p, str(row.get("status")))
            self._run_totals[key] = self._run_totals.get(key, 0) + 1
            if row.get("duration") is not None:
                acc = self._run_time.setdefault(p, [0.0, 0])
                acc[0] += float(row["duration"])
                acc[1] += 1
            for s in steps:
                node = str(s.get("node"))
                sk = (p, node, str(s.get("status")))
                self._step_status[sk] = self._step_status.get(sk, 0) + 1
                if s.get("duration") is not None and s.get("status") == "done":
                    acc = self._step_time.setdefault((p, node), [0.0, 0])
                    acc[0] += float(s["duration"])
                    acc[1] += 1
                if s.get("retries"):
                    self._retries[(p, node)] = self._retries.get((p, node), 0) + int(s["retries"])

    def reset(self) -> None:
        with self._lock:
            self.runs.clear()
            self.steps.clear()
            self._run_totals.clear()
            self._run_time.clear()
            self._step_time.clear()
            self._step_status.clear()
            self._retries.clear()

    # ---------------------------------------------------------------- DataFrames
    def runs_frame(self, pipeline: str | None = None) -> Any:
        """One row per run: run_id, workflow_id, pipeline, status, started_at, duration, steps,
        errors, retries, cached, skipped."""
        import pandas as pd

        with self._lock:
            rows = [r for r in self.runs if pipeline is None or r.get("pipeline") == pipeline]
        return pd.DataFrame(
            rows,
            columns=[
                "run_id",
                "workflow_id",
                "pipeline",
                "status",
                "started_at",
                "duration",
                "steps",
                "errors",
                "retries",
                "cached",
                "skipped",
            ],
        )

    def steps_frame(self, pipeline: str | None = None, run_id: str | None = None) -> Any:
        """One row per step execution: run_id, pipeline, node, technique, iteration, status, duration,
        attempts, retries."""
        import pandas as pd

        with self._lock:
            rows = [
                s
                for s in self.steps
                if (pipeline is None or s.get("pipeline") == pipeline)
                and (run_id is None or s.get("run_id") == run_id)
            ]
        return pd.DataFrame(
            rows,
            columns=[
                "run_id",
                "pipeline",
                "node",
                "technique",
                "iteration",
                "status",
                "duration",
                "attempts",
                "retries",
            ],
        )

    def summary(self) -> Any:
        """Per pipeline: runs, failed, error_rate, duration mean/p50/p95 (s), retries, step errors."""
        import pandas as pd

        runs = self.runs_frame()
        cols = [
            "pipeline",
            "runs",
            "failed",
            "error_rate",
            "duration_mean",
            "duration_p50",
            "duration_p95",
            "retries",
            "step_errors",
        ]
        if runs.empty:
            return pd.DataFrame(columns=cols)
        g = runs.groupby("pipeline")
        out = pd.DataFrame(
            {
                "runs": g.size(),
                "failed": g["status"].apply(lambda s: int((s == "failed").sum())),
                "duration_mean": g["duration"].mean(),
                "duration_p50": g["duration"].quantile(0.5),
                "duration_p95": g["duration"].quantile(0.95),
                "retries": g["retries"].sum(),
                "step_errors": g["errors"].sum(),
            }
        )
        out["error_rate"] = out["failed"] / out["runs"]
        return out.reset_index()[cols]

    def step_summary(self, pipeline: str | None = None) -> Any:
        """Per (pipeline, node): executions, mean/p50/p95/max duration (s), errors, retries, cached."""
        steps = self.steps_frame(pipeline)
        if steps.empty:
            import pandas as pd

            return pd.DataFrame(
                columns=[
                    "pipeline",
                    "node",
                    "runs",
                    "duration_mean",
                    "duration_p50",
                    "duration_p95",
                    "duration_max",
                    "errors",
                    "retries",
                    "cached",
                ]
            )
        g = steps.groupby(["pipeline", "node"])
        done = steps[steps["status"] == "done"].groupby(["pipeline", "node"])["duration"]
        out = g.size().to_frame("runs")
        out["duration_mean"] = done.mean()
        out["duration_p50"] = done.quantile(0.5)
        out["duration_p95"] = done.quantile(0.95)
        out["duration_max"] = done.max()
        out["errors"] = g["status"].apply(lambda s: int((s == "failed").sum()))
        out["retries"] = g["retries"].sum()
        out["cached"] = g["status"].apply(lambda s: int((s == "cached").sum()))
        return out.reset_index()

    def run(self, run_id: str) -> dict[str, Any] | None:
        """The metrics row of one run (the latest if it was resumed)."""
        with self._lock:
            for r in reversed(self.runs):
                if r.get("run_id") == run_id:
                    return dict(r)
        return None

    # ---------------------------------------------------------------- Prometheus
    def collect(self) -> Any:
        """prometheus-client collector protocol (``registry.register(collector)``)."""
        from prometheus_client.core import CounterMetricFamily, SummaryMetricFamily

        with self._lock:
            runs = CounterMetricFamily(
                "sibyl_workflow_runs", "Workflow runs by outcome", labels=["pipeline", "status"]
            )
            for (p, status), n in sorted(self._run_totals.items()):
                runs.add_metric([p, status], n)
            wd = SummaryMetricFamily(
                "sibyl_workflow_duration_seconds", "Workflow run duration", labels=["pipeline"]
            )
            for p, (total, count) in sorted(self._run_time.items()):
                wd.add_metric([p], count_value=count, sum_value=total)
            sd = SummaryMetricFamily(
                "sibyl_step_duration_seconds", "Step duration (executed steps)", labels=["pipeline", "node"]
            )
            for (p, node), (total, count) in sorted(self._step_time.items()):
                sd.add_metric([p, node], count_value=count, sum_value=total)
            st = CounterMetricFamily(
                "sibyl_steps", "Step executions by status", labels=["pipeline", "node", "status"]
            )
            for (p, node, status), n in sorted(self._step_status.items()):
                st.add_metric([p, node, status], n)
            rt = CounterMetricFamily("sibyl_step_retries", "Step retries", labels=["pipeline", "node"])
            for (p, node), n in sorted(self._retries.items()):
                rt.add_metric([p, node], n)
        return [runs, wd, sd, st, rt]

    def to_prometheus(self) -> str:
        """The Prometheus text exposition of the totals."""
        from prometheus_client import CollectorRegistry, generate_latest

        registry = CollectorRegistry(auto_describe=False)
        registry.register(self)
        return generate_latest(registry).decode("utf-8")


_METRICS = MetricsCollector()
_SERVERS: dict[int, Any] = {}


def workflow_metrics() -> MetricsCollector:
    """The process-wide collector every ``observability.metrics`` run reports to."""
    return _METRICS


def start_prometheus_server(
    port: int, collector: MetricsCollector | None = None, *, addr: str = "127.0.0.1"
) -> None:
    """Serve ``/metrics`` on ``port`` (once per port per process), on loopback unless ``addr`` says
    otherwise: a document asking for metrics must not open a port to the network."""
    if port in _SERVERS:
        return
    from prometheus_client import CollectorRegistry, start_http_server

    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector or _METRICS)
    _SERVERS[port] = start_http_server(port, addr=addr, registry=registry)


class MetricsObserver(Observer):
    """Collects one run's metrics from its events and hands them to a collector when it ends."""

    def __init__(
        self,
        run: Any = None,
        *,
        workflow_duration: bool = True,
        step_duration: bool = True,
        error_rate: bool = True,
        retry_count: bool = True,
        collector: MetricsCollector | None = None,
    ) -> None:
        self.run = run
        self.flags = {
            "workflow_duration": workflow_duration,
            "step_duration": step_duration,
            "error_rate": error_rate,
            "retry_count": retry_count,
        }
        self.collector = collector or _METRICS
        self._started: dict[tuple[str, int], float] = {}
        self._retries: dict[tuple[str, int], int] = {}
        self.steps: list[dict[str, Any]] = []
        self.row: dict[str, Any] = {}

    @classmethod
    def from_settings(cls, run: Any, settings: Mapping[str, Any]) -> MetricsObserver:
        obs = cls(
            run,
            workflow_duration=settings.get("workflow_duration", True),
            step_duration=settings.get("step_duration", True),
            error_rate=settings.get("error_rate", True),
            retry_count=settings.get("retry_count", True),
        )
        if settings.get("export") == "prometheus" and settings.get("prometheus_port"):
            start_prometheus_server(int(settings["prometheus_port"]))
        return obs

    def _step(self, ev: Event, status: str, duration: float | None, attempts: int | None = None) -> None:
        key = (ev.node_id or "", ev.iteration)
        self.steps.append(
            {
                "run_id": ev.run_id,
                "pipeline": self.row.get("pipeline"),
                "node": ev.node_id,
                "technique": ev.data.get("technique"),
                "iteration": ev.iteration,
                "status": status,
                "duration": duration if self.flags["step_duration"] else None,
                "attempts": attempts,
                "retries": self._retries.pop(key, 0) if self.flags["retry_count"] else 0,
            }
        )

    # ---------------------------------------------------------------- typed hooks
    def on_node_started(self, ev: Event) -> None:
        self._started.setdefault((ev.node_id or "", ev.iteration), ev.time)

    def on_node_finished(self, ev: Event) -> None:
        self._started.pop((ev.node_id or "", ev.iteration), None)
        self._step(ev, "done", ev.data.get("duration"), ev.data.get("attempts"))

    def on_node_cached(self, ev: Event) -> None:
        self._step(ev, "cached", 0.0, 0)

    def on_node_skipped(self, ev: Event) -> None:
        self._step(ev, "skipped", None, 0)

    def on_node_retrying(self, ev: Event) -> None:
        key = (ev.node_id or "", ev.iteration)
        self._retries[key] = self._retries.get(key, 0) + 1

    def on_node_failed(self, ev: Event) -> None:
        t0 = self._started.pop((ev.node_id or "", ev.iteration), None)
        self._step(ev, "failed", ev.time - t0 if t0 is not None else None, ev.data.get("attempts"))

    def on_run_started(self, ev: Event) -> None:
        d = ev.data
        self.row = {
            "run_id": ev.run_id,
            "workflow_id": d.get("workflow_id"),
            "pipeline": d.get("pipeline"),
            "started_at": ev.time,
            "status": "running",
        }

    def on_run_finished(self, ev: Event) -> None:
        self._finish(ev)

    def on_run_failed(self, ev: Event) -> None:
        self._finish(ev)

    def _finish(self, ev: Event) -> None:
        failed = ev.kind == "run_failed"
        row = self.row or {"run_id": ev.run_id, "pipeline": None, "workflow_id": None, "started_at": ev.time}
        duration = ev.data.get("duration")
        if duration is None and row.get("started_at") is not None:
            duration = ev.time - row["started_at"]
        row.update(
            status="failed" if failed else str(ev.data.get("stopped_by") or "completed"),
            duration=duration if self.flags["workflow_duration"] else None,
            steps=sum(1 for s in self.steps if s["status"] in ("done", "cached")),
            errors=sum(1 for s in self.steps if s["status"] == "failed")
            if self.flags["error_rate"]
            else None,
            retries=sum(s["retries"] for s in self.steps) if self.flags["retry_count"] else None,
            cached=sum(1 for s in self.steps if s["status"] == "cached"),
            skipped=sum(1 for s in self.steps if s["status"] == "skipped"),
        )
        for s in self.steps:
            s["pipeline"] = row.get("pipeline")
        self.row = row
        self.collector.add_run(row, self.steps)


def metrics_of(result: Any) -> dict[str, Any]:
    """Metrics of one finished :class:`~sibyl_nb.engine.result.RunResult`, from its records alone."""
    recs = result.records
    ran = [r for r in recs if r.status == "ran"]
    return {
        "run_id": result.run_id,
        "pipeline": result.pipeline,
        "status": result.stopped_by,
        "duration": result.duration,
        "steps": sum(1 for r in recs if r.status in ("ran", "cached")),
        "errors": sum(1 for r in recs if r.status == "failed"),
        "retries": sum(max(r.attempts - 1, 0) for r in recs if r.status in ("ran", "failed")),
        "cached": sum(1 for r in recs if r.status == "cached"),
        "skipped": sum(1 for r in recs if r.status == "skipped"),
        "step_durations": {
            r.node_id if r.iteration == 1 else f"{r.node_id}#{r.iteration}": r.duration for r in ran
        },
        "at": time.time(),
    }
