"""``observability.logging`` (stdlib logging with structured fields) and ``observability.metrics``
(per run and across runs as DataFrames, Prometheus text)."""

from __future__ import annotations

import json
import logging

import pytest

import sibyl_nb as sb
from sibyl_nb.observe.log import LOGGER_NAME, JsonFormatter, LoggingObserver
from sibyl_nb.observe.metrics import MetricsCollector, MetricsObserver, metrics_of, workflow_metrics

ATTEMPTS: dict[str, int] = {}


@sb.technique("obs.work", blocking=False)
def _work(ctx):
    ctx.state["seen"] = ctx.state.get("seen", 0) + 1
    return {"text": ctx.node_id}


@sb.technique("obs.flaky", blocking=False)
def _flaky(ctx):
    key = ctx.config["key"]
    ATTEMPTS[key] = ATTEMPTS.get(key, 0) + 1
    if ATTEMPTS[key] < 2:
        raise ConnectionError("transient")
    return {"ok": True}


@sb.technique("obs.boom", blocking=False)
def _boom(ctx):
    raise ValueError("boom")


def pipeline(observability: str, last: str = "obs.work", key: str = "k") -> sb.Pipeline:
    return sb.Pipeline.from_yaml(f"""
pipelines:
  observed:
    steps:
      - {{use: obs.work, id: first}}
      - {{use: obs.flaky, id: flaky, config: {{key: {key}}}, retry: {{max_attempts: 3, initial_delay: 0.001}}}}
      - {{use: {last}, id: last}}
observability:
{observability}
""")


SEED_LOGGING = """  logging:
    level: INFO
    workflow_tracing: true
    log_step_transitions: true
    log_state_changes: true"""

SEED_METRICS = """  metrics:
    workflow_duration: true
    step_duration: true
    error_rate: true
    retry_count: true"""


def test_seed_logging_settings_log_steps_with_structured_fields(caplog, unique):
    pipe = pipeline(SEED_LOGGING, key=unique)
    with caplog.at_level(logging.DEBUG, logger=LOGGER_NAME):
        result = pipe.run({}, workflow_id="wf-log")
    recs = [r for r in caplog.records if r.name == LOGGER_NAME]
    events = [r.event for r in recs]
    assert events[0] == "run_started" and events[-1] == "run_finished"
    finished = [r for r in recs if r.event == "node_finished"]
    assert [r.node for r in finished] == ["first", "flaky", "last"]
    for r in finished:
        assert r.run_id == result.run_id and r.workflow_id == "wf-log" and r.pipeline == "observed"
        assert r.iteration == 1 and r.duration >= 0 and r.levelno == logging.INFO
    assert [r.attempt for r in finished] == [1, 2, 1]
    retry = [r for r in recs if r.event == "node_retrying"]
    assert len(retry) == 1 and retry[0].levelno == logging.WARNING and retry[0].node == "flaky"
    state = [r.getMessage() for r in recs if r.status == "state_changed"]
    assert state == [
        f"observed/{result.run_id} state changed after first: +seen",
        f"observed/{result.run_id} state changed after last: ~seen",
    ]
    # level INFO: the DEBUG trace is not logged
    assert not [r for r in recs if r.status == "trace"]


def test_failures_are_logged_as_errors_whatever_the_switches(caplog):
    pipe = pipeline(
        "  logging: {level: WARNING, log_step_transitions: false, workflow_tracing: false}",
        last="obs.boom",
        key="fail",
    )
    with caplog.at_level(logging.DEBUG, logger=LOGGER_NAME), pytest.raises(sb.NodeExecutionError):
        pipe.run({})
    recs = [r for r in caplog.records if r.name == LOGGER_NAME]
    assert {r.event for r in recs} == {"node_retrying", "node_failed", "run_failed"}
    failed = [r for r in recs if r.event == "node_failed"][0]
    assert failed.levelno == logging.ERROR and failed.node == "last" and "boom" in failed.getMessage()


def test_debug_level_logs_the_trace(caplog):
    pipe = pipeline("  logging: {level: DEBUG}", key="dbg")
    with caplog.at_level(logging.DEBUG, logger=LOGGER_NAME):
        result = pipe.run({})
    trace = [r for r in caplog.records if getattr(r, "status", None) == "trace"]
    assert len(trace) == 1 and trace[0].getMessage() == result.format_trace()


def test_json_formatter_carries_the_fields():
    record = logging.LogRecord(LOGGER_NAME, logging.INFO, __file__, 1, "node x finished", None, None)
    for k, v in {
        "event": "node_finished",
        "run_id": "r1",
        "node": "x",
        "iteration": 2,
        "attempt": 1,
        "duration": 0.25,
        "technique": "t.x",
    }.items():
        setattr(record, k, v)
    out = json.loads(JsonFormatter().format(record))
    assert out["message"] == "node x finished" and out["node"] == "x" and out["iteration"] == 2
    assert out["duration"] == 0.25 and out["level"] == "INFO"


def test_a_handler_is_added_only_when_nothing_would_print(monkeypatch):
    logger = logging.getLogger("sibyl_nb.test_handler")
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [])
    LoggingObserver(None, logger=logger, format="json")
    assert len(logger.handlers) == 1 and isinstance(logger.handlers[0].formatter, JsonFormatter)
    LoggingObserver(None, logger=logger)
    assert len(logger.handlers) == 1
    logger.handlers.clear()


