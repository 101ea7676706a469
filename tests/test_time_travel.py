"""Time travel: ``history`` lists every checkpoint; ``resume(checkpoint=, updates=)`` forks a new
workflow from any of them, leaving the original intact; what depends on an edit runs again."""

from __future__ import annotations

import asyncio

import pytest

import sibyl_nb as sb
from sibyl_nb.errors import SibylError

CALLS: list[str] = []


@sb.technique("tt.word")
def _word(ctx):
    CALLS.append(ctx.node_id)
    return {"text": ctx.config["word"]}


@sb.technique("tt.shout")
def _shout(ctx):
    CALLS.append(ctx.node_id)
    (up,) = ctx.upstream.values()
    return {"text": up["text"].upper() + "!"}


@sb.technique("tt.join")
def _join(ctx):
    CALLS.append(ctx.node_id)
    return {"text": " + ".join(v["text"] for v in ctx.upstream.values())}


# draft -> polish -> final, and an independent branch note -> final
DOC = """
pipelines:
  tt:
    steps:
      - use: workflow_orchestration.graph
        config:
          subtechnique: dag
          graph_definition:
            nodes:
              - {id: draft, technique: tt.word, config: {word: "first draft"}}
              - {id: note, technique: tt.word, config: {word: "a note"}}
              - {id: polish, technique: tt.shout}
              - {id: final, technique: tt.join}
            edges:
              - {from: draft, to: polish}
              - {from: polish, to: final}
              - {from: note, to: final}
shops:
  infrastructure:
    config:
      checkpointing: {enabled: true, frequency: 1}
"""


@pytest.fixture(autouse=True)
def _reset():
    CALLS.clear()
    yield
    CALLS.clear()


def _pipe() -> sb.Pipeline:
    return sb.Pipeline.from_yaml(DOC)


def test_history_lists_every_checkpoint_in_order_with_node_iteration_time():
    pipe = _pipe()
    pipe.run({}, workflow_id="w1")
    rows = pipe.history_sync("w1")
    # one checkpoint per completed node (frequency 1), in the order they finished
    assert [r.step for r in rows] == [0, 1, 2, 3]
    assert [r.node_id for r in rows] == ["draft", "note", "polish", "final"]
    assert [r.frontier for r in rows] == [("polish", "note"), ("polish",), ("final",), ()]
    assert all(r.iteration == 1 for r in rows)
    assert [r.time for r in rows] == sorted(r.time for r in rows)
    assert rows[-1].frontier == ()
    # the async twin says the same
    assert [r.as_dict() for r in asyncio.run(pipe.history("w1"))] == [r.as_dict() for r in rows]


def test_fork_with_an_edit_reruns_only_downstream_and_leaves_the_original_intact():
    pipe = _pipe()
    original = pipe.run({}, workflow_id="w2")
    assert original.outputs["final"] == {"text": "a note + FIRST DRAFT!"}
    before = [r.as_dict() for r in pipe.history_sync("w2")]
    at_draft = next(r for r in pipe.history_sync("w2") if r.node_id == "draft")

    CALLS.clear()
    fork = pipe.resume_sync("w2", checkpoint=at_draft, updates={"draft": {"text": "second take"}})

    # draft's checkpoint was the first: the fork starts before it, draft completes with the edit and
    # does not run; what was not finished then runs (note, which gives the same output as before)
    assert sorted(CALLS) == ["final", "note", "polish"]
    assert fork.outputs["draft"] == {"text": "second take"}
    assert fork.outputs["polish"] == {"text": "SECOND TAKE!"}
    assert fork.outputs["final"] == {"text": "a note + SECOND TAKE!"}
    assert fork.outputs["note"] == original.outputs["note"]
    assert fork.record("draft").status == "edited"
    assert "w2" in fork.record("draft").reason
    assert fork.workflow_id != "w2" and fork.workflow_id.startswith("w2~")

    # the original chain and its result are untouched
    assert [r.as_dict() for r in pipe.history_sync("w2")] == before
    again = pipe.resume_sync("w2")
    assert again.outputs["final"] == {"text": "a note + FIRST DRAFT!"}

    # the fork is a workflow of its own: listed, with a history, and resumable
    listed = {r["workflow_id"] for r in pipe.list_checkpoints()}
    assert {"w2", fork.workflow_id} <= listed
    assert pipe.resume_sync(fork.workflow_id).outputs["final"] == {"text": "a note + SECOND TAKE!"}


def test_fork_of_a_node_not_run_yet_completes_it_with_the_given_output():
    pipe = _pipe()
    pipe.run({}, workflow_id="w3")
    rows = pipe.history_sync("w3")
    waiting = next(r for r in rows if "polish" in r.frontier)
    CALLS.clear()
    fork = pipe.resume_sync(
        "w3", checkpoint=waiting.step, updates={"polish": {"text": "EDITED"}}, fork_id="w3b"
    )
    assert fork.workflow_id == "w3b"
    assert "polish" not in CALLS and "final" in CALLS
    assert fork.outputs["final"] == {"text": "a note + EDITED"}


def test_fork_without_updates_replays_from_that_checkpoint():
    pipe = _pipe()
    original = pipe.run({}, workflow_id="w4")
    CALLS.clear()
    fork = pipe.resume_sync("w4", checkpoint=1)
    assert fork.outputs == original.outputs
    first = pipe.history_sync("w4")[1]
    # everything not finished at checkpoint 1 ran again, nothing else
    done_at_1 = {n for r in pipe.history_sync("w4")[:2] for n in r.nodes}
    assert set(CALLS) == {"draft", "note", "polish", "final"} - done_at_1
    assert first.step == 1


def test_state_edits_and_refused_edits_name_the_problem():
    pipe = _pipe()
    pipe.run({}, workflow_id="w5")
    rows = pipe.history_sync("w5")
    last = rows[-1].step
    fork = pipe.resume_sync("w5", checkpoint=last, updates={"state": {"reviewed": True}})
    assert fork.state["reviewed"] is True
    with pytest.raises(SibylError, match=r"'drafd' is not a node of this pipeline.*did you mean 'draft'"):
        pipe.resume_sync("w5", updates={"drafd": {}})
    at_draft = next(r.step for r in rows if r.node_id == "draft")
    with pytest.raises(SibylError, match=rf"'polish'.* already ran .*fork from checkpoint {at_draft}"):
        pipe.resume_sync("w5", checkpoint=last, updates={"draft": {"text": "x"}})
    with pytest.raises(SibylError, match=r"has checkpoints 0\.\.\d+, not 99"):
        pipe.resume_sync("w5", checkpoint=99)
    with pytest.raises(SibylError, match="no checkpoint for workflow 'nope'"):
        pipe.history_sync("nope")
    with pytest.raises(SibylError, match="already exists"):
        pipe.resume_sync("w5", checkpoint=0, fork_id="w5")


def test_fork_at_a_middle_node_differs_from_the_original_only_downstream_of_it():
    pipe = _pipe()
    original = pipe.run({}, workflow_id="w6")
    at_polish = next(r for r in pipe.history_sync("w6") if r.node_id == "polish")
    CALLS.clear()
    fork = pipe.resume_sync("w6", checkpoint=at_polish, updates={"polish": {"text": "REWRITTEN"}})
    assert CALLS == ["final"]
    changed = {n for n in original.outputs if fork.outputs[n] != original.outputs[n]}
    assert changed == {"polish", "final"}
    assert fork.outputs["final"] == {"text": "a note + REWRITTEN"}
    assert [r.node_id for r in fork.records if r.status == "ran"] == ["draft", "note", "final"]
