"""The Dask executor on a real ``distributed.LocalCluster`` (2 worker processes): same outputs, events,
retries and side effects as the local executor, notebook-style techniques shipped by value, and a
worker killed mid-run does not fail the run."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import sibyl_nb as sb
from sibyl_nb.engine.dask_executor import DaskExecutor, RemoteTechniqueError, ship_function
from sibyl_nb.errors import NodeExecutionError, UnknownTechniqueError

distributed = pytest.importorskip("distributed")

pytestmark = pytest.mark.slow
MODULE = __name__


# ---------------------------------------------------------------------- techniques of this module
# This file is not importable on the workers by design (the executor must ship these by value).
class Boom(Exception):
    """A technique's own exception class: it must come back as itself."""


class Unpicklable(Exception):
    def __init__(self, message: str, *, required: int) -> None:  # keyword-only: unpickling fails
        super().__init__(message)
        self.required = required


@sb.technique("dasktest.square")
def square(ctx: Any) -> dict[str, Any]:
    ctx.emit("where", pid=os.getpid())
    i = ctx.config["i"]
    return {"i": i, "sq": i * i, "up": sorted(ctx.upstream)}


@sb.technique("dasktest.source")
def source(ctx: Any) -> dict[str, Any]:
    return {"n": ctx.input["n"]}


@sb.technique("dasktest.join")
def join(ctx: Any) -> dict[str, Any]:
    outs = ctx.upstream
    return {"count": len(outs), "total": sum(o["sq"] for o in outs.values())}


@sb.technique("dasktest.flaky")
def flaky(ctx: Any) -> dict[str, Any]:
    if ctx.attempt < 3:
        raise Boom(f"attempt {ctx.attempt} fails")
    return {"attempt": ctx.attempt}


@sb.technique("dasktest.always_fails")
def always_fails(ctx: Any) -> dict[str, Any]:
    raise Boom("no luck")


@sb.technique("dasktest.rescue")
def rescue(ctx: Any) -> dict[str, Any]:
    return {"rescued": True, "up": sorted(ctx.upstream)}


@sb.technique("dasktest.side_effects")
async def side_effects(ctx: Any) -> dict[str, Any]:
    await asyncio.sleep(0.01)
    ctx.emit("token_allocation", system=10, recent=20, total=30)
    ctx.session.setdefault("history", []).append(ctx.node_id)
    ctx.state["visits"] = ctx.state.get("visits", 0) + 1
    log = Path(ctx.config["log"])

    def store_reply(result: Any) -> None:  # runs in the caller, after the run succeeds
        with log.open("a", encoding="utf-8") as fh:
            fh.write(f"deferred {sorted(result.outputs)}\n")

    ctx.defer(store_reply)
    return {"score": 0.4 if ctx.iteration == 1 else 0.9, "query": ctx.query}


@sb.technique("dasktest.slow")
def slow(ctx: Any) -> dict[str, Any]:
    time.sleep(ctx.config.get("seconds", 0.5))
    return {"slept": True}


@sb.technique("dasktest.unpicklable_error")
def unpicklable_error(ctx: Any) -> dict[str, Any]:
    raise Unpicklable("custom signature", required=1)


@sb.technique("dasktest.die_once")
def die_once(ctx: Any) -> dict[str, Any]:
    """Kills its worker process the first time it runs (a marker file remembers)."""
    marker = Path(ctx.config["marker"])
    if not marker.exists():
        marker.write_text(str(os.getpid()), encoding="utf-8")
        time.sleep(0.2)  # let sibling tasks start on the other worker
        os._exit(1)
    ctx.emit("where", pid=os.getpid())
    return {"survived": True, "attempt": ctx.attempt}


# ---------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def cluster():
    with distributed.LocalCluster(
        n_workers=2, processes=True, threads_per_worker=1, dashboard_address=":0", silence_logs=logging.ERROR
    ) as c:
        yield c


@pytest.fixture(scope="module")
def client(cluster):
    with distributed.Client(cluster, set_as_default=False) as c:
        c.wait_for_workers(2)
        yield c


@pytest.fixture
def dask_exec(client):
    return DaskExecutor(client=client)


def _worker_pids(client: Any) -> set[int]:
    return set(client.run(os.getpid).values())


