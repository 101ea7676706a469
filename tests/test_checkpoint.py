"""Checkpoints in-process: delta chains, resume after a failure (DAG and mid-loop), finished runs,
generations, list and prune. The SIGKILL crash tests are in test_checkpoint_crash.py."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

import sibyl_nb as sb
from sibyl_nb.errors import NodeExecutionError, SibylError
from sibyl_nb.state.checkpoint import fold

RAN: list[str] = []
FAIL_ON: set[str] = set()


@sb.technique("ckpt.step", blocking=False)
def _step(ctx):
    key = f"{ctx.node_id}#{ctx.iteration}"
    if key in FAIL_ON:
        FAIL_ON.discard(key)
        raise RuntimeError(f"planned failure at {key}")
    RAN.append(key)
    return {
        "node": ctx.node_id,
        "it": ctx.iteration,
        "from": sorted(ctx.upstream),
        "score": round(0.3 + 0.1 * ctx.iteration, 2),
    }


@sb.technique("ckpt.slow")
async def _slow(ctx):
    await asyncio.sleep(ctx.config.get("sleep", 0.02))
    key = f"{ctx.node_id}#{ctx.iteration}"
    if key in FAIL_ON:
        FAIL_ON.discard(key)
        raise RuntimeError(f"planned failure at {key}")
    RAN.append(key)
    return {"node": ctx.node_id, "from": sorted(ctx.upstream)}


@pytest.fixture(autouse=True)
def _reset():
    RAN.clear()
    FAIL_ON.clear()
    yield
    RAN.clear()
    FAIL_ON.clear()


def doc(graph: str, checkpointing: str = "{enabled: true, frequency: 1}") -> str:
    return f"""
pipelines:
  p:
    steps:
      - use: workflow_orchestration.graph
        config:
{graph}
shops:
  infrastructure:
    config:
      checkpointing: {checkpointing}
