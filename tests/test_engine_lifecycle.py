"""One node lifecycle, observed from outside: what a technique may return, when a step is recorded as
started, what happens to a thread a timeout or a cancellation leaves behind, fallback chains, else
edges, branches where nothing fired, dynamic graphs and typed observers."""

from __future__ import annotations

import asyncio
import os
import threading
import time

import pytest

import sibyl_nb as sb
from sibyl_nb.engine.builder import Graph
from sibyl_nb.engine.events import EventKind, Observer
from sibyl_nb.errors import NodeExecutionError


def graph(nodes, edges, mode="dag", **config):
    return sb.Pipeline.from_dict(
        {
            "steps": [
                {
                    "use": "workflow_orchestration.graph",
                    "config": {
                        "subtechnique": mode,
                        **config,
                        "graph_definition": {"nodes": nodes, "edges": edges},
                    },
                }
            ]
        }
    )


def one_step(technique, **step):
    return sb.Pipeline.from_dict({"steps": [{"use": technique, "id": "step", **step}]})


# ---------------------------------------------------------------------- what a technique returns
CALLS: dict[str, int] = {}


@sb.technique("life.gen", blocking=False)
def _gen(ctx):
    CALLS["gen"] = CALLS.get("gen", 0) + 1
    return (chunk for chunk in ["a", "b"])


@sb.technique("life.yields", blocking=False)
def _yields(ctx):
    yield {"text": "chunk"}


@sb.technique("life.agen", blocking=False)
def _agen_factory(ctx):
    async def agen():
        yield 1

    return agen()


@sb.technique("life.sync_returns_coroutine", blocking=False)
def _sync_coro(ctx):
    async def later():
        await asyncio.sleep(0)
        return {"text": "awaited", "node": ctx.node_id}

    return later()


@sb.technique("life.blocking_returns_coroutine")
def _blocking_coro(ctx):
    async def later():
        return {"text": "awaited in loop"}

    return later()


def test_a_generator_is_refused_with_a_clear_error_and_not_retried():
    CALLS.clear()
    pipe = one_step("life.gen", retry={"max_attempts": 3, "initial_delay": 0.0})
    with pytest.raises(NodeExecutionError) as err:
        pipe.run()
    assert "returned a generator instead of an output" in str(err.value)
    assert err.value.node_id == "step" and err.value.attempts == 1
    assert CALLS["gen"] == 1
    assert "generator object" not in str(err.value.result.outputs)


def test_a_generator_function_is_refused():
    with pytest.raises(NodeExecutionError, match="technique 'life.yields' returned a generator"):
        one_step("life.yields").run()


def test_an_async_generator_is_refused():
    with pytest.raises(NodeExecutionError, match="returned an async generator"):
        one_step("life.agen").run()


@pytest.mark.parametrize(
    "technique,text",
    [("life.sync_returns_coroutine", "awaited"), ("life.blocking_returns_coroutine", "awaited in loop")],
)
def test_a_coroutine_returned_by_a_sync_function_is_awaited(technique, text):
    r = one_step(technique).run()
    assert r.output["text"] == text
    assert r.record("step").status == "ran"


# ---------------------------------------------------------------------- a truthful trace
@sb.technique("life.async_but_blocks")
async def _async_but_blocks(ctx):
    time.sleep(0.1)  # a sync call inside async def: the loop is blocked while it runs
    return {"id": ctx.node_id}


def test_recorded_start_is_when_the_code_began_for_serialised_branches():
    pipe = graph(
        [
            {"id": "a", "technique": "life.async_but_blocks"},
            {"id": "b", "technique": "life.async_but_blocks"},
        ],
        [],
    )
    events = []
    r = pipe.run(observers=[events.append])
    first, second = sorted((r.record("a"), r.record("b")), key=lambda rec: rec.started)
    assert second.started >= first.ended - 0.005  # they could not overlap, and the trace says so
    assert first.duration >= 0.09 and second.duration >= 0.09 and second.duration < 0.2
    started = {e.node_id: e.time for e in events if e.kind == "node_started"}
    assert started[second.node_id] - started[first.node_id] >= 0.09  # the event says when, too