def test_seed_metrics_per_run_and_across_runs():
    metrics = workflow_metrics()
    metrics.reset()
    pipe = pipeline(SEED_METRICS, key="m1")
    r1 = pipe.run({})
    r2 = pipe.run({})  # flaky's counter is past 2 now: no retry
    with pytest.raises(sb.NodeExecutionError):
        pipeline(SEED_METRICS, last="obs.boom", key="m2").run({})
    runs = metrics.runs_frame("observed")
    assert list(runs["run_id"])[:2] == [r1.run_id, r2.run_id]
    assert list(runs["status"]) == ["completed", "completed", "failed"]
    assert list(runs["retries"]) == [1, 0, 1]
    assert (runs["duration"] > 0).all()
    steps = metrics.steps_frame(run_id=r1.run_id)
    assert list(steps["node"]) == ["first", "flaky", "last"] and list(steps["retries"]) == [0, 1, 0]
    summary = metrics.summary()
    row = summary[summary["pipeline"] == "observed"].iloc[0]
    assert row["runs"] == 3 and row["failed"] == 1 and row["error_rate"] == pytest.approx(1 / 3)
    per_step = metrics.step_summary("observed")
    last = per_step[per_step["node"] == "last"].iloc[0]
    assert last["runs"] == 3 and last["errors"] == 1
    assert metrics.run(r2.run_id)["retries"] == 0
    text = metrics.to_prometheus()
    assert 'sibyl_workflow_runs_total{pipeline="observed",status="failed"} 1.0' in text
    assert 'sibyl_step_retries_total{node="flaky",pipeline="observed"} 2.0' in text
    assert "sibyl_step_duration_seconds_count" in text
    metrics.reset()


def test_metric_switches_and_a_private_collector():
    collector = MetricsCollector()
    pipe = pipeline("  logging: {level: ERROR}", key="priv")
    obs = MetricsObserver(workflow_duration=False, retry_count=False, collector=collector)
    pipe.run({}, observers=[obs])
    row = collector.runs_frame().iloc[0]
    assert row["duration"] is None or row["duration"] != row["duration"]  # None/NaN: switched off
    assert row["retries"] is None or row["retries"] != row["retries"]
    assert row["steps"] == 3


def test_metrics_of_a_result():
    result = pipeline("  logging: {level: ERROR}", key="of").run({})
    m = metrics_of(result)
    assert m["steps"] == 3 and m["retries"] == 1 and m["errors"] == 0
    assert set(m["step_durations"]) == {"first", "flaky", "last"}


def test_each_node_event_is_one_line_with_its_level_status_and_fields(caplog):
    from sibyl_nb.engine.events import Event

    logger = logging.getLogger("sibyl_nb.test_node_lines")
    obs = LoggingObserver(level="INFO", workflow_tracing=False, logger=logger)
    events = [
        Event("run_started", "r1", data={"pipeline": "pipe"}),
        Event("node_started", "r1", "a", 1, data={"technique": "t.x", "attempt": 1}),
        Event("node_finished", "r1", "a", 2, data={"technique": "t.x", "attempts": 1, "duration": 0.0125}),
        Event("node_skipped", "r1", "b", 1, data={"reason": "condition false"}),
        Event("node_cached", "r1", "c", 1, data={"technique": "t.y"}),
        Event(
            "node_retrying",
            "r1",
            "d",
            1,
            data={"technique": "t.z", "attempt": 1, "delay": 0.5, "error": "e1"},
        ),
        Event("node_failed", "r1", "d", 3, data={"technique": "t.z", "attempts": 2, "error": "e2"}),
        Event(
            "node_failed",
            "r1",
            "e",
            1,
            data={"technique": "t.z", "attempts": 1, "error": "e3", "recovered": True},
        ),
    ]
    with caplog.at_level(logging.DEBUG, logger=logger.name):
        for ev in events:
            obs(ev)
    lines = [
        (r.levelname, r.getMessage(), r.status, r.node, r.technique, r.attempt, r.duration, r.iteration)
        for r in caplog.records
        if r.name == logger.name
    ]
    assert lines == [
        ("INFO", "pipe/r1 node a started (t.x)", "running", "a", "t.x", 1, None, 1),
        ("INFO", "pipe/r1 node a #2 finished in 12.5 ms", "done", "a", "t.x", 1, 0.0125, 2),
        ("INFO", "pipe/r1 node b skipped: condition false", "skipped", "b", None, None, None, 1),
        ("INFO", "pipe/r1 node c served from cache", "cached", "c", "t.y", None, None, 1),
        (
            "WARNING",
            "pipe/r1 node d attempt 1 failed, retrying in 0.50 s: e1",
            "retrying",
            "d",
            "t.z",
            1,
            None,
            1,
        ),
        ("ERROR", "pipe/r1 node d #3 failed after 2 attempt(s): e2", "failed", "d", "t.z", 2, None, 3),
        (
            "WARNING",
            "pipe/r1 node e failed after 1 attempt(s): e3 (a fallback takes over)",
            "failed",
            "e",
            "t.z",
            1,
            None,
            1,
        ),
    ]
    quiet = LoggingObserver(level="INFO", workflow_tracing=False, log_step_transitions=False, logger=logger)
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger=logger.name):
        for ev in events:
            quiet(ev)
    assert [r.status for r in caplog.records if r.name == logger.name] == ["retrying", "failed", "failed"]