"""


DAG = """          subtechnique: dag
          graph_definition:
            nodes:
              - {id: a, technique: ckpt.step}
              - {id: b, technique: ckpt.slow}
              - {id: c, technique: ckpt.slow, config: {sleep: 0.05}}
              - {id: d, technique: ckpt.step}
              - {id: e, technique: ckpt.step}
            edges:
              - {from: a, to: b}
              - {from: a, to: c}
              - {from: b, to: d}
              - {from: c, to: d}
              - {from: d, to: e}"""

LOOP = """          subtechnique: cyclic
          max_iterations: 10
          graph_definition:
            nodes:
              - {id: generate, technique: ckpt.step}
              - {id: critique, technique: ckpt.step}
              - {id: refine, technique: ckpt.step}
            edges:
              - {from: generate, to: critique}
              - {from: critique, to: refine, condition: "${critique.score} < 0.8"}
              - {from: refine, to: critique}"""


def reference(graph: str):
    pipe = sb.Pipeline.from_yaml(doc(graph, "{enabled: false}"))
    result = pipe.run({"query": "q"})
    ran = list(RAN)
    RAN.clear()
    return result, ran


def test_every_step_writes_one_delta_and_a_finished_run_resumes_to_the_same_result():
    pipe = sb.Pipeline.from_yaml(doc(DAG))
    result = pipe.run({"query": "q"}, workflow_id="wf-dag")
    cp = pipe.load_checkpoint("wf-dag")
    assert cp.status == "finished"
    assert cp.steps == 5  # one per completed step (the final write had nothing new)
    assert sorted(cp.completed) == ["a", "b", "c", "d", "e"]
    assert cp.frontier == []
    RAN.clear()
    again = pipe.resume_sync("wf-dag")
    assert RAN == []  # nothing re-ran
    assert again.output == result.output and again.outputs == result.outputs


def test_frequency_writes_every_n_steps():
    pipe = sb.Pipeline.from_yaml(doc(DAG, "{enabled: true, frequency: 2}"))
    pipe.run({"query": "q"}, workflow_id="wf-f2")
    assert pipe.load_checkpoint("wf-f2").steps == 3  # after 2, after 4, and the final one


@pytest.mark.parametrize("fail_at", ["c#1", "d#1", "e#1"])
def test_resume_after_a_failure_runs_only_what_had_not_completed(fail_at):
    expected, ref_ran = reference(DAG)
    pipe = sb.Pipeline.from_yaml(doc(DAG))
    FAIL_ON.add(fail_at)
    with pytest.raises(NodeExecutionError):
        pipe.run({"query": "q"}, workflow_id="wf-fail")
    assert pipe.load_checkpoint("wf-fail").status == "failed"
    first = list(RAN)
    RAN.clear()
    result = pipe.resume_sync("wf-fail")
    assert sorted(first + RAN) == sorted(ref_ran)  # each step exactly once in total
    assert fail_at in RAN
    assert result.output == expected.output and result.outputs == expected.outputs
    assert pipe.load_checkpoint("wf-fail").status == "finished"


@pytest.mark.parametrize("fail_at", ["critique#2", "refine#3", "critique#5"])
def test_resume_mid_loop_continues_at_the_same_iteration(fail_at):
    expected, ref_ran = reference(LOOP)
    assert ref_ran.count("critique#5") == 1 and "refine#5" not in ref_ran
    pipe = sb.Pipeline.from_yaml(doc(LOOP))
    FAIL_ON.add(fail_at)
    with pytest.raises(NodeExecutionError):
        pipe.run({"query": "q"}, workflow_id="wf-loop")
    first = list(RAN)
    RAN.clear()
    result = pipe.resume_sync("wf-loop")
    assert first + RAN == ref_ran  # same steps, same order, none twice
    assert RAN[0] == fail_at
    assert result.output == expected.output and result.outputs == expected.outputs
    assert [(r.node_id, r.iteration, r.status) for r in result.records] == [
        (r.node_id, r.iteration, r.status) for r in expected.records
    ]


def test_resume_keeps_state_and_session_written_before_the_crash():
    @sb.technique("ckpt.stateful", blocking=False)
    def stateful(ctx):
        ctx.state[ctx.node_id] = ctx.iteration
        ctx.session["seen"] = [*ctx.session.get("seen", []), ctx.node_id]
        if ctx.node_id in FAIL_ON:
            FAIL_ON.discard(ctx.node_id)
            raise RuntimeError("boom")
        return {"state": dict(ctx.state)}

    text = doc("""          subtechnique: dag
          graph_definition:
            nodes:
              - {id: x, technique: ckpt.stateful}
              - {id: y, technique: ckpt.stateful}
            edges:
              - {from: x, to: y}""")
    pipe = sb.Pipeline.from_yaml(text)
    FAIL_ON.add("y")
    with pytest.raises(NodeExecutionError):
        pipe.run({}, workflow_id="wf-state")
    result = pipe.resume_sync("wf-state")
    assert result.output == {"state": {"x": 1, "y": 1}}
    # the checkpoint after x holds the session as x left it: y's failed attempt is not replayed
    assert result.session["seen"] == ["x", "y"]


def test_a_fresh_run_with_the_same_id_starts_a_new_generation_and_prune_drops_the_old_one():
    pipe = sb.Pipeline.from_yaml(doc(DAG))
    pipe.run({"query": "q"}, workflow_id="wf-gen")
    pipe.run({"query": "q2"}, workflow_id="wf-gen")
    rows = pipe.list_checkpoints()
    (row,) = [r for r in rows if r["workflow_id"] == "wf-gen"]
    assert row["steps"] == 5 and row["stale_entries"] == 5
    assert pipe.load_checkpoint("wf-gen").input == {"query": "q2"}
    out = pipe.prune_checkpoints()
    assert out == {"workflows": 0, "entries": 5}
    (row,) = [r for r in pipe.list_checkpoints() if r["workflow_id"] == "wf-gen"]
    assert row["stale_entries"] == 0


def test_list_and_prune_by_count_age_and_status():
    pipe = sb.Pipeline.from_yaml(doc(DAG))
    for i in range(4):
        pipe.run({"query": "q"}, workflow_id=f"wf-{i}")
    FAIL_ON.add("e#1")
    with pytest.raises(NodeExecutionError):
        pipe.run({"query": "q"}, workflow_id="wf-failed")
    rows = pipe.list_checkpoints()
    assert [r["workflow_id"] for r in rows][:2] == ["wf-failed", "wf-3"]  # newest first
    assert {r["status"] for r in rows} == {"finished", "failed"}
    assert pipe.prune_checkpoints(keep=10, status="failed") == {"workflows": 0, "entries": 0}
    out = pipe.prune_checkpoints(keep=2, status="finished")
    assert out["workflows"] == 2 and out["entries"] == 2 * 6
    assert sorted(r["workflow_id"] for r in pipe.list_checkpoints()) == ["wf-2", "wf-3", "wf-failed"]
    assert pipe.prune_checkpoints(older_than=timedelta(hours=1))["workflows"] == 0
    assert pipe.prune_checkpoints(older_than=0)["workflows"] == 3
    assert pipe.list_checkpoints() == []


def test_resume_errors_name_the_problem():
    pipe = sb.Pipeline.from_yaml(doc(DAG))
    with pytest.raises(SibylError, match="no checkpoint for workflow 'nope'"):
        pipe.resume_sync("nope")
    pipe.run({"query": "q"}, workflow_id="wf-other")
    other = sb.Pipeline.from_yaml(doc(LOOP).replace("  p:", "  q:"))
    with pytest.raises(SibylError, match="checkpointed by pipeline 'p'"):
        other.resume_sync("wf-other")


@pytest.mark.parametrize("storage", ["memory", "database"])
def test_other_backends_and_configure(storage, tmp_path):
    pipe = sb.Pipeline.from_yaml(doc(LOOP, "{enabled: false}"))
    cfg = {"storage": storage}
    if storage == "database":
        cfg["database_url"] = f"sqlite:///{tmp_path / 'ck.db'}"
    pipe.configure(checkpointing=cfg)
    FAIL_ON.add("refine#2")
    with pytest.raises(NodeExecutionError):
        pipe.run({}, workflow_id=f"wf-{storage}")
    result = pipe.resume_sync(f"wf-{storage}")
    assert result.stopped_by == "completed"
    assert RAN.count("refine#2") == 1
    assert pipe.load_checkpoint(f"wf-{storage}").status == "finished"


def test_non_json_output_turns_checkpointing_off_with_a_warning(caplog):
    @sb.technique("ckpt.weird", blocking=False)
    def weird(ctx):
        return {"x": {1, 2}}

    pipe = sb.Pipeline.from_dict({"steps": [{"use": "ckpt.weird"}, {"use": "ckpt.step", "id": "after"}]})
    pipe.configure(checkpointing=True)
    with caplog.at_level("WARNING", logger="sibyl_nb.checkpoint"):
        result = pipe.run({}, workflow_id="wf-weird")
    assert result.stopped_by == "completed"
    assert "checkpointing of workflow 'wf-weird' is off" in caplog.text


def test_fold_applies_deltas_in_order():
    deltas = [
        {
            "records": [{"node_id": "a", "technique": "t", "iteration": 1, "status": "ran", "same": True}],
            "results": {"a": 1},
            "retries": 0,
            "sched": {
                "pending": {"a": 0, "b": 1},
                "fired": {"b": []},
                "runs": {"a": 1},
                "acts": {"a": 1},
                "frontier": [["b", ["a"]]],
                "stopped_by": "completed",
            },
        },
        {
            "records": [{"node_id": "b", "technique": "t", "iteration": 1, "status": "ran", "output": 5}],
            "results": {"b": 2},
            "retries": 1,
            "state": {"k": 1},
            "last": "b",
            "sched": {
                "pending": {"b": 0},
                "fired": {"b": ["a"]},
                "runs": {"b": 1},
                "acts": {"b": 1},
                "frontier": [],
                "stopped_by": "completed",
            },
        },
    ]
    out = fold(deltas)
    assert out["results"] == {"a": 1, "b": 2}
    assert [r["output"] for r in out["records"]] == [1, 5]
    assert out["scheduler"]["pending"] == {"a": 0, "b": 0}
    assert out["scheduler"]["fired"] == {"b": ["a"]}
    assert out["scheduler"]["frontier"] == []
    assert out["state"] == {"k": 1} and out["retries"] == 1 and out["last_completed"] == "b"


def test_sqlite_checkpoint_writes_take_the_fast_path_and_read_back_through_the_store(tmp_path):
    from sibyl_nb.state.fastkv import KVWriter
    from sibyl_nb.stores import open_store

    store = open_store("database", database_url=f"sqlite:///{tmp_path / 'fast.db'}", kv_table="ck")
    writer = KVWriter(store)
    assert writer.fast  # if the SQL store's layout changes, this says the hot path fell back
    writer.put("cpd:w:g:0000000000", {"a": [1, "x"]})
    writer.put("cpd:w:g:0000000000", {"a": 2})
    writer.put("cpd:w:g:0000000001", {"b": None})
    writer.close()
    assert store.kv_get("cpd:w:g:0000000000") == {"a": 2}
    assert store.kv_keys("cpd:w:") == ["cpd:w:g:0000000000", "cpd:w:g:0000000001"]
    assert KVWriter(open_store("memory")).fast is False
    store.close()


def test_a_run_that_died_before_its_first_checkpoint_starts_over_on_resume():
    expected, ref_ran = reference(DAG)
    pipe = sb.Pipeline.from_yaml(doc(DAG))
    FAIL_ON.add("a#1")
    with pytest.raises(NodeExecutionError):
        pipe.run({"query": "q"}, workflow_id="wf-early")
    assert pipe.load_checkpoint("wf-early").steps == 0
    result = pipe.resume_sync("wf-early")
    assert sorted(RAN) == sorted(ref_ran) and result.output == expected.output


def test_keep_setting_prunes_after_each_run():
    pipe = sb.Pipeline.from_yaml(doc(DAG, "{enabled: true, keep: 2}"))
    for i in range(4):
        pipe.run({"query": "q"}, workflow_id=f"wf-keep-{i}")
    assert [r["workflow_id"] for r in pipe.list_checkpoints()] == ["wf-keep-3", "wf-keep-2"]


def test_the_seeds_checkpointing_block_on_the_research_workflow():
    from seed_examples import block, yaml_blocks

    settings = dict(yaml_blocks())["Checkpointing"]
    assert "frequency: 5" in settings and "storage: database" in settings
    pipe = sb.Pipeline.from_yaml(block("Research Workflow") + settings)
    result = pipe.run({"query": "What is Python used for?"}, workflow_id="research-1")
    store = pipe.checkpoint_store()
    assert store.store.backend == "sql" and "checkpoints.db" in store.url
    cp = pipe.load_checkpoint("research-1")
    assert cp.status == "finished" and cp.steps == 2  # after 5 steps, then the last 2 at the end
    assert pipe.resume_sync("research-1").output == result.output
