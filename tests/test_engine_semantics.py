"""Scheduler semantics (DESIGN "Graph semantics"), pinned with small techniques defined here."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

import sibyl_nb as sb
from sibyl_nb.errors import NodeExecutionError


@sb.technique("tst.sleep")
async def _sleep(ctx):
    await asyncio.sleep(ctx.config.get("sleep", 0.05))
    return {"id": ctx.node_id, "up": sorted(ctx.upstream)}


@sb.technique("tst.echo", blocking=False)
def _echo(ctx):
    return {"text": ctx.config.get("text", ctx.node_id), "up": sorted(ctx.upstream), "it": ctx.iteration}


@sb.technique("tst.counter", blocking=False)
def _counter(ctx):
    return {"n": ctx.iteration, "score": 0.5 + 0.1 * ctx.iteration}


@sb.technique("tst.label", blocking=False)
def _label(ctx):
    return {"type": ctx.input.get("kind", "factual")}


@sb.technique("tst.boom", blocking=False)
def _boom(ctx):
    raise ValueError(f"boom on attempt {ctx.attempt}")


FLAKY: dict[str, int] = {}


@sb.technique("tst.flaky", blocking=False)
def _flaky(ctx):
    key = ctx.config["key"]
    FLAKY[key] = FLAKY.get(key, 0) + 1
    if FLAKY[key] < ctx.config.get("succeed_on", 3):
        raise ConnectionError(f"transient {FLAKY[key]}")
    return {"ok": True, "attempt": ctx.attempt}


@sb.technique("tst.blocking_sleep")
def _blocking_sleep(ctx):
    time.sleep(0.05)
    return {"thread": threading.current_thread().name}


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


def span(result, node_id):
    rec = result.record(node_id)
    return rec.started, rec.ended


def test_no_superstep_barrier_fast_branch_runs_ahead():
    # a -> slow(0.3) ; a -> fast(0.02) -> after_fast(0.02): after_fast must not wait for slow
    pipe = graph(
        [
            {"id": "a", "technique": "tst.echo"},
            {"id": "slow", "technique": "tst.sleep", "config": {"sleep": 0.3}},
            {"id": "fast", "technique": "tst.sleep", "config": {"sleep": 0.02}},
            {"id": "after_fast", "technique": "tst.sleep", "config": {"sleep": 0.02}},
        ],
        [{"from": "a", "to": "slow"}, {"from": "a", "to": "fast"}, {"from": "fast", "to": "after_fast"}],
    )
    r = pipe.run()
    assert span(r, "after_fast")[1] < span(r, "slow")[1] - 0.15


def test_join_waits_for_all_and_receives_both_upstreams():
    pipe = graph(
        [
            {"id": "a", "technique": "tst.echo"},
            {"id": "b", "technique": "tst.sleep"},
            {"id": "c", "technique": "tst.sleep", "config": {"sleep": 0.1}},
            {"id": "d", "technique": "tst.echo"},
        ],
        [
            {"from": "a", "to": "b"},
            {"from": "a", "to": "c"},
            {"from": "b", "to": "d"},
            {"from": "c", "to": "d"},
        ],
    )
    r = pipe.run()
    assert span(r, "d")[0] >= max(span(r, "b")[1], span(r, "c")[1])
    assert r.output["up"] == ["b", "c"]


def test_conditional_branch_and_dead_path_elimination_keeps_join_alive():
    nodes = [
        {"id": "classify", "technique": "tst.label"},
        {"id": "f", "technique": "tst.echo"},
        {"id": "o", "technique": "tst.echo"},
        {"id": "o2", "technique": "tst.echo"},
        {"id": "join", "technique": "tst.echo"},
    ]
    edges = [
        {"from": "classify", "to": "f", "condition": '${classify.type} == "factual"'},
        {"from": "classify", "to": "o", "condition": '${classify.type} == "opinion"'},
        {"from": "o", "to": "o2"},
        {"from": "f", "to": "join"},
        {"from": "o2", "to": "join"},
    ]
    r = graph(nodes, edges, mode="conditional").run({"kind": "opinion"})
    assert r.status("f") == "skipped" and r.status("o") == "ran" and r.status("o2") == "ran"
    assert r.status("join") == "ran" and r.output["up"] == ["o2"]
    r = graph(nodes, edges, mode="conditional").run({"kind": "other"})
    # nothing fired: every downstream node is skipped by propagation, the run still completes
    assert [r.status(n) for n in ("f", "o", "o2", "join")] == ["skipped"] * 4


def test_back_edge_loops_until_condition_fails():
    nodes = [
        {"id": "gen", "technique": "tst.echo"},
        {"id": "ev", "technique": "tst.counter"},
        {"id": "fix", "technique": "tst.echo"},
    ]
    edges = [
        {"from": "gen", "to": "ev"},
        {"from": "ev", "to": "fix", "condition": "${ev.score} < 0.8"},
        {"from": "fix", "to": "ev"},
    ]
    r = graph(nodes, edges, mode="cyclic", max_iterations=10).run()
    # score = 0.5 + 0.1*iteration: 0.6, 0.7 loop; 0.8 stops
    assert [x for x in r.ran() if x == "ev"] == ["ev"] * 3
    assert r.stopped_by == "completed"


def test_max_iterations_ends_gracefully():
    nodes = [{"id": "ev", "technique": "tst.counter"}, {"id": "fix", "technique": "tst.echo"}]
    edges = [{"from": "ev", "to": "fix"}, {"from": "fix", "to": "ev"}]
    r = graph(nodes, edges, mode="cyclic", max_iterations=4).run()
    assert r.stopped_by == "max_iterations"
    assert r.ran().count("ev") == 4
    assert r.outputs["ev"]["n"] == 4


def test_dag_rejects_cycle_naming_it():
    with pytest.raises(sb.SpecError) as err:
        graph(
            [{"id": "a", "technique": "tst.echo"}, {"id": "b", "technique": "tst.echo"}],
            [{"from": "a", "to": "b"}, {"from": "b", "to": "a"}],
        )
    assert "a -> b -> a" in str(err.value)


def test_fail_fast_cancels_siblings_and_names_node_technique_attempt():
    pipe = graph(
        [
            {"id": "root", "technique": "tst.echo"},
            {"id": "slow", "technique": "tst.sleep", "config": {"sleep": 5}},
            {"id": "bad", "technique": "tst.boom", "retry": {"max_attempts": 2, "initial_delay": 0.01}},
        ],
        [{"from": "root", "to": "slow"}, {"from": "root", "to": "bad"}],
    )
    t0 = time.perf_counter()
    with pytest.raises(NodeExecutionError) as err:
        pipe.run()
    assert time.perf_counter() - t0 < 2
    e = err.value
    assert e.node_id == "bad" and e.technique == "tst.boom" and e.attempts == 2
    assert "bad" in str(e) and "tst.boom" in str(e) and "attempt 2" in str(e)
    statuses = {r.node_id: r.status for r in e.result.records}
    assert statuses["slow"] == "cancelled" and statuses["root"] == "ran"


def test_retry_backoff_exponential_delays():
    FLAKY.clear()
    events = []
    pipe = sb.Pipeline.from_dict(
        {
            "steps": [
                {
                    "use": "tst.flaky",
                    "config": {"key": "x", "succeed_on": 4},
                    "retry": {"max_attempts": 4, "backoff": "exponential", "initial_delay": 0.05},
                }
            ]
        }
    )
    r = pipe.run(observers=[events.append])
    assert r.output == {"ok": True, "attempt": 4}
    delays = [e.data["delay"] for e in events if e.kind == "node_retrying"]
    assert delays == pytest.approx([0.05, 0.1, 0.2])
    started = [e.time for e in events if e.kind == "node_started"]
    gaps = [b - a for a, b in zip(started, started[1:], strict=False)]
    assert gaps[0] >= 0.045 and gaps[1] >= 0.095 and gaps[2] >= 0.19
    assert r.record("flaky").attempts == 4


@pytest.mark.parametrize("backoff,expected", [("linear", [0.02, 0.04, 0.06]), ("fixed", [0.02, 0.02, 0.02])])
def test_retry_backoff_linear_and_fixed(backoff, expected):
    FLAKY.clear()
    events = []
    sb.Pipeline.from_dict(
        {
            "steps": [
                {
                    "use": "tst.flaky",
                    "config": {"key": backoff, "succeed_on": 4},
                    "retry": {"max_attempts": 4, "backoff": backoff, "initial_delay": 0.02},
                }
            ]
        }
    ).run(observers=[events.append])
    assert [e.data["delay"] for e in events if e.kind == "node_retrying"] == pytest.approx(expected)


def test_fallback_supplies_output_and_run_continues():
    pipe = sb.Pipeline.from_dict(
        {
            "steps": [
                {
                    "use": "tst.boom",
                    "id": "primary",
                    "on_error": [
                        {"name": "backup", "technique": "tst.echo", "config": {"text": "from backup"}}
                    ],
                },
                {"use": "tst.echo", "id": "after"},
            ]
        }
    )
    r = pipe.run()
    assert r.outputs["primary"]["text"] == "from backup"
    assert r.status("after") == "ran" and r.output["up"] == ["primary"]
    assert r.record("backup").fallback_for == "primary"


def test_max_concurrent_is_respected():
    running = {"now": 0, "peak": 0}

    @sb.technique("tst.track")
    async def track(ctx):
        running["now"] += 1
        running["peak"] = max(running["peak"], running["now"])
        await asyncio.sleep(0.02)
        running["now"] -= 1
        return {}

    pipe = sb.Pipeline.from_dict(
        {
            "steps": [
                {
                    "use": "workflow_orchestration.orchestration",
                    "config": {
                        "subtechnique": "parallel",
                        "max_concurrent": 3,
                        "steps": [{"name": f"t{i}", "technique": "tst.track"} for i in range(10)],
                    },
                }
            ]
        }
    )
    pipe.run()
    assert running["peak"] == 3


def test_blocking_sync_techniques_overlap_in_threads():
    pipe = sb.Pipeline.from_dict(
        {
            "steps": [
                {
                    "use": "workflow_orchestration.orchestration",
                    "config": {
                        "subtechnique": "parallel",
                        "steps": [{"name": f"b{i}", "technique": "tst.blocking_sleep"} for i in range(4)],
                    },
                }
            ]
        }
    )
    t0 = time.perf_counter()
    pipe.run()
    assert time.perf_counter() - t0 < 0.15  # 4 x 50 ms overlapped


def test_run_works_inside_a_running_event_loop():
    pipe = sb.Pipeline.from_dict({"steps": [{"use": "tst.echo"}]})

    async def inside():
        return pipe.run()  # a Jupyter cell calling the sync API

    r = asyncio.run(inside())
    assert r.output["text"] == "echo"


def test_events_cover_the_lifecycle():
    events = []
    sb.Pipeline.from_dict({"steps": [{"use": "tst.echo"}, {"use": "tst.echo"}]}).run(
        observers=[events.append]
    )
    kinds = [e.kind for e in events]
    assert kinds[0] == "run_started" and kinds[-1] == "run_finished"
    assert kinds.count("node_finished") == 2 and kinds.count("node_started") == 2


def test_dynamic_graph_from_python_builder_depends_on_input():
    @sb.graph_builder("tst.builder")
    def build(input_data):
        g = sb.Graph()
        for i in range(input_data["n"]):
            g.add_node(f"w{i}", "tst.echo")
            g.add_edge("start", f"w{i}")
        return g

    pipe = sb.Pipeline.from_dict(
        {
            "steps": [
                {
                    "use": "workflow_orchestration.graph",
                    "config": {"subtechnique": "dynamic", "builder": "tst.builder"},
                }
            ]
        }
    )
    assert len(pipe.run({"n": 3}).output) == 3
    assert len(pipe.run({"n": 7}).output) == 7


def test_builder_code_needs_trust():
    doc = {
        "steps": [
            {
                "use": "workflow_orchestration.graph",
                "config": {
                    "subtechnique": "dynamic",
                    "builder_code": "def build_graph(d):\n    return Graph()\n",
                },
            }
        ]
    }
    with pytest.raises(NodeExecutionError) as err:
        sb.Pipeline.from_dict(doc).run()
    assert "trust" in str(err.value)
    assert sb.Pipeline.from_dict(doc, trust_code=True).run().output == {}


def test_lazy_skips_unconsumed_and_false_condition():
    doc = {
        "steps": [
            {
                "use": "workflow_orchestration.orchestration",
                "config": {
                    "lazy": True,
                    "steps": [
                        {"name": "unused", "technique": "tst.echo"},
                        # no inputs: without depends_on it would read 'unused' (its predecessor) upstream
                        {"name": "needed", "technique": "tst.echo", "depends_on": []},
                        {
                            "name": "final",
                            "technique": "tst.echo",
                            "depends_on": ["needed"],
                            "condition": "${go}",
                        },
                    ],
                },
            }
        ]
    }
    r = sb.Pipeline.from_dict(doc).run({"go": True})
    assert r.status("unused") == "skipped" and r.status("needed") == "ran" and r.status("final") == "ran"
    r = sb.Pipeline.from_dict(doc).run({"go": False})
    assert r.status("final") == "skipped"


def test_missing_input_is_reported_before_running():
    pipe = sb.Pipeline.from_dict({"steps": [{"use": "tst.echo", "config": {"text": "${user_id}"}}]})
    with pytest.raises(sb.TemplateError) as err:
        pipe.run({})
    assert "user_id" in str(err.value) and "steps[0].config.text" in str(err.value)
    assert pipe.run({"user_id": "u1"}).output["text"] == "u1"


def test_unset_env_var_reads_as_null(monkeypatch):
    monkeypatch.delenv("SIBYL_TEST_UNSET_URL", raising=False)
    pipe = sb.Pipeline.from_dict(
        {"steps": [{"use": "tst.echo", "config": {"text": "${env:SIBYL_TEST_UNSET_URL}"}}]}, trust_code=True
    )
    assert pipe.run().output["text"] is None
    monkeypatch.setenv("SIBYL_TEST_UNSET_URL", "sqlite://")
    assert pipe.run().output["text"] == "sqlite://"


def test_run_with_loop_caller_stays_on_the_callers_loop():
    """``loop="caller"`` (nest_asyncio) runs techniques on the notebook's own loop; the default does not.
    In a subprocess: nest_asyncio patches asyncio globally and must not leak into other tests."""
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent("""
        import asyncio
        import sibyl_nb as sb

        seen = {}

        @sb.technique("tst.loopcheck")
        async def check(ctx):
            seen["loop"] = asyncio.get_running_loop()
            return {}

        pipe = sb.Pipeline.from_dict({"steps": [{"use": "tst.loopcheck"}]})

        async def cell():
            me = asyncio.get_running_loop()
            pipe.run({}, loop="caller")
            assert seen["loop"] is me
            pipe.run({})
            assert seen["loop"] is not me
            print("ok")

        asyncio.run(cell())
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "ok", out.stderr


