"""``observability.logging``: run and step events through the standard ``logging`` module.

Logger ``sibyl_nb.workflow``; every record carries structured fields in ``extra`` (``run_id``,
``workflow_id``, ``pipeline``, ``node``, ``technique``, ``iteration``, ``attempt``, ``duration``,
``event``), so any handler (JSON shippers, OpenTelemetry's logging bridge, pytest's caplog) sees them
without parsing the message.

Settings: ``level`` (INFO), ``workflow_tracing`` (run start/end, and the step trace at DEBUG),
``log_step_transitions`` (each step started/finished/skipped/cached), ``log_state_changes``
(``ctx.state`` keys added/changed/removed after a step), ``format`` (``text`` | ``json``, used only when
no handler is configured anywhere, in which case one is added so a notebook shows the lines).
Retries and failures are logged whatever the switches say.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Mapping
from typing import Any

from ..engine.events import Event, Observer

__all__ = ["LoggingObserver", "JsonFormatter", "LOGGER_NAME", "FIELDS"]

LOGGER_NAME = "sibyl_nb.workflow"
FIELDS = (
    "event",
    "run_id",
    "workflow_id",
    "pipeline",
    "node",
    "technique",
    "iteration",
    "attempt",
    "duration",
    "status",
)

_HANDLER_MARK = "_sibyl_nb_handler"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and the structured fields."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": record.created,
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in FIELDS:
            value = getattr(record, key, None)
            if value is not None:
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False, default=str)


def _ensure_handler(logger: logging.Logger, fmt: str) -> None:
    """Add a stderr handler only when nothing anywhere would print our records."""
    if logger.handlers or logging.getLogger().handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter()
        if fmt == "json"
        else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    setattr(handler, _HANDLER_MARK, True)
    logger.addHandler(handler)


def _level(value: Any) -> int:
    if isinstance(value, int):
        return value
    level = logging.getLevelName(str(value or "INFO").upper())
    return level if isinstance(level, int) else logging.INFO


def _ms(seconds: Any) -> str:
    return f"{float(seconds) * 1000:.1f} ms" if isinstance(seconds, (int, float)) else "?"


class LoggingObserver(Observer):
    """Turns one run's events into log records (create one per run; ``run`` gives state and ids)."""

    def __init__(
        self,
        run: Any = None,
        *,
        level: Any = "INFO",
        workflow_tracing: bool = True,
        log_step_transitions: bool = True,
        log_state_changes: bool = False,
        format: str = "text",
        logger: logging.Logger | None = None,
    ) -> None:
        self.run = run
        self.level = _level(level)
        self.workflow_tracing = workflow_tracing
        self.steps = log_step_transitions
        self.state_changes = log_state_changes and run is not None
        self.logger = logger or logging.getLogger(LOGGER_NAME)
        if self.logger.getEffectiveLevel() > self.level:
            self.logger.setLevel(self.level)
        _ensure_handler(self.logger, format)
        self._state: dict[str, str] = {}
        self._pipeline = run.pipeline.name if run is not None else None
        self._workflow = run.workflow_id if run is not None else None

    @classmethod
    def from_settings(cls, run: Any, settings: Mapping[str, Any]) -> LoggingObserver:
        return cls(
            run,
            level=settings.get("level", "INFO"),
            workflow_tracing=settings.get("workflow_tracing", True),
            log_step_transitions=settings.get("log_step_transitions", True),
            log_state_changes=settings.get("log_state_changes", False),
            format=settings.get("format", "text"),
        )

    def _log(self, level: int, ev: Event, message: str, **fields: Any) -> None:
        if level < self.level or not self.logger.isEnabledFor(level):
            return
        extra = {
            "event": ev.kind,
            "run_id": ev.run_id,
            "workflow_id": self._workflow,
            "pipeline": self._pipeline,
            "node": ev.node_id,
            "iteration": ev.iteration,
            "technique": None,
            "attempt": None,
            "duration": None,
            "status": None,
        }
        extra.update(fields)
        self.logger.log(level, message, extra=extra)

    # ---------------------------------------------------------------- typed hooks
    def _tag(self, ev: Event) -> str:
        return f"{self._pipeline or ev.data.get('pipeline', '')}/{ev.run_id}"

    @staticmethod
    def _it(ev: Event) -> str:
        return f" #{ev.iteration}" if ev.iteration > 1 else ""

    def on_run_started(self, ev: Event) -> None:
        d = ev.data
        self._pipeline = self._pipeline or d.get("pipeline")
        self._workflow = self._workflow or d.get("workflow_id")
        if self.state_changes:
            self._state = self._digest()
        if self.workflow_tracing:
            how = "resumed" if d.get("resumed") else "started"
            self._log(
                logging.INFO, ev, f"{self._tag(ev)} {how} (workflow {self._workflow})", status="running"
            )

    def on_run_finished(self, ev: Event) -> None:
        if not self.workflow_tracing:
            return
        d = ev.data
        self._log(
            logging.INFO,
            ev,
            f"{self._tag(ev)} finished in {_ms(d.get('duration'))} (stopped_by={d.get('stopped_by')})",
            duration=d.get("duration"),
            status=d.get("stopped_by"),
        )
        result = d.get("result")
        if result is not None and self.level <= logging.DEBUG:
            self._log(logging.DEBUG, ev, result.format_trace(), status="trace")

    def on_run_failed(self, ev: Event) -> None:
        d = ev.data
        self._log(
            logging.ERROR,
            ev,
            f"{self._tag(ev)} failed: {d.get('error')}",
            status="failed",
            node=d.get("node_id"),
        )

    def _node(self, level: int, ev: Event, what: str, status: str, **fields: Any) -> None:
        """One line about a node: ``<pipeline>/<run id> node <id>[ #<iteration>] <what>``."""
        self._log(
            level, ev, f"{self._tag(ev)} node {ev.node_id}{self._it(ev)} {what}", status=status, **fields
        )

    def _step(self, ev: Event, what: str, status: str, **fields: Any) -> None:
        """A step transition: INFO, and only with ``log_step_transitions``."""
        if self.steps:
            self._node(logging.INFO, ev, what, status, **fields)

    def on_node_retrying(self, ev: Event) -> None:
        d = ev.data
        self._node(
            logging.WARNING,
            ev,
            f"attempt {d.get('attempt')} failed, retrying in {d.get('delay', 0):.2f} s: {d.get('error')}",
            "retrying",
            technique=d.get("technique"),
            attempt=d.get("attempt"),
        )

    def on_node_failed(self, ev: Event) -> None:
        d = ev.data
        tail = " (a fallback takes over)" if d.get("recovered") else ""
        self._node(
            logging.WARNING if d.get("recovered") else logging.ERROR,
            ev,
            f"failed after {d.get('attempts')} attempt(s): {d.get('error')}{tail}",
            "failed",
            technique=d.get("technique"),
            attempt=d.get("attempts"),
        )

    def on_node_started(self, ev: Event) -> None:
        d = ev.data
        technique = d.get("technique")
        self._step(ev, f"started ({technique})", "running", technique=technique, attempt=d.get("attempt"))

    def on_node_finished(self, ev: Event) -> None:
        d = ev.data
        self._step(
            ev,
            f"finished in {_ms(d.get('duration'))}",
            "done",
            technique=d.get("technique"),
            attempt=d.get("attempts"),
            duration=d.get("duration"),
        )
        self._after_step(ev)

    def on_node_skipped(self, ev: Event) -> None:
        self._step(ev, f"skipped: {ev.data.get('reason')}", "skipped")
        self._after_step(ev)

    def on_node_cached(self, ev: Event) -> None:
        self._step(ev, "served from cache", "cached", technique=ev.data.get("technique"))
        self._after_step(ev)

    def _after_step(self, ev: Event) -> None:
        if self.state_changes:
            self._state_diff(ev, self._tag(ev))

    # ---------------------------------------------------------------- state changes
    def _digest(self) -> dict[str, str]:
        state = self.run.state
        return {k: json.dumps(v, sort_keys=True, default=str) for k, v in state.items()}

    def _state_diff(self, ev: Event, run_tag: str) -> None:
        now = self._digest()
        before = self._state
        if now == before:
            return
        added = sorted(k for k in now if k not in before)
        changed = sorted(k for k in now if k in before and now[k] != before[k])
        removed = sorted(k for k in before if k not in now)
        self._state = now
        parts = [f"+{k}" for k in added] + [f"~{k}" for k in changed] + [f"-{k}" for k in removed]
        self._log(
            logging.INFO,
            ev,
            f"{run_tag} state changed after {ev.node_id}: {' '.join(parts)}",
            event="state_changed",
            status="state_changed",
        )