@sb.technique("life.noop", blocking=False)
def _noop(ctx):
    return {"node": ctx.node_id}


@sb.technique("life.thread_sleep")
def _thread_sleep(ctx):
    time.sleep(ctx.config.get("sleep", 0.05))
    return {"node": ctx.node_id, "thread": threading.current_thread().name}


def test_node_started_is_emitted_for_every_node_when_its_code_begins():
    pipe = sb.Pipeline.from_dict({"steps": [{"use": "life.noop", "id": f"n{i}"} for i in range(3)]})
    events = []
    pipe.run(observers=[lambda e: events.append((e.kind, e.node_id))])
    node_events = [e for e in events if e[1] is not None]
    assert node_events == [
        (k, n) for n in ("n0", "n1", "n2") for k in (EventKind.NODE_STARTED, EventKind.NODE_FINISHED)
    ]


def test_thread_offloaded_start_is_measured_in_the_thread():
    # more blocking nodes than the default thread pool has workers: the last two wait for a free
    # worker, and their recorded start is when a worker began their code, not when they were queued
    workers = min(32, (os.cpu_count() or 1) + 4)
    n = workers + 2
    pipe = graph(
        [{"id": f"t{i}", "technique": "life.thread_sleep", "config": {"sleep": 0.2}} for i in range(n)], []
    )
    r = pipe.run()
    starts = sorted(r.record(f"t{i}").started for i in range(n))
    first = starts[0]
    assert all(s - first >= 0.15 for s in starts[-2:]), starts
    assert sum(1 for s in starts if s - first < 0.15) == workers
    assert all(r.record(f"t{i}").output["thread"] != threading.current_thread().name for i in range(n))


# ---------------------------------------------------------------------- timeouts & cancellation
STOPPED: dict[str, float] = {}


@sb.technique("life.cooperative")
def _cooperative(ctx):
    t0 = time.perf_counter()
    while not ctx.cancelled and time.perf_counter() - t0 < 5:
        time.sleep(0.005)
    STOPPED[ctx.node_id] = time.perf_counter()
    return {"stopped_early": ctx.cancelled}


@sb.technique("life.stubborn")
def _stubborn(ctx):
    time.sleep(ctx.config.get("sleep", 0.4))
    STOPPED[ctx.node_id] = time.perf_counter()
    return {"late": True}


def test_a_timed_out_thread_is_told_to_stop_and_does():
    STOPPED.clear()
    pipe = sb.Pipeline.from_dict(
        {
            "steps": [
                {
                    "use": "life.cooperative",
                    "id": "slow",
                    "timeout": 0.05,
                    "on_error": [{"technique": "life.noop", "id": "instead"}],
                }
            ]
        }
    )
    t0 = time.perf_counter()
    r = pipe.run()
    assert time.perf_counter() - t0 < 1.0
    assert r.record("slow").status == "failed" and "timed out after 0.05 s" in r.record("slow").error
    assert r.output == {"node": "instead"}
    deadline = time.perf_counter() + 1.0
    while "slow" not in STOPPED and time.perf_counter() < deadline:
        time.sleep(0.01)
    assert "slow" in STOPPED and STOPPED["slow"] - t0 < 1.0  # it stopped long before its 5 s
    assert r.outputs["slow"] == {"node": "instead"}  # the fallback's answer; a late one is discarded


def test_a_thread_that_ignores_the_stop_is_named_in_warnings():
    STOPPED.clear()
    pipe = sb.Pipeline.from_dict(
        {
            "steps": [
                {
                    "use": "life.stubborn",
                    "id": "stuck",
                    "timeout": 0.05,
                    "on_error": [{"technique": "life.noop", "id": "instead"}],
                }
            ]
        }
    )
    r = pipe.run()
    assert r.output == {"node": "instead"}
    assert "stuck" not in STOPPED  # the run did not wait for it ...
    assert any("'stuck'" in w and "still running" in w for w in r.warnings)  # ... and says so
    time.sleep(0.5)
    assert "stuck" in STOPPED and r.outputs["stuck"] == {"node": "instead"}