def test_unknown_loop_strategy_is_a_clear_error():
    pipe = sb.Pipeline.from_dict({"steps": [{"use": "tst.echo"}]})
    with pytest.raises(sb.SibylError, match="loop must be one of thread, caller"):
        pipe.run({}, loop="fork")


@sb.technique("tst.ask_inside")
def _ask_inside(ctx):
    return {"answer": ctx.interrupt("go on?")}


def test_an_interrupt_inside_a_built_graph_is_refused_naming_the_dynamic_node():
    """A built graph runs on a nested scheduler, which cannot pause the outer run: the interrupt is
    refused as the dynamic node's error (as for_each items and subgraphs refuse it), never a silent pause."""

    @sb.graph_builder("tst.asks")
    def build(input_data):
        g = sb.Graph()
        g.add_node("ask", "tst.ask_inside")
        g.add_edge("start", "ask")
        return g

    pipe = sb.Pipeline.from_yaml(
        "steps:\n"
        "  - use: workflow_orchestration.graph\n"
        "    config:\n"
        "      subtechnique: dynamic\n"
        "      builder: tst.asks\n"
    )
    with pytest.raises(NodeExecutionError) as info:
        pipe.run({})
    assert str(info.value) == (
        "line 3: steps[0].config: node 'dynamic_graph', technique workflow_orchestration.graph: "
        "ctx.interrupt inside the graph built by 'dynamic_graph' (ask) is not supported: ask before or "
        "after the dynamic node (attempt 1, iteration 1)"
    )
    assert (info.value.node_id, info.value.line) == ("dynamic_graph", 3)