def _fanout(width: int) -> sb.Pipeline:
    nodes = [{"id": "src", "technique": "dasktest.source"}, {"id": "join", "technique": "dasktest.join"}]
    edges = []
    for i in range(width):
        nodes.append({"id": f"w{i}", "technique": "dasktest.square", "config": {"i": i}})
        edges += [{"from": "src", "to": f"w{i}"}, {"from": f"w{i}", "to": "join"}]
    return sb.Pipeline.from_dict(
        {
            "steps": [
                {
                    "use": "workflow_orchestration.graph",
                    "config": {"subtechnique": "dag", "graph_definition": {"nodes": nodes, "edges": edges}},
                }
            ]
        }
    )


def _run(pipe: sb.Pipeline, inputs: Any, executor: Any = None) -> tuple[Any, list[Any]]:
    events: list[Any] = []
    result = pipe.run(inputs, observers=[events.append], executor=executor)
    return result, events


def _shape(events: list[Any]) -> list[tuple[Any, ...]]:
    """Events minus what legitimately differs (times, durations, pids), in a stable order."""
    out = []
    for e in events:
        data = {k: v for k, v in e.data.items() if k not in ("duration", "result", "pid", "workflow_id")}
        out.append((e.kind, e.node_id, e.iteration, repr(sorted(data.items(), key=lambda kv: kv[0]))))
    return sorted(out)


def _per_node(events: list[Any]) -> dict[Any, list[str]]:
    """Event kinds in order, per node: deterministic even where siblings interleave differently."""
    out: dict[Any, list[str]] = {}
    for e in events:
        out.setdefault(e.node_id, []).append(e.data.get("kind") or e.kind)
    return out


def _records(result: Any) -> list[tuple[Any, ...]]:
    """Records in a stable order (completion order of siblings is timing, not semantics)."""
    return sorted(
        (r.node_id, r.iteration, r.status, r.attempts, r.error, r.fallback_for, repr(r.output))
        for r in result.records
    )


# ---------------------------------------------------------------------- tests
def test_research_workflow_same_as_local(dask_exec, client):
    if str(Path(__file__).parent) not in sys.path:
        sys.path.insert(0, str(Path(__file__).parent))
    from seed_examples import block

    try:
        pipe = sb.Pipeline.from_yaml(block("Research Workflow"))
    except UnknownTechniqueError as exc:
        pytest.skip(f"the research workflow's built-in techniques are not registered yet: {exc.message}")
    inputs = {"query": "What is retrieval augmented generation?"}
    local, local_events = _run(pipe, inputs)
    remote, remote_events = _run(pipe, inputs, dask_exec)
    assert remote.outputs == local.outputs
    assert remote.output == local.output
    assert _records(remote) == _records(local)
    assert _shape(remote_events) == _shape(local_events)
    assert _per_node(remote_events) == _per_node(local_events)
    assert remote.allocations == local.allocations


def test_fanout_200_same_as_local_and_shipped_by_value(dask_exec, client):
    pipe = _fanout(200)
    local, local_events = _run(pipe, {"n": 200})
    t0 = time.perf_counter()
    remote, remote_events = _run(pipe, {"n": 200}, dask_exec)
    elapsed = time.perf_counter() - t0
    assert remote.outputs == local.outputs
    assert _records(remote) == _records(local)
    assert remote.output == {"count": 200, "total": sum(i * i for i in range(200))}
    assert _shape(remote_events) == _shape(local_events)
    # the calls really ran in the worker processes, on both of them
    pids = {e.data["pid"] for e in remote_events if e.kind == "custom" and e.data.get("kind") == "where"}
    assert pids <= _worker_pids(client) and os.getpid() not in pids
    assert len(pids) == 2
    # ... and this test module was shipped by value: no worker ever imported it
    assert not any(client.run(lambda: MODULE in sys.modules).values())
    assert elapsed < 20