def test_fail_fast_cancellation_tells_a_sibling_thread_to_stop():
    STOPPED.clear()
    pipe = graph(
        [
            {"id": "worker", "technique": "life.cooperative"},
            {"id": "bad", "technique": "life.fails"},
            {"id": "root", "technique": "life.noop"},
        ],
        [{"from": "root", "to": "worker"}, {"from": "root", "to": "bad"}],
    )
    t0 = time.perf_counter()
    with pytest.raises(NodeExecutionError) as err:
        pipe.run()
    statuses = {rec.node_id: rec.status for rec in err.value.result.records}
    assert statuses["worker"] == "cancelled"
    deadline = time.perf_counter() + 1.0
    while "worker" not in STOPPED and time.perf_counter() < deadline:
        time.sleep(0.01)
    assert STOPPED["worker"] - t0 < 1.0


# ---------------------------------------------------------------------- fallbacks
@sb.technique("life.fails", blocking=False)
def _fails(ctx):
    raise RuntimeError(f"{ctx.node_id} is broken")


def test_when_every_fallback_fails_the_error_keeps_the_original_failure():
    pipe = one_step(
        "life.fails",
        on_error=[
            {"technique": "life.fails", "id": "backup_one"},
            {"technique": "life.fails", "id": "backup_two"},
        ],
    )
    with pytest.raises(NodeExecutionError) as err:
        pipe.run()
    e = err.value
    text = str(e)
    assert e.node_id == "step"
    assert "RuntimeError: step is broken" in text
    assert "fallback 'backup_one' failed too: RuntimeError: backup_one is broken" in text
    assert "fallback 'backup_two' failed too: RuntimeError: backup_two is broken" in text
    assert str(e.cause) == "step is broken"
    assert [(fid, str(exc)) for fid, exc in e.fallback_errors] == [
        ("backup_one", "backup_one is broken"),
        ("backup_two", "backup_two is broken"),
    ]


# ---------------------------------------------------------------------- else edges, no branch taken
@sb.technique("life.kind", blocking=False)
def _kind(ctx):
    return {"type": ctx.input["kind"]}


BRANCHES = [
    {"id": "classify", "technique": "life.kind"},
    {"id": "factual", "technique": "life.noop"},
    {"id": "opinion", "technique": "life.noop"},
]
BRANCH_EDGES = [
    {"from": "classify", "to": "factual", "condition": '${classify.type} == "factual"'},
    {"from": "classify", "to": "opinion", "condition": '${classify.type} == "opinion"'},
]


def test_a_conditional_node_where_no_edge_fired_says_so():
    r = graph(BRANCHES, BRANCH_EDGES, mode="conditional").run({"kind": "poem"})
    assert r.status("factual") == "skipped" and r.status("opinion") == "skipped"
    assert len(r.warnings) == 1 and "'classify': no outgoing edge fired" in r.warnings[0]
    assert r.output == {"factual": None, "opinion": None}
    ok = graph(BRANCHES, BRANCH_EDGES, mode="conditional").run({"kind": "opinion"})
    assert ok.warnings == [] and ok.output == {"factual": None, "opinion": {"node": "opinion"}}


def test_a_default_edge_is_the_else_branch():
    nodes = [*BRANCHES, {"id": "other", "technique": "life.noop"}]
    edges = [*BRANCH_EDGES, {"from": "classify", "to": "other", "default": True}]
    r = graph(nodes, edges, mode="conditional").run({"kind": "poem"})
    assert [r.status(n) for n in ("factual", "opinion", "other")] == ["skipped", "skipped", "ran"]
    assert r.warnings == []
    r = graph(nodes, edges, mode="conditional").run({"kind": "factual"})
    assert [r.status(n) for n in ("factual", "opinion", "other")] == ["ran", "skipped", "skipped"]


def test_a_default_edge_with_a_condition_is_refused_at_load():
    edges = [*BRANCH_EDGES, {"from": "classify", "to": "opinion", "default": True, "condition": "${x} > 1"}]
    with pytest.raises(sb.SpecError, match="default: true' cannot have a condition"):
        graph(BRANCHES, edges, mode="conditional")


