"""What a cyclic graph returns and when what follows a loop runs (README "How the guide's ambiguous
bits are read"), pinned with small techniques written here: a drafter, a judge whose score is the
number of refinements so far, and a refiner that appends one mark."""

from __future__ import annotations

import pytest

import sibyl_nb as sb


@sb.technique("loops.draft", blocking=False)
def _draft(ctx):
    return {"answer": "draft", "revisions": 0}


@sb.technique("loops.judge", blocking=False)
def _judge(ctx):
    (up,) = ctx.upstream.values()
    return {"score": up["revisions"], "judged": up["answer"]}


@sb.technique("loops.refine", blocking=False)
def _refine(ctx):
    answer = ctx.results["draft"] if "refine" not in ctx.results else ctx.results["refine"]
    return {"answer": answer["answer"] + "+", "revisions": answer["revisions"] + 1}


@sb.technique("loops.finalize", blocking=False)
def _finalize(ctx):
    return {"final": sorted(ctx.upstream), "iteration": ctx.iteration}


def loop_pipeline(enough: int, max_iterations: int = 10, extra_nodes=(), extra_edges=(), after=None):
    nodes = [
        {"id": "draft", "technique": "loops.draft"},
        {"id": "judge", "technique": "loops.judge"},
        {"id": "refine", "technique": "loops.refine"},
        *extra_nodes,
    ]
    edges = [
        {"from": "draft", "to": "judge"},
        {"from": "judge", "to": "refine", "condition": f"${{judge.score}} < {enough}"},
        {"from": "refine", "to": "judge"},
        *extra_edges,
    ]
    steps = [
        {
            "use": "workflow_orchestration.graph",
            "config": {
                "subtechnique": "cyclic",
                "max_iterations": max_iterations,
                "graph_definition": {"nodes": nodes, "edges": edges},
            },
        }
    ]
    if after is not None:
        steps.append(after)
    return sb.Pipeline.from_dict({"steps": steps})


def ran(result, node_id):
    return [r.iteration for r in result.records if r.node_id == node_id and r.status == "ran"]


def test_loop_ended_by_its_condition_returns_the_refined_answer():
    r = loop_pipeline(enough=3).run()
    assert r.stopped_by == "completed"
    assert ran(r, "judge") == [1, 2, 3, 4] and ran(r, "refine") == [1, 2, 3]
    assert r.output == {"answer": "draft+++", "revisions": 3}
    assert r.text == "draft+++"


def test_loop_ended_by_max_iterations_returns_the_same_shape():
    r = loop_pipeline(enough=100, max_iterations=2).run()
    assert r.stopped_by == "max_iterations"
    assert ran(r, "judge") == [1, 2] and ran(r, "refine") == [1, 2]
    assert r.output == {"answer": "draft++", "revisions": 2}


def test_loop_that_never_iterates_returns_the_unrefined_answer():
    r = loop_pipeline(enough=0).run()
    assert ran(r, "refine") == [] and r.status("refine") == "skipped"
    assert r.output == {"answer": "draft", "revisions": 0}


def test_node_after_a_loop_runs_once_after_the_loop_ended():
    r = loop_pipeline(
        enough=3,
        extra_nodes=[{"id": "finalize", "technique": "loops.finalize"}],
        extra_edges=[{"from": "judge", "to": "finalize", "condition": "${judge.score} >= 3"}],
    ).run()
    assert ran(r, "finalize") == [1]
    last_judge = [x for x in r.records if x.node_id == "judge"][-1]
    assert r.record("finalize").started >= last_judge.ended
    assert [x.node_id for x in r.records][-2:] == ["refine", "finalize"]  # refine #4 skipped, then finalize
    assert r.output == {"final": ["judge"], "iteration": 1}
    assert r.stopped_by == "completed" and r.warnings == []


def test_unconditional_node_after_a_loop_runs_once_not_per_iteration():
    r = loop_pipeline(
        enough=3,
        extra_nodes=[{"id": "finalize", "technique": "loops.finalize"}],
        extra_edges=[{"from": "judge", "to": "finalize"}],
    ).run()
    assert ran(r, "judge") == [1, 2, 3, 4]
    assert ran(r, "finalize") == [1]


def test_exit_node_still_runs_when_max_iterations_stops_the_loop():
    r = loop_pipeline(
        enough=100,
        max_iterations=3,
        extra_nodes=[{"id": "finalize", "technique": "loops.finalize"}],
        extra_edges=[{"from": "judge", "to": "finalize", "condition": "${judge.score} >= 100"}],
    ).run()
    assert r.stopped_by == "max_iterations"
    assert ran(r, "judge") == [1, 2, 3] and ran(r, "refine") == [1, 2, 3]
    assert ran(r, "finalize") == [1]
    assert r.output == {"final": ["judge"], "iteration": 1}


@pytest.mark.parametrize(
    "enough,seen", [(0, {"answer": "draft", "revisions": 0}), (2, {"answer": "draft++", "revisions": 2})]
)
def test_step_after_a_cyclic_graph_receives_the_loop_value(enough, seen):
    r = loop_pipeline(enough=enough, after={"id": "publish", "use": "loops.finalize"}).run()
    assert ran(r, "publish") == [1]
    producer = "draft" if enough == 0 else "refine"
    assert r.output == {"final": [producer], "iteration": 1}
    assert r.outputs[producer] == seen


def test_max_iterations_event_and_iteration_numbers():
    events = []
    r = loop_pipeline(enough=100, max_iterations=2).run(observers=[events.append])
    caps = [e for e in events if e.kind == "custom" and e.data.get("kind") == "max_iterations"]
    assert len(caps) == 1 and caps[0].data["edge"] == "refine->judge"
    assert [(x.node_id, x.iteration) for x in r.records] == [
        ("draft", 1),
        ("judge", 1),
        ("refine", 1),
        ("judge", 2),
        ("refine", 2),
    ]