def test_retries_fallbacks_conditions_side_effects_match_local(dask_exec, client, tmp_path):
    log = tmp_path / "replies.log"
    doc = {
        "steps": [
            {
                "use": "workflow_orchestration.graph",
                "id": "loop",
                "config": {
                    "subtechnique": "cyclic",
                    "max_iterations": 5,
                    "graph_definition": {
                        "nodes": [
                            {
                                "id": "evaluate",
                                "technique": "dasktest.side_effects",
                                "config": {"log": "${log}"},
                            },
                            {
                                "id": "refine",
                                "technique": "dasktest.flaky",
                                "retry": {"max_attempts": 3, "initial_delay": 0.01, "backoff": "fixed"},
                            },
                        ],
                        "edges": [
                            {"from": "evaluate", "to": "refine", "condition": "${evaluate.score} < 0.8"},
                            {"from": "refine", "to": "evaluate"},
                        ],
                    },
                },
            },
            {
                "use": "dasktest.always_fails",
                "id": "risky",
                "on_error": [{"use": "dasktest.rescue", "id": "plan_b"}],
            },
            {
                "use": "dasktest.slow",
                "id": "too_slow",
                "timeout": 0.2,
                "config": {"seconds": 0.6},
                "on_error": [{"use": "dasktest.rescue", "id": "after_timeout"}],
            },
        ]
    }
    pipe = sb.Pipeline.from_dict(doc)
    local, local_events = _run(pipe, {"query": "q?", "log": str(log)})
    local_log = log.read_text()
    log.unlink()
    remote, remote_events = _run(pipe, {"query": "q?", "log": str(log)}, dask_exec)
    assert remote.outputs == local.outputs
    assert remote.output == local.output
    assert _records(remote) == _records(local)
    assert _shape(remote_events) == _shape(local_events)
    assert _per_node(remote_events) == _per_node(local_events)
    # side effects made on the worker were replayed in the caller
    assert remote.session == local.session == {"history": ["evaluate", "evaluate"]}
    assert remote.state == local.state == {"visits": 2}
    assert remote.allocations == local.allocations and len(remote.allocations) == 2
    assert log.read_text() == local_log != ""
    retried = [e for e in remote_events if e.kind == "node_retrying"]
    assert len(retried) == 2 and "Boom: attempt 1 fails" in retried[0].data["error"]
    # the timed-out task was cancelled and nothing is left holding results on the cluster
    deadline = time.monotonic() + 5
    while client.futures and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not client.futures


def test_a_closed_client_is_a_clear_error(cluster):
    other = distributed.Client(cluster, set_as_default=False)
    executor = DaskExecutor(client=other)
    other.close()
    pipe = sb.Pipeline.from_dict({"steps": [{"use": "dasktest.rescue", "id": "r"}]})
    with pytest.raises(NodeExecutionError, match="given to DaskExecutor is closed"):
        pipe.run({}, executor=executor)


def test_failure_raises_the_techniques_exception(dask_exec):
    pipe = sb.Pipeline.from_dict({"steps": [{"use": "dasktest.always_fails", "id": "bad"}]})
    with pytest.raises(NodeExecutionError) as info:
        pipe.run({}, executor=dask_exec)
    err = info.value
    assert err.node_id == "bad" and err.technique == "dasktest.always_fails" and err.attempts == 1
    assert type(err.cause) is Boom and str(err.cause) == "no luck"
    assert any("raised on Dask worker" in n for n in getattr(err.cause, "__notes__", []))

    pipe = sb.Pipeline.from_dict({"steps": [{"use": "dasktest.unpicklable_error", "id": "odd"}]})
    with pytest.raises(NodeExecutionError) as info:
        pipe.run({}, executor=dask_exec)
    assert isinstance(info.value.cause, RemoteTechniqueError)
    assert "Unpicklable: custom signature" in info.value.message


def test_yaml_executor_mapping_and_pipeline_attribute(cluster, client):
    from sibyl_nb.engine.executor_factory import make_executor

    text = f"""
pipelines:
  fan:
    executor:
      kind: dask
      scheduler_address: {cluster.scheduler_address}
    steps:
      - use: dasktest.square
        id: one
        config: {{i: 7}}
"""
    with pytest.raises(sb.TrustError, match="code execution") as err:
        sb.Pipeline.from_yaml(text)  # a scheduler address in a document: its results are unpickled
    assert err.value.line == 6 and err.value.path == "pipelines.fan.executor.scheduler_address"
    pipe = sb.Pipeline.from_yaml(text, trust_code=True)
    assert pipe.executor is None  # nothing connects at load time
    events: list[Any] = []
    result = pipe.run({}, observers=[events.append])
    assert result.output == {"i": 7, "sq": 49, "up": []}
    assert isinstance(pipe.executor, DaskExecutor)
    pid = next(e.data["pid"] for e in events if e.kind == "custom")
    assert pid in _worker_pids(client)
    # the same configuration shares one executor (one connection) across pipelines
    assert make_executor({"kind": "dask", "scheduler_address": cluster.scheduler_address}) is pipe.executor
    pipe.executor.close()
    # a distributed.Client is accepted directly, per run
    assert pipe.run({}, executor=client).output["sq"] == 49


def test_async_client_on_the_callers_loop(cluster):
    pipe = _fanout(10)

    async def main() -> Any:
        async with distributed.Client(
            cluster.scheduler_address, asynchronous=True, set_as_default=False
        ) as aclient:
            return await pipe.execute({"n": 10}, executor=DaskExecutor(client=aclient))

    result = asyncio.run(main())
    assert result.output == {"count": 10, "total": sum(i * i for i in range(10))}