# ---------------------------------------------------------------------- output shape
def test_output_shape_does_not_depend_on_what_was_skipped():
    # two exits: always a dict with both, whichever ran
    for kind in ("factual", "opinion", "poem"):
        r = graph(BRANCHES, BRANCH_EDGES, mode="conditional").run({"kind": kind})
        assert set(r.output) == {"factual", "opinion"}
    # one exit skipped: None, not some other node's output
    guarded = sb.Pipeline.from_dict(
        {
            "steps": [
                {"use": "life.noop", "id": "first"},
                {"use": "life.noop", "id": "last", "condition": "${go}"},
            ]
        }
    )
    assert guarded.run({"go": True}).output == {"node": "last"}
    assert guarded.run({"go": False}).output is None


# ---------------------------------------------------------------------- dynamic graphs
@sb.technique("life.plan", blocking=False)
def _plan(ctx):
    return {"steps": ["alpha", "beta"]}


@sb.graph_builder("life.from_upstream")
def _from_upstream(input_data, ctx):
    g = Graph()
    for name in ctx.upstream["plan"]["steps"]:
        g.add_node(name, "life.noop")
        g.add_edge("start", name)
    return g


@sb.graph_builder("life.broken_inside")
def _broken_inside(input_data):
    g = Graph()
    g.add_node("fine", "life.noop")
    g.add_node("inner_bad", "life.fails")
    g.add_edge("start", "fine")
    g.add_edge("fine", "inner_bad")
    return g


@sb.graph_builder("life.cycle")
def _cycle(input_data):
    g = Graph(cyclic=input_data.get("declare", False))
    g.add_node("x", "life.noop")
    g.add_node("y", "life.noop")
    g.add_edge("start", "x")
    g.add_edge("x", "y")
    g.add_edge("y", "x")
    return g


def dynamic(builder, before=None):
    steps = [] if before is None else [before]
    steps.append(
        {
            "use": "workflow_orchestration.graph",
            "id": "dyn",
            "config": {"subtechnique": "dynamic", "builder": builder, "max_iterations": 3},
        }
    )
    return sb.Pipeline.from_dict({"steps": steps})


def test_dynamic_builder_reads_upstream_outputs():
    r = dynamic("life.from_upstream", before={"use": "life.plan", "id": "plan"}).run()
    assert r.status("alpha") == "ran" and r.status("beta") == "ran"
    assert r.output == {"alpha": {"node": "alpha"}, "beta": {"node": "beta"}}


def test_failure_inside_a_built_graph_names_the_inner_node_and_technique():
    with pytest.raises(NodeExecutionError) as err:
        dynamic("life.broken_inside").run()
    text = str(err.value)
    assert err.value.node_id == "dyn"
    assert "node 'inner_bad' (technique 'life.fails')" in text and "inner_bad is broken" in text


def test_a_cycle_in_a_built_graph_is_refused_unless_declared():
    with pytest.raises(NodeExecutionError, match=r"cycle: x -> y -> x.*Graph\(cyclic=True\)"):
        dynamic("life.cycle").run({"declare": False})
    r = dynamic("life.cycle").run({"declare": True})
    assert r.stopped_by == "max_iterations"
    assert [rec.iteration for rec in r.records if rec.node_id == "x"] == [1, 2, 3]


# ---------------------------------------------------------------------- typed observers
class Finishes(Observer):
    def __init__(self):
        self.seen = []

    def on_node_finished(self, ev):
        self.seen.append(ev.node_id)


def test_typed_observer_gets_only_its_hooks_and_plain_callables_get_everything():
    obs = Finishes()
    everything = []
    pipe = sb.Pipeline.from_dict(
        {"steps": [{"use": "life.noop", "id": "a"}, {"use": "life.noop", "id": "b"}]}
    )
    pipe.run(observers=[obs, everything.append])
    assert obs.seen == ["a", "b"]
    kinds = [e.kind for e in everything]
    assert kinds[0] == "run_started" and kinds[-1] == "run_finished"
    assert kinds.count("node_started") == 2 and all(isinstance(k, EventKind) for k in kinds)