def test_sync_run_inside_a_running_loop_uses_a_helper_thread(dask_exec):
    pipe = _fanout(10)
    seen: dict[str, Any] = {}

    def observer(event: Any) -> None:
        seen.setdefault("threads", set()).add(threading.current_thread().name)
        seen.setdefault("loops", set()).add(id(asyncio.get_running_loop()))

    async def cell() -> None:  # what a Jupyter cell does: the kernel's loop is running
        seen["cell_loop"] = id(asyncio.get_running_loop())
        seen["result"] = pipe.run({"n": 10}, executor=dask_exec, observers=[observer])

    asyncio.run(cell())
    assert seen["result"].output["count"] == 10
    # the engine never ran on the kernel's loop: its first step ran eagerly on a private loop, the
    # rest (waiting on Dask) on that loop in the helper thread
    assert seen["cell_loop"] not in seen["loops"] and len(seen["loops"]) == 1
    assert "sibyl-run" in seen["threads"]


def test_worker_killed_mid_run_is_retried_on_another_worker(dask_exec, client, tmp_path):
    marker = tmp_path / "killed.pid"
    nodes = [{"id": "victim", "technique": "dasktest.die_once", "config": {"marker": str(marker)}}]
    nodes += [{"id": f"w{i}", "technique": "dasktest.square", "config": {"i": i}} for i in range(6)]
    pipe = sb.Pipeline.from_dict(
        {
            "steps": [
                {
                    "use": "workflow_orchestration.graph",
                    "config": {"subtechnique": "dag", "graph_definition": {"nodes": nodes, "edges": []}},
                }
            ]
        }
    )
    before = _worker_pids(client)
    result, events = _run(pipe, {}, dask_exec)
    killed = int(marker.read_text())
    assert killed in before  # the technique really killed a worker process
    assert result.outputs["victim"] == {"survived": True, "attempt": 1}
    survivor = next(e.data["pid"] for e in events if e.kind == "custom" and e.node_id == "victim")
    assert survivor != killed
    record = next(r for r in result.records if r.node_id == "victim")
    assert record.status == "ran" and record.attempts == 1  # Dask rescheduled it, not a node retry
    assert not [e for e in events if e.kind in ("node_retrying", "node_failed")]
    assert all(result.outputs[f"w{i}"]["sq"] == i * i for i in range(6))
    client.wait_for_workers(2, timeout=30)  # the nanny restarts the dead worker


SETTING = {"factor": 2}


@sb.technique("dasktest.scaled")
def scaled(ctx: Any) -> dict[str, Any]:
    return {"value": ctx.config["x"] * SETTING["factor"]}


def test_notebook_cell_function_and_changed_globals(dask_exec, monkeypatch):
    """A function from a notebook cell (module ``__main__``) runs on the workers; a global changed
    between runs (another cell) is seen by the next run, as with the local executor."""

    def cell_technique(ctx: Any) -> dict[str, Any]:
        return {"cell": ctx.config["x"] + 1, "pid": os.getpid()}

    cell_technique.__module__ = "__main__"
    sb.register_technique("dasktest.cell", cell_technique)
    pipe = sb.Pipeline.from_dict(
        {
            "steps": [
                {"use": "dasktest.cell", "id": "c", "config": {"x": 41}},
                {"use": "dasktest.scaled", "id": "s", "config": {"x": 5}},
            ]
        }
    )
    first = pipe.run({}, executor=dask_exec)
    assert first.outputs["c"]["cell"] == 42 and first.outputs["c"]["pid"] != os.getpid()
    assert first.outputs["s"] == {"value": 10}
    monkeypatch.setitem(SETTING, "factor", 3)
    assert pipe.run({}, executor=dask_exec).outputs["s"] == {"value": 15}


def test_ship_function_rules():
    from sibyl_nb.techniques.registry import get_technique

    builtin = get_technique("workflow_orchestration.passthrough").fn
    blob, _, _ = ship_function(builtin)
    assert blob is not None and len(blob) < 300  # sibyl_nb's own techniques go by reference
    assert b"sibyl_nb" in blob
    blob, digest, note = ship_function(square, "run-1")
    assert blob is not None and digest and not note
    assert ship_function(square, "run-1")[0] is blob  # cached within a run: a fan-out pickles once
    assert ship_function(square, "run-2")[0] is not blob  # re-pickled for the next run
    lam_blob, _, _ = ship_function(lambda ctx: {"x": 1})
    assert lam_blob is not None
